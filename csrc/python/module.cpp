// pybind11 bindings: dffx._C. Thin: shapes are checked here (so bad input can never reach
// a kernel as a wrong-sized buffer), semantics live in the core, friendly checks in Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "dffx/dffx.hpp"

namespace py = pybind11;

namespace {

template <class T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void expect_shape(const py::array& a, std::initializer_list<int64_t> shape, const char* name) {
  std::string want = "(";
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int i = 0;
  for (int64_t d : shape) {
    want += (d < 0 ? std::string("*") : std::to_string(d)) + (i + 1 < static_cast<int>(shape.size()) ? ", " : ")");
    if (ok && d >= 0 && a.shape(i) != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::string got = "(";
    for (py::ssize_t k = 0; k < a.ndim(); ++k) got += std::to_string(a.shape(k)) + (k + 1 < a.ndim() ? ", " : "");
    throw py::value_error(std::string(name) + " must have shape " + want + ", got " + got + ")");
  }
}

py::tuple rasterize(carray<float> vertices, carray<int32_t> triangles, int64_t height, int64_t width, int threads) {
  expect_shape(vertices, {-1, -1, 3}, "vertices");
  expect_shape(triangles, {-1, 3}, "triangles");
  dffx::RasterShape s{vertices.shape(0), vertices.shape(1), triangles.shape(0), height, width};
  if (height <= 0 || width <= 0) throw py::value_error("image size must be positive");
  py::array_t<float> depth({s.batch, s.height, s.width});
  py::array_t<int32_t> tri_id({s.batch, s.height, s.width});
  py::array_t<float> bary({s.batch, s.height, s.width, int64_t{3}});
  {
    const float* v = vertices.data();
    const int32_t* t = triangles.data();
    float *d = depth.mutable_data(), *b = bary.mutable_data();
    int32_t* id = tri_id.mutable_data();
    py::gil_scoped_release release;
    dffx::rasterize(v, t, s, d, id, b, threads);
  }
  return py::make_tuple(depth, tri_id, bary);
}

py::array landmark_visibility(carray<float> vertices, carray<int32_t> landmark_index, carray<float> depth,
                              float tolerance) {
  expect_shape(vertices, {-1, -1, 3}, "vertices");
  expect_shape(landmark_index, {-1}, "landmark_index");
  expect_shape(depth, {vertices.shape(0), -1, -1}, "depth");
  dffx::RasterShape s{vertices.shape(0), vertices.shape(1), 0, depth.shape(1), depth.shape(2)};
  py::array_t<uint8_t> visible({s.batch, static_cast<int64_t>(landmark_index.shape(0))});
  dffx::landmark_visibility(vertices.data(), landmark_index.data(), landmark_index.shape(0), depth.data(), s,
                            tolerance, visible.mutable_data());
  return visible.attr("astype")("bool");
}

py::array mesh_landmark_visibility(carray<float> vertices, carray<int32_t> triangles, carray<int32_t> landmark_index,
                                   int64_t height, int64_t width, float tolerance, int threads) {
  expect_shape(vertices, {-1, -1, 3}, "vertices");
  expect_shape(triangles, {-1, 3}, "triangles");
  expect_shape(landmark_index, {-1}, "landmark_index");
  if (height <= 0 || width <= 0) throw py::value_error("image size must be positive");
  dffx::RasterShape s{vertices.shape(0), vertices.shape(1), triangles.shape(0), height, width};
  py::array_t<uint8_t> visible({s.batch, static_cast<int64_t>(landmark_index.shape(0))});
  {
    const float* v = vertices.data();
    const int32_t *t = triangles.data(), *idx = landmark_index.data();
    const int64_t L = landmark_index.shape(0);
    uint8_t* out = visible.mutable_data();
    py::gil_scoped_release release;
    dffx::mesh_landmark_visibility(v, t, idx, L, s, tolerance, out, threads);
  }
  return visible.attr("astype")("bool");
}

dffx::LandmarkModel landmark_model(const carray<float>& mean, const carray<float>& basis,
                                   const carray<float>& prior_variance) {
  expect_shape(mean, {-1, 3}, "mean");
  expect_shape(basis, {mean.shape(0), 3, -1}, "basis");
  expect_shape(prior_variance, {basis.shape(2)}, "prior_variance");
  return {mean.data(), basis.data(), prior_variance.data(), mean.shape(0), basis.shape(2)};
}

const float* optional_weights(const std::optional<carray<float>>& weights, int64_t count, int64_t L) {
  if (!weights) return nullptr;
  expect_shape(*weights, {count, L}, "landmark_weights");
  return weights->data();
}

py::array fit_shape(carray<float> mean, carray<float> basis, carray<float> prior_variance, carray<float> targets,
                    std::optional<carray<float>> landmark_weights, carray<float> cameras, double w_lan,
                    double w_reg, int threads) {
  const dffx::LandmarkModel m = landmark_model(mean, basis, prior_variance);
  expect_shape(targets, {-1, m.num_landmarks, 2}, "targets");
  const int64_t B = targets.shape(0);
  expect_shape(cameras, {B, dffx::kCameraParams}, "cameras");
  const float* lw = optional_weights(landmark_weights, B, m.num_landmarks);
  py::array_t<float> out({B, m.num_params});
  {
    const float *t = targets.data(), *c = cameras.data();
    float* o = out.mutable_data();
    py::gil_scoped_release release;
    dffx::fit_shape(m, t, lw, c, B, {w_lan, w_reg}, o, threads);
  }
  return out;
}

py::array fit_shared_shape(carray<float> mean, carray<float> basis, carray<float> prior_variance,
                           carray<float> targets, std::optional<carray<float>> landmark_weights,
                           carray<float> cameras, double w_lan, double w_reg) {
  const dffx::LandmarkModel m = landmark_model(mean, basis, prior_variance);
  expect_shape(targets, {-1, m.num_landmarks, 2}, "targets");
  const int64_t N = targets.shape(0);
  expect_shape(cameras, {N, dffx::kCameraParams}, "cameras");
  const float* lw = optional_weights(landmark_weights, N, m.num_landmarks);
  py::array_t<float> out(m.num_params);
  dffx::fit_shared_shape(m, targets.data(), lw, cameras.data(), N, {w_lan, w_reg}, out.mutable_data());
  return out;
}

py::array project(carray<float> vertices, carray<float> cameras) {
  expect_shape(cameras, {-1, dffx::kCameraParams}, "cameras");
  const int64_t B = cameras.shape(0);
  const bool shared = vertices.ndim() == 2;
  if (shared)
    expect_shape(vertices, {-1, 3}, "vertices");
  else
    expect_shape(vertices, {B, -1, 3}, "vertices");
  const int64_t N = vertices.shape(shared ? 0 : 1);
  py::array_t<float> out({B, N, int64_t{3}});
  dffx::project_weak_perspective(vertices.data(), cameras.data(), B, N, shared, out.mutable_data());
  return out;
}

py::array rotation_matrix(double pitch, double yaw, double roll) {
  py::array_t<double> R({3, 3});
  dffx::rotation_matrix(pitch, yaw, roll, R.mutable_data());
  return R;
}

// ---- DFF loss (angular softmax, Sec. III-B)
dffx::AngularSoftmaxShape angular_softmax_shape(const py::array& features, const py::array& labels,
                                                const py::array& class_vectors) {
  expect_shape(features, {-1, -1}, "features");
  expect_shape(class_vectors, {-1, -1, features.shape(1)}, "class_vectors");
  expect_shape(labels, {features.shape(0), class_vectors.shape(0)}, "labels");
  return {features.shape(0), class_vectors.shape(0), class_vectors.shape(1), features.shape(1)};
}

py::tuple angular_softmax_forward(carray<float> features, carray<int32_t> labels, carray<float> class_vectors,
                                  float scale, int threads) {
  const dffx::AngularSoftmaxShape s = angular_softmax_shape(features, labels, class_vectors);
  py::array_t<float> loss(s.num_segmentations);
  py::array_t<int64_t> correct(s.num_segmentations);
  py::array_t<float> lse({s.num_segmentations, s.num_pixels});
  {
    const float *f = features.data(), *h = class_vectors.data();
    const int32_t* l = labels.data();
    float *lo = loss.mutable_data(), *ls = lse.mutable_data();
    int64_t* c = correct.mutable_data();
    py::gil_scoped_release release;
    dffx::angular_softmax_forward(f, l, h, s, scale, lo, c, ls, threads);
  }
  return py::make_tuple(loss, correct, lse);
}

py::tuple angular_softmax_backward(carray<float> features, carray<int32_t> labels, carray<float> class_vectors,
                                   carray<float> log_sum_exp, carray<float> grad_loss, float scale,
                                   bool need_features, bool need_class_vectors, int threads) {
  const dffx::AngularSoftmaxShape s = angular_softmax_shape(features, labels, class_vectors);
  expect_shape(log_sum_exp, {s.num_segmentations, s.num_pixels}, "log_sum_exp");
  expect_shape(grad_loss, {s.num_segmentations}, "grad_loss");
  py::object gf = py::none(), gh = py::none();
  float *gf_ptr = nullptr, *gh_ptr = nullptr;
  if (need_features) {
    py::array_t<float> a({s.num_pixels, s.dim});
    gf_ptr = a.mutable_data();
    gf = a;
  }
  if (need_class_vectors) {
    py::array_t<float> a({s.num_segmentations, s.num_classes, s.dim});
    gh_ptr = a.mutable_data();
    gh = a;
  }
  {
    const float *f = features.data(), *h = class_vectors.data(), *ls = log_sum_exp.data(), *g = grad_loss.data();
    const int32_t* l = labels.data();
    py::gil_scoped_release release;
    dffx::angular_softmax_backward(f, l, h, ls, g, s, scale, gf_ptr, gh_ptr, threads);
  }
  return py::make_tuple(gf, gh);
}

// ---- Landmark feature sampling (F^(k), Sec. III-C2)
dffx::SamplingShape sampling_shape(const py::array& maps, const py::array& points, const py::array& visible) {
  expect_shape(maps, {-1, -1, -1, -1}, "maps");
  expect_shape(points, {maps.shape(0), -1, 2}, "points");
  expect_shape(visible, {maps.shape(0), points.shape(1)}, "visible");
  return {maps.shape(0), maps.shape(1), maps.shape(2), maps.shape(3), points.shape(1)};
}

py::array sample_landmark_features(carray<float> maps, carray<float> points, carray<uint8_t> visible, int threads,
                                   bool channels_last) {
  dffx::SamplingShape s = sampling_shape(maps, points, visible);
  if (channels_last) {  // maps given as (B, H, W, C)
    s.height = maps.shape(1);
    s.width = maps.shape(2);
    s.channels = maps.shape(3);
    s.channels_last = true;
  }
  py::array_t<float> out({s.batch, s.num_landmarks * s.channels});
  {
    const float *m = maps.data(), *p = points.data();
    const uint8_t* v = visible.data();
    float* o = out.mutable_data();
    py::gil_scoped_release release;
    dffx::sample_landmark_features(m, p, v, s, o, threads);
  }
  return out;
}

py::array sample_landmark_features_backward(carray<float> maps, carray<float> points, carray<uint8_t> visible,
                                            carray<float> grad_features, int threads) {
  const dffx::SamplingShape s = sampling_shape(maps, points, visible);
  expect_shape(grad_features, {s.batch, s.num_landmarks * s.channels}, "grad_features");
  // numpy.zeros (calloc): only the pages the landmarks touch are ever written, so a large
  // batch does not pay for clearing B * C * H * W floats up front.
  py::array_t<float> grad_maps = py::module_::import("numpy").attr("zeros")(
      py::make_tuple(s.batch, s.channels, s.height, s.width), "float32");
  {
    const float *m = maps.data(), *p = points.data(), *g = grad_features.data();
    const uint8_t* v = visible.data();
    float* o = grad_maps.mutable_data();
    py::gil_scoped_release release;
    dffx::sample_landmark_features_backward(m, p, v, g, s, o, threads);
  }
  return grad_maps;
}

}  // namespace

template <class T>
py::array_t<T> to_array(const std::vector<T>& values, std::vector<int64_t> shape) {
  py::array_t<T> out(shape);
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

// The result of run or fit_landmarks as a dict of arrays.
py::dict cascade_result(const dffx::Cascade& cascade, const dffx::CascadeResult& r) {
  const int64_t B = r.batch, M = cascade.num_params(), N = cascade.num_vertices();
  py::dict out;
  out["landmarks"] = to_array(r.landmarks, {B, 68, 2});
  out["visible"] = to_array(r.visible, {B, 68});
  out["cameras"] = to_array(r.cameras, {B, 6});
  out["params"] = to_array(r.params, {B, M});
  out["vertices"] = to_array(r.vertices, {B, N, 3});
  out["dense_landmarks"] = to_array(r.dense_landmarks, {B, cascade.num_landmarks(), 2});
  out["dense_visible"] = to_array(r.dense_visible, {B, cascade.num_landmarks()});
  out["scores"] = r.scores.empty() ? py::object(py::none()) : py::object(to_array(r.scores, {B}));
  return out;
}

py::dict cascade_run(const dffx::Cascade& cascade, carray<float> maps, bool channels_last, int threads,
                     bool camera_refit) {
  const int64_t S = cascade.crop_size(), C = cascade.channels();
  if (channels_last)
    expect_shape(maps, {-1, S, S, C}, "maps");
  else
    expect_shape(maps, {-1, C, S, S}, "maps");
  const int64_t B = maps.shape(0);
  if (B == 0) throw py::value_error("maps: no faces");
  dffx::CascadeResult r;
  {
    const float* data = maps.data();
    py::gil_scoped_release release;
    r = cascade.run(data, B, channels_last, threads, camera_refit);
  }
  return cascade_result(cascade, r);
}

py::dict cascade_fit_landmarks(const dffx::Cascade& cascade, carray<float> landmarks, carray<double> cameras,
                               int threads) {
  expect_shape(landmarks, {-1, 68, 2}, "landmarks");
  const int64_t B = landmarks.shape(0);
  expect_shape(cameras, {B, 6}, "cameras");
  if (B == 0) throw py::value_error("landmarks: no faces");
  dffx::CascadeResult r;
  {
    const float* x = landmarks.data();
    const double* w = cameras.data();
    py::gil_scoped_release release;
    r = cascade.fit_landmarks(x, w, B, threads);
  }
  return cascade_result(cascade, r);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "dffx native core (C++ CPU kernels, optional CUDA kernels)";
  m.def("version", &dffx::version);
  m.def("cuda_compiled", &dffx::cuda_compiled);
  m.def("cuda_architectures", &dffx::cuda_architectures);
  m.def("cuda_device_count", &dffx::cuda_device_count);
  m.def("rotation_matrix", &rotation_matrix, py::arg("pitch"), py::arg("yaw"), py::arg("roll"));
  py::class_<dffx::Cascade>(m, "Cascade")
      .def_static("load", &dffx::Cascade::load, py::arg("path"))
      .def_static(
          "from_bytes",
          [](py::bytes data) {
            const std::string buffer = data;
            return dffx::Cascade::from_bytes(buffer.data(), buffer.size());
          },
          py::arg("data"))
      .def("run", &cascade_run, py::arg("maps"), py::arg("channels_last") = false, py::arg("threads") = 0,
           py::arg("camera_refit") = true)
      .def("fit_landmarks", &cascade_fit_landmarks, py::arg("landmarks"), py::arg("cameras"), py::arg("threads") = 0)
      .def_property_readonly("crop_size", &dffx::Cascade::crop_size)
      .def_property_readonly("channels", &dffx::Cascade::channels)
      .def_property_readonly("num_landmarks", &dffx::Cascade::num_landmarks)
      .def_property_readonly("num_params", &dffx::Cascade::num_params)
      .def_property_readonly("num_vertices", &dffx::Cascade::num_vertices)
      .def_property_readonly("stages", &dffx::Cascade::stages)
      .def_static("kernel_isa", &dffx::Cascade::kernel_isa);
  m.def("project", &project, py::arg("vertices"), py::arg("cameras"));
  m.def("rasterize", &rasterize, py::arg("vertices"), py::arg("triangles"), py::arg("height"), py::arg("width"),
        py::arg("threads") = 0);
  m.def("landmark_visibility", &landmark_visibility, py::arg("vertices"), py::arg("landmark_index"),
        py::arg("depth"), py::arg("tolerance"));
  m.def("mesh_landmark_visibility", &mesh_landmark_visibility, py::arg("vertices"), py::arg("triangles"),
        py::arg("landmark_index"), py::arg("height"), py::arg("width"), py::arg("tolerance"), py::arg("threads") = 0);
  m.def("fit_shape", &fit_shape, py::arg("mean"), py::arg("basis"), py::arg("prior_variance"), py::arg("targets"),
        py::arg("landmark_weights"), py::arg("cameras"), py::arg("w_lan"), py::arg("w_reg"),
        py::arg("threads") = 0);
  m.def("fit_shared_shape", &fit_shared_shape, py::arg("mean"), py::arg("basis"), py::arg("prior_variance"),
        py::arg("targets"), py::arg("landmark_weights"), py::arg("cameras"), py::arg("w_lan"), py::arg("w_reg"));
  // CUDA entry points take raw device pointers (e.g. torch.Tensor.data_ptr()) and a stream
  // handle, so this module needs no libtorch (see docs/design.md).
  m.def(
      "rasterize_cuda",
      [](uintptr_t vertices, uintptr_t triangles, int64_t B, int64_t N, int64_t F, int64_t H, int64_t W,
         uintptr_t depth, uintptr_t tri_id, uintptr_t bary, uintptr_t stream) {
        py::gil_scoped_release release;
        dffx::cuda::rasterize(reinterpret_cast<const float*>(vertices), reinterpret_cast<const int32_t*>(triangles),
                              {B, N, F, H, W}, reinterpret_cast<float*>(depth), reinterpret_cast<int32_t*>(tri_id),
                              reinterpret_cast<float*>(bary), reinterpret_cast<void*>(stream));
      },
      py::arg("vertices"), py::arg("triangles"), py::arg("batch"), py::arg("num_vertices"), py::arg("num_triangles"),
      py::arg("height"), py::arg("width"), py::arg("depth"), py::arg("triangle_id"), py::arg("barycentric"),
      py::arg("stream"));
  m.def(
      "landmark_visibility_cuda",
      [](uintptr_t vertices, uintptr_t landmark_index, int64_t L, uintptr_t depth, int64_t B, int64_t N, int64_t H,
         int64_t W, float tolerance, uintptr_t visible, uintptr_t stream) {
        py::gil_scoped_release release;
        dffx::cuda::landmark_visibility(reinterpret_cast<const float*>(vertices),
                                        reinterpret_cast<const int32_t*>(landmark_index), L,
                                        reinterpret_cast<const float*>(depth), {B, N, 0, H, W}, tolerance,
                                        reinterpret_cast<uint8_t*>(visible), reinterpret_cast<void*>(stream));
      },
      py::arg("vertices"), py::arg("landmark_index"), py::arg("num_landmarks"), py::arg("depth"), py::arg("batch"),
      py::arg("num_vertices"), py::arg("height"), py::arg("width"), py::arg("tolerance"), py::arg("visible"),
      py::arg("stream"));
  m.def("angular_softmax_forward", &angular_softmax_forward, py::arg("features"), py::arg("labels"),
        py::arg("class_vectors"), py::arg("scale"), py::arg("threads") = 0);
  m.def("angular_softmax_backward", &angular_softmax_backward, py::arg("features"), py::arg("labels"),
        py::arg("class_vectors"), py::arg("log_sum_exp"), py::arg("grad_loss"), py::arg("scale"),
        py::arg("need_features") = true, py::arg("need_class_vectors") = true, py::arg("threads") = 0);
  m.def(
      "angular_softmax_forward_cuda",
      [](uintptr_t features, uintptr_t labels, uintptr_t class_vectors, int64_t N, int64_t K, int64_t C, int64_t D,
         float scale, uintptr_t loss, uintptr_t correct, uintptr_t log_sum_exp, uintptr_t stream) {
        py::gil_scoped_release release;
        dffx::cuda::angular_softmax_forward(
            reinterpret_cast<const float*>(features), reinterpret_cast<const int32_t*>(labels),
            reinterpret_cast<const float*>(class_vectors), {N, K, C, D}, scale, reinterpret_cast<float*>(loss),
            reinterpret_cast<int64_t*>(correct), reinterpret_cast<float*>(log_sum_exp),
            reinterpret_cast<void*>(stream));
      },
      py::arg("features"), py::arg("labels"), py::arg("class_vectors"), py::arg("num_pixels"),
      py::arg("num_segmentations"), py::arg("num_classes"), py::arg("dim"), py::arg("scale"), py::arg("loss"),
      py::arg("correct"), py::arg("log_sum_exp"), py::arg("stream"));
  m.def(
      "angular_softmax_backward_cuda",
      [](uintptr_t features, uintptr_t labels, uintptr_t class_vectors, uintptr_t log_sum_exp, uintptr_t grad_loss,
         int64_t N, int64_t K, int64_t C, int64_t D, float scale, uintptr_t grad_features,
         uintptr_t grad_class_vectors, uintptr_t stream) {
        py::gil_scoped_release release;
        dffx::cuda::angular_softmax_backward(
            reinterpret_cast<const float*>(features), reinterpret_cast<const int32_t*>(labels),
            reinterpret_cast<const float*>(class_vectors), reinterpret_cast<const float*>(log_sum_exp),
            reinterpret_cast<const float*>(grad_loss), {N, K, C, D}, scale, reinterpret_cast<float*>(grad_features),
            reinterpret_cast<float*>(grad_class_vectors), reinterpret_cast<void*>(stream));
      },
      py::arg("features"), py::arg("labels"), py::arg("class_vectors"), py::arg("log_sum_exp"),
      py::arg("grad_loss"), py::arg("num_pixels"), py::arg("num_segmentations"), py::arg("num_classes"),
      py::arg("dim"), py::arg("scale"), py::arg("grad_features"), py::arg("grad_class_vectors"),
      py::arg("stream"));
  m.def("sample_landmark_features", &sample_landmark_features, py::arg("maps"), py::arg("points"),
        py::arg("visible"), py::arg("threads") = 0, py::arg("channels_last") = false);
  m.def("sample_landmark_features_backward", &sample_landmark_features_backward, py::arg("maps"), py::arg("points"),
        py::arg("visible"), py::arg("grad_features"), py::arg("threads") = 0);
  m.def(
      "sample_landmark_features_cuda",
      [](uintptr_t maps, uintptr_t points, uintptr_t visible, int64_t B, int64_t C, int64_t H, int64_t W, int64_t L,
         uintptr_t features, uintptr_t stream) {
        py::gil_scoped_release release;
        dffx::cuda::sample_landmark_features(
            reinterpret_cast<const float*>(maps), reinterpret_cast<const float*>(points),
            reinterpret_cast<const uint8_t*>(visible), {B, C, H, W, L}, reinterpret_cast<float*>(features),
            reinterpret_cast<void*>(stream));
      },
      py::arg("maps"), py::arg("points"), py::arg("visible"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("num_landmarks"), py::arg("features"), py::arg("stream"));
  m.def(
      "sample_landmark_features_backward_cuda",
      [](uintptr_t maps, uintptr_t points, uintptr_t visible, uintptr_t grad_features, int64_t B, int64_t C,
         int64_t H, int64_t W, int64_t L, uintptr_t grad_maps, uintptr_t stream) {
        py::gil_scoped_release release;
        dffx::cuda::sample_landmark_features_backward(
            reinterpret_cast<const float*>(maps), reinterpret_cast<const float*>(points),
            reinterpret_cast<const uint8_t*>(visible), reinterpret_cast<const float*>(grad_features),
            {B, C, H, W, L}, reinterpret_cast<float*>(grad_maps), reinterpret_cast<void*>(stream));
      },
      py::arg("maps"), py::arg("points"), py::arg("visible"), py::arg("grad_features"), py::arg("batch"),
      py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("num_landmarks"), py::arg("grad_maps"),
      py::arg("stream"));
}
