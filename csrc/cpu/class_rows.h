// Per-thread counter rows of the classes a call's labels name, shared by
// class_counts and count_and_pack: a call costs its rows plus the rows of the
// classes it sees, never a zeroed and flushed [classes, nodes] table.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace nnp {

// One thread's counter rows, one per class its rows name, in the order first seen.
template <typename T>
struct ClassRows {
  std::vector<int32_t> slot;  // class -> row, -1 until seen
  std::vector<int32_t> cls;   // row -> class
  // Room for every class the thread can see, left uninitialised (a std::vector would zero it all, which is
  // the cost this avoids): a row is zeroed when its class is first seen.
  std::unique_ptr<T[]> rows;

  ClassRows(int64_t C, int64_t most, int64_t N) : slot(C, -1), rows(new T[most * N]) { cls.reserve(most); }
  T* row(int32_t c, int64_t N) {
    int32_t k = slot[c];
    if (k < 0) {
      k = slot[c] = static_cast<int32_t>(cls.size());
      cls.push_back(c);
      std::memset(rows.get() + k * N, 0, N * sizeof(T));
    }
    return rows.get() + k * N;
  }
  // Adds every row into its class's row of `out` ([classes, N]).
  template <typename O>
  void add_into(O* out, int64_t N) const {
    for (size_t k = 0; k < cls.size(); ++k) {
      O* dst = out + static_cast<int64_t>(cls[k]) * N;
      const T* src = rows.get() + static_cast<int64_t>(k) * N;
      for (int64_t i = 0; i < N; ++i) dst[i] += static_cast<O>(src[i]);
    }
  }
};

}  // namespace nnp
