#!/usr/bin/env bash
# Configure, build and run the C++ example against the installed dffx Python package.
#
# Usage: bash examples/cpp/build_and_run.sh [BUILD_DIR]
#   BUILD_DIR defaults to build/example-cpp under the repository root; a relative BUILD_DIR
#   given on the command line is relative to the current directory.
#   PYTHON selects the interpreter whose dffx is used (default: python).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build_dir="${1:-${repo_root}/build/example-cpp}"
python="${PYTHON:-python}"

# The package ships dffxConfig.cmake; ask it where, rather than guessing site-packages.
cmake_dir="$("${python}" -c "import dffx.info as i; print(i.cmake_dir())")"
if [[ ! -f "${cmake_dir}/dffxConfig.cmake" ]]; then
  echo "error: no dffxConfig.cmake in '${cmake_dir}' (is dffx installed for ${python}?)" >&2
  exit 1
fi

cmake -S "${repo_root}/examples/cpp" -B "${build_dir}" -Ddffx_DIR="${cmake_dir}" -DCMAKE_BUILD_TYPE=Release
cmake --build "${build_dir}" --config Release --parallel

# Single-config generators put the program in the build dir, multi-config ones in Release/.
exe="${build_dir}/dffx_example"
[[ -x "${exe}" ]] || exe="${build_dir}/Release/dffx_example"
"${exe}"
