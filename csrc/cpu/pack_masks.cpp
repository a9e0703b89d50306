// pack_masks on the CPU: bits along samples, so a node's sample set is one
// contiguous bit row. It is count_and_pack's sweep without the counts (see
// count_and_pack.cpp); one sweep serves both, so the masks are identical whether or
// not the counts were taken with them.
#include "../ops.h"
#include "count_and_pack.h"

namespace nnp {

bool pack_masks_cpu(const void* acts, int kind, int64_t S, int64_t N, int64_t rs, uint8_t* out, int64_t row_bytes,
                    bool check_finite, int threads) {
  return count_and_pack_cpu(acts, kind, S, N, rs, nullptr, 0, nullptr, 8, out, row_bytes, check_finite, threads);
}

}  // namespace nnp
