#!/usr/bin/env python3
"""02_convert_meta_clsloc.py — turn the devkit's MATLAB class list into plain CSV/JSON/text.

Reads the 2012 devkit's ``meta.mat`` (1,860 synsets; the 1,000 leaves with num_children == 0 are
the classes) or the 2015/2017 devkit's ``meta_clsloc.mat`` (the 1,000 classes), checks it, and
writes the class metadata every later step reads. This is the only step that reads a MATLAB file.
Sources without a devkit (Hugging Face, Kaggle) give their own class list instead: it is read as
data, checked against the package's table of the 1,000 classes (imagenet_prep/classes.tsv, from
the 2012 devkit), which gives the devkit IDs, and the same files are written.

Usage:
    02_convert_meta_clsloc.py [--root DIR] [--mat PATH | --devkit ARCHIVE] [--classes FILE]
                              [--out DIR]

Example:
    python3 02_convert_meta_clsloc.py --root /data/imagenet
    python3 02_convert_meta_clsloc.py --root /data/imagenet \
        --devkit /data/imagenet/downloads/ILSVRC2012_devkit_t12.tar.gz

Before (after 01_unzip.sh; either devkit, or both; or, without a devkit, a source's class list)::

    ROOT/devkit/ILSVRC2012_devkit_t12/data/meta.mat
    ROOT/devkit/ILSVRC/devkit/data/meta_clsloc.mat        (preferred when both are there)
    ROOT/hf/classes.py                                    (Hugging Face: IMAGENET2012_CLASSES)
    ROOT/kaggle/LOC_synset_mapping.txt                    (Kaggle)

After::

    ROOT/meta/synsets.csv              ilsvrc_id,class_index,wnid,words,description,num_train_images
                                       one row per class, devkit ID order (ID 1 = n02119789 kit fox)
    ROOT/meta/synsets.json             the same records, plus the source file and its format
    ROOT/meta/class_index.json         {"0": ["n01440764", "tench"], ...} sorted-WNID order (Keras)
    ROOT/meta/LOC_synset_mapping.txt   "WNID words" sorted by WNID (Kaggle / Caffe synset_words.txt)
    ROOT/meta/map_clsloc.txt           "WNID ID name" in devkit ID order (as in the 2015 devkit)

ilsvrc_id is the devkit's 1..1000 ID (used by the validation ground truth); class_index is the
0..999 position in sorted-WNID order (torchvision ImageFolder, Keras, TFDS, timm).
Every file is written to a temporary name, fsynced and renamed, and is byte-identical on a rerun;
a rerun with unchanged output says "already done". The work is done by imagenet_prep/meta.py.
Exit codes: 0 ok, 1 failure, 2 usage, 130 Ctrl-C, 143 SIGTERM (outputs complete or untouched).
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
    bootstrap.start(os.path.basename(__file__), needs=("numpy", "scipy"))

from pathlib import Path
from typing import Optional

from imagenet_prep import console, facts, meta

PROG = meta.PROG


def build_parser() -> console.Parser:
    p = console.Parser(
        prog=PROG,
        description="Convert the ILSVRC devkit's meta.mat (2012) or meta_clsloc.mat (2015/2017)\n"
                    "into ROOT/meta/synsets.csv, synsets.json, class_index.json,\n"
                    "LOC_synset_mapping.txt and map_clsloc.txt. Without a devkit (Hugging Face,\n"
                    "Kaggle): the source's class list, with the devkit IDs from the package's\n"
                    "table of the 1,000 classes.",
        epilog="Exit codes: 0 ok (a rerun with unchanged output says 'already done'), 1 failure,\n"
               "2 usage, 130 Ctrl-C, 143 SIGTERM.\nExample: python3 %s --root /data/imagenet" % PROG)
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="dataset root (default: $IMAGENET_ROOT, else the current directory)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--mat", type=Path, default=None, metavar="PATH",
                     help="the meta.mat or meta_clsloc.mat to read "
                          "(default: found under ROOT/devkit/, meta_clsloc.mat preferred)")
    src.add_argument("--devkit", type=Path, default=None, metavar="ARCHIVE",
                     help="read the .mat straight from a devkit .tar.gz or .tar, extracting "
                          "nothing (default: not used)")
    p.add_argument("--classes", type=Path, default=None, metavar="FILE",
                   help="a source's class list when there is no devkit: the Hugging Face "
                        "classes.py or Kaggle's LOC_synset_mapping.txt, read as data (default: "
                        "ROOT/hf/classes.py or ROOT/kaggle/LOC_synset_mapping.txt when there is "
                        "no devkit; with a devkit, the list is checked against it)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: ROOT/meta)")
    p.add_argument("--expect-classes", type=int, default=facts.CLASSES, metavar="N",
                   help="number of classes the file must hold; change it only for "
                        "test/miniature devkits")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.expect_classes < 1:
        parser.error("--expect-classes must be at least 1")
    root = args.root if args.root is not None else Path(os.environ.get("IMAGENET_ROOT") or ".")
    out = args.out if args.out is not None else root / "meta"
    return console.run(
        PROG, [str(a) for a in (sys.argv[1:] if argv is None else argv)],
        lambda: meta.convert(root, out, args.mat, args.devkit, args.expect_classes,
                             args.classes),
        interrupted="every output is either complete or untouched; run the same command again")


if __name__ == "__main__":
    sys.exit(main())
