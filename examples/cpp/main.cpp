// dffx C++ example: project and rasterize a sphere, test landmark visibility (with and without the
// depth buffer), fit a tiny morphable model. Every result is compared with a fact known in
// closed form; the program prints each check and exits non-zero if any fails.
//
// Build and run:  bash examples/cpp/build_and_run.sh   (see CMakeLists.txt for plain CMake)
#include <dffx/dffx.hpp>  // the whole public API; needs only the standard library

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

// printf into a std::string, for check descriptions.
template <class... Args>
std::string format(const char* fmt, Args... args) {
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, fmt, args...);
  return buffer;
}

// Prints one line per check and counts the failures.
class Checks {
 public:
  void check(bool ok, const std::string& what) {
    std::printf("  [%s] %s\n", ok ? " ok " : "FAIL", what.c_str());
    if (!ok) ++failures_;
  }
  int failures() const { return failures_; }

 private:
  int failures_ = 0;
};

struct Mesh {
  std::vector<float> vertices;     // (N, 3) row-major, the layout every dffx call expects
  std::vector<int32_t> triangles;  // (F, 3)
  double inscribed_radius = 0.0;   // distance from the centre to the nearest face plane
  int64_t num_vertices() const { return static_cast<int64_t>(vertices.size() / 3); }
  int64_t num_triangles() const { return static_cast<int64_t>(triangles.size() / 3); }
};

// Sphere of `radius` centred at the origin: an octahedron whose faces are split in four
// `levels` times, new vertices pushed out onto the sphere. The mesh is convex with every
// vertex on the sphere, so it lies between the balls of radius inscribed_radius and radius.
Mesh make_sphere(double radius, int levels) {
  using Vec3 = std::array<double, 3>;
  std::vector<Vec3> v = {{1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, -1, 0}, {0, 0, 1}, {0, 0, -1}};
  std::vector<std::array<int, 3>> faces = {{0, 2, 4}, {2, 1, 4}, {1, 3, 4}, {3, 0, 4},
                                           {2, 0, 5}, {1, 2, 5}, {3, 1, 5}, {0, 3, 5}};
  for (int level = 0; level < levels; ++level) {
    std::map<std::pair<int, int>, int> midpoint_of;  // one new vertex per edge, shared by its two faces
    auto midpoint = [&](int a, int b) {
      const std::pair<int, int> edge = std::minmax(a, b);
      if (auto it = midpoint_of.find(edge); it != midpoint_of.end()) return it->second;
      Vec3 m = {v[a][0] + v[b][0], v[a][1] + v[b][1], v[a][2] + v[b][2]};
      const double norm = std::sqrt(m[0] * m[0] + m[1] * m[1] + m[2] * m[2]);
      v.push_back({m[0] / norm, m[1] / norm, m[2] / norm});
      return midpoint_of[edge] = static_cast<int>(v.size()) - 1;
    };
    std::vector<std::array<int, 3>> finer;
    for (const auto& [i, j, k] : faces) {
      const int ij = midpoint(i, j), jk = midpoint(j, k), ki = midpoint(k, i);
      finer.insert(finer.end(), {{i, ij, ki}, {j, jk, ij}, {k, ki, jk}, {ij, jk, ki}});
    }
    faces.swap(finer);
  }

  Mesh mesh;
  mesh.inscribed_radius = radius;
  for (const auto& [i, j, k] : faces) {
    mesh.triangles.insert(mesh.triangles.end(), {i, j, k});
    // Distance from the origin to the face's plane: |n . v_i| / |n|, n = (v_j - v_i) x (v_k - v_i).
    const Vec3 e1 = {v[j][0] - v[i][0], v[j][1] - v[i][1], v[j][2] - v[i][2]};
    const Vec3 e2 = {v[k][0] - v[i][0], v[k][1] - v[i][1], v[k][2] - v[i][2]};
    const Vec3 n = {e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]};
    const double distance = std::abs(n[0] * v[i][0] + n[1] * v[i][1] + n[2] * v[i][2]) /
                            std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
    mesh.inscribed_radius = std::min(mesh.inscribed_radius, radius * distance);
  }
  for (const Vec3& p : v)
    for (double c : p) mesh.vertices.push_back(static_cast<float>(radius * c));
  return mesh;
}

