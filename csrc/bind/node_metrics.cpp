#include "../bind.h"
#include "../ops.h"

NNP_BIND(node_metrics) {
  using namespace nnp::bind;
  m.def(
      "node_metrics",
      [](py::array counts, char count_type, py::array class_sizes, py::array pairs, py::array table_offset, py::object hz_table,
         double h_y, double log_k, py::dict out, int threads) {
        // out maps NodeMetrics' field names to float64 / bool arrays, all of them.
        auto field = [&](const char* name) -> void* {
          if (!out.contains(name)) return nullptr;
          py::array a = out[name].cast<py::array>();
          return a.mutable_data();
        };
        nnp::MetricsOut o;
        o.class_fraction = static_cast<double*>(field("class_fraction"));
        o.fraction = static_cast<double*>(field("fraction"));
        o.predictability = static_cast<double*>(field("predictability"));
        o.informativeness = static_cast<double*>(field("informativeness"));
        o.h_z_given_y = static_cast<double*>(field("h_z_given_y"));
        o.h_y_given_z = static_cast<double*>(field("h_y_given_z"));
        o.dead = static_cast<uint8_t*>(field("dead"));
        o.always_active = static_cast<uint8_t*>(field("always_active"));
        const void* c = counts.data();
        const int64_t C = counts.shape(0), N = counts.shape(1);
        const auto* sizes = static_cast<const int64_t*>(class_sizes.data());
        const auto* tab = static_cast<const double*>(pairs.data());
        const auto* off = static_cast<const int64_t*>(table_offset.data());
        const double* hz = hz_table.is_none() ? nullptr : static_cast<const double*>(hz_table.cast<py::array>().data());
        py::gil_scoped_release nogil;
        return nnp::node_metrics_cpu(c, count_type, C, N, sizes, tab, off, hz, h_y, log_k, o, threads);
      },
      py::arg("counts"), py::arg("count_type"), py::arg("class_sizes"), py::arg("pairs"), py::arg("table_offset"), py::arg("hz_table"),
      py::arg("h_y"), py::arg("log_k"), py::arg("out"), py::arg("threads"));
}
