"""Where dffx finds its data at run time: the face model (and, later, network weights).

The ICT-FaceKit model is never shipped with dffx (see README): its folder is given as an
argument or through the environment variable ``DFFX_FACE_MODEL``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelNotFoundError

FACE_MODEL_ENV = "DFFX_FACE_MODEL"
# Folder for files dffx derives from user data (the parsed published ICT-FaceKit model); an empty
# value turns caching off. Default: $XDG_CACHE_HOME/dffx, else ~/.cache/dffx.
CACHE_ENV = "DFFX_CACHE_DIR"

HOW_TO_GET_ICT = (
    "dffx uses the ICT-FaceKit morphable model (MIT licence), which is not bundled. Get it with "
    "`git clone https://github.com/ICT-VGL/ICT-FaceKit` and point dffx at its `FaceXModel` folder "
    f"(argument `model=...`, CLI `--model`, or the environment variable {FACE_MODEL_ENV}); "
    "a folder holding shapes.npz + generic_neutral_mesh.obj + vertex_indices.json, or a .npz "
    "written by FaceModel.save, works too."
)


def face_model_path(path: str | os.PathLike | None = None) -> Path:
    """Resolve the face-model location.

    Args:
        path: explicit file or folder; when None, ``$DFFX_FACE_MODEL`` is used.

    Returns:
        The existing path (file or folder).

    Raises:
        ModelNotFoundError: nothing is configured, or the path does not exist; the message
            names the path and says how to obtain ICT-FaceKit.
    """
    if path is None:
        env = os.environ.get(FACE_MODEL_ENV)
        if not env:
            raise ModelNotFoundError(f"no face model given and {FACE_MODEL_ENV} is not set. {HOW_TO_GET_ICT}")
        path = env
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ModelNotFoundError(f"face model not found at '{resolved}'. {HOW_TO_GET_ICT}")
    return resolved


def configured_face_model_path() -> Path | None:
    """The face-model path from the environment if it exists, else None (never raises)."""
    try:
        return face_model_path(None)
    except ModelNotFoundError:
        return None


def cache_dir() -> Path | None:
    """Where dffx caches files derived from user data: ``$DFFX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/dffx``, else ``~/.cache/dffx``; None when ``DFFX_CACHE_DIR`` is set to an
    empty string (caching off). The folder may not exist yet."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return Path(env).expanduser() if env else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dffx"