// Build facts, and that the headers we compiled against match the library we run with.
void show_build(Checks& checks) {
  std::printf("dffx %s\n", dffx::version());
  std::printf("  CUDA kernels compiled: %s (architectures \"%s\"), CUDA devices visible: %d\n",
              dffx::cuda_compiled() ? "yes" : "no", dffx::cuda_architectures(), dffx::cuda_device_count());
  checks.check(std::string(dffx::version()) == DFFX_VERSION_STRING,
               format("library version %s matches the headers (%s)", dffx::version(), DFFX_VERSION_STRING));
}

// The camera conventions of camera.hpp, on points whose projection is obvious.
void camera_demo(Checks& checks) {
  std::printf("\nCamera conventions\n");
  const float axes[] = {1, 0, 0,  /**/ 0, 1, 0,  /**/ 0, 0, 1};  // model x (subject's left), y (up), z (nose)
  const float frontal[dffx::kCameraParams] = {2.0f, 0.0f, 0.0f, 0.0f, 32.0f, 32.0f};  // s, pitch, yaw, roll, tx, ty
  float screen[9];
  dffx::project_weak_perspective(axes, frontal, /*batch=*/1, /*num_vertices=*/3, /*shared_vertices=*/true, screen);
  const float expected[9] = {34, 32, 0, /**/ 32, 30, 0, /**/ 32, 32, 2};  // y flips (image y is down), depth = s*z
  checks.check(std::equal(screen, screen + 9, expected), "frontal camera: x -> s*x + tx, y -> -s*y + ty, depth -> s*z");

  const float yawed[dffx::kCameraParams] = {2.0f, 0.0f, 0.3f, 0.0f, 32.0f, 32.0f};
  dffx::project_weak_perspective(axes, yawed, 1, 3, true, screen);
  checks.check(screen[6] < 32.0f, format("positive yaw turns the nose towards image left (x = %.3f < 32)", screen[6]));
}

