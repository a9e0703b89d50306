#include "../bind.h"
#include "../ops.h"

NNP_BIND(class_counts) {
  using namespace nnp::bind;
  m.def(
      "class_counts",
      [](py::array acts, int kind, py::array labels, int64_t num_classes, py::array out, bool check_finite,
         int threads, int strategy) {
        const void* a = acts.data();
        const int64_t S = acts.shape(0), N = acts.shape(1), rs = row_stride(acts);
        const auto* lab = static_cast<const int32_t*>(labels.data());
        void* o = ptr(out);
        const int out_bytes = static_cast<int>(out.itemsize());
        py::gil_scoped_release nogil;
        return nnp::class_counts_cpu(a, kind, S, N, rs, lab, num_classes, o, out_bytes, check_finite, threads,
                                     strategy);
      },
      py::arg("acts"), py::arg("kind"), py::arg("labels"), py::arg("num_classes"), py::arg("out"),
      py::arg("check_finite"), py::arg("threads"), py::arg("strategy"));
}
