"""The examples in the docstrings of geometry/, ops/, the pose sectors and the detectors run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["dffx.geometry.camera", "dffx.ops.sampling", "dffx.ops.raster", "dffx.align.pose_sectors", "dffx.align.cascade", "dffx.detect",
           "dffx.detect.mtcnn"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
