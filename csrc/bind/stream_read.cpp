#include "../bind.h"
#include "../ops.h"

NNP_BIND(stream_read) {
  using namespace nnp::bind;
  m.def(
      "stream_read",
      [](py::array data, int threads) {
        const void* d = data.data();
        const int64_t bytes = data.nbytes() / 8 * 8;
        py::gil_scoped_release nogil;
        return nnp::stream_read_cpu(d, bytes, threads);
      },
      py::arg("data"), py::arg("threads"));
}
