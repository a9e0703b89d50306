// count_and_pack on the CPU, declared apart from ops.h: class_counts' counts and
// pack_masks' masks from one read of the activations.
#pragma once
#include <cstdint>

namespace nnp {

// out[c, d] += #{s : labels[s] == c and active(acts[s, d])} (out int32 or int64,
// out_bytes 4 or 8, as class_counts_cpu) and packed [nodes, row_bytes] as
// pack_masks_cpu writes it, in one pass. labels and out null: masks only (what
// pack_masks_cpu runs); packed null: counts only. Returns true when a non-finite
// value was seen (check_finite only).
bool count_and_pack_cpu(const void* acts, int kind, int64_t samples, int64_t nodes, int64_t row_stride,
                        const int32_t* labels, int64_t num_classes, void* out, int out_bytes, uint8_t* packed,
                        int64_t row_bytes, bool check_finite, int threads);

}  // namespace nnp
