# Find Eigen 3: an explicit EIGEN3_INCLUDE_DIR, a CMake package (system
# libeigen3-dev), or the cmeel-eigen wheel that pyproject.toml lists as a build
# requirement (it installs under <site-packages>/cmeel.prefix).
if(EIGEN3_INCLUDE_DIR)
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  target_include_directories(Eigen3::Eigen INTERFACE ${EIGEN3_INCLUDE_DIR})
  return()
endif()
find_package(Python 3.9 COMPONENTS Interpreter QUIET)
if(Python_EXECUTABLE)
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c "import site,sys; print(';'.join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))"
    OUTPUT_VARIABLE _dffx_sites OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  foreach(_site IN LISTS _dffx_sites)
    if(EXISTS "${_site}/cmeel.prefix")
      list(APPEND CMAKE_PREFIX_PATH "${_site}/cmeel.prefix")
    endif()
  endforeach()
endif()
find_package(Eigen3 3.3 CONFIG QUIET)
if(NOT TARGET Eigen3::Eigen)
  find_path(_dffx_eigen_dir Eigen/Dense PATH_SUFFIXES eigen3)
  if(NOT _dffx_eigen_dir)
    message(FATAL_ERROR "dffx needs Eigen 3: `pip install cmeel-eigen`, install libeigen3-dev, or pass -DEIGEN3_INCLUDE_DIR=...")
  endif()
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  target_include_directories(Eigen3::Eigen INTERFACE ${_dffx_eigen_dir})
endif()
message(STATUS "dffx: Eigen3 found")
