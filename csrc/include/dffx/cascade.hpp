// The alignment cascade of paper Sec. III-C (eq. 4-8) in C++, for programs that run the DFF
// network themselves (ONNX Runtime, TensorRT, ...: `dffx export-onnx`) and want the landmarks,
// visibility, camera and 3D shape without Python.
//
// A cascade file (`dffx export-cascade --out FILE`) holds the face model restricted to what the
// cascade uses (mean shape, bases, prior, triangles, the 68 and 160 landmark vertices) and the
// learned descent directions. Per face, starting from the mean shape under the mean camera (in a
// file with a pose start, its P camera-only stages first move the camera,
// w <- w + [F, 1] R_w_pose[k], the shape staying the mean), then:
//
//   for k in 0..K-1:
//     V   = visibility of the 160 landmarks from the depth test of the current mesh (raster.hpp)
//     F   = DFF sampled at the 160 projected landmarks, hidden ones zero (sampling.hpp, eq. 4-5)
//     X^  = X + [F, 1] R_X[k];   w <- w + [F, 1] R_w[k];   s >= 1e-3
//           (in a pose-fused file, stages after the generic ones blend per-yaw-sector directions
//            by the current yaw: sum_s a_s(yaw) [F, 1] R_X[k, s], dffx.align.pose_sectors)
//     p   = the regularised least-squares fit of eq. 6-8 to X^ under w (shape_fit.hpp), with
//           landmark weights 1 / s^2 (the landmark term in model units) and the file's w_reg
//     after the last stage, the camera refit (dffx.align.camera_refit), `rounds` times:
//       w   = Gauss-Newton fit of the projection of S(p)'s 68 landmark vertices to X^, with a
//             prior kappa |angles - regressed angles|^2 (the file's camera_refit array)
//       p   = the eq. 6-8 fit to X^ under the new w
//     mesh = S(p) = mean + B p (eq. 3), projected with w (eq. 2): new X (68), U (160), V
//   score = mean cosine between F at the final landmarks and the file's template, over the
//           visible landmarks (-1 when none is visible)
//
// Everything is in the pixels of the canonical face crop (crop_size x crop_size, 224; built as
// dffx.preprocess.crop_face builds it); mapping back to the photo is the caller's (the crop is a
// scale and a shift). This is dffx.align.Cascade.run (its twin in Python); tests compare them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace dffx {
namespace detail {
class CascadeShapeFit;
}

/// What Cascade::run returns for B faces (row-major).
struct CascadeResult {
  int64_t batch = 0;
  std::vector<float> landmarks;  ///< (B, 68, 2) iBUG landmarks, crop pixels (x right, y down)
  std::vector<uint8_t> visible;  ///< (B, 68) depth-test visibility of those landmarks
  std::vector<double> cameras;   ///< (B, 6) w = (s, pitch, yaw, roll, tx, ty), crop pixels, radians
  std::vector<float> params;     ///< (B, M) shape parameters (p_id then p_exp)
  std::vector<float> vertices;   ///< (B, N, 3) the projected mesh: x, y, depth in crop pixels
  std::vector<float> dense_landmarks;  ///< (B, L, 2) the L sampled landmarks (the first 68 are the iBUG 68)
  std::vector<uint8_t> dense_visible;  ///< (B, L) their visibility
  std::vector<double> scores;    ///< (B,) alignment confidence in [-1, 1]; empty without a template
};

class Cascade {
 public:
  /// Read a cascade file. Throws std::runtime_error naming the file and the problem (missing,
  /// not a cascade file, a missing or malformed array, sizes that do not fit together).
  static Cascade load(const std::string& path);

  /// The same from the bytes of such a file in memory (a file embedded in a program, or
  /// dffx.align.export.cascade_file_bytes). Throws std::runtime_error like load.
  static Cascade from_bytes(const void* data, size_t size);

  int64_t crop_size() const { return crop_size_; }         ///< the crop's side, pixels (224)
  int64_t channels() const { return channels_; }           ///< DFF dimension C (32)
  int64_t num_landmarks() const { return landmarks160_.size(); }  ///< L, sampled landmarks (160)
  int64_t num_params() const { return prior_.size(); }     ///< M
  int64_t num_vertices() const { return mean_.size() / 3; }  ///< N
  int stages() const { return stages_; }                   ///< K
  const std::vector<int32_t>& triangles() const { return triangles_; }  ///< (T, 3)

  /// Align B faces from their DFF maps: (B, C, S, S) float32, or (B, S, S, C) with
  /// channels_last, S = crop_size(), unit C-vectors per pixel. num_threads <= 0: all cores.
  /// A batch runs stage by stage: every face's features, update and fit, then all faces' meshes
  /// in one pass over the shape basis (read once per stage for the batch, not once per face),
  /// with the faces split between the threads; one face gets the threads for its mesh and
  /// direction products. A face's result is the same alone or in a batch, on any thread count
  /// (the same sums in the same order). Thread-safe (const).
  /// camera_refit = false skips the camera refit whatever the file says (a tracker's frames).
  /// Throws std::invalid_argument for B <= 0 or a null pointer.
  CascadeResult run(const float* maps, int64_t batch, bool channels_last = false, int num_threads = 0,
                    bool camera_refit = true) const;

