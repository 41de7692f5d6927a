"""The ``dffx`` command line: ``info`` here; every other command lives in its package's ``cli``
module, which registers it with ``add_parsers(sub, train_sub)`` (``COMMAND_PACKAGES``):
``render-depth`` (render), ``eval`` (eval), ``segment`` (segment), ``synth`` and ``synth-preview``
(synth), ``train dff`` and ``export-onnx`` (nn), ``align``, ``track``, ``train cascade``,
``train template``, ``train min-score`` and ``export-cascade`` (align), ``match`` (match), ``train
tiny`` (tiny).
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    from .info import cmake_dir, info

    if args.cmake_dir:
        print(cmake_dir())
        return 0
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


# Packages whose ``cli`` module registers its commands with ``add_parsers(sub, train_sub)``.
COMMAND_PACKAGES = ("render", "eval", "segment", "synth", "nn", "align", "match", "tiny")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``dffx`` command."""
    import importlib

    parser = argparse.ArgumentParser(prog="dffx", description="Large-pose face alignment with the Deep Face Feature")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, native backend, CUDA, data locations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cmake-dir", action="store_true", help="print only the folder holding dffxConfig.cmake")
    p.set_defaults(run=_cmd_info)

    train_sub = sub.add_parser("train", help="train the DFF network (dff), the cascade and its score").add_subparsers(
        dest="what", required=True)
    for package in COMMAND_PACKAGES:
        importlib.import_module(f".{package}.cli", __package__).add_parsers(sub, train_sub)
    return parser


def main(argv=None) -> int:
    """Entry point; returns the process exit code. Errors print one line, exit code 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"dffx {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
