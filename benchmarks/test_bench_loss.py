"""DFF training-loss benchmarks (paper Sec. III-B): the fused native op vs. the chunked PyTorch reference.

Groups (each holds the native kernel and the reference on identical, seeded inputs):

* ``dff-loss-fwd``: forward only (``torch.no_grad()``) of ``angular_softmax_nll`` (C++ CPU kernel)
  vs. ``angular_softmax_nll_reference``, at a CPU training size: N = 4096 pixels, K = 10
  segmentations, C = 500 patches, D = 32, scale 10;
* ``dff-loss-fwd-bwd``: forward + backward (gradients of sum_k l_k for the features and the
  class vectors), same inputs;
* ``dff-loss-cuda``: forward + backward on a GPU at N = 65536 (e.g. 4 images x 16k face
  pixels), K = 20: the fused CUDA kernel vs. the reference on CUDA tensors. Skipped without a GPU.

Every benchmark checks its loss (and gradients) against the other implementation, so a broken
kernel fails instead of producing a fast number. ``extra_info`` records the sizes and the memory
the logits need: ``materialised_logits_mib`` (N x K x C float32, what a naive implementation
holds), ``reference_chunk_logits_mib`` (one chunk of the reference), and the measured peak:
on the CPU ``peak_rss_increase_mib`` (largest growth of the resident set size of a fresh
process during one forward + backward call, sampled from /proc/self/statm every 0.2 ms), on CUDA ``peak_mib``
(``torch.cuda.max_memory_allocated`` during the call, minus the inputs).
"""

from __future__ import annotations

import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dffx.ops.angular_softmax import DEFAULT_REFERENCE_CHUNK, angular_softmax_nll, angular_softmax_nll_reference

SCALE = 10.0
CPU_SIZE = dict(N=4096, K=10, C=500, D=32)
CUDA_SIZE = dict(N=65536, K=20, C=500, D=32)
REFERENCE_ROUNDS = 3           # the CPU reference takes ~0.5-1.5 s per call on 2 cores
CUDA_ROUNDS, CUDA_WARMUP = 20, 3
LOSS_RTOL, GRAD_RTOL = 1e-4, 1e-3


class LossProblem(NamedTuple):
    features: torch.Tensor       # (N, D) float32 unit
    labels: torch.Tensor         # (N, K) int32
    class_vectors: torch.Tensor  # (K, C, D) float32 unit


def make_problem(N, K, C, D, seed=0, device="cpu") -> LossProblem:
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(N, D, generator=g), dim=1)
    h = F.normalize(torch.randn(K, C, D, generator=g), dim=2)
    labels = torch.randint(0, C, (N, K), generator=g, dtype=torch.int32)
    return LossProblem(f.to(device), labels.to(device), h.to(device))


def forward_backward(fn, p: LossProblem):
    """sum_k l_k and its gradients for the features and the class vectors."""
    f = p.features.detach().requires_grad_()
    h = p.class_vectors.detach().requires_grad_()
    loss, correct = fn(f, p.labels, h, SCALE)
    gf, gh = torch.autograd.grad(loss.sum(), (f, h))
    return loss.detach(), correct, gf, gh


def forward(fn, p: LossProblem):
    with torch.no_grad():
        return fn(p.features, p.labels, p.class_vectors, SCALE)


def assert_same_loss(got, want, what: str, grads: bool) -> None:
    np.testing.assert_allclose(got[0].cpu().numpy(), want[0].cpu().numpy(), rtol=LOSS_RTOL, err_msg=what)
    assert np.all(got[0].cpu().numpy() > 1.0), f"{what}: implausible loss {got[0]} - bad benchmark input"
    assert (got[1].cpu() - want[1].cpu()).abs().max() <= 2, f"{what}: hit counts {got[1]} vs {want[1]}"
    if grads:
        for a, b, name in ((got[2], want[2], "features"), (got[3], want[3], "class_vectors")):
            err = (a - b).abs().max().item()
            scale = b.abs().max().item()
            assert err <= GRAD_RTOL * scale, f"{what}: grad {name} max error {err:.3g} (max |grad| {scale:.3g})"


