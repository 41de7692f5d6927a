"""dffx._blas: one BLAS thread inside the alignment path's regions, the process's count restored
after them, also when regions of several threads overlap."""

import threading

import numpy as np
import pytest

from dffx import _blas

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    """The process's BLAS set to 2 threads for the test (restored afterwards), so that a stray 1
    shows. threadpoolctl >= 3.8 lets one thread at a time change OpenBLAS's count: the role is
    handed back at once, so that the threads of the test can change it as an aligner's would."""
    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS library in this NumPy")
    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    limiter = threadpoolctl.threadpool_limits(limits=2, user_api="blas")
    if release is not None:
        release()
    assert set(blas_threads()) == {2}
    yield
    limiter.restore_original_limits()
    if release is not None:
        release()


def test_one_thread_inside_and_restored_after_nested_regions(two_blas_threads):
    with _blas.single_threaded_blas():
        assert set(blas_threads()) == {1}
        with _blas.single_threaded_blas():
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}, "leaving an inner region must not end the outer one"
    assert set(blas_threads()) == {2}


def test_restored_after_an_exception(two_blas_threads):
    with pytest.raises(RuntimeError):
        with _blas.single_threaded_blas():
            raise RuntimeError("inside")
    assert set(blas_threads()) == {2}


def test_overlapping_regions_of_several_threads_restore_the_count(two_blas_threads):
    # Restoring per region (what threadpoolctl's own context does) ends here on 1 thread in
    # nearly every run: a region entered while another is open saves that one's 1.
    errors = []
    start = threading.Barrier(4)

    def work():
        a = np.ones((40, 40))
        try:
            start.wait()
            for _ in range(300):
                with _blas.single_threaded_blas():
                    if set(blas_threads()) != {1}:
                        errors.append(blas_threads())
                    a @ a
        except Exception as err:  # reported below: an assert in a thread would be lost
            errors.append(repr(err))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(blas_threads()) == {2}
