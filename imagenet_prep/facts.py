"""Facts about the ILSVRC2012 release that every stage checks against.

The archives (names, sizes, MD5s, image counts) live in release.tsv beside this file, which
00_download.sh reads too; this module adds what only the Python stages need.
"""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TSV = Path(__file__).resolve().parent / "release.tsv"
HF_TSV = Path(__file__).resolve().parent / "hf_release.tsv"
SPLITS = ("train", "val", "test", "devkit")

# Facts the archives' table does not hold.
CLASSES = 1000                           # leaves of the 2012 meta.mat, IDs 1..1000
SYNSETS_2012 = 1860                      # every synset of the 2012 meta.mat
MIN_PER_CLASS, MAX_PER_CLASS = 732, 1300  # train images per class
VAL_PER_CLASS = 50
CMYK_FILES = 22                          # train JPEGs in CMYK
PNG_FILE = "n02105855_2933.JPEG"         # the one train "JPEG" that is a PNG
VAL_NAME = "ILSVRC2012_val_%08d.JPEG"    # line k of the ground truth labels image k
WNID_RE = re.compile(r"n[0-9]{8}\Z")


@dataclass(frozen=True)
class Archive:
    split: str
    suffix: str                          # urls.sh variables: DOWNLOAD_URL_<suffix>, MD5_<suffix>
    name: str
    size: Optional[int]
    md5: Optional[str]
    images: Optional[int]
    classes: Optional[int]


def _number(text: str) -> Optional[int]:
    if text == "-":
        return None
    if not re.fullmatch(r"[0-9]{1,15}", text):
        raise ValueError("%s: %r is not a number" % (TSV, text))
    return int(text)


@functools.lru_cache(maxsize=None)
def archives() -> tuple[Archive, ...]:
    """Every row of release.tsv, in its order (preferred names first)."""
    rows = []
    with open(TSV, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 7 or row[0] not in SPLITS:
                raise ValueError("%s: bad row %r" % (TSV, row))
            split, suffix, name, size, md5, images, classes = row
            rows.append(Archive(split, suffix, name, _number(size), None if md5 == "-" else md5,
                                _number(images), _number(classes)))
    return tuple(rows)


def names(split: str) -> list[str]:
    """Archive names a split may come as, preferred first."""
    return [a.name for a in archives() if a.split == split]


def official(split: str) -> Archive:
    """The split's current official archive (the first row of the split)."""
    return next(a for a in archives() if a.split == split)


def by_name(name: str) -> Optional[Archive]:
    return next((a for a in archives() if a.name == name), None)


def official_size(split: str) -> Optional[int]:
    return official(split).size


def images(split: str) -> int:
    """Images in the official release of a split (train, val, test)."""
    count = official(split).images
    assert count is not None, split
    return count


# ----------------------------------------------------------------------------- Hugging Face

HF_REPO = "ILSVRC/imagenet-1k"
KAGGLE_COMPETITION = "imagenet-object-localization-challenge"
KAGGLE_ZIP = KAGGLE_COMPETITION + ".zip"    # the one file of its download-all
KAGGLE_REAL_MIN = 100 << 30              # the Kaggle zip is taken for the real one above this size:
#                                          it is over 150 GiB, its exact size is not published
HF_SPLITS = ("train", "val", "test")
SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class HubFile:
    split: str
    path: str                            # in the repository: data/...
    size: int
    sha256: str


@functools.lru_cache(maxsize=None)
def hf_release() -> tuple[str, tuple[HubFile, ...]]:
    """The Hub's tar.gz revision (a commit hash) and its files, from hf_release.tsv."""
    revision, rows = None, []
    with open(HF_TSV, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if row and row[0] == "#revision" and len(row) == 2:
                revision = row[1]
                continue
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 4 or row[0] not in HF_SPLITS or not SHA256_RE.match(row[3]):
                raise ValueError("%s: bad row %r" % (HF_TSV, row))
            size = _number(row[2])
            if size is None:
                raise ValueError("%s: bad row %r" % (HF_TSV, row))
            rows.append(HubFile(row[0], row[1], size, row[3]))
    if not revision or not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ValueError("%s: no #revision line with a commit hash" % HF_TSV)
    return revision, tuple(rows)


def hf_files(split: str) -> list[HubFile]:
    """The files of a split at the Hub's tar.gz revision."""
    return [f for f in hf_release()[1] if f.split == split]
