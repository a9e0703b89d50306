// sample_agreement on the CPU: Hamming distances between chosen samples' binary
// codes across one layer's nodes, from the stored layout (a row per node, a bit per
// sample) without unpacking it to bytes. The chosen samples' bits are gathered
// into sample-major codes (a bit per node, 64 nodes a word), then each pair is the
// popcount of its codes' XOR over ceil(nodes / 64) words.
#include <cstring>
#include <vector>

#include "../ops.h"
#include "parallel.h"

namespace nnp {

void sample_agreement_cpu(const uint8_t* packed, int64_t N, int64_t row_bytes, const int64_t* idx, int64_t m,
                          int64_t* out, int threads) {
  const int64_t W = (N + 63) / 64;
  std::vector<uint64_t> codes(static_cast<size_t>(m * W), 0);
  const int nt = resolve_threads(threads, m / 64 + 1);
  run_threads(nt, [&](int t) {  // each thread gathers the codes of its own samples
    int64_t j0, j1;
    split_range(m, nt, t, 1, j0, j1);
    for (int64_t d = 0; d < N; ++d) {
      const uint8_t* row = packed + d * row_bytes;
      const uint64_t bit = uint64_t{1} << (d & 63);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t s = idx[j];
        if ((row[s >> 3] >> (s & 7)) & 1u) codes[j * W + (d >> 6)] |= bit;
      }
    }
  });
  run_threads(nt, [&](int t) {
    for (int64_t i = t; i < m; i += nt) {  // interleaved rows: row i has m - i pairs
      const uint64_t* ci = codes.data() + i * W;
      out[i * m + i] = 0;
      for (int64_t j = i + 1; j < m; ++j) {
        const uint64_t* cj = codes.data() + j * W;
        int64_t h = 0;
        for (int64_t w = 0; w < W; ++w) h += __builtin_popcountll(ci[w] ^ cj[w]);
        out[i * m + j] = h;
        out[j * m + i] = h;
      }
    }
  });
}

}  // namespace nnp
