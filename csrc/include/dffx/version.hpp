// Version and build information of the dffx core.
#pragma once
namespace dffx {

/// Library version, e.g. "0.1.0" (same as the Python package's __version__).
const char* version();

/// True when this build of the core contains the CUDA kernels.
bool cuda_compiled();

/// Semicolon-separated CUDA architectures the kernels were built for ("" if none).
const char* cuda_architectures();

/// Number of CUDA devices the runtime can see; 0 without CUDA, driver or GPU (never throws).
int cuda_device_count();

}  // namespace dffx
