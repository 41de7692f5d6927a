"""Face-detector benchmarks: the blocked greedy non-maximum suppression vs its reference twin.

Group ``nms``: :func:`dffx.detect.boxes.overlap_groups` vs ``overlap_groups_reference`` (one
``box_overlap`` call per kept box) on real candidates: the largest suppression MTCNN runs on the
dlib group photo (the P-Net boxes of its finest pyramid scale, IoU 0.5). Both must give the same
groups, element for element.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dffx.detect import mtcnn
from dffx.detect.boxes import overlap_groups, overlap_groups_reference

GROUP_PHOTO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev" / "dlib-examples" / "2008_002470.jpg"


@pytest.fixture(scope="module")
def pnet_candidates():
    """(boxes (K, 4+), scores (K,), threshold) of the largest suppression in the detection."""
    image = cv2.imread(str(GROUP_PHOTO))
    if image is None:
        pytest.skip(f"sample photo not found: {GROUP_PHOTO}")
    seen = []
    original = mtcnn.nms

    def record(boxes, scores, threshold, by_min=False):
        seen.append((boxes.copy(), np.asarray(scores).copy(), threshold))
        return original(boxes, scores, threshold, by_min)

    mtcnn.nms = record
    try:
        mtcnn.mtcnn_detect(image)
    finally:
        mtcnn.nms = original
    boxes, scores, threshold = max(seen, key=lambda call: len(call[0]))
    assert len(boxes) > 100, "too few candidates for a meaningful benchmark"
    return boxes, scores, threshold


@pytest.mark.benchmark(group="nms")
@pytest.mark.parametrize("implementation", ["blocked", "reference"])
def test_nms(benchmark, pnet_candidates, implementation):
    boxes, scores, threshold = pnet_candidates
    run = overlap_groups if implementation == "blocked" else overlap_groups_reference
    groups = benchmark(run, boxes, scores, threshold)
    other = overlap_groups_reference if implementation == "blocked" else overlap_groups
    assert groups == other(boxes, scores, threshold)
    assert len(groups) < len(boxes)
    benchmark.extra_info.update(candidates=len(boxes), kept=len(groups))
