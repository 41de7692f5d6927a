// The alignment cascade (paper Sec. III-C, eq. 4-8) and its file format (contract in cascade.hpp).
#include "dffx/cascade.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "dffx/camera.hpp"
#include "dffx/raster.hpp"
#include "dffx/sampling.hpp"
#include "cascade_kernels.hpp"
#include "cascade_shape_fit.hpp"
#include "internal.hpp"
#include "raster_internal.hpp"

namespace dffx {
namespace {

// File layout, little-endian (dffx.align.export.write_cascade_file writes it):
//   "DFFXCAS1", uint32 count, then per array: uint32 name length, name, uint8 dtype
//   (0 float32, 1 float64, 2 int32), uint32 ndim, int64 dims[ndim], the row-major data.
constexpr char kMagic[8] = {'D', 'F', 'F', 'X', 'C', 'A', 'S', '1'};
constexpr int kLandmarks68 = 68;
constexpr double kMinScale = 1e-3;  // the cascade keeps s above this (as dffx.align.Cascade.step)
constexpr int64_t kMaxElements = int64_t{1} << 31;  // per array
constexpr double kMaxCropSize = 4096;               // px: the crop the maps cover (224 as shipped)
constexpr double kMaxChannels = 1024;               // descriptor length (32 as shipped)
constexpr double kMaxIdentity = 1 << 20;            // identity parameters (m1)
constexpr int64_t kMaxParams = 1024;                 // M: the shape fit holds 7 M x M doubles (59 MB at most)
constexpr double kPi = 3.14159265358979323846;
constexpr int64_t kMaxSectors = 64;                  // yaw sectors of a pose-fused cascade
constexpr int64_t kMaxSectorStages = 64;
// The mesh S(p) = mean + B p is computed in blocks of this many coordinates (whole vertices): a
// block's partial shape stays in cache while the M basis rows stream past, and the blocks (fixed,
// whatever the thread count) split a face's mesh between threads.
constexpr int64_t kMeshBlock = 3 * 1024;
// A stage's product [F, 1] R (a 5121-row matrix read once per face) is summed over this many row
// ranges, in order: two threads can share one face's product, and the sum is the same however
// many do.
constexpr int64_t kDirectionParts = 2;
// A batch runs stage by stage this many faces at a time: enough that each block of the shape basis
// serves many faces, few enough that their meshes (113 KB each) stay a small working set.
constexpr int64_t kStageBatch = 64;
// In a batch, the faces that share a stage's direction set take its products together, this many
// at a time (dffx::detail::accumulate_transposed_products): each matrix row serves the group.
constexpr int64_t kProductGroup = 16;

using Matrix3 = Eigen::Matrix<double, 3, 3, Eigen::RowMajor>;

// R(pitch, yaw, roll) of camera.hpp.
Matrix3 rotation(double pitch, double yaw, double roll) {
  Matrix3 r;
  rotation_matrix(pitch, yaw, roll, r.data());
  return r;
}

// The generator G of the right-handed rotation R(a) about axis 0 (x), 1 (y) or 2 (z):
// d/da R(a) = R(a) G.
Matrix3 generator(int axis) {
  Matrix3 g = Matrix3::Zero();
  const int i = (axis + 1) % 3, j = (axis + 2) % 3;
  g(i, j) = -1.0;
  g(j, i) = 1.0;
  return g;
}

// The camera refit of dffx.align.camera_refit.refit_cameras (its twin) for one face: Gauss-Newton
// steps on |P(w) q - x^|^2 / s0^2 + prior |angles - angles0|^2 from w0, with w = (s, pitch, yaw,
// roll, tx, ty), R = Rx(-pitch) Ry(-yaw) Rz(-roll), x = s (R q)_x + tx, y = -s (R q)_y + ty.
void refit_camera(const Eigen::Matrix<double, Eigen::Dynamic, 3>& q, const float* x_hat, const double* w0,
                  double prior, int steps, double* w) {
  using Vector6 = Eigen::Matrix<double, kCameraParams, 1>;
  using Matrix6 = Eigen::Matrix<double, kCameraParams, kCameraParams>;
  const Eigen::Map<const Vector6> start(w0);
  Eigen::Map<Vector6> cam(w);
  cam = start;
  const double s0 = start[0];
  Matrix6 K = Matrix6::Zero();
  for (int a = 1; a <= 3; ++a) K(a, a) = prior;
  for (int step = 0; step < steps; ++step) {
    // With A = Rx(-pitch): dR/dpitch = -Gx R, dR/dyaw = -(A Gy A^T) R, dR/droll = -R Gz.
    const Matrix3 R = rotation(cam[1], cam[2], cam[3]), A = rotation(cam[1], 0.0, 0.0);
    const Matrix3 dR[3] = {-(generator(0) * R), -(A * generator(1) * A.transpose() * R), -(R * generator(2))};
    Matrix6 lhs = K;
    Vector6 rhs = K * (cam - start);
    for (Eigen::Index l = 0; l < q.rows(); ++l) {
      const Eigen::Vector3d point = q.row(l).transpose(), rq = R * point;
      for (int c = 0; c < 2; ++c) {
        const double sign = c == 0 ? 1.0 : -1.0;  // image y points down
        Vector6 j;
        j[0] = sign * rq[c] / s0;
        for (int a = 0; a < 3; ++a) j[1 + a] = sign * cam[0] * (dR[a] * point)[c] / s0;
        j[4] = c == 0 ? 1.0 / s0 : 0.0;
        j[5] = c == 1 ? 1.0 / s0 : 0.0;
        const double error = (sign * cam[0] * rq[c] + cam[4 + c] - double{x_hat[2 * l + c]}) / s0;
        lhs += j * j.transpose();
        rhs += j * error;
      }
    }
    cam -= lhs.ldlt().solve(rhs);
    cam[0] = std::max(cam[0], kMinScale);
  }
}

struct Array {
  uint8_t dtype = 0;
  std::vector<int64_t> dims;
  std::vector<char> bytes;
};

[[noreturn]] void bad_file(const std::string& path, const std::string& what) {
  throw std::runtime_error("dffx cascade file " + path + ": " + what);
}

// An array name as it may appear in a message: bytes outside printable ASCII as \xNN, so that a
// damaged name cannot make the message undecodable (Python reads it as UTF-8).
std::string printable(const std::string& name) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (const unsigned char ch : name) {
    if (ch >= 0x20 && ch < 0x7f) {
      out += static_cast<char>(ch);
    } else {
      out += "\\x";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

// Bytes left in the stream after its read position (-1 when it cannot seek).
int64_t bytes_left(std::istream& in) {
  const auto here = in.tellg();
  if (here < 0 || !in.seekg(0, std::ios::end)) return -1;
  const auto end = in.tellg();
  in.seekg(here);
  return end < 0 ? -1 : static_cast<int64_t>(end - here);
}

template <class T>
T read_value(std::istream& in, const std::string& path) {
  T value{};
  if (!in.read(reinterpret_cast<char*>(&value), sizeof value)) bad_file(path, "truncated");
  return value;
}

// `path` names the source in messages (a file path, or "(in memory)").
std::map<std::string, Array> read_arrays(std::istream& in, const std::string& path) {
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0)
    bad_file(path, "not a dffx cascade file (write one with `dffx export-cascade`)");
  const uint32_t count = read_value<uint32_t>(in, path);
  std::map<std::string, Array> arrays;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t name_length = read_value<uint32_t>(in, path);
    if (name_length > 256) bad_file(path, "malformed array name");
    std::string name(name_length, '\0');
    if (!in.read(name.data(), name_length)) bad_file(path, "truncated");
    const std::string shown = "array '" + printable(name) + "'";
    Array a;
    a.dtype = read_value<uint8_t>(in, path);
    if (a.dtype > 2) bad_file(path, shown + ": unknown dtype code");
    const uint32_t ndim = read_value<uint32_t>(in, path);
    if (ndim > 8) bad_file(path, shown + ": malformed shape");
    int64_t elements = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      a.dims.push_back(read_value<int64_t>(in, path));
      const int64_t size = a.dims.back();
      if (size < 0) bad_file(path, shown + ": malformed shape");
      // checked before multiplying, so the count cannot wrap around
      if (size > 0 && elements > kMaxElements / size) bad_file(path, shown + ": too large");
      elements *= size;
    }
    const int64_t item = a.dtype == 1 ? 8 : 4;
    // the header's size is checked against the bytes that are there before anything is allocated
    const int64_t left = bytes_left(in);
    if (left >= 0 && elements * item > left) bad_file(path, shown + ": truncated (the file is shorter than its header says)");
    a.bytes.resize(static_cast<size_t>(elements * item));
    if (!in.read(a.bytes.data(), static_cast<std::streamsize>(a.bytes.size()))) bad_file(path, "truncated");
    arrays[name] = std::move(a);
  }
  return arrays;
}

// The array `name` as T, checked against dims (-1: any size there).
template <class T>
std::vector<T> take(const std::map<std::string, Array>& arrays, const std::string& path, const std::string& name,
                    const std::vector<int64_t>& dims) {
  const uint8_t code = std::is_same_v<T, float> ? 0 : std::is_same_v<T, double> ? 1 : 2;
  const auto it = arrays.find(name);
  if (it == arrays.end()) bad_file(path, "array '" + printable(name) + "' is missing");
  const Array& a = it->second;
  bool ok = a.dtype == code && a.dims.size() == dims.size();
  for (size_t d = 0; ok && d < dims.size(); ++d) ok = dims[d] < 0 || dims[d] == a.dims[d];
  if (!ok) bad_file(path, "array '" + printable(name) + "' has the wrong dtype or shape");
  std::vector<T> out(a.bytes.size() / sizeof(T));
  std::memcpy(out.data(), a.bytes.data(), a.bytes.size());
  return out;
}

int64_t dim(const std::map<std::string, Array>& arrays, const std::string& name, size_t axis) {
  const auto it = arrays.find(name);
  return it == arrays.end() || it->second.dims.size() <= axis ? -1 : it->second.dims[axis];
}

}  // namespace

