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

# Single-config generators put the programs in the build dir, multi-config ones in Release/.
bin="${build_dir}"
[[ -x "${bin}/dffx_example" ]] || bin="${build_dir}/Release"
"${bin}/dffx_example"

# The cascade on DFF maps: its inputs come from the Python package (PyTorch and the face model).
if [[ -n "${DFFX_FACE_MODEL:-}" ]] && "${python}" -c "import torch" 2>/dev/null; then
  "${python}" "${repo_root}/examples/cpp/write_align_inputs.py" "${build_dir}/align-inputs"
  "${bin}/dffx_align_maps" "${build_dir}/align-inputs/cascade.dffx" "${build_dir}/align-inputs/maps.f32" \
    "${build_dir}/align-inputs/expected.f32"
else
  echo "dffx_align_maps skipped: it needs PyTorch and DFFX_FACE_MODEL to write its inputs"
fi
