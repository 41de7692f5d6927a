// Control of the CUDA emulator (emulator.cpp): thread order, reported SM count, counters.
#pragma once
#include <cstdint>

namespace dffx_emu {

/// Order in which the threads of a block run between two barriers, and the blocks of a grid.
enum class Order : int { Ascending = 0, Descending = 1, Shuffled = 2 };

struct Settings {
  Order order = Order::Ascending;
  unsigned seed = 0;   ///< for Order::Shuffled
  int sm_count = 132;  ///< cudaDevAttrMultiProcessorCount (an H100 / H200 SXM has 132)
};

/// What the emulator has run since the last reset_stats().
struct Stats {
  int64_t launches = 0, blocks = 0, threads = 0;
  int64_t barriers = 0;  ///< block barriers released
  int64_t shuffles = 0;  ///< warp shuffles released
};

void configure(const Settings& settings);
Stats stats();
void reset_stats();
int sm_count();

}  // namespace dffx_emu
