// count_and_pack on the CPU: one pass that compares each activation once and
// sends its 0/1 both to the 16-bit counter of its row's label (class_counts'
// direct strategy) and to its row's bit lane (pack_masks). Threads take ranges of
// whole 512-sample lines, so each reads one contiguous block of rows and owns the
// output lines it writes; the counts of threads past the first are summed at the
// end, as in class_counts. (Threads splitting the nodes instead, each sweeping
// all rows over its columns, measured 0.38 of read bandwidth against 0.65 with
// two threads on 60000x4096 float32: two interleaved half-row streams.) Bits
// gather in lanes as wide as the element (32 float32 rows per 32-bit lane), are
// folded into 64-bit words, and the 512 samples of a node's 64-byte output line
// are assembled before they are written once, with streaming stores of whole
// aligned cache lines (store_aligned): this pass never reads them back. Streaming
// stores of the 64-byte windows as they fall (two partial lines each, as row_bytes
// is rarely a multiple of 64) measured no better than plain stores; whole lines
// gave 0.69 -> 0.76 of read bandwidth (10 classes) and 0.75 -> 0.81 (100).
#include "count_and_pack.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../dispatch.h"
#include "../ops.h"
#include "class_rows.h"
#include "parallel.h"
#include "prefetch.h"

namespace nnp {
namespace {

using Counter = uint16_t;  // flushed into out every kFlushRows rows (as class_counts' narrow counters)
constexpr int64_t kLineSamples = 512;  // samples of one 64-byte line of a packed row
constexpr int64_t kFlushRows = 65535 / kLineSamples * kLineSamples;
// Nodes per tile while packing: whole rows up to this width, so the 64 rows of a
// word are read in address order; the tile's lanes and lines stay in L2.
constexpr int64_t kTile = 8192;

template <typename K, bool Count, bool Pack, bool First, bool Check>
inline typename K::Bits row_pass(const typename K::Bits* __restrict row, typename K::Bits* __restrict acc,
                                 Counter* __restrict cnt, int64_t n, typename K::Bits bit, int64_t ahead) {
  using U = typename K::Bits;
  constexpr int64_t block = 64 / sizeof(U) * 4;  // four cache lines
  // The non-finite test keeps one vector of lanes (the largest |bits| seen) across
  // the whole row; a flag reduced per block costs a horizontal reduction per 4 lines.
  U big[block] = {};
  int64_t d0 = 0;
  for (; d0 + block <= n; d0 += block) {
    prefetch_at(row + d0, ahead);
    for (int64_t i = 0; i < block; ++i) {
      const U b = row[d0 + i];
      const bool on = K::active(b);
      if (Count) cnt[d0 + i] += on ? Counter(1) : Counter(0);
      if (Pack) acc[d0 + i] = First ? (on ? bit : U(0)) : (on ? static_cast<U>(acc[d0 + i] | bit) : acc[d0 + i]);
      if (Check) big[i] = std::max(big[i], static_cast<U>(b & K::abs));
    }
  }
  for (int64_t d = d0; d < n; ++d) {
    const U b = row[d];
    const bool on = K::active(b);
    if (Count) cnt[d] += on ? Counter(1) : Counter(0);
    if (Pack) acc[d] = First ? (on ? bit : U(0)) : (on ? static_cast<U>(acc[d] | bit) : acc[d]);
    if (Check) big[0] = std::max(big[0], static_cast<U>(b & K::abs));
  }
  if (!Check) return 0;
  U top = 0;
  for (int64_t i = 0; i < block; ++i) top = std::max(top, big[i]);
  return static_cast<U>(top >= K::inf);
}

template <typename O>
void flush(Counter* narrow, int64_t n, O* wide) {
  for (int64_t i = 0; i < n; ++i) wide[i] += static_cast<O>(narrow[i]);
  std::memset(narrow, 0, n * sizeof(Counter));
}

// Writes the first `words` words of every node's assembled line; line[k * w + d] is
// word k of node d (word-major, so that each fold is one contiguous vector pass).
inline void store_lines(const uint64_t* line, int64_t w, int64_t wt, int words, uint8_t* dst, int64_t row_bytes,
                        bool stream) {
  for (int64_t d = 0; d < wt; ++d) {
    auto* p = reinterpret_cast<long long*>(dst + d * row_bytes);
    if (stream) {
      for (int k = 0; k < words; ++k) _mm_stream_si64(p + k, static_cast<long long>(line[k * w + d]));
    } else {
      for (int k = 0; k < words; ++k) std::memcpy(p + k, &line[k * w + d], 8);
    }
  }
}

// store_lines for a tile that is the whole row, with streaming stores of whole
// aligned cache lines only: a node's 64-byte window starts q words into a line
// (q fixed per node, as row_bytes is), so the line it starts in is the previous
// window's last q words (`prev`, the other buffer) followed by this window's
// first 8 - q. A streaming store of part of a line costs a partial-line write;
// stores of part of a line go plain: the head of a thread's first window (its
// line begins in the range before) and everything of its last window.
inline void store_aligned(const uint64_t* cur, const uint64_t* prev, int64_t w, int64_t wt, int words, uint8_t* dst,
                          int64_t row_bytes, bool first, bool last) {
  for (int64_t d = 0; d < wt; ++d) {
    uint8_t* p = dst + d * row_bytes;
    const int q = static_cast<int>(reinterpret_cast<uintptr_t>(p) % 64 / 8);
    auto* line = reinterpret_cast<long long*>(p - 8 * q);
    if (last) {
      if (!first)
        for (int k = 0; k < q; ++k) std::memcpy(line + k, &prev[(8 - q + k) * w + d], 8);
      for (int k = 0; k < words; ++k) std::memcpy(p + 8 * k, &cur[k * w + d], 8);
    } else if (q == 0) {
      for (int k = 0; k < 8; ++k) _mm_stream_si64(line + k, static_cast<long long>(cur[k * w + d]));
    } else if (first) {
      for (int k = 0; k < 8 - q; ++k) std::memcpy(p + 8 * k, &cur[k * w + d], 8);
    } else {
      for (int k = 0; k < q; ++k) _mm_stream_si64(line + k, static_cast<long long>(prev[(8 - q + k) * w + d]));
      for (int k = q; k < 8; ++k) _mm_stream_si64(line + k, static_cast<long long>(cur[(k - q) * w + d]));
    }
  }
}

template <typename K, bool Count, bool Pack, bool Check, typename O>
bool run(const typename K::Bits* acts, int64_t S, int64_t N, int64_t rs, const int32_t* labels, int64_t C, O* out,
         uint8_t* packed, int64_t row_bytes, int threads) {
  using U = typename K::Bits;
  constexpr int R = 8 * sizeof(U);  // rows gathered per lane before widening
  const int nt = resolve_threads(threads, std::min(S / kLineSamples + 1, element_items(S * N)));
  // movnti needs 8-byte aligned words; the extension's own outputs always are.
  const bool stream = Pack && reinterpret_cast<uintptr_t>(packed) % 8 == 0 && row_bytes % 8 == 0;
  const int64_t w = Pack ? std::min(N, kTile) : N;
  const bool whole = stream && w == N;  // one tile: the previous window's lines are still in the other buffer
  // Counter rows of the classes each thread sees (class_rows.h); threads past the first flush into rows of
  // their own, summed into out at the end.
  const auto most = [&](int t) {
    int64_t s0, s1;
    split_range(S, nt, t, kLineSamples, s0, s1);
    return Count ? std::min(C, std::max<int64_t>(s1 - s0, 1)) : 0;
  };
  std::vector<ClassRows<O>> own;
  own.reserve(nt);
  for (int t = 0; t < nt; ++t) own.emplace_back(Count && t > 0 ? C : 0, t > 0 ? most(t) : 0, N);
  std::vector<int> bad(nt, 0);
  run_threads(nt, [&](int t) {
    int64_t s0, s1;
    split_range(S, nt, t, kLineSamples, s0, s1);
    std::vector<U> acc_buf(Pack ? w : 0);
    std::vector<uint64_t> line_buf(Pack ? w * 8 : 0), prev_buf(whole ? w * 8 : 0);
    ClassRows<Counter> cnt(Count ? C : 0, most(t), N);
    auto flush_all = [&] {
      for (size_t k = 0; k < cnt.cls.size(); ++k) {
        const int32_t c = cnt.cls[k];
        flush(cnt.rows.get() + static_cast<int64_t>(k) * N, N, t == 0 ? out + static_cast<int64_t>(c) * N : own[t].row(c, N));
      }
    };
    U* __restrict acc = acc_buf.data();
    uint64_t* line = line_buf.data();
    uint64_t* prev = prev_buf.data();
    U any = 0;
    int64_t since_flush = 0;
    for (int64_t sb = s0; sb < s1; sb += kLineSamples) {
      const int64_t rows = std::min(kLineSamples, s1 - sb);
      for (int64_t a = 0; a < N; a += w) {
        const int64_t wt = std::min(w, N - a);
        // Whole rows are read in address order: fetch 4 KB ahead along them; a tile
        // narrower than the row fetches the next row's segment instead.
        const int64_t seg = wt * static_cast<int64_t>(sizeof(U));
        const int64_t ahead = wt == N ? kPrefetchBytes
                                      : std::max<int64_t>(1, (kPrefetchBytes + seg - 1) / seg) * rs *
                                            static_cast<int64_t>(sizeof(U));
        const U* base = acts + a;
        auto counters = [&](int64_t r) { return Count ? cnt.row(labels[r], N) + a : nullptr; };
        if (Pack) {
          const int words = static_cast<int>((rows + 63) / 64);
          for (int k = 0; k < words; ++k) {
            const int64_t blk = sb + 64 * k;
            const int brows = static_cast<int>(std::min<int64_t>(64, s1 - blk));
            for (int g = 0; g * R < brows; ++g) {
              const int group = std::min(R, brows - g * R);
              const int64_t r0 = blk + g * R;
              any |= row_pass<K, Count, Pack, true, Check>(base + r0 * rs, acc, counters(r0), wt, U(1), ahead);
              for (int j = 1; j < group; ++j)
                any |= row_pass<K, Count, Pack, false, Check>(base + (r0 + j) * rs, acc, counters(r0 + j), wt,
                                                              static_cast<U>(U(1) << j), ahead);
              uint64_t* __restrict lw = line + k * w;
              if (g == 0) {
                for (int64_t d = 0; d < wt; ++d) lw[d] = static_cast<uint64_t>(acc[d]);
              } else {
                const int sh = g * R;
                for (int64_t d = 0; d < wt; ++d) lw[d] |= static_cast<uint64_t>(acc[d]) << sh;
              }
            }
          }
          if (whole) {
            store_aligned(line, prev, w, wt, words, packed + sb / 8, row_bytes, sb == s0, sb + kLineSamples >= s1);
            std::swap(line, prev);
          } else {
            store_lines(line, w, wt, words, packed + a * row_bytes + sb / 8, row_bytes, stream);
          }
        } else {
          for (int64_t r = sb; r < sb + rows; ++r)
            any |= row_pass<K, Count, Pack, false, Check>(base + r * rs, acc, counters(r), wt, U(0), ahead);
        }
      }
      if (Count && (since_flush += rows) + kLineSamples > kFlushRows) {
        flush_all();
        since_flush = 0;
      }
    }
    if (Count && since_flush) flush_all();
    if (stream) _mm_sfence();  // streaming stores are weakly ordered: drain them before the join
    bad[t] = any != 0;
  });
  if (Count)
    for (int t = 1; t < nt; ++t) own[t].add_into(out, N);
  for (int b : bad)
    if (b) return true;
  return false;
}

template <bool Count, bool Pack, typename O>
bool dispatch(const void* acts, int kind, int64_t S, int64_t N, int64_t rs, const int32_t* labels, int64_t C,
              O* out, uint8_t* packed, int64_t row_bytes, bool check_finite, int threads) {
  return dispatch_kind(kind, [&](auto k) {
    using K = decltype(k);
    const auto* a = static_cast<const typename K::Bits*>(acts);
    return check_finite ? run<K, Count, Pack, true>(a, S, N, rs, labels, C, out, packed, row_bytes, threads)
                        : run<K, Count, Pack, false>(a, S, N, rs, labels, C, out, packed, row_bytes, threads);
  });
}

}  // namespace

bool count_and_pack_cpu(const void* acts, int kind, int64_t S, int64_t N, int64_t rs, const int32_t* labels,
                        int64_t C, void* out, int out_bytes, uint8_t* packed, int64_t row_bytes, bool check_finite,
                        int threads) {
  if (S == 0 || N == 0) return false;
  const bool count = labels != nullptr && out != nullptr && C > 0;
  if (!count) {
    if (packed == nullptr) return false;
    return dispatch<false, true, int64_t>(acts, kind, S, N, rs, nullptr, 0, nullptr, packed, row_bytes, check_finite,
                                          threads);
  }
  // Beyond the direct strategy's table size the counts need class_counts' sorted
  // sweep, which reads rows in class order: then the masks take a pass of their own.
  const bool split = packed == nullptr || C * N * static_cast<int64_t>(sizeof(Counter)) > kDirectTableBytes;
  if (split) {
    bool bad = class_counts_cpu(acts, kind, S, N, rs, labels, C, out, out_bytes, check_finite, threads, 0);
    if (packed != nullptr)
      bad |= dispatch<false, true, int64_t>(acts, kind, S, N, rs, nullptr, 0, nullptr, packed, row_bytes,
                                            check_finite, threads);
    return bad;
  }
  if (out_bytes == 4)
    return dispatch<true, true>(acts, kind, S, N, rs, labels, C, static_cast<int32_t*>(out), packed, row_bytes,
                                check_finite, threads);
  return dispatch<true, true>(acts, kind, S, N, rs, labels, C, static_cast<int64_t*>(out), packed, row_bytes,
                              check_finite, threads);
}

}  // namespace nnp
