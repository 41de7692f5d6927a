"""DFF extraction latency (paper Sec. III-B network), extractor vs a plain reference in the same run.

Groups ``dff-extract-b1`` and ``dff-extract-b8``: 224x224 BGR uint8 face-crop-sized images, batch 1
and 8, with the default network configuration (``DFFNetConfig()``: 1.94 M parameters, 2.35 G
multiply-adds per image). Random-initialised weights (seed 0), since no trained weights ship
yet; latency does not depend on the weight values.

* ``extractor``: :meth:`dffx.nn.DFFExtractor.extract` as users call it -- uint8 BGR -> RGB float
  conversion, BatchNorm folded into the convolutions, channels-last memory format,
  ``torch.inference_mode``;
* ``reference``: the same conversion, then the unfused float32 net in eval mode, contiguous
  (NCHW) layout, under ``torch.no_grad``;
* ``extractor_bfloat16``: the extractor with ``precision="bfloat16"`` (weights and activations
  in bfloat16; faster where the CPU has AMX or AVX512-BF16, slower elsewhere);
* ``onnxruntime``: the same network exported to ONNX (``dffx export-onnx``) and run by
  :class:`dffx.nn.onnx_runtime.OnnxDFFExtractor` (skipped without onnx and onnxruntime).

Each float32 benchmark checks that the two float32 paths agree (max abs difference of the unit
features <= 1e-4); the bfloat16 one that its unit features point where the float32 ones do
(mean cosine >= 0.99).
The CPU thread count is torch's default (all cores).

Groups ``dff-extract-cuda-b1`` and ``-b8`` (marked ``cuda``, skipped without a GPU) time the same two
on a GPU, each call synchronised so the time includes the kernels it queued; the paper reports
5 ms per image on a GTX 1070. cuDNN convolutions default to TF32 (10 mantissa bits), and the
extractor's folded BatchNorm rounds differently from the reference's, so the agreement asked for
on the GPU is 1e-2 per component of the unit features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dffx.nn import DFFExtractor, DFFNet, cpu_has_native_bfloat16, images_to_tensor, load_weights, save_weights

SIZE = 224
TOL = 1e-4


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    net = DFFNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for _ in range(2):
            net(torch.rand(2, 3, 64, 64))
    return save_weights(tmp_path_factory.mktemp("dff") / "bench.pt", net.eval(), {"note": "random init"})


@pytest.fixture(scope="module")
def extractor(weights_file):
    return DFFExtractor(weights_file, device="cpu")


@pytest.fixture(scope="module")
def reference_net(weights_file):
    return load_weights(weights_file)[0].eval()


def _images(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(0, 256, size=(batch, SIZE, SIZE, 3), dtype=np.uint8)


def _reference(net, images):
    with torch.no_grad():
        return net(images_to_tensor(images))


@pytest.mark.parametrize("batch", [1, 8])
def test_extract_extractor(benchmark, extractor, reference_net, batch):
    benchmark.group = f"dff-extract-b{batch}"
    images = _images(batch)
    extractor.extract(images)  # warm-up (oneDNN primitive creation)
    out = benchmark(extractor.extract, images)
    assert out.shape == (batch, 32, SIZE, SIZE)
    assert (out - _reference(reference_net, images)).abs().max() <= TOL


@pytest.mark.parametrize("batch", [1, 8])
def test_extract_reference(benchmark, extractor, reference_net, batch):
    benchmark.group = f"dff-extract-b{batch}"
    images = _images(batch)
    _reference(reference_net, images)  # warm-up
    out = benchmark(_reference, reference_net, images)
    assert out.shape == (batch, 32, SIZE, SIZE)
    assert (out - extractor.extract(images)).abs().max() <= TOL


@pytest.mark.parametrize("batch", [1, 8])
def test_extract_extractor_bfloat16(benchmark, weights_file, extractor, batch):
    benchmark.group = f"dff-extract-b{batch}"
    benchmark.extra_info["cpu_has_native_bfloat16"] = cpu_has_native_bfloat16()
    fast = DFFExtractor(weights_file, device="cpu", precision="bfloat16")
    images = _images(batch)
    fast.extract(images)  # warm-up
    out = benchmark(fast.extract, images)
    assert out.shape == (batch, 32, SIZE, SIZE) and out.dtype == torch.float32
    assert (out * extractor.extract(images)).sum(1).mean() >= 0.99


@pytest.fixture(scope="module")
def cuda_extractor(weights_file, cuda_torch):
    return DFFExtractor(weights_file, device="cuda")


@pytest.fixture(scope="module")
def cuda_reference_net(reference_net, cuda_torch):
    import copy

    return copy.deepcopy(reference_net).cuda()


def _synchronised(torch, fn, *args):
    out = fn(*args)
    torch.cuda.synchronize()
    return out


def _reference_cuda(net, images):
    with torch.no_grad():
        return net(images_to_tensor(images).cuda())


CUDA_TOL = 1e-2


def _bench_cuda(benchmark, torch, batch, timed, other):
    """Time ``timed(images)`` on the GPU in group dff-extract-cuda-b<batch> after one warm-up (cuDNN
    algorithm choice); assert it agrees with ``other(images)``; return its output."""
    benchmark.group = f"dff-extract-cuda-b{batch}"
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    images = _images(batch)
    timed(images)
    out = benchmark(_synchronised, torch, timed, images)
    assert out.shape == (batch, 32, SIZE, SIZE)
    assert (out - other(images)).abs().max() <= CUDA_TOL
    return out


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 8])
def test_extract_extractor_cuda(benchmark, cuda_extractor, cuda_reference_net, cuda_torch, batch):
    out = _bench_cuda(benchmark, cuda_torch, batch, cuda_extractor.extract,
                      lambda images: _reference_cuda(cuda_reference_net, images))
    assert out.is_cuda


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 8])
def test_extract_reference_cuda(benchmark, cuda_extractor, cuda_reference_net, cuda_torch, batch):
    _bench_cuda(benchmark, cuda_torch, batch, lambda images: _reference_cuda(cuda_reference_net, images),
                cuda_extractor.extract)


@pytest.mark.parametrize("batch", [1, 8])
def test_extract_onnxruntime(benchmark, weights_file, extractor, tmp_path_factory, batch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dffx.nn.onnx_export import export_onnx
    from dffx.nn.onnx_runtime import OnnxDFFExtractor

    benchmark.group = f"dff-extract-b{batch}"
    onnx_extractor = OnnxDFFExtractor(export_onnx(tmp_path_factory.mktemp("onnx") / "bench.onnx", weights_file))
    images = _images(batch)
    onnx_extractor.extract(images)  # warm-up
    out = benchmark(onnx_extractor.extract, images)
    assert out.shape == (batch, 32, SIZE, SIZE)
    assert np.abs(out - extractor.extract(images).numpy()).max() <= TOL
