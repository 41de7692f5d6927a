"""One BLAS thread for NumPy's small products on the alignment path (threadpoolctl).

The per-face products of the cascade (S(p) of eq. 3: (B, M) x (M, 3n); the descent directions
of eq. 4-5: (B, 5121) x (5121, 136)) are too small to gain from BLAS threads, but OpenBLAS's
workers keep spinning for a while after each call and take the cores from the next PyTorch
forward pass, which then runs 2-5x slower on a 2-core machine (docs/alignment.md, "Latency").
"""

from __future__ import annotations

from functools import lru_cache


def single_threaded_blas():
    """Context manager running NumPy's BLAS on one thread inside it (about 7 us to enter and leave)."""
    return _controller().limit(limits=1, user_api="blas")


@lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
