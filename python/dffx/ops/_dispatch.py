"""The glue every native op shares between its callers and ``dffx._C``: telling torch tensors from
NumPy arrays, and launching a CUDA entry point on the caller's current stream.

Every ``_C.*_cuda`` entry point takes raw device pointers and sizes, then the CUDA stream as its
last argument; :func:`launch_cuda` makes that call from torch tensors, so the ops differ only in
their buffers and sizes.
"""

from __future__ import annotations

from .._native import _C


def is_torch(x) -> bool:
    """Whether ``x`` is a torch tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch")


def as_numpy(x):
    """A CPU NumPy view (or copy, for a CUDA tensor) of a torch tensor; anything else unchanged."""
    return x.detach().cpu().numpy() if is_torch(x) else x


def require_cuda_kernels(hint: str = "pass CPU tensors or NumPy arrays") -> None:
    """Raise RuntimeError (ending with ``hint``) when dffx was built without its CUDA kernels."""
    if not _C.cuda_compiled():
        raise RuntimeError(f"dffx was built without CUDA kernels; {hint}")


def launch_cuda(kernel, device, *args) -> None:
    """Call ``kernel`` (a ``dffx._C.*_cuda`` function) on ``device``'s current CUDA stream.

    Args:
        kernel: the entry point; it takes the arguments below, then the stream handle.
        device: the torch device every tensor argument lives on.
        args: torch tensors (passed as their data pointers: they must be contiguous and stay
            alive through the call, which only enqueues work on the stream), or plain ints,
            floats and 0 for an absent buffer, passed unchanged.
    """
    import torch

    pointers = [a.data_ptr() if is_torch(a) else a for a in args]
    with torch.cuda.device(device):
        kernel(*pointers, torch.cuda.current_stream().cuda_stream)
