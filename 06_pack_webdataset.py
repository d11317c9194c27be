#!/usr/bin/env python3
"""06_pack_webdataset.py — train and val as shuffled WebDataset shards, straight from the archives.

Training at scale (many nodes, object storage, streaming) reads ImageNet as tar shards: timm's
`--dataset wds/imagenet-1k`, the `webdataset` library, Hugging Face `datasets`. The shards are
written in timm's form (the names, counts and _info.json of timm/imagenet-1k-wds), globally
shuffled by a seed, with every image's bytes exactly as the archive holds them (never re-encoded)
and its label the sorted-WNID class index.

Usage:
    06_pack_webdataset.py [--root DIR] [--from-tree | --source hf|kaggle] [--shards N] [--seed S]
                          [--jobs N] [--labels FILE] [--meta CSV] SPLIT...     SPLIT: train val

Example:
    06_pack_webdataset.py --root /data/imagenet train val
    python3 train.py --data-dir /data/imagenet/webdataset --dataset wds/imagenet-1k ...  # timm

Before (after 00_download.sh, 01_unzip.sh devkit and 02_convert_meta_clsloc.py)::

    ROOT/downloads/ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar
    ROOT/meta/synsets.csv, ROOT/devkit/.../ILSVRC2012_validation_ground_truth.txt

After::

    ROOT/webdataset/imagenet1k-train-{0000..1023}.tar     KEY.cls KEY.jpg KEY.json per sample
    ROOT/webdataset/imagenet1k-validation-{00..63}.tar    (KEY: n01440764_10026, ILSVRC2012_val_...)
    ROOT/webdataset/_info.json                            splits.train, splits.validation

Nothing is extracted: the train archive's headers are indexed in one pass, then every shard reads
its images where they lie, all shards in parallel. --from-tree reads ROOT/train and ROOT/val as
01 (and 03) left them instead, after 04's structural checks, hashing every file against the
manifest. --source hf|kaggle reads what 00_download.sh --source left in ROOT/downloads/SOURCE/
instead (the Kaggle zip's members where they lie; the Hub's tar.gz or Parquet files, which can
only be read from their start, twice: once to index, once to put each image in its place in its
shard). The same seed gives byte-identical shards from any of them. Each shard is written under
a hidden temporary name and renamed when complete; a rerun writes only the shards missing.
The work is done by imagenet_prep/webdataset.py; docs/webdataset.md says how to read the shards.
Exit codes: 0 ok, 1 failure, 2 usage, 130 Ctrl-C, 143 SIGTERM (complete shards are kept).
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

import re
from pathlib import Path
from typing import Optional

from imagenet_prep import console, webdataset

PROG = webdataset.PROG
SOURCES = ("hf", "kaggle")
MAX_SHARDS = 100000
MAX_SEED = (1 << 63) - 1


def build_parser() -> console.Parser:
    p = console.Parser(
        prog=PROG,
        description="Write train and val as shuffled WebDataset shards in timm's form into\n"
                    "ROOT/webdataset/, straight from the archives in ROOT/downloads/ (or, with\n"
                    "--from-tree, from ROOT/train and ROOT/val; with --source, from the files of\n"
                    "the Hugging Face or Kaggle source).",
        epilog="  train  ILSVRC2012_img_train.tar -> webdataset/imagenet1k-train-{0000..1023}.tar\n"
               "  val    ILSVRC2012_img_val.tar   -> webdataset/imagenet1k-validation-{00..63}.tar\n"
               "         and webdataset/_info.json (timm reads it: --dataset wds/imagenet-1k)\n\n"
               "--source hf      ROOT/downloads/hf/: the Hub's tar.gz or Parquet files, each read\n"
               "                 twice from its start (index, then each image into its place)\n"
               "--source kaggle  ROOT/downloads/kaggle/imagenet-object-localization-challenge.zip:\n"
               "                 its members read where they lie (the older zip's nested tar.gz:\n"
               "                 read twice from its start); the same bytes as from the archives\n\n"
               "Needs meta/synsets.csv (02_convert_meta_clsloc.py) for the class index, and for val\n"
               "the devkit's labels (01_unzip.sh devkit), or a source's own: --source keeps the\n"
               "source's class list (and Kaggle's val labels) in ROOT/hf/ or ROOT/kaggle/ for 02\n"
               "and 03, as 01 does; the Hub's val names carry their class.\n"
               "Exit codes: 0 ok (finished shards say 'already done'), 1 failure, 2 usage,\n"
               "130 Ctrl-C, 143 SIGTERM.\n"
               "Example: %s --root /data/imagenet train val" % PROG)
    p.add_argument("splits", nargs="+", metavar="SPLIT", help="train val")
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="dataset root (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--from-tree", action="store_true",
                   help="read ROOT/train and ROOT/val as 01_unzip.sh (and 03) left them, instead "
                        "of the archives (default: the archives in ROOT/downloads/)")
    p.add_argument("--source", choices=SOURCES, default=None, metavar="hf|kaggle",
                   help="read the files 00_download.sh --source hf|kaggle left in ROOT/downloads/"
                        "SOURCE/ (default: the image-net.org archives)")
    p.add_argument("--shards", default=None, metavar="N",
                   help="shards per split, 1 to %d, numbered 0..N-1 with the digits of N-1 (at "
                        "least 2) (default: 1024 for train, 64 for val, as timm's)" % MAX_SHARDS)
    p.add_argument("--seed", default="0", metavar="S",
                   help="the shuffle's seed, a whole number; the same seed gives the same bytes")
    p.add_argument("--jobs", default=None, metavar="N",
                   help="shards written at once (default: every core available)")
    p.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="val: the validation labels, in any form 03 reads (default: the devkit "
                        "ground truth found under ROOT/devkit/)")
    p.add_argument("--meta", type=Path, default=None, metavar="CSV",
                   help="the class metadata (default: ROOT/meta/synsets.csv, from 02)")
    return p


def number(parser: console.Parser, option: str, text: Optional[str], low: int,
           high: int) -> Optional[int]:
    """A whole number from `low` to `high` given to `option` (checked before use)."""
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= high:
        parser.error("%s wants a whole number from %d to %d (got '%s')" % (option, low, high, text))
    return int(text)


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for s in args.splits:
        if s not in webdataset.SPLITS:
            parser.error("unknown split '%s' (one of: %s)" % (s, " ".join(webdataset.SPLITS)))
    if args.source and args.from_tree:
        parser.error("--source and --from-tree do not go together: the tree 01 made is the same "
                     "whatever its source (give --from-tree alone)")
    shards = number(parser, "--shards", args.shards, 1, MAX_SHARDS)
    seed = number(parser, "--seed", args.seed, 0, MAX_SEED)
    jobs = console.jobs_option(parser, args.jobs)
    root = args.root if args.root is not None else Path(os.environ.get("IMAGENET_ROOT") or ".")
    cfg = webdataset.Settings(os.path.realpath(root), args.from_tree, shards, seed or 0, jobs,
                              args.labels and str(args.labels), args.meta and str(args.meta),
                              args.source)
    return console.run(
        PROG, [str(a) for a in (sys.argv[1:] if argv is None else argv)],
        lambda: webdataset.make_shards(cfg, webdataset.iter_splits(args.splits)),
        interrupted=webdataset.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
