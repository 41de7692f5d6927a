# Decide whether the CUDA kernels are compiled. Sets DFFX_CUDA_ENABLED,
# DFFX_CUDA_COMPILED_INT and DFFX_CUDA_ARCHITECTURES_USED, and defines
# dffx_configure_cuda_target(target).
set(DFFX_CUDA_ENABLED OFF)
string(TOUPPER "${DFFX_WITH_CUDA}" _dffx_cuda_mode)
if(NOT _dffx_cuda_mode STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "${DFFX_CUDA_ARCHITECTURES}")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(DFFX_CUDA_ENABLED ON)
  elseif(_dffx_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "DFFX_WITH_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  endif()
endif()

if(DFFX_CUDA_ENABLED)
  set(DFFX_CUDA_COMPILED_INT 1)
  set(DFFX_CUDA_ARCHITECTURES_USED "${CMAKE_CUDA_ARCHITECTURES}")
  message(STATUS "dffx: CUDA kernels ON (${CMAKE_CUDA_COMPILER}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
else()
  set(DFFX_CUDA_COMPILED_INT 0)
  set(DFFX_CUDA_ARCHITECTURES_USED "")
  message(STATUS "dffx: CUDA kernels OFF (CPU-only build)")
endif()

function(dffx_configure_cuda_target target)
  set_target_properties(${target} PROPERTIES
    CUDA_STANDARD 17
    CUDA_RUNTIME_LIBRARY Static)
  # No FMA contraction: the CUDA rasterizer must match the C++ one bit for bit.
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false>)
  target_link_libraries(${target} PRIVATE CUDA::cudart_static)
endfunction()
