"""The names of the Hugging Face and Kaggle sources, and the canonical names they become.

Every source yields members under the names of the image-net.org route's tree:

    train/WNID/WNID_N.JPEG                  (its class: WNID)
    val/ILSVRC2012_val_NNNNNNNN.JPEG        (its label, where the source carries one)
    test/ILSVRC2012_test_NNNNNNNN.JPEG

The forms of a name are 01's (train.class_pattern, unzip.RE_FLAT, facts.WNID_RE); what each
source adds around them is checked here, and any name that fits none of the forms is refused by
name. A name seen twice is refused where the files are written (a second file of one name,
O_EXCL), and by the zip reader for a zip's directory.

Hugging Face, ILSVRC/imagenet-1k: the tar.gz members and the Parquet rows' image.path are flat
names with the class appended, at most one folder level in front (the same for a whole file):

    n01440764_10026_n01440764.JPEG          -> train/n01440764/n01440764_10026.JPEG
    ILSVRC2012_val_00000001_n01751748.JPEG  -> val/ILSVRC2012_val_00000001.JPEG, label n01751748
    ILSVRC2012_test_00000001.JPEG           -> test/ILSVRC2012_test_00000001.JPEG

A Parquet row's label (the class's index in sorted-WNID order; -1 for test) must name the same
class as the suffix.

Kaggle, imagenet-object-localization-challenge (the zip, or the tar.gz inside it):

    ILSVRC/Data/CLS-LOC/train/WNID/WNID_N.JPEG      -> train/WNID/WNID_N.JPEG
    ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_N.JPEG   -> val/ILSVRC2012_val_N.JPEG
    ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_N.JPEG -> test/ILSVRC2012_test_N.JPEG
    LOC_synset_mapping.txt, LOC_val_solution.csv,   -> kaggle/NAME (top level of the zip only)
    LOC_train_solution.csv, LOC_sample_submission.csv
    ILSVRC/Annotations/CLS-LOC/..., ILSVRC/ImageSets/CLS-LOC/*.txt, the folders: skipped

The annotations are skipped, not kept: they are 594,546 small XML files of boxes that no stage
reads, and the same boxes are in LOC_train_solution.csv and LOC_val_solution.csv, which are kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from . import facts, train, unzip
from .console import PrepError, shown

SPLITS = ("train", "val", "test")
HF_REPO, KAGGLE_COMPETITION, KAGGLE_ZIP = facts.HF_REPO, facts.KAGGLE_COMPETITION, facts.KAGGLE_ZIP
KAGGLE_NESTED = "imagenet_object_localization_patched2019.tar.gz"
KAGGLE_FILES = ("LOC_synset_mapping.txt", "LOC_val_solution.csv", "LOC_train_solution.csv",
                "LOC_sample_submission.csv")
KAGGLE_TREE = "ILSVRC/Data/CLS-LOC/"
KAGGLE_IMAGE_SETS = ("train_cls.txt", "train_loc.txt", "val.txt", "test.txt")
FOLDER = re.compile(r"[A-Za-z0-9._-]{1,255}\Z")          # the one folder a Hub name may have
HF_FILE = {"tar.gz": re.compile(r"data/(?:(train)_images_[0-9]{1,4}|(val)_images|(test)_images)"
                                r"\.tar\.gz\Z"),
           "parquet": re.compile(r"data/(?:(train)|(validation)|(test))-([0-9]{5})-of-([0-9]{5})"
                                 r"\.parquet\Z")}
HF_FORMS = {"train": "WNID_<number>_WNID.JPEG", "val": "ILSVRC2012_val_<8 digits>_WNID.JPEG",
            "test": "ILSVRC2012_test_<8 digits>.JPEG"}


@dataclass(frozen=True)
class Named:
    """Where a member goes: `path` is its canonical name (train/WNID/NAME, val/NAME, test/NAME,
    or kaggle/NAME for the Kaggle files kept); `split` the first part of it; `wnid` its class
    (train) or label (val, where the name carries it), else None."""
    path: str
    split: str
    wnid: Optional[str] = None

    @property
    def file(self) -> str:
        return self.path.rsplit("/", 1)[1]


def _refuse(label: str, name: str, why: str) -> PrepError:
    return PrepError("%s: member %s refused: %s" % (label, shown(name), why))


def marker_archive(source: str, revision: str = "") -> str:
    """What 01_unzip.sh --source writes as "archive" in a split's done marker (00 reads it to
    know a split was extracted): hf:REPO@COMMIT, kaggle:ZIP."""
    return "hf:%s@%s" % (HF_REPO, revision) if source == "hf" else "kaggle:" + KAGGLE_ZIP


# ----------------------------------------------------------------------------- Hugging Face

def hf_data_file(path: str) -> tuple[str, str]:
    """(layout, split) of a file of the Hub's data/ folder: ('tar.gz' or 'parquet', 'train',
    'val' or 'test'). Anything else is a PrepError naming it."""
    for layout, pattern in HF_FILE.items():
        m = pattern.match(path)
        if m:
            if layout == "parquet" and not int(m.group(4)) < int(m.group(5)):
                break
            split = next(g for g in m.groups()[:3] if g)
            return layout, "val" if split == "validation" else split
    raise PrepError("%s holds %s, which is neither a file of the tar.gz layout (data/train_images_K"
                    ".tar.gz, data/val_images.tar.gz, data/test_images.tar.gz) nor of the Parquet "
                    "layout (data/SPLIT-NNNNN-of-NNNNN.parquet); the revision is not one this "
                    "script knows: pick another with --hf-revision" % (HF_REPO, shown(path)))


class HfNames:
    """The names of one Hub file (a tar.gz, a Parquet file) of one split. `label` names the file
    in messages. The folder in front of the names, if any, must be the same for every name."""

    def __init__(self, split: str, label: str) -> None:
        if split not in SPLITS:
            raise ValueError(split)
        self.split, self.label = split, label
        self.folder: Optional[str] = None            # the folder in front of the names, once seen

    def _base(self, name: str) -> str:
        parts = name.split("/")
        if len(parts) == 1:
            folder, base = "", parts[0]
        elif len(parts) == 2 and self.folder_ok(parts[0]):
            folder, base = parts[0] + "/", parts[1]
        else:
            raise _refuse(self.label, name, "names must be %s, with at most one folder in front"
                          % HF_FORMS[self.split])
        if self.folder is None:
            self.folder = folder
        elif folder != self.folder:
            raise _refuse(self.label, name, "it is in %s, the names before it in %s (one folder "
                          "for all, or none)" % (_folder_text(folder), _folder_text(self.folder)))
        return base

    @staticmethod
    def folder_ok(folder: str) -> bool:
        """A name the one folder in front of the Hub's names may have."""
        return bool(FOLDER.match(folder)) and folder not in (".", "..")

    def folder_entry(self, name: str) -> None:
        """A folder entry (of a tar): only the one folder the names may be in, which is skipped.
        Anything else is refused."""
        parts = name.rstrip("/").split("/")
        if len(parts) == 1 and self.folder_ok(parts[0]):
            self._base(parts[0] + "/")
            return
        raise _refuse(self.label, name, "a folder; the names must be %s, with at most one folder "
                      "in front" % HF_FORMS[self.split])

    def name(self, name: str) -> Named:
        """The canonical name of a member (or of a row's image.path)."""
        base = self._base(name)
        if self.split == "test":
            if not unzip.RE_FLAT["test"].match(base):
                raise _refuse(self.label, name, "test names must be %s%s"
                              % (HF_FORMS["test"], _other_split(base)))
            return Named("test/" + base, "test")
        stem, _, wnid = base[:-5].rpartition("_") if base.endswith(".JPEG") else ("", "", "")
        original = stem + ".JPEG"
        if not facts.WNID_RE.match(wnid):
            raise _refuse(self.label, name, "%s names must be %s (the class appended to the "
                          "original name)%s" % (self.split, HF_FORMS[self.split], _other_split(base)))
        if self.split == "train":
            if not train.class_pattern(wnid).match(original):
                raise _refuse(self.label, name, "train names must be %s with the same WNID twice"
                              "%s" % (HF_FORMS["train"], _other_split(base)))
            return Named("train/%s/%s" % (wnid, original), "train", wnid)
        if not unzip.RE_FLAT["val"].match(original):
            raise _refuse(self.label, name, "val names must be %s%s"
                          % (HF_FORMS["val"], _other_split(base)))
        return Named("val/" + original, "val", wnid)

    def row(self, name: str, label: object, wnids: list[str], row: int) -> Named:
        """The canonical name of a Parquet row (number `row` of the file), its label checked
        against the class its name carries: the label is the class's index in `wnids` (sorted
        WNID order), -1 for test."""
        where = "%s: row %d (%s)" % (self.label, row, shown(name))
        if type(label) is not int:
            raise PrepError("%s: its label %r is not a whole number; the file is not the Hub's "
                            "layout: refused" % (where, label))
        named = self.name(name)
        if self.split == "test":
            if label != -1:
                raise PrepError("%s: a test image with label %d (test images have -1); refused"
                                % (where, label))
            return named
        if not 0 <= label < len(wnids):
            raise PrepError("%s: its label %d is not a class index (0 to %d); refused"
                            % (where, label, len(wnids) - 1))
        if wnids[label] != named.wnid:
            raise PrepError("%s: its label %d is class %s, its name says %s; refused"
                            % (where, label, wnids[label], named.wnid))
        return named


