// A CPU emulator of the CUDA execution model, just large enough to run dffx's kernels
// (csrc/cuda/*.cu compiled as C++ against cuda_runtime.h beside this file). Tests only.
//
// Each block runs on the calling OS thread with one fiber (ucontext) per CUDA thread. A fiber
// runs until it reaches __syncthreads / __syncthreads_count / __shfl_xor_sync or returns; the
// scheduler then releases a warp whose lanes all wait at a shuffle, or the block once every
// thread waits at the barrier. What would hang or be undefined on a GPU is an error here
// (std::runtime_error naming it): a barrier some threads exited before, threads of one block
// waiting at different kinds of barrier, a full-mask shuffle with lanes missing or mismatched.
// The order in which the threads of a block run between barriers (and the blocks of a grid)
// is configurable: ascending, descending or shuffled per round, so that a kernel whose result
// depends on that order (an intra-block race) gives different answers under different orders.
#include <ucontext.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "cuda_runtime.h"
#include "emulator.hpp"

// AddressSanitizer builds (build.py --sanitize) must be told about every stack switch.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define DFFX_EMU_ASAN 1
#else
#define DFFX_EMU_ASAN 0
#endif

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace dffx_emu {
namespace {

enum class Wait { Running, Barrier, BarrierCount, Shuffle, Done };

struct Thread {
  ucontext_t context;
  Wait wait = Wait::Running;
  dim3 index;
  int predicate = 0, count = 0;  // __syncthreads_count in / out
  float value = 0.0f, result = 0.0f;
  unsigned mask = 0;
  int lane_mask = 0, width = 32;
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kWarp = 32;

struct State {
  Settings settings;
  Stats stats;
  std::mt19937 rng{0};
  cudaError_t last_error = cudaSuccess;
  std::vector<Thread> threads;
  std::vector<std::unique_ptr<char[]>> stacks;
  ucontext_t scheduler;
  int current = -1;  // running thread, -1 outside a block
  void (*body)(void*) = nullptr;
  void* context = nullptr;
  std::string kernel_error;  // an exception thrown inside a kernel body
  const void* scheduler_stack = nullptr;  // AddressSanitizer: the scheduler's stack, as a fiber sees it
  size_t scheduler_stack_size = 0;
  std::unordered_set<const void*> poisoned;  // __shared__ arrays poisoned in the running block
};

State& state() {
  static State s;
  return s;
}

Thread& current_thread(const char* who) {
  State& s = state();
  if (s.current < 0) throw std::logic_error(std::string(who) + " called outside an emulated kernel");
  return s.threads[s.current];
}

// Stack-switch notes for AddressSanitizer (no-ops in a normal build). fiber_leaving gets a null
// fake_stack when the fiber ends for good.
void fiber_entered() {
#if DFFX_EMU_ASAN
  State& s = state();
  __sanitizer_finish_switch_fiber(nullptr, &s.scheduler_stack, &s.scheduler_stack_size);
#endif
}

void fiber_leaving(void** fake_stack) {
#if DFFX_EMU_ASAN
  State& s = state();
  __sanitizer_start_switch_fiber(fake_stack, s.scheduler_stack, s.scheduler_stack_size);
#else
  (void)fake_stack;
#endif
}

void trampoline() {
  fiber_entered();
  State& s = state();
  try {
    s.body(s.context);
  } catch (const std::exception& e) {
    if (s.kernel_error.empty()) s.kernel_error = e.what();
  }
  s.threads[s.current].wait = Wait::Done;
  fiber_leaving(nullptr);  // uc_link returns to the scheduler
}

// Suspend the running fiber until the scheduler resumes it.
void yield_to_scheduler(Thread& t) {
  void* fake_stack = nullptr;
  fiber_leaving(&fake_stack);
  swapcontext(&t.context, &state().scheduler);
#if DFFX_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, &state().scheduler_stack, &state().scheduler_stack_size);
#endif
}

// Run fiber i until it waits or ends.
void resume(int i) {
  State& s = state();
  Thread& t = s.threads[i];
  s.current = i;
  threadIdx = t.index;
#if DFFX_EMU_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, s.stacks[i].get(), kStackBytes);
#endif
  swapcontext(&s.scheduler, &t.context);
#if DFFX_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
  s.current = -1;
}

std::vector<int> order_of(int n) {
  State& s = state();
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (s.settings.order == Order::Descending) std::reverse(order.begin(), order.end());
  if (s.settings.order == Order::Shuffled) std::shuffle(order.begin(), order.end(), s.rng);
  return order;
}

std::string block_name() {
  return "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " +
         std::to_string(blockIdx.z) + ")";
}

// Release every warp whose lanes all wait at a shuffle. Returns whether any was released.
bool release_shuffles() {
  State& s = state();
  const int n = static_cast<int>(s.threads.size());
  bool released = false;
  for (int w0 = 0; w0 < n; w0 += kWarp) {
    const int w1 = std::min<int>(n, w0 + kWarp);
    int waiting = 0, done = 0;
    for (int i = w0; i < w1; ++i) {
      waiting += s.threads[i].wait == Wait::Shuffle;
      done += s.threads[i].wait == Wait::Done;
    }
    if (waiting == 0) continue;
    if (waiting + done != w1 - w0) continue;  // some lanes still at a block barrier: maybe later
    const Thread& first = s.threads[w0];
    const unsigned present = (w1 - w0 == static_cast<int>(kWarp)) ? 0xFFFFFFFFu : ((1u << (w1 - w0)) - 1u);
    for (int i = w0; i < w1; ++i) {
      const Thread& t = s.threads[i];
      if (t.wait == Wait::Done || t.mask != first.mask || t.lane_mask != first.lane_mask || t.width != first.width)
        throw std::runtime_error("emulator: " + block_name() + ", warp " + std::to_string(w0 / kWarp) +
                                 ": lanes left or disagree before __shfl_xor_sync (mask/offset/width differ)");
    }
    if (first.mask != present)
      throw std::runtime_error("emulator: " + block_name() + ": __shfl_xor_sync mask does not name the warp's lanes");
    for (int i = w0; i < w1; ++i) {
      Thread& t = s.threads[i];
      const int lane = i - w0, source = lane ^ t.lane_mask;
      const bool same_segment = source / t.width == lane / t.width;
      if (same_segment && source >= w1 - w0)
        throw std::runtime_error("emulator: __shfl_xor_sync reads a lane that does not exist");
      t.result = same_segment ? s.threads[w0 + source].value : t.value;
      t.wait = Wait::Running;
    }
    ++s.stats.shuffles;
    released = true;
  }
  return released;
}

// Release the block barrier if every thread waits at it. Returns whether it was released.
bool release_barrier() {
  State& s = state();
  int plain = 0, counting = 0, done = 0, total = 0;
  for (const Thread& t : s.threads) {
    plain += t.wait == Wait::Barrier;
    counting += t.wait == Wait::BarrierCount;
    done += t.wait == Wait::Done;
    total += t.predicate * (t.wait == Wait::BarrierCount);
  }
  const int n = static_cast<int>(s.threads.size());
  if (plain + counting == 0) return false;
  if (plain + counting + done != n)
    throw std::runtime_error("emulator: " + block_name() + ": deadlock, threads wait at a barrier and at a shuffle");
  if (done > 0)
    throw std::runtime_error("emulator: " + block_name() + ": " + std::to_string(done) +
                             " threads exited while others wait at __syncthreads (divergent barrier)");
  if (plain > 0 && counting > 0)
    throw std::runtime_error("emulator: " + block_name() + ": threads wait at __syncthreads and __syncthreads_count");
  for (Thread& t : s.threads) {
    t.count = total;
    t.wait = Wait::Running;
  }
  ++s.stats.barriers;
  return true;
}

void run_block() {
  State& s = state();
  const int n = static_cast<int>(s.threads.size());
  s.poisoned.clear();  // every block starts with undefined shared memory
  for (int i = 0; i < n; ++i) {
    Thread& t = s.threads[i];
    t = Thread{};
    t.index = dim3(i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y));
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = s.stacks[i].get();
    t.context.uc_stack.ss_size = kStackBytes;
    t.context.uc_link = &s.scheduler;
    makecontext(&t.context, trampoline, 0);
  }
  for (;;) {
    for (int i : order_of(n)) {
      Thread& t = s.threads[i];
      if (t.wait != Wait::Running) continue;
      resume(i);
      if (!s.kernel_error.empty()) throw std::runtime_error("emulator: kernel threw: " + s.kernel_error);
    }
    if (std::all_of(s.threads.begin(), s.threads.end(), [](const Thread& t) { return t.wait == Wait::Done; })) return;
    if (release_shuffles()) continue;
    if (release_barrier()) continue;
    throw std::runtime_error("emulator: " + block_name() + ": deadlock (a warp waits at a shuffle forever)");
  }
}

bool valid_configuration(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7FFFFFFFu && grid.y <= 65535 &&
         grid.z <= 65535 && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 && block.y <= 1024 &&
         block.z <= 64 && threads <= 1024;
}

}  // namespace

void configure(const Settings& settings) {
  State& s = state();
  s.settings = settings;
  s.rng.seed(settings.seed);
}

Stats stats() { return state().stats; }
void reset_stats() { state().stats = Stats{}; }

cudaError_t launch(dim3 grid, dim3 block, void (*body)(void*), void* context) {
  State& s = state();
  if (s.current >= 0) throw std::logic_error("emulator: kernel launched from inside a kernel");
  if (!valid_configuration(grid, block)) return cudaErrorInvalidConfiguration;
  const int n = static_cast<int>(block.x * block.y * block.z);
  while (static_cast<int>(s.stacks.size()) < n) s.stacks.emplace_back(new char[kStackBytes]);
  s.threads.assign(n, Thread{});
  s.body = body;
  s.context = context;
  s.kernel_error.clear();
  blockDim = block;
  gridDim = grid;
  const int64_t blocks = int64_t{grid.x} * grid.y * grid.z;
  std::vector<int64_t> block_order(blocks);
  std::iota(block_order.begin(), block_order.end(), 0);
  if (s.settings.order == Order::Descending) std::reverse(block_order.begin(), block_order.end());
  if (s.settings.order == Order::Shuffled) std::shuffle(block_order.begin(), block_order.end(), s.rng);
  for (int64_t b : block_order) {
    blockIdx = dim3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                    static_cast<unsigned>(b / (int64_t{grid.x} * grid.y)));
    run_block();
    ++s.stats.blocks;
  }
  ++s.stats.launches;
  s.stats.threads += blocks * n;
  return cudaSuccess;
}

