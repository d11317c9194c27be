#!/usr/bin/env python3
"""Sort the ILSVRC2012 validation images into one folder per class (WNID), safely and resumably.

Before (after 01_unzip.sh and 02_convert_meta_clsloc.py)::

    ROOT/val/ILSVRC2012_val_00000001.JPEG ... ILSVRC2012_val_00050000.JPEG   flat, 50,000 images
    ROOT/meta/synsets.csv                                                     from 02
    ROOT/devkit/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt
        (without a devkit: ROOT/kaggle/LOC_val_solution.csv or ROOT/hf/val_labels.csv)

After::

    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG ...   1,000 folders x 50 images, nothing else
    ROOT/meta/val_labels.csv                              file,wnid,ilsvrc_id,class_index
    ROOT/meta/SHA256SUMS.val                              (from 01) kept in step: the new paths
    ROOT/val_flat/ILSVRC2012_val_00000001.JPEG ...        only with --copy, --link, --symlink:
                                                          the flat originals
    ROOT/val_blacklisted/WNID/...                         only with --exclude-blacklist FILE

Usage:
    03_build_val_class_folders.py [--root DIR] [--labels FILE] [--meta CSV]
                                  [--copy | --link | --symlink] [--dry-run] [--undo]
                                  [--exclude-blacklist FILE]
Example:
    python3 03_build_val_class_folders.py --root /data/imagenet

The whole plan is checked before anything is touched (label count, class IDs, every image
present exactly once, no unlabelled JPEG); any problem stops the run with nothing moved. Images are
moved with os.rename, so a run killed at any moment leaves every image either flat or in its right
folder, and a rerun finishes the job. ROOT/val ends with class folders only, whatever the mode: a
loader that walks the tree (timm's) would take a file at its top for one more class. --undo puts
every image back flat (from ROOT/val_blacklisted and ROOT/val_flat too).
The work is done by imagenet_prep/valfolders.py, whose label logic later stages use too.
Exit codes: 0 ok, 1 failure, 2 usage, 130 Ctrl-C, 143 SIGTERM (every image flat or in its folder).
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

from imagenet_prep import console, valfolders

PROG = valfolders.PROG


def build_parser() -> console.Parser:
    p = console.Parser(
        prog=PROG,
        description="Sort ROOT/val/ILSVRC2012_val_*.JPEG into ROOT/val/WNID/ folders using the\n"
                    "validation labels and ROOT/meta/synsets.csv (from 02). Checks the whole plan\n"
                    "first; safe to kill and rerun; --undo flattens back.",
        epilog="Exit codes: 0 ok (a rerun of a finished job says 'already done'), 1 failure\n"
               "(nothing changed when the plan has problems), 2 usage, 130 Ctrl-C, 143 SIGTERM.\n"
               "Example: python3 %s --root /data/imagenet" % PROG)
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="dataset root (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="validation labels: devkit class IDs, Kaggle LOC_val_solution.csv (or "
                        "the Hugging Face labels in its form) or one WNID per line (default: the "
                        "devkit ground truth found under ROOT/devkit/, else "
                        "ROOT/kaggle/LOC_val_solution.csv, else ROOT/hf/val_labels.csv)")
    p.add_argument("--meta", type=Path, default=None, metavar="CSV",
                   help="class metadata CSV (default: ROOT/meta/synsets.csv)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", dest="mode", action="store_const", const="copy",
                      help="copy into the class folders, keeping the flat originals in "
                           "ROOT/val_flat (ROOT/val holds class folders only)")
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="hard-link into the class folders, keeping the flat originals in "
                           "ROOT/val_flat")
    mode.add_argument("--symlink", dest="mode", action="store_const", const="symlink",
                      help="relative symlinks in the class folders to the flat originals, kept "
                           "in ROOT/val_flat")
    p.set_defaults(mode="move")
    p.add_argument("--dry-run", action="store_true", help="log the plan, change nothing")
    p.add_argument("--undo", action="store_true",
                   help="put every image back flat in ROOT/val (also from ROOT/val_blacklisted "
                        "and ROOT/val_flat); class-folder copies/links of a flat original are "
                        "removed")
    p.add_argument("--exclude-blacklist", type=Path, default=None, metavar="FILE",
                   help="put the images listed in FILE in ROOT/val_blacklisted/WNID/ instead; "
                        "one per line: an image number (1-based, as in ILSVRC2015_clsloc_"
                        "validation_blacklist.txt) or a file name, with or without .JPEG "
                        "(ILSVRC2012_val_00000036); rerun without it (or --undo) to bring "
                        "them back")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root if args.root is not None else Path(os.environ.get("IMAGENET_ROOT") or ".")
    return console.run(
        PROG, [str(a) for a in (sys.argv[1:] if argv is None else argv)],
        lambda: valfolders.build(root, args.undo, args.dry_run, args.mode, args.labels, args.meta,
                                 args.exclude_blacklist),
        interrupted="every image is either flat or in its folder: rerun the same command to "
                    "finish")


if __name__ == "__main__":
    sys.exit(main())
