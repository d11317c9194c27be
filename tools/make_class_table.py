#!/usr/bin/env python3
"""make_class_table.py — write imagenet_prep/classes.tsv from the real devkit's meta.mat.

The table of the 1,000 classes (devkit ID, WNID, words, description, train count) that
02_convert_meta_clsloc.py uses when a source comes without a devkit (Hugging Face, Kaggle). It is
generated once from the ILSVRC2012 devkit's meta.mat and kept in the repository;
tests/test_02_convert_meta_clsloc.py checks it against that file when ../shared/reference holds it.

Usage:
    python3 tools/make_class_table.py MAT [--out FILE]

Example:
    python3 tools/make_class_table.py ROOT/devkit/ILSVRC2012_devkit_t12/data/meta.mat
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
from imagenet_prep import console, facts, files, meta  # noqa: E402

PROG = "make_class_table.py"


def build_parser() -> console.Parser:
    p = console.Parser(prog=PROG, description="Write the package's table of the 1,000 classes "
                                              "(imagenet_prep/classes.tsv) from a devkit's "
                                              "meta.mat or meta_clsloc.mat.")
    p.add_argument("mat", type=Path, metavar="MAT",
                   help="the devkit's meta.mat (ILSVRC2012_devkit_t12/data/meta.mat)")
    p.add_argument("--out", type=Path, default=meta.TABLE, metavar="FILE",
                   help="the table to write")
    return p


def write(mat: Path, out: Path) -> int:
    src = meta.read_mat_file(mat, mat.parent, given=True)
    fmt, classes = meta.load_classes(src, facts.CLASSES)
    wrote = files.write_if_changed(str(out), meta.table_text(classes, fmt, src.data).encode())
    console.log.info("%s %s: %d classes from %s", "wrote" if wrote else "unchanged", out,
                     len(classes), mat)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return console.run(PROG, [str(a) for a in (sys.argv[1:] if argv is None else argv)],
                       lambda: write(args.mat, args.out),
                       interrupted="the table is either complete or untouched; run it again")


if __name__ == "__main__":
    sys.exit(main())