Cascade::StageDirections Cascade::stage_directions(int k, double yaw) const {
  const int64_t D1 = num_landmarks() * channels_ + 1;
  StageDirections out;
  if (k < generic_stages_) {
    out.item[out.count++] = {R_X_.data() + k * D1 * 2 * kLandmarks68, R_w_.data() + k * D1 * kCameraParams, 1.0f};
    return out;
  }
  // dffx.align.pose_sectors.sector_weights: linear between neighbouring centres, clamped outside
  const auto S = static_cast<int64_t>(sector_yaw_.size());
  const double degrees = std::clamp(yaw * (180.0 / kPi), sector_yaw_.front(), sector_yaw_.back());
  const int64_t hi = std::clamp<int64_t>(
      std::upper_bound(sector_yaw_.begin(), sector_yaw_.end(), degrees) - sector_yaw_.begin(), 1, S - 1);
  const double t = (degrees - sector_yaw_[hi - 1]) / (sector_yaw_[hi] - sector_yaw_[hi - 1]);
  const int64_t stage = k - generic_stages_;
  for (const auto& [s, share] : {std::pair{hi - 1, 1.0 - t}, std::pair{hi, t}}) {
    if (!(share > 0)) continue;  // as the Python twin, a sector without a share is not evaluated
    const int64_t block = stage * S + s;
    out.item[out.count++] = {R_X_sectors_.data() + block * D1 * 2 * kLandmarks68,
                             R_w_sectors_.data() + block * D1 * kCameraParams, static_cast<float>(share)};
  }
  return out;
}

