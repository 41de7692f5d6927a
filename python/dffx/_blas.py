"""One BLAS thread for NumPy's small products on the alignment path (threadpoolctl).

The per-face products of the cascade (S(p) of eq. 3: (B, M) x (M, 3n); the descent directions
of eq. 4-5: (B, 5121) x (5121, 136)) are too small to gain from BLAS threads, but OpenBLAS's
workers keep spinning for a while after each call and take the cores from the next PyTorch
forward pass, which then runs 2-5x slower on a 2-core machine (docs/experiments/2026-12-03-latency.md).

The BLAS thread count is a setting of the whole process, and aligners may run in several
threads at once. Each region restoring the count it saw on entry (threadpoolctl's own context
manager) leaves the process on one BLAS thread for good whenever two regions overlap: the second
saves the first's 1. So the regions are counted: the first to open saves the counts and sets 1,
the last to close restores them, whichever threads they run in.

threadpoolctl >= 3.8 lets only one thread at a time change OpenBLAS's count (its "controlling
thread"; a change from another thread is silently dropped). After each change this module
hands that role back, so that the thread which closes the last region can restore the count.
While a thread of the caller holds the role (inside its own ``threadpool_limits``), the changes
here are dropped and the caller's setting stands.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import lru_cache

_lock = threading.Lock()
_open_regions = 0     # single_threaded_blas regions open in this process, all threads together
_saved_counts = None  # the BLAS libraries' thread counts before the first of them opened


@contextmanager
def single_threaded_blas():
    """Context manager running NumPy's BLAS on one thread inside it (about 10 us to enter
    and leave). Safe to nest and to enter from several threads at once: the process's BLAS
    thread counts are restored when the last open region closes. While any region is open,
    BLAS calls from other threads of the process run on one thread too."""
    global _open_regions, _saved_counts
    with _lock:
        if _open_regions == 0:
            _saved_counts = [lib.num_threads for lib in _blas_libraries()]
            _set_counts([1] * len(_saved_counts))
        _open_regions += 1
    try:
        yield
    finally:
        with _lock:
            _open_regions -= 1
            if _open_regions == 0:
                _set_counts(_saved_counts)


def _set_counts(counts: list[int]) -> None:
    for lib, count in zip(_blas_libraries(), counts):
        lib.set_num_threads(count)
    _release_control_function()()


@lru_cache(maxsize=1)
def _blas_libraries() -> list:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


@lru_cache(maxsize=1)
def _release_control_function():
    """threadpoolctl >= 3.8's ``OpenBLASController.clear_controlling_thread`` (lets the next change
    come from any thread); a no-op for older versions, which have no controlling thread."""
    import threadpoolctl

    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    return release if release is not None else (lambda: None)
