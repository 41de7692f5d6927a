// Helpers shared by the CPU sources (not installed).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace dffx::detail {

[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument(what); }

inline void require(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

inline void require_finite(const float* data, int64_t count, const char* name) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(data[i]))
      fail(std::string(name) + " contains a non-finite value (NaN or inf) at flat index " + std::to_string(i));
}

inline int resolve_threads(int requested, int64_t work_items) {
  int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  n = std::max(1, n);
  return static_cast<int>(std::min<int64_t>(n, std::max<int64_t>(1, work_items)));
}

/// Run fn(begin, end) over [0, count) split into contiguous chunks, one per thread.
/// Exceptions thrown by a worker are rethrown in the caller.
template <class Fn>
void parallel_for(int64_t count, int num_threads, Fn&& fn) {
  const int n = resolve_threads(num_threads, count);
  if (n == 1) {
    fn(int64_t{0}, count);
    return;
  }
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(n);
  const int64_t chunk = (count + n - 1) / n;
  for (int t = 0; t < n; ++t) {
    const int64_t begin = t * chunk, end = std::min(count, begin + chunk);
    if (begin >= end) break;
    workers.emplace_back([&, t, begin, end] {
      try {
        fn(begin, end);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace dffx::detail
