// Helpers shared by the CPU sources (not installed).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
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

// More worker threads than this never help (each reserves its stack's address space).
constexpr int kMaxThreads = 256;

inline int resolve_threads(int requested, int64_t work_items) {
  int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  n = std::min(std::max(1, n), kMaxThreads);
  return static_cast<int>(std::min<int64_t>(n, std::max<int64_t>(1, work_items)));
}

/// Run fn(begin, end) over [0, count) split into contiguous chunks, one per thread.
/// Exceptions thrown by a worker are rethrown in the caller. When the system refuses to create
/// another thread, the calling thread runs the chunks left, so the work completes.
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
  auto run_chunk = [&](int t, int64_t begin, int64_t end) {
    try {
      fn(begin, end);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  int t = 0;
  for (; t < n; ++t) {
    const int64_t begin = t * chunk, end = std::min(count, begin + chunk);
    if (begin >= end) break;
    try {
      workers.emplace_back(run_chunk, t, begin, end);
    } catch (const std::system_error&) {  // the system gave no more threads:
      break;                              // the caller runs the chunks left (below)
    } catch (const std::bad_alloc&) {
      break;
    }
  }
  for (; t < n; ++t) {
    const int64_t begin = t * chunk, end = std::min(count, begin + chunk);
    if (begin >= end) break;
    run_chunk(t, begin, end);
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace dffx::detail
