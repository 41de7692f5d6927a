"""Native ops with their reference twins (``dffx.ops._reference``)."""

from .raster import (DEFAULT_VISIBILITY_TOLERANCE, RasterResult, landmark_visibility, mesh_landmark_visibility,
                     rasterize)
from .sampling import sample_landmark_features
from .shape_fit import fit_shape, fit_shared_shape

__all__ = ["DEFAULT_VISIBILITY_TOLERANCE", "RasterResult", "landmark_visibility", "mesh_landmark_visibility",
           "rasterize", "fit_shape", "fit_shared_shape", "sample_landmark_features"]
