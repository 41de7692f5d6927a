"""Feature matching between face images with the Deep Face Feature (paper Sec. IV-A, Fig. 8-9).

* :mod:`.sparse` -- SIFT keypoints of the source face matched by DFF (smallest descriptor
  angle over all target face pixels, kept below 30 deg) and by SIFT (ratio test 1/1.3);
* :mod:`.dense` -- every source face pixel matched by DFF (kept below 12 deg), in bounded-memory
  blocks; the shared :class:`Matches` result and the nearest-by-angle search;
* :mod:`.evaluate` -- correct / valid match rates on synthesized pairs with known correspondence;
* :mod:`.visualize` -- Fig. 8 (lines) and Fig. 9 (colour coding) pictures;
* :mod:`.cli` -- ``dffx match SRC DST --out viz.png [--dense]``.

Descriptor maps are (C, H, W) arrays or tensors (e.g. ``DFFExtractor.extract(img)[0]``), so
nothing here depends on a particular network; pixel coordinates are OpenCV's (x right, y down,
pixel centres at integers); face masks are bool (H, W); angles are in degrees.
"""

from .dense import (DENSE_MAX_ANGLE_DEG, Matches, as_feature_map, dense_match, dense_match_reference, mask_pixels,
                    nearest_by_angle, synth_face_mask)
from .evaluate import (CORRECT_PX, PairTruth, SynthPair, evaluate_pairs, fit_sources, format_table, held_out_sources,
                       pair_truth, render_pair, render_pairs, score_pair)
from .sparse import (SIFT_RATIO, SPARSE_MAX_ANGLE_DEG, Keypoints, match_dff_points, match_sift, sample_descriptors,
                     sift_keypoints, sparse_match)
from .visualize import dense_colour_code, draw_dense, draw_sparse, position_colours

__all__ = ["CORRECT_PX", "DENSE_MAX_ANGLE_DEG", "Keypoints", "Matches", "PairTruth", "SIFT_RATIO",
           "SPARSE_MAX_ANGLE_DEG", "SynthPair", "as_feature_map", "dense_colour_code", "dense_match",
           "dense_match_reference", "draw_dense", "draw_sparse", "evaluate_pairs", "fit_sources", "format_table",
           "held_out_sources", "mask_pixels", "match_dff_points", "match_sift", "nearest_by_angle", "pair_truth",
           "position_colours", "render_pair", "render_pairs", "sample_descriptors", "score_pair", "sift_keypoints",
           "sparse_match", "synth_face_mask"]