def _folder_text(folder: str) -> str:
    return "folder %s" % shown(folder) if folder else "no folder"


def _other_split(base: str) -> str:
    """A hint when a name is of another split (a file of one split given as another)."""
    for split, pattern in (("val", r"ILSVRC2012_val_[0-9]{8}(_n[0-9]{8})?\.JPEG\Z"),
                           ("test", r"ILSVRC2012_test_[0-9]{8}(_n[0-9]{8})?\.JPEG\Z"),
                           ("train", r"n[0-9]{8}_[0-9]{1,20}(_n[0-9]{8})?\.JPEG\Z")):
        if re.match(pattern, base):
            return " (this looks like a %s image: is the file of another split?)" % split
    return ""


# ----------------------------------------------------------------------------- Kaggle

KAGGLE_FOLDERS = re.compile(r"ILSVRC/(?:Data/(?:CLS-LOC/(?:(?:train(?:/n[0-9]{8})?|val|test)/)?)?"
                            r"|Annotations/(?:CLS-LOC/(?:(?:train(?:/n[0-9]{8})?|val)/)?)?"
                            r"|ImageSets/(?:CLS-LOC/)?)?\Z")
KAGGLE_XML_TRAIN = re.compile(r"ILSVRC/Annotations/CLS-LOC/train/(n[0-9]{8})/(n[0-9]{8})_[0-9]{1,20}"
                              r"\.xml\Z")
