"""Loads the compiled extension ``dffx._C`` with an error that says how to fix a broken install."""

try:
    from . import _C  # noqa: F401  (re-exported)
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "dffx's native extension dffx._C could not be loaded. Build and install the package "
        "with `pip install .` from the repository (running from a source checkout without "
        f"installing does not work). Original error: {exc}"
    ) from exc

__all__ = ["_C"]
