// Stand-in for CUDA's <math_constants.h> (what csrc/cuda uses), for the CPU emulator.
#pragma once
#include <limits>
#define CUDART_INF_F (std::numeric_limits<float>::infinity())