const char* Cascade::kernel_isa() { return detail::cascade_kernel_isa(); }

Cascade Cascade::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_file(path, "cannot be opened (missing or unreadable)");
  return parse(in, path);
}

Cascade Cascade::from_bytes(const void* data, size_t size) {
  if (!data && size) throw std::invalid_argument("dffx::Cascade::from_bytes: null data");
  std::istringstream in(std::string(static_cast<const char*>(data), size), std::ios::binary);
  return parse(in, "(in memory)");
}

Cascade Cascade::parse(std::istream& in, const std::string& path) {
  const auto arrays = read_arrays(in, path);
  Cascade c;
  const int64_t n = dim(arrays, "mean", 0), m = dim(arrays, "prior_variance", 0);
  const int64_t L = dim(arrays, "landmarks160", 0), K = dim(arrays, "R_X", 0), D1 = dim(arrays, "R_X", 1);
  c.mean_ = take<float>(arrays, path, "mean", {n, 3});
  c.prior_ = take<float>(arrays, path, "prior_variance", {m});
  c.basis_rows_ = take<float>(arrays, path, "basis_rows", {m, 3 * n});
  c.triangles_ = take<int32_t>(arrays, path, "triangles", {-1, 3});
  c.landmarks68_ = take<int32_t>(arrays, path, "landmarks68", {kLandmarks68});
  c.landmarks160_ = take<int32_t>(arrays, path, "landmarks160", {L});
  c.mean_camera_ = take<double>(arrays, path, "mean_camera", {kCameraParams});
  c.R_X_ = take<float>(arrays, path, "R_X", {K, D1, 2 * kLandmarks68});
  c.R_w_ = take<float>(arrays, path, "R_w", {K, D1, kCameraParams});
  const auto scalars = take<double>(arrays, path, "scalars", {5});  // w_reg, tolerance, crop, C, m1
  // bounded before the casts to integers (a cast of a value out of range is undefined)
  if (!(scalars[2] >= 1 && scalars[2] <= kMaxCropSize && scalars[3] >= 1 && scalars[3] <= kMaxChannels &&
        scalars[4] >= 0 && scalars[4] <= kMaxIdentity && std::isfinite(scalars[1])))
    bad_file(path, "scalars out of range (crop size 1-" + std::to_string(int(kMaxCropSize)) + " px, channels 1-" +
                       std::to_string(int(kMaxChannels)) + ")");
  c.w_reg_ = scalars[0];
  c.tolerance_ = static_cast<float>(scalars[1]);
  c.crop_size_ = static_cast<int64_t>(scalars[2]);
  c.channels_ = static_cast<int64_t>(scalars[3]);
  c.n_identity_ = static_cast<int64_t>(scalars[4]);
  c.stages_ = static_cast<int>(K);
  if (arrays.count("sector_yaw")) {  // pose fusion: later stages blend per-yaw-sector directions
    const int64_t S = dim(arrays, "sector_yaw", 0), Ks = dim(arrays, "R_X_sectors", 0);
    c.sector_yaw_ = take<double>(arrays, path, "sector_yaw", {S});
    c.R_X_sectors_ = take<float>(arrays, path, "R_X_sectors", {Ks, S, D1, 2 * kLandmarks68});
    c.R_w_sectors_ = take<float>(arrays, path, "R_w_sectors", {Ks, S, D1, kCameraParams});
    if (S < 2 || S > kMaxSectors || Ks <= 0 || Ks > kMaxSectorStages) bad_file(path, "sector arrays out of range");
    for (int64_t s = 0; s < S; ++s)
      if (!std::isfinite(c.sector_yaw_[s]) || (s > 0 && !(c.sector_yaw_[s] > c.sector_yaw_[s - 1])))
        bad_file(path, "sector_yaw must be finite and strictly increasing");
    c.stages_ += static_cast<int>(Ks);
  }
  c.generic_stages_ = static_cast<int>(K);
  if (arrays.count("R_w_pose")) {  // the pose start: camera-only stages before all others
    const int64_t P = dim(arrays, "R_w_pose", 0);
    if (P <= 0 || P > kMaxSectorStages) bad_file(path, "R_w_pose out of range");
    c.R_w_pose_ = take<float>(arrays, path, "R_w_pose", {P, D1, kCameraParams});
    c.pose_stages_ = static_cast<int>(P);
    c.stages_ += c.pose_stages_;
  }
  if (arrays.count("template")) c.template_ = take<float>(arrays, path, "template", {L, c.channels_});
  if (arrays.count("camera_refit")) {  // rounds, prior, Gauss-Newton steps
    const auto refit = take<double>(arrays, path, "camera_refit", {3});
    if (!(refit[0] >= 0 && refit[0] <= 100 && refit[1] >= 0 && refit[2] >= 0 && refit[2] <= 100))
      bad_file(path, "a camera_refit array out of range");
    c.refit_rounds_ = static_cast<int>(refit[0]);
    c.refit_prior_ = refit[1];
    c.refit_steps_ = static_cast<int>(refit[2]);
  }
  if (m > kMaxParams) bad_file(path, "more than " + std::to_string(kMaxParams) + " shape parameters");
  if (n <= 0 || m <= 0 || K <= 0 || L < kLandmarks68 || c.crop_size_ <= 0 || c.channels_ <= 0 ||
      D1 != L * c.channels_ + 1 || c.n_identity_ < 0 || c.n_identity_ > m || !(c.w_reg_ >= 0))
    bad_file(path, "sizes that do not fit together");
  for (const auto* index : {&c.triangles_, &c.landmarks68_, &c.landmarks160_})
    for (int32_t v : *index)
      if (v < 0 || v >= n) bad_file(path, "a vertex index out of range");
  for (float v : c.prior_)
    if (!(v > 0)) bad_file(path, "prior variances must be > 0");
  // The shape fit reads the model at the 68 landmarks: mean68 (68, 3), basis68 (68, 3, M).
  c.mean68_.resize(kLandmarks68 * 3);
  c.basis68_.resize(kLandmarks68 * 3 * m);
  for (int l = 0; l < kLandmarks68; ++l)
    for (int k = 0; k < 3; ++k) {
      const int64_t column = 3 * int64_t{c.landmarks68_[l]} + k;
      c.mean68_[l * 3 + k] = c.mean_[column];
      for (int64_t j = 0; j < m; ++j) c.basis68_[(l * 3 + k) * m + j] = c.basis_rows_[j * 3 * n + column];
    }
  c.shape_fit_ = std::make_shared<const detail::CascadeShapeFit>(c.mean68_.data(), c.basis68_.data(), c.prior_.data(),
                                                                 m, c.w_reg_);
  const std::vector<float> zeros(m, 0.0f);
  try {
    c.update_geometry(zeros.data(), c.mean_camera_.data(), c.start_, 1);
  } catch (const std::invalid_argument&) {
    bad_file(path, "the mean shape under the mean camera is not finite");
  }
  return c;
}

