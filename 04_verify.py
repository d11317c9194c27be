#!/usr/bin/env python3
"""Is this ImageNet tree complete and intact? Checks any tree, whoever made it; changes nothing.

The tree it checks (after 01_unzip.sh, 02 and 03, or made by other tools)::

    ROOT/train/n01440764/n01440764_10026.JPEG ...   1,000 folders, 732..1,300 images each
    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG  1,000 folders x 50 (or flat, before 03)
    ROOT/test/ILSVRC2012_test_00000001.JPEG ...      100,000 images, flat
    ROOT/meta/synsets.csv                            the classes (02), or ROOT/devkit/ itself
    ROOT/meta/SHA256SUMS.train, .val, .test          SHA-256 of every file (01, for --full)

Usage:
    04_verify.py [--root DIR] [--full] [--decode] [--jobs N] SPLIT...      SPLIT: train val test all
Example:
    python3 04_verify.py --root /data/imagenet all
    python3 04_verify.py --root /data/imagenet --full train

Structure (always; fast): class folders exactly the devkit's classes; per-class train counts as
num_train_images; every val image in the folder its label names; the release's counts; no stray,
hidden, temporary or empty file; every file starts like an image (the release's 22 CMYK JPEGs and
its PNG are noted as known, not errors). --full: every file against ROOT/meta/SHA256SUMS.SPLIT
(missing, extra, changed), on all cores; the same file checks with `cd ROOT && sha256sum -c
--quiet meta/SHA256SUMS.SPLIT`. --decode: every image decoded with Pillow (pip install Pillow).
The work is done by imagenet_prep/verify.py; docs/verify.md says more.
Exit codes: 0 everything checks, 1 a problem (each listed), 2 usage, 130 Ctrl-C, 143 SIGTERM.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
try:
    from imagenet_prep import bootstrap  # the package beside this script
except ImportError:
    sys.exit("%s: error: needs the folder imagenet_prep/ beside it (in %s): copy or clone the "
             "whole repository folder, not the script alone" % (sys.argv[0], sys.path[0]))
if __name__ == "__main__":      # first: a quiet Ctrl-C, and the packages from .venv/ if need be
    bootstrap.start(os.path.basename(__file__))

from pathlib import Path
from typing import Optional

from imagenet_prep import console, verify

PROG = verify.PROG


def build_parser() -> console.Parser:
    p = console.Parser(
        prog=PROG,
        description="Check an ImageNet (ILSVRC2012) tree: its structure (always), every file's\n"
                    "SHA-256 against ROOT/meta/SHA256SUMS.SPLIT (--full), every image decoded\n"
                    "(--decode). Reads only.",
        epilog="SPLIT: train, val, test, or all (those of the three that are in ROOT).\n"
               "Exit codes: 0 everything checks, 1 a problem (each listed on stderr), 2 usage,\n"
               "130 Ctrl-C, 143 SIGTERM.\nExample: python3 %s --root /data/imagenet --full all" % PROG)
    p.add_argument("splits", nargs="+", metavar="SPLIT", help="train val test all")
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="dataset root (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--full", action="store_true",
                   help="also check every file's SHA-256 against ROOT/meta/SHA256SUMS.SPLIT "
                        "(written by 01_unzip.sh); without a manifest, the structure is checked")
    p.add_argument("--decode", action="store_true",
                   help="also decode every image with Pillow (pip install Pillow)")
    p.add_argument("--jobs", default=None, metavar="N",
                   help="processes reading files (default: the cores available to this process)")
    return p


def splits_of(parser: console.Parser, names: list[str]) -> tuple[list[str], bool]:
    """The splits asked for, in train, val, test order; True if 'all' was asked."""
    unknown = [s for s in names if s not in verify.SPLITS + ("all",)]
    if unknown:
        parser.error("unknown split '%s' (one of: %s all)" % (unknown[0], " ".join(verify.SPLITS)))
    every = "all" in names
    return [s for s in verify.SPLITS if every or s in names], every


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    splits, every = splits_of(parser, args.splits)
    jobs = console.jobs_option(parser, args.jobs)
    root = args.root if args.root is not None else Path(os.environ.get("IMAGENET_ROOT") or ".")
    return console.run(
        PROG, [str(a) for a in (sys.argv[1:] if argv is None else argv)],
        lambda: verify.verify(root, splits, every, args.full, args.decode, jobs),
        interrupted="nothing was changed (04 only reads); run it again")


if __name__ == "__main__":
    sys.exit(main())
