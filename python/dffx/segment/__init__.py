"""Random uniform segmentations of the mean face (paper Sec. III-B): the DFF training targets."""

from .cvt import (SegmentationSet, area_spread, centroidal_voronoi_segmentation, cvt_energy, label_map,
                  load_segmentations, mesh_hash, patch_areas, random_segmentations, save_segmentations,
                  triangle_areas)

__all__ = ["SegmentationSet", "area_spread", "centroidal_voronoi_segmentation", "cvt_energy", "label_map",
           "load_segmentations", "mesh_hash", "patch_areas", "random_segmentations", "save_segmentations",
           "triangle_areas"]