namespace {

// Eq. 2 for a block of mesh coordinates: shape (count, 3 interleaved) -> screen, under rotation R.
inline void project_block(const float* shape, int64_t count, const double* R, double s, double tx, double ty,
                          float* screen) {
  for (int64_t i = 0; i < count; i += 3) {
    const double x = shape[i], y = shape[i + 1], z = shape[i + 2];
    screen[i] = static_cast<float>(s * (R[0] * x + R[1] * y + R[2] * z) + tx);
    screen[i + 1] = static_cast<float>(-s * (R[3] * x + R[4] * y + R[5] * z) + ty);
    screen[i + 2] = static_cast<float>(s * (R[6] * x + R[7] * y + R[8] * z));
  }
}

// A camera as dffx::project_weak_perspective takes it: rounded to float, R from its angles.
struct FloatCamera {
  double R[9];
  double s, tx, ty;
  explicit FloatCamera(const double* camera) {
    float cam[kCameraParams];
    for (int i = 0; i < kCameraParams; ++i) cam[i] = static_cast<float>(camera[i]);
    rotation_matrix(cam[1], cam[2], cam[3], R);
    s = cam[0], tx = cam[4], ty = cam[5];
  }
};

// The batch mesh's blocks: small enough that a block of all M basis rows (M x 192 floats, 104 KB
// at M = 135) stays in L2 while every face of the batch reads it. Any block size gives the same
// values: each coordinate's sum runs over the rows in order.
constexpr int64_t kBatchMeshBlock = 3 * 64;

// work(i) for i < count on the threads, each taking the next index when it is free (a batch's
// faces cost more at large yaw, where more triangles can hide a landmark); an index's work does
// not depend on which thread runs it.
template <class Work>
void for_each_index(int64_t count, int num_threads, Work&& work) {
  std::atomic<int64_t> next{0};
  const int threads = detail::resolve_threads(num_threads, count);
  detail::parallel_for(threads, threads, [&](int64_t, int64_t) {
    for (int64_t i = next++; i < count; i = next++) work(i);
  });
}

}  // namespace

