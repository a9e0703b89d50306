// Compiled only when the CUDA part is built (setup.py adds bind/cuda/).
#include "../../bind.h"
#include "../../cuda/node_metrics.h"

NNP_BIND(node_metrics_cuda) {
  using namespace nnp::bind;
  m.def("node_metrics_cuda_blocks", &nnp::node_metrics_blocks, py::arg("nodes"),
        "Blocks of 9 partial sums node_metrics_cuda needs for this many nodes.");
  m.def(
      "node_metrics_cuda",
      [](uintptr_t counts, int count_code, int64_t C, int64_t N, uintptr_t class_sizes, int64_t total, double present,
         double h_y, double log_k, bool pair_terms, py::dict out, uintptr_t partials, uintptr_t result, int device,
         uintptr_t stream) {
        // out maps node field names to device addresses; a missing field is not written.
        auto field = [&](const char* name) -> uintptr_t {
          return out.contains(name) ? out[name].cast<uintptr_t>() : 0;
        };
        nnp::MetricsCudaOut o;
        o.class_fraction = field("class_fraction");
        o.fraction = field("fraction");
        o.predictability = field("predictability");
        o.informativeness = field("informativeness");
        o.h_z_given_y = field("h_z_given_y");
        o.h_y_given_z = field("h_y_given_z");
        o.dead = field("dead");
        o.always_active = field("always_active");
        py::gil_scoped_release nogil;
        check(nnp::node_metrics_cuda(counts, count_code, C, N, class_sizes, total, present, h_y, log_k, pair_terms, o,
                                     partials, result, device, stream));
      },
      py::arg("counts"), py::arg("count_code"), py::arg("classes"), py::arg("nodes"), py::arg("class_sizes"),
      py::arg("total"), py::arg("present"), py::arg("h_y"), py::arg("log_k"), py::arg("pair_terms"), py::arg("out"),
      py::arg("partials"), py::arg("result"), py::arg("device"), py::arg("stream"));
}