// Rasterize a sphere of radius r seen by a camera of scale s: its image is (nearly) a disc of
// radius s*r around (tx, ty), and the depth at distance d from the centre is sqrt((s*r)^2 - d^2).
void raster_demo(Checks& checks) {
  std::printf("\nRasterizer\n");
  const double radius = 10.0;  // centimetres, about a head
  const Mesh sphere = make_sphere(radius, /*levels=*/4);
  const float camera[dffx::kCameraParams] = {2.0f, 0.3f, -0.6f, 0.25f, 32.0f, 32.0f};
  const double s = camera[0], cx = camera[4], cy = camera[5];
  const double outer = s * radius, inner = s * sphere.inscribed_radius;  // screen radii of the two balls
  std::printf("  mesh: %lld vertices, %lld triangles; screen radius %.3f px (inscribed %.3f px)\n",
              static_cast<long long>(sphere.num_vertices()), static_cast<long long>(sphere.num_triangles()), outer,
              inner);

  dffx::RasterShape shape;
  shape.batch = 1;
  shape.num_vertices = sphere.num_vertices();
  shape.num_triangles = sphere.num_triangles();
  shape.height = 64;
  shape.width = 64;
  std::vector<float> screen(sphere.vertices.size());
  dffx::project_weak_perspective(sphere.vertices.data(), camera, 1, shape.num_vertices, false, screen.data());

  const int64_t pixels = shape.height * shape.width;
  std::vector<float> depth(pixels), barycentric(pixels * 3);
  std::vector<int32_t> triangle_id(pixels);
  dffx::rasterize(screen.data(), sphere.triangles.data(), shape, depth.data(), triangle_id.data(),
                  barycentric.data());

  // The centre ray meets a face outside the inscribed ball and inside the sphere.
  const float centre_depth = depth[static_cast<int64_t>(cy) * shape.width + static_cast<int64_t>(cx)];
  checks.check(centre_depth >= inner - 1e-3 && centre_depth <= outer + 1e-3,
               format("depth at the image centre %.4f in [s*r_inscribed, s*r] = [%.4f, %.4f]", centre_depth, inner,
                      outer));

  // Every pixel: outside the sphere's disc -> background; inside the inscribed disc -> covered;
  // covered -> depth between the two balls' depths along that ray, barycentrics summing to 1.
  const double margin = 1e-3;  // px, far above float32 rounding at this scale
  long long covered = 0, wrong_background = 0, wrong_coverage = 0, wrong_depth = 0, wrong_barycentric = 0;
  for (int64_t y = 0; y < shape.height; ++y)
    for (int64_t x = 0; x < shape.width; ++x) {
      const int64_t p = y * shape.width + x;
      const double dx = static_cast<double>(x) - cx, dy = static_cast<double>(y) - cy;
      const double d2 = dx * dx + dy * dy;
      const float* b = &barycentric[3 * p];
      if (triangle_id[p] < 0) {
        wrong_background += !(depth[p] == -INFINITY && triangle_id[p] == -1 && b[0] == 0 && b[1] == 0 && b[2] == 0);
        wrong_coverage += d2 < (inner - margin) * (inner - margin);
        continue;
      }
      ++covered;
      wrong_coverage += d2 > (outer + margin) * (outer + margin);
      const double highest = std::sqrt(std::max(0.0, outer * outer - d2));
      const double lowest = d2 < inner * inner ? std::sqrt(inner * inner - d2) : -highest;
      wrong_depth += depth[p] > highest + margin || depth[p] < lowest - margin;
      wrong_barycentric += std::abs(b[0] + b[1] + b[2] - 1.0f) > 1e-5f;
    }
  const double disc_area = 3.14159265358979 * outer * outer;
  checks.check(wrong_coverage == 0, format("covered = pixel centres inside the projected disc (%lld misplaced)",
                                           wrong_coverage));
  checks.check(std::abs(static_cast<double>(covered) - disc_area) < 0.03 * disc_area,
               format("covered pixel count %lld within 3%% of the disc area pi*(s*r)^2 = %.1f", covered, disc_area));
  checks.check(wrong_background == 0,
               format("background pixels: depth -inf, triangle id -1, barycentrics 0 (%lld wrong)", wrong_background));
  checks.check(wrong_depth == 0,
               format("covered pixels: depth within the sphere's analytic bounds (%lld wrong)", wrong_depth));
  checks.check(wrong_barycentric == 0, format("covered pixels: barycentrics sum to 1 (%lld wrong)", wrong_barycentric));

  // Landmark visibility: the vertex nearest the viewer is visible, the farthest one (behind the
  // front surface, projected near the centre too) is hidden.
  int32_t front = 0, back = 0;
  for (int32_t i = 0; i < shape.num_vertices; ++i) {
    if (screen[3 * i + 2] > screen[3 * front + 2]) front = i;
    if (screen[3 * i + 2] < screen[3 * back + 2]) back = i;
  }
  const int32_t landmarks[2] = {front, back};
  uint8_t visible[2];
  dffx::landmark_visibility(screen.data(), landmarks, 2, depth.data(), shape, /*tolerance=*/0.5f, visible);
  checks.check(visible[0] == 1, format("front vertex %d (depth %+.3f) is visible", front, screen[3 * front + 2]));
  checks.check(visible[1] == 0, format("back vertex %d (depth %+.3f) is hidden", back, screen[3 * back + 2]));

  // The same test straight from the mesh, without the depth buffer (what the alignment cascade
  // runs), must agree for every vertex of the sphere.
  std::vector<int32_t> every(static_cast<size_t>(shape.num_vertices));
  for (int32_t i = 0; i < shape.num_vertices; ++i) every[i] = i;
  std::vector<uint8_t> from_buffer(every.size()), from_mesh(every.size());
  dffx::landmark_visibility(screen.data(), every.data(), shape.num_vertices, depth.data(), shape, 0.5f,
                            from_buffer.data());
  dffx::mesh_landmark_visibility(screen.data(), sphere.triangles.data(), every.data(), shape.num_vertices, shape,
                                 0.5f, from_mesh.data());
  long long seen = 0;
  for (uint8_t v : from_mesh) seen += v;
  checks.check(from_buffer == from_mesh && seen > 0 && seen < shape.num_vertices,
               format("mesh_landmark_visibility agrees with the depth buffer's test on all %lld vertices (%lld visible)",
                      static_cast<long long>(shape.num_vertices), seen));

  // Invalid input is reported with std::invalid_argument, not undefined behaviour.
  const int32_t bad_triangle[3] = {0, 1, static_cast<int32_t>(shape.num_vertices)};  // one past the end
  dffx::RasterShape one_triangle = shape;
  one_triangle.num_triangles = 1;
  try {
    dffx::rasterize(screen.data(), bad_triangle, one_triangle, depth.data(), triangle_id.data(), barycentric.data());
    checks.check(false, "rasterize rejects an out-of-range vertex index");
  } catch (const std::invalid_argument& e) {
    checks.check(true, std::string("rasterize rejects an out-of-range vertex index: \"") + e.what() + "\"");
  }
}

