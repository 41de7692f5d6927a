"""Exceptions raised by dffx (all derive from the built-in type a caller would expect)."""


class ModelNotFoundError(FileNotFoundError):
    """The 3D morphable model (ICT-FaceKit) could not be found at the given or configured path."""
