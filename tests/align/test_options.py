"""dffx.AlignOptions: every alignment setting declared, validated and turned into flags once."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from dffx.align.options import (EVAL_DEFAULTS, EVAL_SETTINGS, NAMES, AlignOptions, add_arguments, from_args)


def test_every_setting_has_a_flag_whose_unset_value_keeps_the_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest: a.option_strings for a in parser._actions if a.dest in NAMES}
    assert set(flags) == set(NAMES) == {f.name for f in fields(AlignOptions)}
    assert from_args(parser.parse_args([])) == AlignOptions()
    given = parser.parse_args(["--refine", "2", "--converged-iou", "0.9", "--min-score", "0.7", "--detector", "haar",
                               "--precision", "bfloat16", "--mirror", "--min-face-size", "80", "--backend",
                               "onnxruntime", "--no-camera-refit", "--max-pixels", "1000"])
    assert from_args(given) == AlignOptions(refine=2, converged_iou=0.9, min_score=0.7, detector="haar",
                                            precision="bfloat16", mirror=True, min_face_size=80,
                                            backend="onnxruntime", camera_refit=False, max_pixels=1000)
    # the command line's ways to say "none": a negative score threshold, a zero pixel limit
    none = from_args(parser.parse_args(["--min-score", "-1", "--max-pixels", "0"]))
    assert none.min_score is None and none.max_pixels is None
    assert from_args(parser.parse_args(["--min-face-size", "auto"])).min_face_size == "auto"
    for bad in (["--precision", "float16"], ["--min-face-size", "big"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_eval_flags_take_the_papers_protocol_as_their_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser, EVAL_SETTINGS, EVAL_DEFAULTS)
    assert from_args(parser.parse_args([]), EVAL_DEFAULTS) == EVAL_DEFAULTS
    assert (EVAL_DEFAULTS.refine, EVAL_DEFAULTS.converged_iou, EVAL_DEFAULTS.backend) == (0, None, "torch")
    assert "(default: 0)" in parser.format_help() and "--detector" not in parser.format_help()


@pytest.mark.parametrize("change, match", [
    ({"refine": -1}, "refine"), ({"refine": 1.5}, "refine"), ({"converged_iou": 0}, "converged_iou"),
    ({"min_score": float("nan")}, "min_score"), ({"min_score": "auto"}, "min_score"), ({"detector": "yolo"}, "detector"),
    ({"precision": "float16"}, "precision"), ({"min_face_size": 11}, "min_face_size"),
    ({"min_face_size": True}, "min_face_size"), ({"backend": "tensorrt"}, "backend"), ({"max_pixels": 0}, "max_pixels"),
    ({"mirror": "yes"}, "mirror"), ({"camera_refit": 1}, "camera_refit"), ({"refinement": 1}, "unknown alignment setting"),
])
def test_out_of_range_settings_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        AlignOptions().replace(**change)
