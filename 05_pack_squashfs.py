#!/usr/bin/env python3
"""05_pack_squashfs.py — each split as one SquashFS image file, built straight from the archives.

1,281,167 train files do not fit many clusters' file-count quotas, and copying them to a node's
local disk is slow on any shared file system. An image is one file (one inode) that, mounted (or
unpacked) at ROOT/train, gives exactly the tree 01_unzip.sh makes: same names, sizes, bytes and
times.

Usage:
    05_pack_squashfs.py [--root DIR] [--from-tree] [--labels FILE] [--meta CSV]
                        [--processors N] SPLIT...          SPLIT: train val test all

Example:
    python3 05_pack_squashfs.py --root /data/imagenet train val
    squashfuse /data/imagenet/squashfs/train.sqfs /data/imagenet/train        # no root needed

Before (after 00_download.sh; for val also 01_unzip.sh devkit and 02_convert_meta_clsloc.py)::

    ROOT/downloads/ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_img_test*.tar
    ROOT/meta/synsets.csv, ROOT/devkit/.../ILSVRC2012_validation_ground_truth.txt     (val only)

After::

    ROOT/squashfs/train.sqfs        n01440764/n01440764_10026.JPEG ...     1,000 class folders
    ROOT/squashfs/val.sqfs          n01440764/ILSVRC2012_val_00000293.JPEG  1,000 x 50 (as 03 sorts)
    ROOT/squashfs/test.sqfs         ILSVRC2012_test_00000001.JPEG ...      flat
    ROOT/squashfs/SPLIT.sqfs.json   done marker: source, counts, sizes, listing digest, settings

The archive is read once and streamed into sqfstar (squashfs-tools >= 4.5.1; else tar2sqfs from
squashfs-tools-ng): no tar or image is written but the one being built, under a hidden temporary
name, renamed when its listing and a sample of its files have been checked against the source.
--from-tree packs ROOT/train, ROOT/val (flat or sorted by 03) or ROOT/test as 01 left them instead.
The same source gives a byte-identical image. An interrupted build starts that image over on a
rerun; a finished one is "already done". The work is done by imagenet_prep/squashfs.py;
docs/squashfs.md says how to use the images (squashfuse, Apptainer, unsquashfs on a node).
Exit codes: 0 ok, 1 failure, 2 usage, 130 Ctrl-C, 143 SIGTERM (no half image is left named).
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

from imagenet_prep import console, squashfs

PROG = squashfs.PROG
MAX_PROCESSORS = 1024


def build_parser() -> console.Parser:
    p = console.Parser(
        prog=PROG,
        description="Pack each split into ROOT/squashfs/SPLIT.sqfs, one file holding the tree\n"
                    "01_unzip.sh makes (WNID folders at the image's root), straight from the\n"
                    "archives in ROOT/downloads/ (or, with --from-tree, from ROOT/SPLIT/).",
        epilog="  train  ILSVRC2012_img_train.tar  -> squashfs/train.sqfs  WNID/WNID_N.JPEG\n"
               "  val    ILSVRC2012_img_val.tar    -> squashfs/val.sqfs    WNID/ILSVRC2012_val_N.JPEG\n"
               "         (needs meta/synsets.csv from 02 and the devkit's labels from 01 devkit)\n"
               "  test   ILSVRC2012_img_test*.tar  -> squashfs/test.sqfs   ILSVRC2012_test_N.JPEG\n\n"
               "Needs sqfstar (squashfs-tools >= 4.5.1) or tar2sqfs (squashfs-tools-ng), and\n"
               "unsquashfs. Exit codes: 0 ok (a finished image says 'already done'), 1 failure,\n"
               "2 usage, 130 Ctrl-C, 143 SIGTERM.\n"
               "Example: python3 %s --root /data/imagenet train val" % PROG)
    p.add_argument("splits", nargs="+", metavar="SPLIT", help="train val test, or all")
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="dataset root (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--from-tree", action="store_true",
                   help="pack ROOT/train, ROOT/val or ROOT/test as 01_unzip.sh (and 03) left them, "
                        "instead of the archives (default: the archives in ROOT/downloads/)")
    p.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="val: the validation labels, in any form 03 reads (default: the devkit "
                        "ground truth found under ROOT/devkit/)")
    p.add_argument("--meta", type=Path, default=None, metavar="CSV",
                   help="val: the class metadata (default: ROOT/meta/synsets.csv, from 02)")
    p.add_argument("--processors", type=int, default=None, metavar="N",
                   help="threads of the image builder (default: every core available); the image "
                        "is the same for any N")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for s in args.splits:
        if s not in squashfs.SPLITS + ("all",):
            parser.error("unknown split '%s' (one of: %s all)" % (s, " ".join(squashfs.SPLITS)))
    if args.processors is not None and not 1 <= args.processors <= MAX_PROCESSORS:
        parser.error("--processors wants a number from 1 to %d" % MAX_PROCESSORS)
    root = args.root if args.root is not None else Path(os.environ.get("IMAGENET_ROOT") or ".")
    cfg = squashfs.Settings(os.path.realpath(root), args.from_tree, args.processors,
                            args.labels and str(args.labels), args.meta and str(args.meta))
    return console.run(
        PROG, [str(a) for a in (sys.argv[1:] if argv is None else argv)],
        lambda: squashfs.pack(cfg, squashfs.iter_splits(args.splits)),
        interrupted=squashfs.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
