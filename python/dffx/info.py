"""What this install of dffx is: version, native backend, CUDA, data locations (``dffx info``)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from . import __version__
from ._native import _C
from .config import FACE_MODEL_ENV, cache_dir, configured_face_model_path


def package_dir() -> Path:
    """Folder of the installed dffx package (holds _C, lib/ and include/)."""
    return Path(__file__).resolve().parent


def cmake_dir() -> Path:
    """Folder holding dffxConfig.cmake: pass it as ``-Ddffx_DIR=...`` to a C++ project."""
    return package_dir() / "lib" / "cmake" / "dffx"


def gpu_visible() -> bool:
    """True when the CUDA runtime linked into dffx sees at least one device."""
    return _C.cuda_device_count() > 0


def _installed_detectors() -> list[str]:
    from .detect import DETECTORS
    from .detect.mtcnn import weights_dir

    try:
        weights_dir()
    except FileNotFoundError:
        return [d for d in DETECTORS if d != "mtcnn"]
    return list(DETECTORS)


def info() -> dict:
    """Build and environment facts as a JSON-serialisable dict.

    Keys: version, native_version, native_backend ("cpu" or "cpu+cuda"), cpu_kernels (the vector
    build of the C++ cascade's loops this CPU runs: "avx512f", "avx2+fma" or "baseline";
    ``dffx::Cascade::kernel_isa``), cuda_compiled,
    cuda_architectures (list of str), cuda_device_count, gpu_visible, torch and onnxruntime
    (versions or None: the DFF network's two backends),
    face_model (path or None), face_model_env, cache_dir (where the parsed published ICT-FaceKit
    model is cached; None when caching is off), weights (the files shipped in ``dffx/weights``),
    face_detectors (``dffx.detect.DETECTORS`` whose models are installed), cmake_dir (folder
    holding dffxConfig.cmake), include_dir, library (path of libdffx_core).
    """
    pkg = package_dir()
    versions = {}
    for name in ("torch", "onnxruntime"):
        try:  # metadata only: importing torch would cost seconds
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    model, cache = configured_face_model_path(), cache_dir()
    libs = sorted((pkg / "lib").glob("libdffx_core*"))
    archs = [a for a in _C.cuda_architectures().split(";") if a]
    return {
        "version": __version__,
        "native_version": _C.version(),
        "native_backend": "cpu+cuda" if _C.cuda_compiled() else "cpu",
        "cpu_kernels": _C.Cascade.kernel_isa(),
        "cuda_compiled": bool(_C.cuda_compiled()),
        "cuda_architectures": archs,
        "cuda_device_count": int(_C.cuda_device_count()),
        "gpu_visible": gpu_visible(),
        "torch": versions["torch"],
        "onnxruntime": versions["onnxruntime"],
        "face_model": str(model) if model else None,
        "face_model_env": os.environ.get(FACE_MODEL_ENV),
        "cache_dir": str(cache) if cache else None,
        "weights": sorted(p.name for p in (pkg / "weights").iterdir() if p.suffix in (".pt", ".onnx", ".npz", ".json")),
        "face_detectors": _installed_detectors(),
        "cmake_dir": str(cmake_dir()),
        "include_dir": str(pkg / "include"),
        "library": str(libs[0]) if libs else None,
    }
