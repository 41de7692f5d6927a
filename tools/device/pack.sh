#!/usr/bin/env bash
# Pack what the GPU check (tools/device/check.sh) needs beyond the repository into .device/,
# small enough to travel with the working tree to a lent GPU machine (64 MiB in all, the
# tracked files included). Run here, in the repository root, with the dev environment:
#
#   bash tools/device/pack.sh            # then run check.sh there with carry [".device"]
#
# .device/ holds (about 24 MB):
#   eigen/         the cmeel-eigen wheel: Eigen headers for the build (the GPU machine has no
#                  package index; its image has torch, pybind11, scikit-build-core, cmake, nvcc)
#   face_model.npz the face model in dffx's compact format (FaceModel.save, ~15 MB), from
#                  $DFFX_FACE_MODEL or ../shared/data/ict-facekit (never committed: .device/ is
#                  ignored through .git/info/exclude)
#   photos/        the 300 smallest 300w-train photos with their .pts, for a short training run
#                  on renders synthesized there (Sec. III-A)
#   segmentations.npz  the CVT segmentations those renders are trained with
#   dev/           the two benchmark photos of benchmarks/test_bench_latency.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
shared="${DFFX_SHARED:-$PWD/../shared}"
model="${DFFX_FACE_MODEL:-$shared/data/ict-facekit}"
photos_src="$shared/data/300w-train"
n_photos="${DFFX_DEVICE_PHOTOS:-300}"
dest=.device

grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
rm -rf "$dest"
mkdir -p "$dest/eigen" "$dest/photos" "$dest/dev"

python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 -d "$dest/eigen" "cmeel-eigen>=3.4,<3.5"

python - "$model" "$dest/face_model.npz" <<'EOF'
import sys
import dffx
dffx.load_face_model(sys.argv[1]).save(sys.argv[2])
EOF

# The smallest photos keep the carry small; they are only for a throughput and smoke run.
ls -S "$photos_src"/*/*.jpg | tail -n "$n_photos" | while read -r jpg; do
  sub="$dest/photos/$(basename "$(dirname "$jpg")")"
  mkdir -p "$sub"
  cp "$jpg" "${jpg%.jpg}.pts" "$sub/"
done
# 100 CVT segmentations x 500 patches of this face model (Sec. III-B): an existing file
# (DFFX_SEGMENTATIONS, e.g. a training set's segmentations.npz) or made here.
if [ -n "${DFFX_SEGMENTATIONS:-}" ]; then
  cp "$DFFX_SEGMENTATIONS" "$dest/segmentations.npz"
else
  python -m dffx segment --out "$dest/segmentations.npz" --model "$dest/face_model.npz" --no-progress
fi

cp "$shared/data/dev/aflw2000-3d-sample/image00050.jpg" "$dest/dev/"
cp "$shared/data/dev/dlib-examples/2008_002470.jpg" "$dest/dev/"

echo "== .device: $(du -sh "$dest" | cut -f1); with the tracked files the working tree sends about"
python - <<'EOF'
import subprocess, os
files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True).stdout.split(b"\0")
tree = sum(os.path.getsize(f) for f in files if f and os.path.isfile(f))
carry = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(".device") for f in fs)
total = (tree + carry) / 2**20
print(f"   {total:.1f} MiB (limit 64)")
raise SystemExit(0 if total < 64 else "over the 64 MiB limit: set DFFX_DEVICE_PHOTOS lower")
EOF
