// Hostile input to the C++ core (issue 28): built with AddressSanitizer and UBSan in CI
// (.ci/run, -DDFFX_BUILD_TESTS=ON -DDFFX_SANITIZE=ON), so an overflow, a read past a buffer or
// an allocation sized by a file header fails the run instead of passing silently.
//
// Usage: dffx_hostile_input_test [CASCADE_FILE [FUZZ_CASES]]
//   Without a file only the crafted cases run; with one (`dffx export-cascade --out FILE`) a
//   seeded fuzz test also feeds FUZZ_CASES (default 2000) mutations of it to the reader.
// Every case must either succeed or throw std::runtime_error / std::invalid_argument with a
// one-line message; anything else (another exception, a crash, a sanitizer report) fails.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dffx/cascade.hpp"
#include "dffx/raster.hpp"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::cerr << "FAIL: " << what << "\n";
    ++failures;
  }
}

// Runs fn; true when it threw one of the library's named errors whose message contains `part`.
template <class Fn>
bool throws_named(Fn&& fn, const std::string& part) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return std::string(e.what()).find(part) != std::string::npos;
  } catch (const std::runtime_error& e) {
    return std::string(e.what()).find(part) != std::string::npos;
  }
  return false;
}

std::string header(const std::string& name, uint8_t dtype, const std::vector<int64_t>& dims) {
  std::string out;
  const auto put = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  const uint32_t length = static_cast<uint32_t>(name.size()), ndim = static_cast<uint32_t>(dims.size());
  put(&length, 4);
  out += name;
  put(&dtype, 1);
  put(&ndim, 4);
  for (int64_t d : dims) put(&d, 8);
  return out;
}

std::string file_with(const std::string& arrays, uint32_t count) {
  std::string out("DFFXCAS1", 8);
  out.append(reinterpret_cast<const char*>(&count), 4);
  return out + arrays;
}

void crafted_cascade_files() {
  const auto load = [](const std::string& bytes) { dffx::Cascade::from_bytes(bytes.data(), bytes.size()); };
  // case 4: 2^28 float64 declared by a 30-byte file
  check(throws_named([&] { load(file_with(header("mean", 1, {int64_t{1} << 28}), 1)); }, "shorter than its header"),
        "a header larger than the file");
  // case 4: dims that wrap around to 0 elements
  check(throws_named([&] { load(file_with(header("mean", 0, {int64_t{1} << 32, int64_t{1} << 32, 1}), 1)); },
                     "too large"),
        "dims whose product wraps around");
  check(throws_named([&] { load(file_with(header("mean", 0, {-1}), 1)); }, "malformed shape"), "a negative dim");
  // case 11: a name with a byte that is not UTF-8 is shown escaped
  check(throws_named([&] { load(file_with(header("m\xff" "an", 9, {1}), 1)); }, "m\\xffan"), "an escaped name");
  check(throws_named([&] { load(std::string("DFFXCAS1\xff\xff\xff\xff", 12)); }, "truncated"), "a huge array count");
}

void huge_images() {
  // case 1: one triangle and its corners as landmarks, in images up to the largest side accepted
  const std::vector<float> v = {2.f, 2.f, 1.f, 30.f, 3.f, 1.f, 4.f, 25.f, 1.f};
  const std::vector<int32_t> tri = {0, 1, 2}, landmarks = {0, 1, 2};
  std::vector<uint8_t> small(3), huge(3);
  dffx::RasterShape s{1, 3, 1, 40, 40};
  dffx::mesh_landmark_visibility(v.data(), tri.data(), landmarks.data(), 3, s, 0.5f, small.data(), 1);
  for (int64_t side : {int64_t{100000}, dffx::kMaxImageSide}) {
    s.height = s.width = side;
    dffx::mesh_landmark_visibility(v.data(), tri.data(), landmarks.data(), 3, s, 0.5f, huge.data(), 2);
    check(huge == small, "visibility in a " + std::to_string(side) + "-px image");
  }
  // case 3: thousands of threads asked for give the one-thread result (capped, and any thread the
  // system refuses runs in the caller)
  std::vector<float> depth1(40 * 40), depth2(40 * 40), bary1(40 * 40 * 3), bary2(40 * 40 * 3);
  std::vector<int32_t> id1(40 * 40), id2(40 * 40);
  const dffx::RasterShape small_shape{1, 3, 1, 40, 40};
  dffx::rasterize(v.data(), tri.data(), small_shape, depth1.data(), id1.data(), bary1.data(), 1);
  dffx::rasterize(v.data(), tri.data(), small_shape, depth2.data(), id2.data(), bary2.data(), 5000);
  check(depth1 == depth2 && id1 == id2 && bary1 == bary2, "5000 threads asked for");
  s.height = s.width = int64_t{1} << 32;
  check(throws_named([&] {
          dffx::mesh_landmark_visibility(v.data(), tri.data(), landmarks.data(), 3, s, 0.5f, huge.data(), 2);
        }, "per side"),
        "a 2^32-px image is refused");
}