void Launch::record(cudaError_t err) {
  if (err != cudaSuccess) state().last_error = err;
}

int sm_count() { return state().settings.sm_count; }

void poison_shared(void* array, size_t bytes) {
  State& s = state();
  if (s.current < 0) throw std::logic_error("emulator: __shared__ array declared outside an emulated kernel");
  if (s.poisoned.insert(array).second) std::memset(array, 0xFF, bytes);
}

}  // namespace dffx_emu

// ------------------------------------------------------------------ device functions
void __syncthreads() {
  auto& t = dffx_emu::current_thread("__syncthreads");
  t.wait = dffx_emu::Wait::Barrier;
  dffx_emu::yield_to_scheduler(t);
}

int __syncthreads_count(int predicate) {
  auto& t = dffx_emu::current_thread("__syncthreads_count");
  t.predicate = predicate != 0;
  t.wait = dffx_emu::Wait::BarrierCount;
  dffx_emu::yield_to_scheduler(t);
  return dffx_emu::current_thread("__syncthreads_count").count;
}

float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width) {
  auto& t = dffx_emu::current_thread("__shfl_xor_sync");
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    throw std::runtime_error("emulator: __shfl_xor_sync width must be a power of two <= 32");
  t.mask = mask;
  t.value = value;
  t.lane_mask = lane_mask;
  t.width = width;
  t.wait = dffx_emu::Wait::Shuffle;
  dffx_emu::yield_to_scheduler(t);
  return dffx_emu::current_thread("__shfl_xor_sync").result;
}

// ------------------------------------------------------------------ runtime API subset
cudaError_t cudaGetLastError() {
  cudaError_t err = dffx_emu::state().last_error;
  dffx_emu::state().last_error = cudaSuccess;
  return err;
}

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "unspecified launch failure";
  }
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (attr != cudaDevAttrMultiProcessorCount || device != 0) return cudaErrorInvalidValue;
  *value = dffx_emu::sm_count();
  return cudaSuccess;
}

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t) {
  *ptr = std::malloc(bytes == 0 ? 1 : bytes);
  if (!*ptr) return cudaErrorMemoryAllocation;
  std::memset(*ptr, 0xFF, bytes);  // device memory starts undefined: NaN floats, -1 integers
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
