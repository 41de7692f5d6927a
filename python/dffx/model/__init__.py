"""The 3D morphable model (paper eq. 3): ICT-FaceKit loading, our .npz format, landmark sets."""

from .face_model import FaceModel, load_face_model
from .landmarks import dense_landmarks

__all__ = ["FaceModel", "load_face_model", "dense_landmarks"]
