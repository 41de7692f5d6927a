"""The native ops' shared glue (dffx.ops._dispatch): tensors become device pointers, the caller's
current CUDA stream comes last. Checked without a GPU by standing in for torch.cuda's stream."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from dffx.ops import _dispatch


def test_launch_cuda_passes_pointers_sizes_and_the_current_stream(monkeypatch):
    entered = []

    class Stream:
        cuda_stream = 0xC0FFEE

    @contextlib.contextmanager
    def device(d):
        entered.append(d)
        yield

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    a, b = torch.zeros(3), torch.ones(2, 2)
    calls = []
    _dispatch.launch_cuda(lambda *args: calls.append(args), "cuda:1", a, 7, 0.5, b, 0)
    assert calls == [(a.data_ptr(), 7, 0.5, b.data_ptr(), 0, 0xC0FFEE)]
    assert entered == ["cuda:1"]  # the kernel is enqueued on that device's stream


def test_is_torch_and_as_numpy():
    t = torch.arange(4.0)
    assert _dispatch.is_torch(t) and not _dispatch.is_torch(np.arange(4.0))
    np.testing.assert_array_equal(_dispatch.as_numpy(t), np.arange(4.0))
    x = np.ones(2)
    assert _dispatch.as_numpy(x) is x


def test_require_cuda_kernels_names_the_way_out(monkeypatch):
    monkeypatch.setattr(_dispatch._C, "cuda_compiled", lambda: False)
    with pytest.raises(RuntimeError, match="without CUDA kernels; pass CPU tensors"):
        _dispatch.require_cuda_kernels()