void Cascade::mesh_vertices(const float* params, const double* camera, float* screen, int num_threads) const {
  const int64_t n3 = 3 * num_vertices(), m = num_params();
  const FloatCamera cam(camera);
  const int64_t blocks = (n3 + kMeshBlock - 1) / kMeshBlock;
  detail::parallel_for(blocks, num_threads, [&](int64_t first, int64_t last) {
    float shape[kMeshBlock];
    for (int64_t block = first; block < last; ++block) {
      const int64_t i0 = block * kMeshBlock, count = std::min(kMeshBlock, n3 - i0);
      std::copy(mean_.data() + i0, mean_.data() + i0 + count, shape);  // eq. 3: mean + sum_j p_j B_j
      detail::accumulate_basis_rows(params, basis_rows_.data() + i0, m, n3, count, shape);
      project_block(shape, count, cam.R, cam.s, cam.tx, cam.ty, screen + i0);
    }
  });
}

void Cascade::update_geometry_batch(std::vector<FaceRun>& faces, int num_threads) const {
  const int64_t n3 = 3 * num_vertices(), m = num_params(), count = static_cast<int64_t>(faces.size());
  std::vector<FloatCamera> cams;
  cams.reserve(count);
  for (const FaceRun& f : faces) cams.emplace_back(f.camera);
  for (FaceRun& f : faces) f.g.screen.resize(n3);
  const int64_t blocks = (n3 + kBatchMeshBlock - 1) / kBatchMeshBlock;
  detail::parallel_for(blocks, num_threads, [&](int64_t first, int64_t last) {
    std::vector<float> shape_storage(count * kBatchMeshBlock);
    std::vector<float*> shapes(count);
    std::vector<const float*> params(count);
    for (int64_t f = 0; f < count; ++f) {
      shapes[f] = shape_storage.data() + f * kBatchMeshBlock;
      params[f] = faces[f].p.data();
    }
    for (int64_t block = first; block < last; ++block) {
      const int64_t i0 = block * kBatchMeshBlock, size = std::min(kBatchMeshBlock, n3 - i0);
      for (int64_t f = 0; f < count; ++f) std::copy(mean_.data() + i0, mean_.data() + i0 + size, shapes[f]);
      detail::accumulate_basis_rows_faces(params.data(), basis_rows_.data() + i0, m, n3, size, shapes.data(), count);
      for (int64_t f = 0; f < count; ++f)
        project_block(shapes[f], size, cams[f].R, cams[f].s, cams[f].tx, cams[f].ty, faces[f].g.screen.data() + i0);
    }
  });
  for_each_index(count, num_threads, [&](int64_t f) { finish_geometry(faces[f].g); });
}

void Cascade::finish_geometry(Geometry& g) const {
  const int64_t n = num_vertices(), L = num_landmarks();
  for (int64_t i = 0; i < 3 * n; ++i)  // the visibility test needs finite vertices
    if (!std::isfinite(g.screen[i]))
      throw std::invalid_argument("dffx::Cascade: the mesh left the finite range (a camera or shape update "
                                  "overflowed: NaN or huge values in the DFF maps or the landmarks?)");
  g.V.resize(L);
  const RasterShape raster{1, n, static_cast<int64_t>(triangles_.size() / 3), crop_size_, crop_size_};
  detail::mesh_landmark_visibility_unchecked(g.screen.data(), triangles_.data(), landmarks160_.data(), L, raster,
                                             tolerance_, g.V.data(), 1);
  g.X.resize(2 * kLandmarks68);
  g.U.resize(2 * L);
  for (int l = 0; l < kLandmarks68; ++l)
    for (int k = 0; k < 2; ++k) g.X[2 * l + k] = g.screen[3 * int64_t{landmarks68_[l]} + k];
  for (int64_t l = 0; l < L; ++l)
    for (int k = 0; k < 2; ++k) g.U[2 * l + k] = g.screen[3 * int64_t{landmarks160_[l]} + k];
}

void Cascade::update_geometry(const float* params, const double* camera, Geometry& g, int num_threads) const {
  g.screen.resize(3 * num_vertices());
  mesh_vertices(params, camera, g.screen.data(), num_threads);
  finish_geometry(g);
}

CascadeResult Cascade::allocate_result(int64_t batch, bool scores) const {
  const int64_t n = num_vertices(), m = num_params(), L = num_landmarks();
  CascadeResult out;
  out.batch = batch;
  out.landmarks.resize(batch * kLandmarks68 * 2);
  out.visible.resize(batch * kLandmarks68);
  out.cameras.resize(batch * kCameraParams);
  out.params.resize(batch * m);
  out.vertices.resize(batch * n * 3);
  out.dense_landmarks.resize(batch * L * 2);
  out.dense_visible.resize(batch * L);
  if (scores) out.scores.resize(batch);
  return out;
}

