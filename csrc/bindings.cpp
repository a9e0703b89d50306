// The only PYBIND11_MODULE and the only CUDA #ifdef. Arrays arrive as NumPy
// buffers already validated by nnphases.kernels; the GIL is released around
// every kernel so callers' threads keep running.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "ops.h"

namespace py = pybind11;

namespace {

template <typename T = void>
T* ptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// Row stride in elements of a [samples, nodes] array whose nodes are adjacent (the
// stride of an axis of extent 1 is never used). The boundary copies every other
// layout (nnphases/kernels/_arrays.py); this refuses rather than misread one that
// slipped past it.
int64_t row_stride(const py::array& a) {
  const int64_t item = a.itemsize();
  if (a.ndim() != 2) throw std::invalid_argument("acts must be 2-D");
  if (a.shape(0) == 0 || a.shape(1) == 0) return 0;  // nothing is read (NumPy gives empty arrays 0 strides)
  if ((a.shape(1) > 1 && a.strides(1) != item) || (a.shape(0) > 1 && a.strides(0) % item != 0) ||
      reinterpret_cast<uintptr_t>(a.data()) % item != 0)
    throw std::invalid_argument("acts must have adjacent, aligned nodes and whole-element row strides");
  return a.strides(0) / item;
}

#ifdef NNPHASES_WITH_CUDA
void check(const char* err) {
  if (err && *err) throw std::runtime_error(std::string("CUDA error: ") + err);
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "nnphases native kernels (CPU, and CUDA when built with nvcc).";

  // Every pointer and size is read before the GIL is released: py::array accessors
  // may touch reference counts, which pybind11 checks.
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

  m.def(
      "pack_masks",
      [](py::array acts, int kind, py::array out, bool check_finite, int threads) {
        const void* a = acts.data();
        const int64_t S = acts.shape(0), N = acts.shape(1), rs = row_stride(acts), row_bytes = out.shape(1);
        uint8_t* o = ptr<uint8_t>(out);
        py::gil_scoped_release nogil;
        return nnp::pack_masks_cpu(a, kind, S, N, rs, o, row_bytes, check_finite, threads);
      },
      py::arg("acts"), py::arg("kind"), py::arg("out"), py::arg("check_finite"), py::arg("threads"));

  m.def(
      "packed_class_counts",
      [](py::array packed, py::array class_offsets, py::array seg_word, py::array seg_mask, py::array out,
         int threads) {
        const auto* p = static_cast<const uint8_t*>(packed.data());
        const int64_t N = packed.shape(0), row_bytes = packed.shape(1), C = class_offsets.shape(0) - 1;
        const auto* off = static_cast<const int64_t*>(class_offsets.data());
        const auto* word = static_cast<const int64_t*>(seg_word.data());
        const auto* mask = static_cast<const uint64_t*>(seg_mask.data());
        int64_t* o = ptr<int64_t>(out);
        py::gil_scoped_release nogil;
        nnp::packed_class_counts_cpu(p, N, row_bytes, off, C, word, mask, o, threads);
      },
      py::arg("packed"), py::arg("class_offsets"), py::arg("seg_word"), py::arg("seg_mask"), py::arg("out"),
      py::arg("threads"));

  m.def(
      "node_metrics",
      [](py::array counts, py::array class_sizes, py::array pairs, py::array table_offset, py::object hz_table,
         double h_y, double log_k, py::dict out, int threads) {
        // out maps field names to float64 / bool arrays; a missing field is not computed into memory.
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
        o.layer_sums = static_cast<double*>(field("layer_sums"));
        o.layer_counts = static_cast<int64_t*>(field("layer_counts"));
        const void* c = counts.data();
        const int bytes = static_cast<int>(counts.itemsize());
        const int64_t C = counts.shape(0), N = counts.shape(1);
        const auto* sizes = static_cast<const int64_t*>(class_sizes.data());
        const auto* tab = static_cast<const double*>(pairs.data());
        const auto* off = static_cast<const int64_t*>(table_offset.data());
        const double* hz = hz_table.is_none() ? nullptr : static_cast<const double*>(hz_table.cast<py::array>().data());
        py::gil_scoped_release nogil;
        nnp::node_metrics_cpu(c, bytes, C, N, sizes, tab, off, hz, h_y, log_k, o, threads);
      },
      py::arg("counts"), py::arg("class_sizes"), py::arg("pairs"), py::arg("table_offset"), py::arg("hz_table"),
      py::arg("h_y"), py::arg("log_k"), py::arg("out"), py::arg("threads"));

  m.def(
      "stream_read",
      [](py::array data, int threads) {
        const void* d = data.data();
        const int64_t bytes = data.nbytes() / 8 * 8;
        py::gil_scoped_release nogil;
        return nnp::stream_read_cpu(d, bytes, threads);
      },
      py::arg("data"), py::arg("threads"));

  m.attr("direct_table_bytes") = nnp::kDirectTableBytes;

#ifdef NNPHASES_WITH_CUDA
  m.attr("has_cuda") = true;
  m.def("cuda_device_report", []() { return std::string(nnp::cuda_device_report()); });
  m.def(
      "class_counts_cuda",
      [](uintptr_t acts, int kind, int64_t S, int64_t N, int64_t rs, uintptr_t labels, int label_bytes, int64_t C,
         uintptr_t out, int out_bytes, bool accumulate, uintptr_t work, uintptr_t flags, bool check_finite, int device,
         uintptr_t stream) {
        py::gil_scoped_release nogil;
        check(nnp::class_counts_cuda(acts, kind, S, N, rs, labels, label_bytes, C, out, out_bytes, accumulate, work,
                                     flags, check_finite, device, stream));
      });
  m.def("pack_masks_cuda", [](uintptr_t acts, int kind, int64_t S, int64_t N, int64_t rs, uintptr_t out,
                              int64_t row_bytes, uintptr_t flags, bool check_finite, int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::pack_masks_cuda(acts, kind, S, N, rs, out, row_bytes, flags, check_finite, device, stream));
  });
  m.def("packed_class_counts_cuda", [](uintptr_t packed, int64_t N, int64_t row_bytes, uintptr_t class_offsets,
                                       int64_t C, uintptr_t seg_word, uintptr_t seg_mask, uintptr_t out,
                                       int device, uintptr_t stream) {
    py::gil_scoped_release nogil;
    check(nnp::packed_class_counts_cuda(packed, N, row_bytes, class_offsets, C, seg_word, seg_mask, out, device, stream));
  });
#else
  m.attr("has_cuda") = false;
#endif
}