// Shape fit: landmarks generated from known parameters p_true are fitted back.
void shape_fit_demo(Checks& checks) {
  std::printf("\nShape fit\n");
  constexpr int64_t L = 10, M = 3, B = 2;  // landmarks, parameters, faces
  // mt19937's raw output is fixed by the standard (std:: distributions are not), so the
  // model is the same with every compiler.
  std::mt19937 rng(2024);
  auto uniform = [&rng](double lo, double hi) {
    return static_cast<float>(lo + (hi - lo) * (static_cast<double>(rng()) / 4294967296.0));
  };
  std::vector<float> mean(L * 3), basis(L * 3 * M), prior_variance(M, 1.0f);
  for (float& x : mean) x = uniform(-8.0, 8.0);  // cm
  for (float& x : basis) x = uniform(-1.0, 1.0);
  dffx::LandmarkModel model;
  model.mean = mean.data();
  model.basis = basis.data();
  model.prior_variance = prior_variance.data();
  model.num_landmarks = L;
  model.num_params = M;

  const float cameras[B * dffx::kCameraParams] = {4.0f, 0.1f, 0.4f, -0.2f, 32.0f, 30.0f,   //
                                                  3.0f, -0.2f, -0.5f, 0.1f, 28.0f, 34.0f};
  const float p_true[B * M] = {0.8f, -1.2f, 0.5f, /**/ -0.3f, 0.0f, 1.5f};

  // Targets: S(p) = mean + basis * p (per face), projected with that face's camera, keep (x, y).
  std::vector<float> targets(B * L * 2);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> shape(L * 3), screen(L * 3);
    for (int64_t r = 0; r < L * 3; ++r) {  // r = row (landmark, axis) of the (L*3, M) basis
      shape[r] = mean[r];
      for (int64_t m = 0; m < M; ++m) shape[r] += basis[r * M + m] * p_true[b * M + m];
    }
    dffx::project_weak_perspective(shape.data(), &cameras[b * dffx::kCameraParams], 1, L, false, screen.data());
    for (int64_t l = 0; l < L; ++l) {
      targets[(b * L + l) * 2 + 0] = screen[3 * l + 0];
      targets[(b * L + l) * 2 + 1] = screen[3 * l + 1];
    }
  }

  dffx::FitWeights weights;
  weights.landmark = 1.0;
  weights.regularization = 1e-6;  // tiny prior: exact targets, so the fit should be (almost) exact
  std::vector<float> p_fit(B * M);
  auto max_error = [&] {
    float e = 0.0f;
    for (int64_t i = 0; i < B * M; ++i) e = std::max(e, std::abs(p_fit[i] - p_true[i]));
    return e;
  };
  dffx::fit_shape(model, targets.data(), /*landmark_weights=*/nullptr, cameras, B, weights, p_fit.data());
  for (int64_t b = 0; b < B; ++b)
    std::printf("  face %lld: p_true = (%+.4f, %+.4f, %+.4f)  p_fit = (%+.4f, %+.4f, %+.4f)\n",
                static_cast<long long>(b), p_true[b * M], p_true[b * M + 1], p_true[b * M + 2], p_fit[b * M],
                p_fit[b * M + 1], p_fit[b * M + 2]);
  checks.check(max_error() < 1e-3f, format("fit_shape recovers p_true (max error %.2e)", max_error()));

  // Per-landmark weights (e.g. visibility from landmark_visibility): a weight of 0 removes a
  // landmark, so corrupting its target must not change the fit.
  std::vector<float> landmark_weights(B * L, 1.0f);
  targets[0] += 50.0f;  // face 0, landmark 0, x
  landmark_weights[0] = 0.0f;
  dffx::fit_shape(model, targets.data(), landmark_weights.data(), cameras, B, weights, p_fit.data());
  checks.check(max_error() < 1e-3f,
               format("a zero-weight landmark with a corrupted target is ignored (max error %.2e)", max_error()));
}

}  // namespace

int main() {
  Checks checks;
  try {
    show_build(checks);
    camera_demo(checks);
    raster_demo(checks);
    shape_fit_demo(checks);
  } catch (const std::exception& e) {
    checks.check(false, std::string("unexpected exception: ") + e.what());
  }
  if (checks.failures() > 0) {
    std::printf("\n%d check(s) FAILED\n", checks.failures());
    return 1;
  }
  std::printf("\nall checks passed\n");
  return 0;
}
