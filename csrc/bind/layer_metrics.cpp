#include <string>
#include <vector>

#include "../bind.h"
#include "../ops.h"

NNP_BIND(layer_metrics) {
  using namespace nnp::bind;
  m.def(
      "layer_metrics",
      [](py::list tables, py::str count_types, py::array class_sizes, py::array entropy, py::array table_offset,
         py::object hz_table, py::array use_tables, py::array use_hz, py::array sums, py::array node_counts,
         py::array class_sums, int threads) -> int64_t {
        // One entry per table: sums [L, 2] float64, node_counts [L, 2] and class_sums [L, classes] int64,
        // use_tables and use_hz [L] bool, count_types one type code per table.
        const std::string types = count_types;
        const auto L = static_cast<int64_t>(tables.size());
        const int64_t C = class_sizes.shape(0);
        const auto* tab = static_cast<const bool*>(use_tables.data());
        const auto* hz = static_cast<const bool*>(use_hz.data());
        std::vector<nnp::MetricsLayer> layers(static_cast<size_t>(L));
        for (int64_t l = 0; l < L; ++l) {
          py::array a = tables[l].cast<py::array>();
          nnp::MetricsLayer& x = layers[l];
          x.counts = a.data();
          x.count_type = types[l];
          x.nodes = a.shape(1);
          x.tables = tab[l];
          x.hz = hz[l];
          x.sums = ptr<double>(sums) + 2 * l;
          x.node_counts = ptr<int64_t>(node_counts) + 2 * l;
          x.class_sums = ptr<int64_t>(class_sums) + C * l;
        }
        const auto* sz = static_cast<const int64_t*>(class_sizes.data());
        const auto* ent = static_cast<const double*>(entropy.data());
        const auto* off = static_cast<const int64_t*>(table_offset.data());
        const double* hzt = hz_table.is_none() ? nullptr : static_cast<const double*>(hz_table.cast<py::array>().data());
        py::gil_scoped_release nogil;
        return nnp::layer_metrics_cpu(layers.data(), L, C, sz, ent, off, hzt, threads);
      },
      py::arg("tables"), py::arg("count_types"), py::arg("class_sizes"), py::arg("entropy"), py::arg("table_offset"),
      py::arg("hz_table"), py::arg("use_tables"), py::arg("use_hz"), py::arg("sums"), py::arg("node_counts"),
      py::arg("class_sums"), py::arg("threads"),
      "Layer summaries of many count tables against the same class sizes; the first bad table's index or -1.");
}
