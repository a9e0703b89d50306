// Minimal fork-join over std::thread: the kernels split work into a few large
// contiguous pieces, so a pool buys nothing and a fixed thread count keeps runs
// reproducible on a busy two-core machine.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>
#ifdef __linux__
#include <sched.h>
#endif

namespace nnp {

// The cores this process may run on: its affinity mask (taskset, a cpuset), not the machine's count, since
// a thread beyond them only waits for a core and the team's join waits for it. Python passes its own count
// (nnphases/kernels/cores.py, which also reads the cgroup quota and OMP_NUM_THREADS); this is the fallback.
inline int usable_cores() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Threads to use: the caller's count (0: one per usable core), at most one per work item.
inline int resolve_threads(int threads, int64_t work_items) {
  int t = threads > 0 ? threads : usable_cores();
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(t, work_items)));
}

// Work items for resolve_threads from a number of elements: starting a thread costs
// tens of microseconds, so each one gets at least about a million elements.
inline int64_t element_items(int64_t elements) { return elements / (1 << 20) + 1; }

// Calls fn(t) for t in [0, n) on up to n threads (the caller's thread is thread 0), and returns or throws only
// after every thread has joined: a std::thread destroyed while joinable calls std::terminate ("terminate called
// without an active exception") and kills the interpreter. A thread that cannot be started (EAGAIN on a loaded
// machine) leaves its pieces to the caller's thread; an exception from any piece is rethrown after the join.
template <typename Fn>
void run_threads(int n, Fn fn) {
  if (n < 1) return;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto piece = [&](int t) {
    try {
      fn(t);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  int started = 1;
  try {
    pool.reserve(static_cast<size_t>(n - 1));
    for (; started < n; ++started) pool.emplace_back(piece, started);
  } catch (...) {
    // No more threads: the pieces from `started` on run here.
  }
  piece(0);
  for (int t = started; t < n; ++t) piece(t);
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Piece t of [0, total) split into n near-equal ranges, boundaries multiples of align.
inline void split_range(int64_t total, int n, int t, int64_t align, int64_t& begin, int64_t& end) {
  int64_t units = (total + align - 1) / align;
  begin = std::min(total, units * t / n * align);
  end = std::min(total, units * (t + 1) / n * align);
}

}  // namespace nnp