void Cascade::write_face(int64_t b, const Geometry& g, const double* camera, const float* p,
                         CascadeResult& out) const {
  const int64_t n = num_vertices(), m = num_params(), L = num_landmarks();
  std::copy(g.X.begin(), g.X.end(), out.landmarks.begin() + b * kLandmarks68 * 2);
  std::copy(g.V.begin(), g.V.begin() + kLandmarks68, out.visible.begin() + b * kLandmarks68);
  std::copy(camera, camera + kCameraParams, out.cameras.begin() + b * kCameraParams);
  std::copy(p, p + m, out.params.begin() + b * m);
  std::copy(g.screen.begin(), g.screen.end(), out.vertices.begin() + b * n * 3);
  std::copy(g.U.begin(), g.U.end(), out.dense_landmarks.begin() + b * L * 2);
  std::copy(g.V.begin(), g.V.end(), out.dense_visible.begin() + b * L);
}

void Cascade::fit_to_landmarks(const float* x_hat, double* camera, float* p, int rounds) const {
  // p <- the eq. 6-8 fit to x_hat under camera, the landmark term in model units (weights 1 / s^2)
  const auto fit_shape = [&] {
    double rounded[kCameraParams];  // the camera rounded to float, as the Python twin's fit takes it
    for (int i = 0; i < kCameraParams; ++i) rounded[i] = static_cast<float>(camera[i]);
    shape_fit_->fit(x_hat, rounded, p);
  };
  fit_shape();
  if (rounds <= 0) return;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const Eigen::VectorXf> mean68(mean68_.data(), 3 * kLandmarks68);
  Eigen::Map<const RowMajor> basis68(basis68_.data(), 3 * kLandmarks68, num_params());
  double start[kCameraParams];  // the refit's prior ties the angles to the camera it starts from
  std::copy(camera, camera + kCameraParams, start);
  for (int round = 0; round < rounds; ++round) {
    Eigen::Map<const Eigen::VectorXf> params(p, num_params());
    const Eigen::VectorXf points = mean68 + basis68 * params;  // the shape's 68 landmark vertices
    refit_camera(points.cast<double>().reshaped<Eigen::RowMajor>(kLandmarks68, 3), x_hat, start, refit_prior_,
                 refit_steps_, camera);
    fit_shape();
  }
}

CascadeResult Cascade::fit_landmarks(const float* landmarks, const double* cameras, int64_t batch,
                                     int num_threads) const {
  if (batch <= 0) throw std::invalid_argument("dffx::Cascade::fit_landmarks: batch must be positive");
  if (!landmarks || !cameras) throw std::invalid_argument("dffx::Cascade::fit_landmarks: null landmarks or cameras");
  for (int64_t i = 0; i < batch * 2 * kLandmarks68; ++i)
    if (!std::isfinite(landmarks[i])) throw std::invalid_argument("dffx::Cascade::fit_landmarks: landmarks must be finite");
  for (int64_t b = 0; b < batch; ++b) {
    const double* w = cameras + b * kCameraParams;
    if (!std::all_of(w, w + kCameraParams, [](double v) { return std::isfinite(v); }) || !(w[0] > 0))
      throw std::invalid_argument("dffx::Cascade::fit_landmarks: a start camera is not finite or its scale not > 0");
  }
  CascadeResult out = allocate_result(batch, false);
  const int64_t m = num_params();
  if (batch == 1) {  // one face: its mesh on all the threads
    std::vector<float> p(m);
    double camera[kCameraParams];
    std::copy(cameras, cameras + kCameraParams, camera);
    fit_to_landmarks(landmarks, camera, p.data(), refit_rounds_);
    Geometry g;
    update_geometry(p.data(), camera, g, num_threads);
    write_face(0, g, camera, p.data(), out);
    return out;
  }
  // A batch as run's: the fits split between the threads, the meshes one pass over the basis.
  for (int64_t b0 = 0; b0 < batch; b0 += kStageBatch) {
    std::vector<FaceRun> faces(std::min(kStageBatch, batch - b0));
    const auto count = static_cast<int64_t>(faces.size());
    for_each_index(count, num_threads, [&](int64_t i) {
      FaceRun& f = faces[i];
      f.p.assign(m, 0.0f);
      std::copy(cameras + (b0 + i) * kCameraParams, cameras + (b0 + i + 1) * kCameraParams, f.camera);
      fit_to_landmarks(landmarks + (b0 + i) * 2 * kLandmarks68, f.camera, f.p.data(), refit_rounds_);
    });
    update_geometry_batch(faces, num_threads);
    for_each_index(count, num_threads,
                   [&](int64_t i) { write_face(b0 + i, faces[i].g, faces[i].camera, faces[i].p.data(), out); });
  }
  return out;
}

Cascade::FaceRun Cascade::start_face() const {
  FaceRun f;
  f.Z.resize(num_landmarks() * channels_ + 1);
  f.p.assign(num_params(), 0.0f);
  f.g = start_;  // every face starts from the mean shape under the mean camera
  std::copy(mean_camera_.begin(), mean_camera_.end(), f.camera);
  return f;
}