KAGGLE_XML_VAL = re.compile(r"ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_[0-9]{8}\.xml\Z")
KAGGLE_FORMS = ("ILSVRC/Data/CLS-LOC/{train/WNID/WNID_N.JPEG, val/ILSVRC2012_val_N.JPEG, "
                "test/ILSVRC2012_test_N.JPEG}")

NESTED = "nested"          # Named.split of the tar.gz that holds the tree (the older zip)


def kaggle_member(name: str, label: str, top: bool = True) -> Optional[Named]:
    """Where a member of the Kaggle zip goes: a Named (an image, a kept file, or the nested
    tar.gz with split NESTED), or None for what is skipped (folders, annotations, image sets).
    top: a member of the zip itself; False: a member of the tar.gz inside it, where only the
    ILSVRC/ tree belongs. Anything else is refused by name."""
    if top and name in KAGGLE_FILES:
        return Named("kaggle/" + name, "kaggle")
    if top and name == KAGGLE_NESTED:
        return Named(name, NESTED)
    if name.endswith("/"):
        if KAGGLE_FOLDERS.match(name):
            return None
        raise _refuse(label, name, "not a folder of the ILSVRC/ tree")
    if name.startswith(KAGGLE_TREE):
        rest = name[len(KAGGLE_TREE):]
        split, _, file = rest.partition("/")
        if split == "train":
            wnid, _, file = file.partition("/")
            if facts.WNID_RE.match(wnid) and train.class_pattern(wnid).match(file):
                return Named("train/%s/%s" % (wnid, file), "train", wnid)
            raise _refuse(label, name, "train images must be ILSVRC/Data/CLS-LOC/train/WNID/"
                          "WNID_<number>.JPEG")
        if split in ("val", "test"):
            if unzip.RE_FLAT[split].match(file) and "/" not in file:
                return Named("%s/%s" % (split, file), split)
            raise _refuse(label, name, "%s images must be ILSVRC/Data/CLS-LOC/%s/%s"
                          % (split, split, unzip.PATTERN_TEXT[split].replace("[test/]", "")))
    m = KAGGLE_XML_TRAIN.match(name)
    if (m and m.group(1) == m.group(2)) or KAGGLE_XML_VAL.match(name):
        return None
    if name.startswith("ILSVRC/ImageSets/CLS-LOC/") and name[25:] in KAGGLE_IMAGE_SETS:
        return None
    where = "" if top else " inside %s" % KAGGLE_NESTED
    raise _refuse(label, name, "only %s%s belong%s here" % (
        KAGGLE_FORMS, ", %s and its LOC_*.csv / LOC_synset_mapping.txt" % KAGGLE_NESTED if top else "",
        where))
