#!/usr/bin/env bash
# The GPU check of issues 5 and 6, as one prepared script for a lent GPU machine (device tool):
# build with the CUDA kernels, run the CUDA tests (kernels vs their CPU/reference twins, the fused
# angular-softmax loss's value and gradient included), time the CUDA benchmarks against their
# references, measure per-face latency stage by stage on the GPU and the CPU, and, when
# DFFX_TRAIN_MINUTES > 0, a short training run on renders synthesized there.
#
# Here first:  bash tools/device/pack.sh
# There:       device run, carry [".device"], command "bash tools/device/check.sh", timeout_s 540
#              (DFFX_TRAIN_MINUTES=3 bash tools/device/check.sh adds the training run)
# A dry run on a CPU machine: DFFX_CUDA=AUTO OUT=/tmp/out bash tools/device/check.sh
#
# Everything goes to $OUT (the device tool brings it back): check.log, env.txt, tests.xml,
# bench_cuda.json, latency_{cuda,cpu}.json (float32 and bfloat16 network each) and, with training,
# train_log.jsonl + dff_gpu.pt.
# Each step runs even when an earlier one failed; the exit status is the number that failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$PWD"
OUT="${OUT:-$repo/build/device-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
export PYTHONUNBUFFERED=1
cuda="${DFFX_CUDA:-ON}"                # ON: a build without the kernels is an error
train_minutes="${DFFX_TRAIN_MINUTES:-0}"
py="${PYTHON:-python3}"
site=/tmp/dffx-site
failed=0
step() {  # step NAME COMMAND...: run, time and record one step
  local name=$1 t0=$SECONDS rc
  shift
  echo "== $name"
  "$@"
  rc=$?
  echo "== $name: rc $rc, $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || failed=$((failed + 1))
  return 0
}

{ date -u; nvidia-smi 2>&1 | head -15; "$py" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; nvcc --version 2>&1 | tail -2; } > "$OUT/env.txt"
cat "$OUT/env.txt"

eigen=/tmp/dffx-eigen/cmeel.prefix/include/eigen3
build_wheel() {  # no package index there: no build isolation, the image's scikit-build-core/pybind11
  "$py" -m pip install --no-index --no-deps --no-build-isolation --target "$site" . \
    -C build-dir=build/device -C cmake.define.EIGEN3_INCLUDE_DIR=$eigen \
    -C cmake.define.DFFX_WITH_CUDA="$cuda" -C cmake.define.DFFX_CUDA_ARCHITECTURES=90
}
build_cmake() {  # fallback (e.g. a scikit-build-core too old): CMake directly, Python files copied
  rm -rf "$site" && mkdir -p "$site" &&
  cmake -S . -B build/device-cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DDFFX_BUILD_PYTHON=ON \
    -DCMAKE_INSTALL_PREFIX="$site" -DPython_EXECUTABLE="$(command -v "$py")" \
    -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DEIGEN3_INCLUDE_DIR=$eigen \
    -DDFFX_WITH_CUDA="$cuda" -DDFFX_CUDA_ARCHITECTURES=90 &&
  cmake --build build/device-cmake --parallel &&
  tar -C python -cf - --exclude='*.so' --exclude=dffx/lib --exclude=dffx/include --exclude=__pycache__ dffx |
    tar -C "$site" -xf - &&
  cmake --install build/device-cmake
}
build() {
  rm -rf "$site" && mkdir -p "$site"
  "$py" -m pip install --quiet --no-index --no-deps --target /tmp/dffx-eigen .device/eigen/*.whl || return 1
  if [ -n "${DFFX_BUILD_WITH_CMAKE:-}" ] || ! build_wheel; then
    echo "== building with CMake directly"
    build_cmake || return 1
  fi
  PYTHONPATH="$site" "$py" -m dffx info
}
step build build
export PYTHONPATH="$site" DFFX_FACE_MODEL="$repo/.device/face_model.npz"
# The benchmarks read their photos from ../shared/data/dev, which does not travel.
for photo in aflw2000-3d-sample/image00050.jpg dlib-examples/2008_002470.jpg; do
  if [ ! -f "../shared/data/dev/$photo" ]; then
    mkdir -p "../shared/data/dev/$(dirname $photo)" && cp ".device/dev/$(basename $photo)" "../shared/data/dev/$photo"
  fi
done
[ "$cuda" = ON ] && export DFFX_EXPECT_CUDA=1   # tests/ops/test_cuda.py fails if the kernels are missing

# Tests of the native ops and the network: the CUDA ones compare each kernel with its CPU twin.
step tests "$py" -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml" \
  tests/ops/test_cuda.py tests/ops/test_loss.py tests/ops/test_sampling.py tests/ops/test_raster.py tests/nn/test_nn.py
# CUDA benchmarks, each against its reference in the same run.
step bench "$py" -m pytest -q -p no:cacheprovider -m cuda benchmarks --benchmark-json="$OUT/bench_cuda.json"

has_gpu() { "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; }

# latency_<device>.json: a list of two reports, float32 and bfloat16 network (one file per device:
# at most 8 files come back).
latency_on() {
  local device=$1 photo=.device/dev/image00050.jpg box=150,160,310,370
  for precision in float32 bfloat16; do
    "$py" tools/device/latency.py $photo --box $box --device $device --precision $precision \
      --json /tmp/latency_$precision.json || return 1
  done
  "$py" -c "import json, sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], 'w'), indent=1)" \
    "$OUT/latency_$device.json" /tmp/latency_float32.json /tmp/latency_bfloat16.json
}
latency() {
  if has_gpu; then
    latency_on cuda || return 1
  fi
  latency_on cpu
}
step latency latency

train() {
  local data=/tmp/dffx-synth device=cpu
  has_gpu && device=cuda
  "$py" -m dffx synth --photos .device/photos --out $data --views 4000 --workers 0 --no-progress || return 1
  cp .device/segmentations.npz $data/
  "$py" -m dffx train dff --data $data --out /tmp/dffx-train/dff_gpu.pt --device $device \
    --steps 100000 --time-limit "$train_minutes" --batch-size 32 --workers 8 --val-every 500 --val-batches 4 \
    --checkpoint-every 100000 --no-progress || return 1
  cp /tmp/dffx-train/dff_gpu.pt /tmp/dffx-train/dff_gpu_checkpoints/train_log.jsonl "$OUT/"
}
if [ "$train_minutes" != 0 ]; then step train train; fi

echo "== $failed step(s) failed; results in $OUT"
exit $failed
