"""Random uniform segmentations of the mean face (paper Sec. III-B): the DFF training targets."""

from .._lazy import lazy_attributes as _lazy_attributes

# The names load on first use (PEP 562): `dffx segment`'s parser must not import SciPy.
_EXPORTS = {name: "cvt" for name in (
    "SegmentationSet", "area_spread", "centroidal_voronoi_segmentation", "cvt_energy", "label_map",
    "load_segmentations", "mesh_hash", "patch_areas", "random_segmentations", "save_segmentations",
    "triangle_areas")}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = _lazy_attributes(__name__, _EXPORTS, globals())
