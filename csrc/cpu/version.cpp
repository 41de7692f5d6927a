#include "dffx/version.hpp"

#include "dffx/build_config.hpp"

namespace dffx {

const char* version() { return DFFX_VERSION_STRING; }
bool cuda_compiled() { return DFFX_CUDA_COMPILED_FLAG != 0; }
const char* cuda_architectures() { return DFFX_CUDA_ARCHITECTURES_STRING; }

}  // namespace dffx