def _info(benchmark, group, backend, size) -> None:
    N, K, C = size["N"], size["K"], size["C"]
    rows = min(N, max(1, DEFAULT_REFERENCE_CHUNK // C))
    chunk = min(K, max(1, DEFAULT_REFERENCE_CHUNK // (rows * C))) * rows * C
    benchmark.group = group
    benchmark.extra_info.update(backend=backend, scale=SCALE, **size,
                                materialised_logits_mib=round(N * K * C * 4 / 2**20, 1),
                                reference_chunk_logits_mib=round(chunk * 4 / 2**20, 1))


@pytest.fixture(scope="module")
def cpu_problem() -> LossProblem:
    return make_problem(**CPU_SIZE)


@pytest.fixture(scope="module")
def cpu_expected(cpu_problem):
    """Reference forward + backward, computed once (float32, as timed)."""
    return forward_backward(angular_softmax_nll_reference, cpu_problem)


_PEAK_RSS_SCRIPT = """
import os, sys, threading, time, torch, torch.nn.functional as F
from dffx.nn import loss as L
N, K, C, D, scale, impl = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
fn = L.angular_softmax_nll if impl == "native" else L.angular_softmax_nll_reference
g = torch.Generator().manual_seed(0)
f = F.normalize(torch.randn(N, D, generator=g), dim=1).requires_grad_()
h = F.normalize(torch.randn(K, C, D, generator=g), dim=2).requires_grad_()
labels = torch.randint(0, C, (N, K), generator=g, dtype=torch.int32)
fn(f[:8].detach(), labels[:8] % 2, h[:, :2].detach().contiguous(), scale)  # load lazily initialised code first
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
peak, done = [rss()], threading.Event()
def poll():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.0002)
before = rss()
thread = threading.Thread(target=poll)
thread.start()
loss, _ = fn(f, labels, h, scale)
loss.sum().backward()
done.set()
thread.join()
print((max(peak[0], rss()) - before) / 2**20)
"""


def peak_rss_increase_mib(impl: str, size) -> float:
    """Peak resident-set growth (MiB) of one forward + backward call in a fresh process ("native" or "reference")."""
    args = [str(size[k]) for k in ("N", "K", "C", "D")] + [str(SCALE), impl]
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, *args], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"peak-memory subprocess failed:\n{out.stderr}"
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


# ---------------------------------------------------------------------------- CPU
def test_loss_fwd_native_cpu(benchmark, cpu_problem, cpu_expected):
    _info(benchmark, "dff-loss-fwd", "native-cpu", CPU_SIZE)
    out = benchmark(forward, angular_softmax_nll, cpu_problem)
    assert_same_loss(out, cpu_expected, "native CPU forward", grads=False)


def test_loss_fwd_reference(benchmark, cpu_problem, cpu_expected):
    _info(benchmark, "dff-loss-fwd", "torch-reference", CPU_SIZE)
    out = benchmark.pedantic(forward, args=(angular_softmax_nll_reference, cpu_problem), rounds=REFERENCE_ROUNDS,
                             iterations=1)
    assert_same_loss(forward(angular_softmax_nll, cpu_problem), out, "reference forward vs native CPU", grads=False)


def test_loss_fwd_bwd_native_cpu(benchmark, cpu_problem, cpu_expected):
    _info(benchmark, "dff-loss-fwd-bwd", "native-cpu", CPU_SIZE)
    out = benchmark(forward_backward, angular_softmax_nll, cpu_problem)
    assert_same_loss(out, cpu_expected, "native CPU forward + backward", grads=True)
    benchmark.extra_info["peak_rss_increase_mib"] = peak_rss_increase_mib("native", CPU_SIZE)


def test_loss_fwd_bwd_reference(benchmark, cpu_problem):
    _info(benchmark, "dff-loss-fwd-bwd", "torch-reference", CPU_SIZE)
    out = benchmark.pedantic(forward_backward, args=(angular_softmax_nll_reference, cpu_problem),
                             rounds=REFERENCE_ROUNDS, iterations=1)
    assert_same_loss(forward_backward(angular_softmax_nll, cpu_problem), out, "reference vs native CPU", grads=True)
    benchmark.extra_info["peak_rss_increase_mib"] = peak_rss_increase_mib("reference", CPU_SIZE)


# ---------------------------------------------------------------------------- CUDA
@pytest.fixture(scope="module")
def cuda_problem(cuda_torch) -> LossProblem:
    return make_problem(**CUDA_SIZE, device="cuda")


def _timed_cuda(benchmark, fn, problem):
    def run():
        out = forward_backward(fn, problem)
        torch.cuda.synchronize()
        return out

    run()  # warm-up outside the peak-memory measurement (allocator pools, lazy init)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = run()
    benchmark.extra_info["peak_mib"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    benchmark.pedantic(run, rounds=CUDA_ROUNDS, iterations=1, warmup_rounds=CUDA_WARMUP)
    return out


@pytest.mark.cuda
def test_loss_fwd_bwd_native_cuda(benchmark, cuda_problem):
    _info(benchmark, "dff-loss-cuda", "native-cuda", CUDA_SIZE)
    out = _timed_cuda(benchmark, angular_softmax_nll, cuda_problem)
    assert out[0].is_cuda
    want = forward_backward(angular_softmax_nll_reference, cuda_problem)
    assert_same_loss(out, want, "native CUDA forward + backward", grads=True)
    materialised = CUDA_SIZE["N"] * CUDA_SIZE["K"] * CUDA_SIZE["C"] * 4 / 2**20
    assert benchmark.extra_info["peak_mib"] < materialised / 20, "the fused kernel should not hold the logits"


@pytest.mark.cuda
def test_loss_fwd_bwd_reference_cuda(benchmark, cuda_problem):
    _info(benchmark, "dff-loss-cuda", "torch-reference-cuda", CUDA_SIZE)
    out = _timed_cuda(benchmark, angular_softmax_nll_reference, cuda_problem)
    assert_same_loss(forward_backward(angular_softmax_nll, cuda_problem), out, "reference CUDA vs native CUDA",
                     grads=True)