void Cascade::sample_face(const float* face_maps, bool channels_last, FaceRun& f, int num_threads) const {
  const SamplingShape sampling{1, channels_, crop_size_, crop_size_, num_landmarks(), channels_last};
  sample_landmark_features(face_maps, f.g.U.data(), f.g.V.data(), sampling, f.Z.data(), num_threads);  // eq. 4-5
  f.Z.back() = 1.0f;
}

void Cascade::stage_update(int k, FaceRun& f, bool camera_refit, int num_threads) const {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t D1 = static_cast<int64_t>(f.Z.size());
  Eigen::Map<const Eigen::VectorXf> z(f.Z.data(), D1);
  if (k < pose_stages_) {  // the pose start: the camera moves, the shape stays
    Eigen::Map<const RowMajor> R_w(R_w_pose_.data() + k * D1 * kCameraParams, D1, kCameraParams);
    const Eigen::VectorXf dw = R_w.transpose() * z;
    for (int i = 0; i < kCameraParams; ++i) f.camera[i] += static_cast<double>(dw[i]);
    f.camera[0] = std::max(f.camera[0], kMinScale);
    return;
  }
  // [F, 1] R: one set of directions, or the blended yaw sectors; in kDirectionParts row ranges
  const StageDirections directions = stage_directions(k - pose_stages_, f.camera[2]);
  const int64_t direction_rows = (D1 + kDirectionParts - 1) / kDirectionParts;
  float part_X[kDirectionParts][2 * kLandmarks68], part_w[kDirectionParts][kCameraParams];
  detail::parallel_for(kDirectionParts, num_threads, [&](int64_t first, int64_t last) {
    for (int64_t part = first; part < last; ++part) {
      const int64_t r0 = part * direction_rows, rows = std::min(direction_rows, D1 - r0);
      std::fill(part_X[part], part_X[part] + 2 * kLandmarks68, 0.0f);
      std::fill(part_w[part], part_w[part] + kCameraParams, 0.0f);
      for (const StageDirection& d : directions) {
        detail::accumulate_transposed_product(f.Z.data() + r0, d.R_X + r0 * 2 * kLandmarks68, rows, 2 * kLandmarks68,
                                              d.share, part_X[part]);
        detail::accumulate_transposed_product(f.Z.data() + r0, d.R_w + r0 * kCameraParams, rows, kCameraParams,
                                              d.share, part_w[part]);
      }
    }
  });
  apply_stage_update(k, part_X[0], part_w[0], f, camera_refit);
}

void Cascade::stage_update_batch(int k, std::vector<FaceRun>& faces, bool camera_refit, int num_threads) const {
  const auto count = static_cast<int64_t>(faces.size());
  if (k < pose_stages_) {  // the pose start's camera step: one small product per face
    for_each_index(count, num_threads, [&](int64_t i) { stage_update(k, faces[i], camera_refit, 1); });
    return;
  }
  const auto D1 = static_cast<int64_t>(faces.front().Z.size());
  const int64_t direction_rows = (D1 + kDirectionParts - 1) / kDirectionParts;
  std::vector<StageDirections> directions(count);
  for (int64_t i = 0; i < count; ++i) directions[i] = stage_directions(k - pose_stages_, faces[i].camera[2]);
  // Per face and row range the partial products, as stage_update's part_X and part_w.
  std::vector<float> part_X(count * kDirectionParts * 2 * kLandmarks68, 0.0f);
  std::vector<float> part_w(count * kDirectionParts * kCameraParams, 0.0f);
  // Each face's first direction set for all faces, then each face's second (a face's sets add in
  // stage_update's order); the faces that share a set (a generic stage, a yaw sector) in groups
  // of kProductGroup, so that the set's matrices are read once per group.
  for (int item = 0; item < 2; ++item) {
    std::map<const float*, std::vector<int64_t>> faces_of_set;
    for (int64_t i = 0; i < count; ++i)
      if (directions[i].count > item) faces_of_set[directions[i].item[item].R_X].push_back(i);
    struct Work {
      const StageDirection* direction;  // the group's set (its first face's copy)
      int64_t part, first, size;        // row range; the group's faces in `group_faces`
    };
    std::vector<int64_t> group_faces;
    std::vector<Work> work;
    for (const auto& [set, members] : faces_of_set) {
      const auto n = static_cast<int64_t>(members.size());  // in groups of equal size, at most kProductGroup
      const int64_t groups = (n + kProductGroup - 1) / kProductGroup, per_group = (n + groups - 1) / groups;
      for (int64_t g0 = 0; g0 < n; g0 += per_group) {
        const auto first = static_cast<int64_t>(group_faces.size());
        const int64_t size = std::min(per_group, n - g0);
        group_faces.insert(group_faces.end(), members.begin() + g0, members.begin() + g0 + size);
        for (int64_t part = 0; part < kDirectionParts; ++part)
          work.push_back({&directions[members[g0]].item[item], part, first, size});
      }
    }
    for_each_index(static_cast<int64_t>(work.size()), num_threads, [&](int64_t w) {
      const Work& job = work[w];
      const int64_t r0 = job.part * direction_rows, rows = std::min(direction_rows, D1 - r0);
      const float* z[kProductGroup];
      float *out_X[kProductGroup], *out_w[kProductGroup];
      float share[kProductGroup];
      for (int64_t g = 0; g < job.size; ++g) {
        const int64_t i = group_faces[job.first + g];
        z[g] = faces[i].Z.data() + r0;
        out_X[g] = part_X.data() + (i * kDirectionParts + job.part) * 2 * kLandmarks68;
        out_w[g] = part_w.data() + (i * kDirectionParts + job.part) * kCameraParams;
        share[g] = directions[i].item[item].share;
      }
      const StageDirection& d = *job.direction;
      detail::accumulate_transposed_products(z, d.R_X + r0 * 2 * kLandmarks68, rows, 2 * kLandmarks68, share, out_X,
                                             job.size);
      detail::accumulate_transposed_products(z, d.R_w + r0 * kCameraParams, rows, kCameraParams, share, out_w,
                                             job.size);
    });
  }
  for_each_index(count, num_threads, [&](int64_t i) {
    apply_stage_update(k, part_X.data() + i * kDirectionParts * 2 * kLandmarks68,
                       part_w.data() + i * kDirectionParts * kCameraParams, faces[i], camera_refit);
  });
}