// Seeded mutations of a real cascade file: byte flips, overwritten 8-byte words (sizes, scalars)
// and truncations. A file that still loads is run once on blank maps every 50th case.
void fuzz(const std::string& path, int cases) {
  std::ifstream in(path, std::ios::binary);
  const std::string original((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check(!original.empty(), "the cascade file " + path + " can be read");
  if (original.empty()) return;
  const dffx::Cascade reference = dffx::Cascade::from_bytes(original.data(), original.size());
  // case 2: a crop size of 2^32 (eight changed bytes) is refused at load instead of crashing run()
  const std::string scalars = std::string("\x07\0\0\0", 4) + "scalars";
  const size_t at_scalars = original.find(scalars);
  check(at_scalars != std::string::npos, "the file has its scalars array");
  if (at_scalars != std::string::npos) {
    std::string crafted = original;
    const double crop = 4294967296.0;  // w_reg, tolerance, crop, C, m1 follow the 1-D header
    std::memcpy(&crafted[at_scalars + scalars.size() + 1 + 4 + 8 + 2 * 8], &crop, 8);
    check(throws_named([&] { dffx::Cascade::from_bytes(crafted.data(), crafted.size()); }, "scalars out of range"),
          "a 2^32 crop size is refused");
  }
  // case 3: fit_landmarks refuses landmarks and start cameras that are not finite or have no scale,
  // and survives huge finite ones (a named error or a result, never a crash)
  {
    std::vector<float> landmarks(2 * 68, 100.0f);
    std::vector<double> camera = {1.0, 0.0, 0.0, 0.0, 112.0, 112.0};
    for (int l = 0; l < 68; ++l) landmarks[2 * l] += static_cast<float>(l % 9), landmarks[2 * l + 1] += static_cast<float>(l / 9);
    check(!reference.fit_landmarks(landmarks.data(), camera.data(), 1, 1).cameras.empty(), "fit_landmarks runs");
    landmarks[7] = std::numeric_limits<float>::quiet_NaN();
    check(throws_named([&] { reference.fit_landmarks(landmarks.data(), camera.data(), 1, 1); }, "must be finite"),
          "NaN landmarks are refused");
    landmarks[7] = 3e38f;
    try {
      reference.fit_landmarks(landmarks.data(), camera.data(), 1, 1);
    } catch (const std::invalid_argument& e) {  // e.g. a mesh that left the finite range: named, fine
      check(std::strchr(e.what(), '\n') == nullptr, "one-line message");
    }
    landmarks[7] = 100.0f;
    camera[0] = 0.0;
    check(throws_named([&] { reference.fit_landmarks(landmarks.data(), camera.data(), 1, 1); }, "scale not > 0"),
          "a zero camera scale is refused");
    check(throws_named([&] { reference.fit_landmarks(landmarks.data(), camera.data(), 0, 1); }, "batch"),
          "an empty batch is refused");
  }
  // case 4: a batch runs stage by stage on two threads: each face's result is the face's alone
  // (to the bit), and a face whose fit overflows fails the batch with a named error, no crash
  {
    const int64_t face = reference.channels() * reference.crop_size() * reference.crop_size();
    std::vector<float> maps(static_cast<size_t>(3 * face));
    std::mt19937 gen(4);
    std::normal_distribution<float> normal;
    for (float& v : maps) v = normal(gen);  // the cascade normalises what it samples
    const dffx::CascadeResult batch = reference.run(maps.data(), 3, false, 2);
    for (int64_t b = 0; b < 3; ++b) {
      const dffx::CascadeResult one = reference.run(maps.data() + b * face, 1, false, 1);
      check(std::equal(one.landmarks.begin(), one.landmarks.end(), batch.landmarks.begin() + b * 2 * 68) &&
                std::equal(one.vertices.begin(), one.vertices.end(), batch.vertices.begin() + b * one.vertices.size()),
            "a face in a batch is the face alone");
    }
    std::vector<float> landmarks(3 * 2 * 68);
    std::vector<double> cameras;
    for (int b = 0; b < 3; ++b) {
      for (int l = 0; l < 68; ++l)
        landmarks[b * 136 + 2 * l] = 100.0f + static_cast<float>(l % 9), landmarks[b * 136 + 2 * l + 1] = 100.0f + static_cast<float>(l / 9);
      cameras.insert(cameras.end(), {1.0, 0.0, 0.0, 0.0, 112.0, 112.0});
    }
    check(reference.fit_landmarks(landmarks.data(), cameras.data(), 3, 2).cameras.size() == 18, "a batch fit runs");
    landmarks[136 + 7] = 3e38f;
    try {
      reference.fit_landmarks(landmarks.data(), cameras.data(), 3, 2);
    } catch (const std::invalid_argument& e) {
      check(std::strchr(e.what(), '\n') == nullptr, "one-line message");
    }
  }
  std::mt19937_64 rng(20261207);
  const std::vector<uint64_t> words = {0, 1, ~uint64_t{0}, uint64_t{1} << 32, uint64_t{1} << 57, uint64_t{1} << 63,
                                       0x7ff8000000000000ull /* NaN */, 0x41f0000000000000ull /* 2^32 as double */};
  // mutations land in the first 64 KB (the headers and small arrays) half of the time
  std::uniform_int_distribution<size_t> anywhere(0, original.size() - 1), head(0, std::min<size_t>(65535, original.size() - 1));
  int loaded = 0;
  std::string bytes = original;  // mutated in place and restored after each case (no 24 MB copy per case)
  for (int k = 0; k < cases; ++k) {
    std::vector<std::pair<size_t, char>> changed;  // (offset, original byte)
    const auto set = [&](size_t i, char value) {
      changed.emplace_back(i, bytes[i]);
      bytes[i] = value;
    };
    const int kind = k % 3;
    const size_t at = (k & 1) ? head(rng) : anywhere(rng);
    size_t size = bytes.size();
    if (kind == 0) {
      for (int i = 0; i < 1 + static_cast<int>(rng() % 8); ++i) {
        const size_t j = (k & 1) ? head(rng) : anywhere(rng);
        set(j, static_cast<char>(bytes[j] ^ (1 << (rng() % 8))));
      }
    } else if (kind == 1) {
      const uint64_t w = words[rng() % words.size()];
      const size_t j = std::min(at, bytes.size() - 8);
      for (size_t i = 0; i < 8; ++i) set(j + i, reinterpret_cast<const char*>(&w)[i]);
    } else {
      size = at;  // truncated
    }
    try {
      const dffx::Cascade c = dffx::Cascade::from_bytes(bytes.data(), size);
      ++loaded;
      if (k % 50 == 0 && c.crop_size() == reference.crop_size() && c.channels() == reference.channels()) {
        const std::vector<float> maps(static_cast<size_t>(c.channels() * c.crop_size() * c.crop_size()), 0.f);
        try {
          c.run(maps.data(), 1, false, 1);
        } catch (const std::invalid_argument&) {  // e.g. a mutated mesh the fit refuses: named, fine
        } catch (const std::runtime_error&) {
        }
      }
    } catch (const std::invalid_argument& e) {
      check(std::strchr(e.what(), '\n') == nullptr, "one-line message");
    } catch (const std::runtime_error& e) {
      check(std::strchr(e.what(), '\n') == nullptr, "one-line message");
    }
    for (auto it = changed.rbegin(); it != changed.rend(); ++it) bytes[it->first] = it->second;
  }
  std::cout << "fuzz: " << cases << " mutated cascade files, " << loaded << " still loaded\n";
}

}  // namespace

int main(int argc, char** argv) {
  crafted_cascade_files();
  huge_images();
  if (argc > 1) fuzz(argv[1], argc > 2 ? std::stoi(argv[2]) : 2000);
  if (failures) {
    std::cerr << failures << " hostile-input check(s) failed\n";
    return 1;
  }
  std::cout << "hostile input: all checks passed\n";
  return 0;
}