  /// The cascade's 3DMM fit without its regression, for landmarks found another way (the tiny-face
  /// network's, issue 26): per face the shape fit of eq. 6-8 to the 68 landmarks under the start
  /// camera, then the file's camera-refit rounds (each a Gauss-Newton camera refit from the start
  /// camera and the shape fit again; none in a file without the refit), then the mesh and the
  /// visibility, as run's last stage does after its regression. landmarks: (B, 68, 2) float32,
  /// crop pixels; cameras: (B, 6) start cameras (s > 0), crop pixels and radians. The result is
  /// run's, without scores; its landmarks are the fitted mesh's. Thread-safe (const); the result
  /// does not depend on the thread count. Throws std::invalid_argument for B <= 0, a null
  /// pointer, or a landmark or camera that is not finite or a scale that is not positive.
  CascadeResult fit_landmarks(const float* landmarks, const double* cameras, int64_t batch,
                              int num_threads = 0) const;

  /// The vector build of run's mesh and direction-product loops this process uses: "avx512f",
  /// "avx2+fma" (their sums contract into FMAs) or "baseline" (SSE2); the widest the CPU runs,
  /// or narrower with the environment variable DFFX_CPU_KERNELS=baseline|avx2|avx512 set before
  /// the first call. Results agree across builds to float rounding (tests/align/test_cascade_cpp.py).
  static const char* kernel_isa();

 private:
  struct Geometry {             // one face's mesh under its camera
    std::vector<float> screen;  // (N, 3) projected vertices: x, y, depth
    std::vector<float> X, U;    // (68, 2), (L, 2)
    std::vector<uint8_t> V;     // (L,)
  };
  struct StageDirection {  // one set of stage-k directions and its share of the update
    const float* R_X;      // (D + 1, 136)
    const float* R_w;      // (D + 1, 6)
    float share;
  };
  struct FaceRun {  // one face's state between the stages of run
    std::vector<float> Z, p;    // (L C + 1) features and the bias 1; (M) shape
    Geometry g;
    double camera[6];
  };
  struct StageDirections {  // at most two (neighbouring yaw sectors): no allocation per face and stage
    StageDirection item[2];
    int count = 0;
    const StageDirection* begin() const { return item; }
    const StageDirection* end() const { return item + count; }
  };
  StageDirections stage_directions(int k, double yaw) const;
  static Cascade parse(std::istream& in, const std::string& source);
  void update_geometry(const float* params, const double* camera, Geometry& g, int num_threads) const;
  void mesh_vertices(const float* params, const double* camera, float* screen, int num_threads) const;
  // Every face's mesh (from its p and camera into g.screen) in one pass over the basis, the same
  // values as mesh_vertices for each, then every face's finish_geometry (split between the threads).
  void update_geometry_batch(std::vector<FaceRun>& faces, int num_threads) const;
  // g.V, g.X and g.U from g.screen (the landmarks' visibility and positions); throws for a mesh
  // that is not finite.
  void finish_geometry(Geometry& g) const;
  // run's pieces, shared by the one-face and the stage-synchronous batch paths
  FaceRun start_face() const;
  void sample_face(const float* face_maps, bool channels_last, FaceRun& f, int num_threads) const;
  // stage k's update: the pose start's camera step (k < pose_stages_), or the regression of
  // eq. 9-10 (direction products in kDirectionParts row ranges, parts threads) and eq. 6-8
  void stage_update(int k, FaceRun& f, bool camera_refit, int num_threads) const;
  // stage_update for every face of a batch, the same values: the faces that share a direction set
  // take its products together, so that its matrices are read once per group of faces
  void stage_update_batch(int k, std::vector<FaceRun>& faces, bool camera_refit, int num_threads) const;
  // stage_update after its direction products: part_X (kDirectionParts, 136) and part_w
  // (kDirectionParts, 6) summed in order, the camera step, eq. 6-8 and the refit
  void apply_stage_update(int k, const float* part_X, const float* part_w, FaceRun& f, bool camera_refit) const;
  double face_score(const float* face_maps, bool channels_last, FaceRun& f) const;
  // eq. 6-8 to x_hat (68, 2) under camera, then `rounds` camera refits from that camera, each
  // followed by eq. 6-8 again; camera (6) in and out, p (M) out.
  void fit_to_landmarks(const float* x_hat, double* camera, float* p, int rounds) const;
  // Face b's outputs into `out` (allocated for the batch by allocate_result).
  void write_face(int64_t b, const Geometry& g, const double* camera, const float* p, CascadeResult& out) const;
  CascadeResult allocate_result(int64_t batch, bool scores) const;

  int64_t crop_size_ = 0, channels_ = 0, n_identity_ = 0;
  int stages_ = 0, generic_stages_ = 0;      // all stages; the generic ones (before the yaw sectors)
  int pose_stages_ = 0;                      // camera-only stages of the pose start (before all others)
  int refit_rounds_ = 0, refit_steps_ = 0;  // the camera refit; 0 rounds in files without it
  double refit_prior_ = 0.0;
  float tolerance_ = 1.0f;
  double w_reg_ = 0.0;
  std::vector<float> mean_, basis_rows_, prior_;  // (N*3), (M, N*3), (M)
  std::vector<float> mean68_, basis68_;           // (68, 3), (68, 3, M) for the shape fit
  std::vector<int32_t> triangles_, landmarks68_, landmarks160_;
  std::vector<double> mean_camera_;               // (6)
  std::vector<float> R_X_, R_w_;                  // (K, D + 1, 136), (K, D + 1, 6): the generic stages
  std::vector<float> R_w_pose_;                   // (P, D + 1, 6) or empty
  std::vector<double> sector_yaw_;                // (S) yaw-sector centres, degrees; empty without sectors
  std::vector<float> R_X_sectors_, R_w_sectors_;  // (K_s, S, D + 1, 136), (K_s, S, D + 1, 6)
  std::vector<float> template_;                   // (L, C) or empty
  Geometry start_;                                // the mean shape under the mean camera: every face's start
  std::shared_ptr<const detail::CascadeShapeFit> shape_fit_;  // eq. 6-8 with G precomputed
};

}  // namespace dffx