void Cascade::apply_stage_update(int k, const float* part_X, const float* part_w, FaceRun& f,
                                 bool camera_refit) const {
  Eigen::VectorXf dX = Eigen::VectorXf::Zero(2 * kLandmarks68), dw = Eigen::VectorXf::Zero(kCameraParams);
  for (int64_t part = 0; part < kDirectionParts; ++part) {  // in order, whichever thread computed them
    dX += Eigen::Map<const Eigen::VectorXf>(part_X + part * 2 * kLandmarks68, 2 * kLandmarks68);
    dw += Eigen::Map<const Eigen::VectorXf>(part_w + part * kCameraParams, kCameraParams);
  }
  float x_hat[2 * kLandmarks68];
  for (int i = 0; i < 2 * kLandmarks68; ++i) x_hat[i] = f.g.X[i] + dX[i];
  for (int i = 0; i < kCameraParams; ++i) f.camera[i] += static_cast<double>(dw[i]);
  f.camera[0] = std::max(f.camera[0], kMinScale);
  // eq. 6-8, and after the last stage the camera refit
  fit_to_landmarks(x_hat, f.camera, f.p.data(), camera_refit && k == stages_ - 1 ? refit_rounds_ : 0);
}

double Cascade::face_score(const float* face_maps, bool channels_last, FaceRun& f) const {
  sample_face(face_maps, channels_last, f, 1);  // the alignment score at the final landmarks
  const int64_t L = num_landmarks(), C = channels_;
  double total = 0.0;
  int64_t seen = 0;
  for (int64_t l = 0; l < L; ++l) {
    if (!f.g.V[l]) continue;
    double cosine = 0.0;
    for (int64_t c = 0; c < C; ++c) cosine += double{f.Z[l * C + c]} * double{template_[l * C + c]};
    total += cosine;
    ++seen;
  }
  return seen > 0 ? total / static_cast<double>(seen) : -1.0;
}

CascadeResult Cascade::run(const float* maps, int64_t batch, bool channels_last, int num_threads,
                           bool camera_refit) const {
  if (batch <= 0) throw std::invalid_argument("dffx::Cascade::run: batch must be positive");
  if (!maps) throw std::invalid_argument("dffx::Cascade::run: null maps");
  CascadeResult out = allocate_result(batch, !template_.empty());
  const int64_t face_floats = channels_ * crop_size_ * crop_size_;
  if (batch == 1) {  // one face: eq. 4-8 for K stages, its kernels on all the threads
    FaceRun f = start_face();
    for (int k = 0; k < stages_; ++k) {
      sample_face(maps, channels_last, f, num_threads);
      stage_update(k, f, camera_refit, num_threads);
      update_geometry(f.p.data(), f.camera, f.g, num_threads);
    }
    if (!template_.empty()) out.scores[0] = face_score(maps, channels_last, f);
    write_face(0, f.g, f.camera, f.p.data(), out);
    return out;
  }
  // A batch, stage by stage, kStageBatch faces at a time: the faces are split between the threads
  // for their features, updates and visibility, and their meshes are one pass over the basis.
  for (int64_t b0 = 0; b0 < batch; b0 += kStageBatch) {
    std::vector<FaceRun> faces(std::min(kStageBatch, batch - b0));
    const auto count = static_cast<int64_t>(faces.size());
    for_each_index(count, num_threads, [&](int64_t i) { faces[i] = start_face(); });
    for (int k = 0; k < stages_; ++k) {
      for_each_index(count, num_threads,
                     [&](int64_t i) { sample_face(maps + (b0 + i) * face_floats, channels_last, faces[i], 1); });
      stage_update_batch(k, faces, camera_refit, num_threads);
      update_geometry_batch(faces, num_threads);
    }
    for_each_index(count, num_threads, [&](int64_t i) {
      if (!template_.empty()) out.scores[b0 + i] = face_score(maps + (b0 + i) * face_floats, channels_last, faces[i]);
      write_face(b0 + i, faces[i].g, faces[i].camera, faces[i].p.data(), out);
    });
  }
  return out;
}

}  // namespace dffx
