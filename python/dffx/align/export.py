"""``dffx export-cascade``: the alignment cascade as one file for C++ programs (``dffx::Cascade``,
``csrc/include/dffx/cascade.hpp``), which run the DFF network themselves (``dffx export-onnx``).

The file holds the face model restricted to what the cascade reads (mean shape, the bases one
row per parameter, prior variances, triangles, the 68 and 160 landmark vertices) and the
cascade (mean camera, descent directions, in a pose-fused cascade the yaw sectors and their
directions, ``w_reg``, the camera refit's rounds, prior and
Gauss-Newton steps, the alignment-score template): about 24 MB
for ICT-FaceKit and the shipped DFF cascade. Layout, little-endian: ``DFFXCAS1``, uint32 array
count, then per array uint32 name length, name, uint8 dtype (0 float32, 1 float64, 2 int32),
uint32 ndim, int64 dims, row-major data.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

MAGIC = b"DFFXCAS1"
_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.int32): 2}


def write_cascade_file(path, model, cascade) -> Path:
    """Write ``model`` (:class:`dffx.FaceModel`) and a DFF ``cascade`` (:class:`dffx.align.Cascade`)
    for ``dffx::Cascade::load`` (:func:`cascade_file_bytes`). Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cascade_file_bytes(model, cascade))
    return path


def cascade_file_bytes(model, cascade) -> bytes:
    """The file of :func:`write_cascade_file` as bytes (``dffx::Cascade::from_bytes`` reads them).

    The C++ cascade samples DFF maps, so only a cascade of DFF features is of use there; its
    network is the one the cascade file records (``cascade.info["dff_network"]``), which the
    caller runs (``dffx export-onnx``). The landmarks written are the cascade's own
    (:meth:`dffx.align.Cascade.bind`).

    Raises:
        ValueError: a SIFT cascade (C++ has no SIFT).
    """
    from ..ops.raster import DEFAULT_VISIBILITY_TOLERANCE
    from .camera_refit import GAUSS_NEWTON_STEPS
    from ..preprocess import CROP_SIZE

    if cascade.features != "dff":
        raise ValueError(f"only DFF cascades run in C++, this one uses {cascade.features!r} features")
    model = cascade.bind(model)
    channels = cascade.R_X.shape[1] // len(model.landmarks160)
    arrays = {
        "mean": np.asarray(model.mean, np.float32).reshape(-1, 3),
        "basis_rows": np.asarray(model.basis_rows, np.float32),
        "prior_variance": np.asarray(model.prior_variance, np.float32),
        "triangles": np.asarray(model.triangles, np.int32),
        "landmarks68": np.asarray(model.landmarks68, np.int32),
        "landmarks160": np.asarray(model.landmarks160, np.int32),
        "mean_camera": np.asarray(cascade.mean_camera, np.float64),
        "R_X": np.asarray(cascade.R_X, np.float32),
        "R_w": np.asarray(cascade.R_w, np.float32),
        "scalars": np.array([cascade.w_reg, DEFAULT_VISIBILITY_TOLERANCE, CROP_SIZE, channels, model.n_identity],
                            np.float64),
        "camera_refit": np.array([cascade.refit_rounds, cascade.refit_prior, GAUSS_NEWTON_STEPS], np.float64),
    }
    if cascade.template is not None:
        arrays["template"] = np.asarray(cascade.template, np.float32)
    if cascade.R_w_pose is not None:  # the pose start: camera-only stages first
        arrays["R_w_pose"] = np.asarray(cascade.R_w_pose, np.float32)
    if cascade.has_sectors:  # pose fusion (dffx.align.pose_sectors)
        arrays.update(sector_yaw=np.asarray(cascade.sector_yaw, np.float64),
                      R_X_sectors=np.asarray(cascade.R_X_sectors, np.float32),
                      R_w_sectors=np.asarray(cascade.R_w_sectors, np.float32))
    f = io.BytesIO()
    f.write(MAGIC + struct.pack("<I", len(arrays)))
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        f.write(struct.pack("<I", len(name)) + name.encode() + struct.pack("<BI", _DTYPES[array.dtype], array.ndim))
        f.write(struct.pack(f"<{array.ndim}q", *array.shape))
        f.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return f.getvalue()
