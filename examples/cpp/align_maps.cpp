// dffx C++ example 2: the alignment cascade (paper Sec. III-C) on DFF maps computed elsewhere.
//
// A C++ program runs the DFF network itself (e.g. ONNX Runtime on the file of `dffx export-onnx`)
// on canonical 224x224 face crops and hands the maps to dffx::Cascade, loaded from the file of
// `dffx export-cascade`. This program reads such maps from a raw float32 file and checks the
// landmarks against the ones dffx's Python cascade found for the same maps.
//
// usage: dffx_align_maps CASCADE_FILE MAPS_F32 EXPECTED_F32
//   MAPS_F32      raw float32 (B, 32, 224, 224) DFF maps (little-endian, row-major)
//   EXPECTED_F32  raw float32 (B, 68, 2) landmarks from dffx.align.Cascade.run
// write_align_inputs.py beside this file writes all three; build_and_run.sh runs both.
#include <dffx/dffx.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  const auto bytes = static_cast<size_t>(in.tellg());
  std::vector<float> values(bytes / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s CASCADE_FILE MAPS_F32 EXPECTED_F32\n", argv[0]);
    return 2;
  }
  try {
    const dffx::Cascade cascade = dffx::Cascade::load(argv[1]);
    const std::vector<float> maps = read_floats(argv[2]), expected = read_floats(argv[3]);
    const int64_t per_face = cascade.channels() * cascade.crop_size() * cascade.crop_size();
    const int64_t batch = static_cast<int64_t>(maps.size()) / per_face;
    if (batch == 0 || batch * per_face != static_cast<int64_t>(maps.size()) ||
        expected.size() != static_cast<size_t>(batch * 68 * 2))
      throw std::runtime_error("maps and expected landmarks do not describe the same faces");

    const dffx::CascadeResult result = cascade.run(maps.data(), batch);
    double worst = 0.0;
    for (int64_t b = 0; b < batch; ++b) {
      double face_worst = 0.0;
      for (int i = 0; i < 68 * 2; ++i)
        face_worst = std::max(face_worst, std::abs(double{result.landmarks[b * 136 + i]} - expected[b * 136 + i]));
      int visible = 0;
      for (int l = 0; l < 68; ++l) visible += result.visible[b * 68 + l];
      const double yaw = result.cameras[b * 6 + 2] * 180.0 / 3.14159265358979323846;
      std::printf("face %lld: score %.3f, yaw %.1f deg, %d/68 landmarks visible, nose tip (%.1f, %.1f) px, "
                  "%.2g px from Python's\n",
                  static_cast<long long>(b), result.scores.empty() ? 0.0 : result.scores[b], yaw, visible,
                  result.landmarks[b * 136 + 2 * 30], result.landmarks[b * 136 + 2 * 30 + 1], face_worst);
      worst = std::max(worst, face_worst);
    }
    const bool ok = worst < 1e-3;
    std::printf("%s: %lld faces aligned in C++, landmarks within %.2g px of the Python cascade\n",
                ok ? "all checks passed" : "FAILED", static_cast<long long>(batch), worst);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
