"""Stage 03: the validation images sorted into ROOT/val/WNID/ folders, and the label logic that
later stages reuse instead of copying it.

The labels, callable on their own (04 verifies with them, 05 places images with them):
- read_synsets(path): ROOT/meta/synsets.csv, as 02 writes it, checked -> {WNID: ClassRow}
- labels_found(root), find_labels(root), read_labels(path, classes): the validation labels in
  ROOT (the devkit's ground truth, else those of a source without a devkit), in any of their
  three forms (devkit class IDs, Kaggle LOC_val_solution.csv, one WNID per line), checked
- val_labels(root): both in one call -> {image file name: WNID}
- read_blacklist(path, names): the images to set aside
Each reads its file only if it is a regular file, up to 1 GiB (files.read_regular_text; a path
given with --meta, --labels or --exclude-blacklist may be a symbolic link to one).
The tree: scan (one scandir per folder, no per-file stat) -> plan_forward / plan_undo (every
problem found before anything changes) -> execute (renames; links; copies under a temporary name)
-> a fresh scan to verify -> ROOT/meta/SHA256SUMS.val rewritten with the images' new places
(ValManifest). ROOT/val ends with class folders only: --copy, --link and --symlink keep the flat
originals in ROOT/val_flat (KEPT_DIR). sort_val and flatten_val are the two commands of
03_build_val_class_folders.py; build takes the lock and picks one.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterator, Optional

from . import facts, files, manifest
from .console import PrepError, log
from .progress import Progress

PROG = "03_build_val_class_folders.py"
STAGE_02 = "02_convert_meta_clsloc.py"          # writes synsets.csv
VAL_DIR = "val"                                  # ROOT/val: flat images, then ROOT/val/WNID/
BLACKLIST_DIR = "val_blacklisted"                # ROOT/val_blacklisted/WNID/ (--exclude-blacklist)
KEPT_DIR = "val_flat"                            # ROOT/val_flat/: the flat originals that --copy,
#                    --link and --symlink keep: never in ROOT/val, where a folder reader that
#                    walks the tree (timm) would take them for one more class, ''
SYNSETS_CSV = Path("meta") / "synsets.csv"       # written by 02_convert_meta_clsloc.py
HF_DIR = "hf"                                    # ROOT/hf/: what the Hugging Face source's 01 keeps
KAGGLE_DIR = "kaggle"                            # ROOT/kaggle/: the Kaggle zip's top-level files
VAL_LABELS_CSV = Path("meta") / "val_labels.csv"  # written by 03
DEVKIT_DIR = "devkit"
DEVKIT_LABEL_FILES = ("ILSVRC2012_validation_ground_truth.txt",
                      "ILSVRC2015_clsloc_validation_ground_truth.txt")
# the labels of the sources without a devkit, where their 01 leaves them, in this order after the
# devkit's: Kaggle's LOC_val_solution.csv, and the labels the Hub's member names carry (in its form)
SOURCE_LABEL_FILES = (Path(KAGGLE_DIR) / "LOC_val_solution.csv", Path(HF_DIR) / "val_labels.csv")
SYNSETS_COLUMNS = ["ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images"]
VAL_LABELS_COLUMNS = ["file", "wnid", "ilsvrc_id", "class_index"]
KAGGLE_HEADER = ["ImageId", "PredictionString"]
IMAGE_SUFFIXES = (".jpeg", ".jpg")
MODES = {"move": "move", "copy": "copy", "link": "hard-link", "symlink": "symlink"}  # -> verb
PROGRESS_MIN = 1000                              # fewer actions: no progress lines in a log
SHOW = 5                                         # offenders listed per problem
NAME_RE = re.compile(r"[\w.-]+\Z")                # image names we accept from a labels file
FORM_NAMES = {
    "devkit": "devkit ground truth: one devkit class ID per line, line k = image k",
    "kaggle": "Kaggle LOC_val_solution.csv: ImageId,PredictionString rows in any order",
    "wnid": "WNID list: one WNID per line, line k = image k (tensorflow/models form)",
}

Problems = list[tuple[str, list[str]]]          # (what is wrong, the offenders)
Action = tuple[str, str, str]                    # (kind, source, destination)


@dataclass(frozen=True)
class ClassRow:
    """One row of synsets.csv: a class, with its devkit ID and its sorted-WNID index."""

    ilsvrc_id: int
    class_index: int
    wnid: str
    words: str
    description: str
    num_train_images: int


@dataclass
class Labels:
    form: str                        # one of FORM_NAMES
    source: Path
    wnid_of: dict[str, str]          # image file name -> WNID, in image order


@dataclass
class Scan:
    """What is on disk: one os.scandir of ROOT/val, ROOT/val_blacklisted and each WNID folder."""

    flat: set[str] = field(default_factory=set)                  # image names directly in ROOT/val
    kept: set[str] = field(default_factory=set)                  # ... in ROOT/val_flat
    placed: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (tree, wnid) folder
    extra: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # more folders, if any
    links: set[str] = field(default_factory=set)                 # names with a symlink in a folder
    class_dirs: list[tuple[str, str]] = field(default_factory=list)  # (tree, wnid) folders
    temps: list[str] = field(default_factory=list)               # leftovers of a killed run
    others: list[str] = field(default_factory=list)              # anything else (left alone)
    kinds: dict[str, str] = field(default_factory=dict)          # path -> "a FIFO", "a symbolic
    #                      link", ...: every entry above that is not a regular file or a folder


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    done: int = 0
    problems: Problems = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)                  # class folders to create


def problem_text(problems: Problems) -> str:
    """'what is wrong: N (first: a, b, ...)' per problem, one per line."""
    lines = []
    for title, offenders in problems:
        if not offenders:
            lines.append("  " + title)
            continue
        shown = ", ".join(offenders[:SHOW]) + (", ..." if len(offenders) > SHOW else "")
        lines.append("  %s: %d (first: %s)" % (title, len(offenders), shown))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the labels

def is_number(text: str) -> bool:
    """Digits 0-9 only: str.isdigit (like a regex digit class) also takes '²' and '٣', which
    int() refuses or reads as a number."""
    return text.isascii() and text.isdigit()


def missing(path: Path) -> bool:
    """Nothing at `path` (a symbolic link, even one leading nowhere, is something)."""
    return not os.path.lexists(path)


def read_synsets(path: Path, given: bool = False) -> dict[str, ClassRow]:
    """synsets.csv (the contract of 02) -> {WNID: ClassRow} in devkit ID order (the file's).

    Checks the header, every row's numbers, WNIDs and IDs unique, and class_index = the place in
    sorted-WNID order; any problem is a PrepError saying to rerun 02. Read only if it is a
    regular file (files.read_regular_text); `given` (--meta CSV): a symbolic link to one too."""
    rerun = "rerun %s" % STAGE_02
    if missing(path):
        if given:
            raise PrepError("--meta %s: no such file; name the synsets.csv that %s wrote (or leave "
                            "--meta out to use ROOT/meta/synsets.csv)" % (path, STAGE_02))
        raise PrepError("%s not found: run %s first (or pass --meta CSV)" % (path, STAGE_02))
    what = ("pass the CSV file itself with --meta" if given else
            "%s writes it: remove it and %s" % (STAGE_02, rerun))
    try:
        text = files.read_regular_text(str(path), what, follow=given)
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepError("cannot read %s (%s): %s" % (path, e, rerun)) from None
    if not rows or rows[0] != SYNSETS_COLUMNS:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise PrepError("%s does not start with the header %s (found %s): %s"
                        % (path, ",".join(SYNSETS_COLUMNS), found, rerun))
    by_wnid: dict[str, ClassRow] = {}
    ids: set[int] = set()
    for n, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(SYNSETS_COLUMNS):
                raise ValueError(row)
            c = ClassRow(int(row[0]), int(row[1]), row[2], row[3], row[4], int(row[5]))
        except ValueError:
            raise PrepError("%s line %d is not ilsvrc_id,class_index,wnid,...: %r; %s"
                            % (path, n, ",".join(row), rerun)) from None
        if not facts.WNID_RE.match(c.wnid) or c.wnid in by_wnid or c.ilsvrc_id in ids:
            raise PrepError("%s line %d: bad or repeated class %s (ID %d); %s"
                            % (path, n, c.wnid, c.ilsvrc_id, rerun))
        by_wnid[c.wnid] = c
        ids.add(c.ilsvrc_id)
    if not by_wnid:
        raise PrepError("%s lists no classes: %s" % (path, rerun))
    for i, wnid in enumerate(sorted(by_wnid)):
        if by_wnid[wnid].class_index != i:
            raise PrepError("%s: class_index of %s is %d, but its place in sorted-WNID order is "
                            "%d; %s" % (path, wnid, by_wnid[wnid].class_index, i, rerun))
    return by_wnid


class NoLabels(PrepError):
    """No validation labels anywhere in ROOT."""


def labels_found(root: Path) -> list[Path]:
    """The validation labels in ROOT, preferred first: the devkit's ground truth under
    ROOT/devkit (the 2012 name, else the 2015/2017 name), then the labels of a source without a
    devkit (ROOT/kaggle/LOC_val_solution.csv, ROOT/hf/val_labels.csv)."""
    devkit = root / DEVKIT_DIR
    found = []
    for name in DEVKIT_LABEL_FILES:
        found = sorted(devkit.glob("**/" + name)) if devkit.is_dir() else []
        if found:
            break
    return found[:1] + [root / rel for rel in SOURCE_LABEL_FILES if not missing(root / rel)]


def find_labels(root: Path) -> Path:
    """The preferred validation labels in ROOT (labels_found); NoLabels if there are none."""
    found = labels_found(root)
    if not found:
        raise NoLabels("no validation labels found in %s (looked for %s under %s, and for %s): "
                       "run 01_unzip.sh to extract the devkit, or pass --labels FILE"
                       % (root, " or ".join(DEVKIT_LABEL_FILES), root / DEVKIT_DIR,
                          " and ".join(str(root / rel) for rel in SOURCE_LABEL_FILES)))
    return found[0]


@dataclass
class _Parsed:
    wnid_of: dict[str, str] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)       # lines not in the detected form
    unknown: list[str] = field(default_factory=list)   # classes that synsets.csv does not have
    repeated: list[str] = field(default_factory=list)  # images listed twice


def _jpeg_name(name: str) -> str:
    return name if name.upper().endswith(".JPEG") else name + ".JPEG"


def _parse_kaggle(lines: list[str], classes: dict[str, ClassRow]) -> _Parsed:
    out = _Parsed()
    for n, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
        tokens = row[1].split() if len(row) >= 2 else []
        name = row[0].strip() if row else ""
        if not tokens or not NAME_RE.match(name):
            out.bad.append("line %d: %r" % (n, ",".join(row)))
            continue
        name = _jpeg_name(name)
        if name in out.wnid_of:
            out.repeated.append(name)
        elif tokens[0] not in classes:
            out.unknown.append("line %d: %s" % (n, tokens[0]))
        out.wnid_of[name] = tokens[0]
    return out


def _parse_devkit(lines: list[str], classes: dict[str, ClassRow]) -> _Parsed:
    out = _Parsed()
    by_id = {c.ilsvrc_id: c.wnid for c in classes.values()}
    for n, line in enumerate(lines, start=1):
        value = line.strip()
        if not is_number(value):
            out.bad.append("line %d: %r" % (n, line))
        elif int(value) not in by_id:
            out.unknown.append("line %d: %s" % (n, value))
        else:
            out.wnid_of[facts.VAL_NAME % n] = by_id[int(value)]
    return out


def _parse_wnids(lines: list[str], classes: dict[str, ClassRow]) -> _Parsed:
    out = _Parsed()
    for n, line in enumerate(lines, start=1):
        value = line.strip()
        if not facts.WNID_RE.match(value):
            out.bad.append("line %d: %r" % (n, line))
        elif value not in classes:
            out.unknown.append("line %d: %s" % (n, value))
        out.wnid_of[facts.VAL_NAME % n] = value
    return out


def _label_form(first: str) -> Optional[str]:
    if first.split(",")[:2] == KAGGLE_HEADER:
        return "kaggle"
    if is_number(first):
        return "devkit"
    return "wnid" if facts.WNID_RE.match(first) else None


def read_labels(path: Path, classes: dict[str, ClassRow], given: bool = False) -> Labels:
    """Detect the form of a labels file, parse it, check every image name and class against
    `classes` (read_synsets). Any problem is a PrepError listing the offending lines. Read only
    if it is a regular file (files.read_regular_text); `given` (--labels FILE): a symbolic link
    to one too."""
    what = ("pass the labels file itself with --labels" if given else
            "put the devkit's file itself there (01_unzip.sh devkit extracts it)")
    try:
        text = files.read_regular_text(str(path), what, encoding="utf-8-sig", follow=given)
    except (OSError, UnicodeDecodeError) as e:
        raise PrepError("cannot read the labels %s (%s)" % (path, e)) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PrepError("the labels file %s is empty" % path)
    form = _label_form(lines[0].strip())
    if form is None:
        raise PrepError("cannot tell the form of the labels %s from its first line %r: expected "
                        "devkit class IDs (ILSVRC2012_validation_ground_truth.txt), a Kaggle "
                        "LOC_val_solution.csv, or one WNID per line" % (path, lines[0][:80]))
    parse = {"kaggle": _parse_kaggle, "devkit": _parse_devkit, "wnid": _parse_wnids}[form]
    got = parse(lines, classes)
    problems = []
    if got.bad:
        problems.append(("lines that are not in the %s form" % form, got.bad))
    if got.repeated:
        problems.append(("images listed more than once", got.repeated))
    if got.unknown:
        ids = sorted(c.ilsvrc_id for c in classes.values())
        problems.append(("labels naming a class that %s does not have (it has %d classes, "
                         "IDs %d..%d)" % (SYNSETS_CSV.name, len(ids), ids[0], ids[-1]),
                         got.unknown))
    if problems:
        hint = ("; the labels and synsets.csv seem to describe different class sets"
                if got.unknown and len(got.unknown) * 10 >= len(lines) else "")
        raise PrepError("the labels %s (read as %s) are not usable, nothing was changed:\n%s\n"
                        "fix or replace the labels file%s"
                        % (path, FORM_NAMES[form], problem_text(problems), hint))
    return Labels(form, path, got.wnid_of)


def load_labels(root: Optional[Path], synsets_csv: Optional[Path] = None,
                labels_file: Optional[Path] = None) -> tuple[dict[str, ClassRow], Labels]:
    """The classes (ROOT/meta/synsets.csv, or `synsets_csv`) and the validation labels (found
    under ROOT/devkit/, or `labels_file`), read and checked against each other; logs what it
    read. `root` may be None when both paths are given."""
    if root is None and (synsets_csv is None or labels_file is None):
        raise ValueError("load_labels: without a root, pass both synsets_csv and labels_file")
    classes = read_synsets(synsets_csv or root / SYNSETS_CSV, given=synsets_csv is not None)
    path = labels_file or find_labels(root)
    if missing(path):
        raise PrepError("the labels file %s does not exist" % path)
    labels = read_labels(path, classes, given=labels_file is not None)
    log.info("labels: %s (%d images), read as %s", path, len(labels.wnid_of),
             FORM_NAMES[labels.form])
    if labels_file is None:
        for other in labels_found(root)[1:]:
            cross_check(labels, read_labels(other, classes))
    real = facts.images("val")
    if len(classes) == facts.CLASSES and len(labels.wnid_of) != real:
        log.warning("warning: the real validation set has %d images; these labels list %d",
                    real, len(labels.wnid_of))
    return classes, labels


def cross_check(labels: Labels, other: Labels) -> None:
    """Two labels files found in ROOT must give every image the same class; says so, or
    raises a PrepError listing the images they disagree on."""
    names = set(labels.wnid_of).union(other.wnid_of)
    differ = sorted(n for n in names if labels.wnid_of.get(n) != other.wnid_of.get(n))
    if differ:
        shown = ["%s: %s, %s" % (n, labels.wnid_of.get(n, "none"), other.wnid_of.get(n, "none"))
                 for n in differ]
        raise PrepError("the labels %s and %s (found in ROOT, both read) disagree, nothing was "
                        "changed:\n%s\nfind out which is right; remove the other, or name the "
                        "right one with --labels FILE"
                        % (labels.source, other.source, problem_text(
                            [("images given another class (or none) by the second", shown)])))
    log.info("labels: %s agrees: the same %d images and classes", other.source,
             len(other.wnid_of))


def val_labels(root: Optional[Path], synsets_csv: Optional[Path] = None,
               labels_file: Optional[Path] = None) -> dict[str, str]:
    """{validation image file name: WNID} for every labelled image, with all of 03's checks.

    The same labels 03 sorts by: synsets.csv from ROOT/meta/ (or `synsets_csv`), the labels
    found in ROOT (labels_found: the devkit's first, the others checked against them) or
    `labels_file`, in any of the three forms.
    Raises PrepError saying what is wrong and what to do."""
    return load_labels(root, synsets_csv, labels_file)[1].wnid_of


def read_blacklist(path: Path, names: Collection[str]) -> set[str]:
    """Image numbers (1-based, one per line) or file names -> the set of file names; each must
    be one of `names` (the labelled images)."""
    try:
        text = files.read_regular_text(str(path), "pass the blacklist file itself with "
                                                  "--exclude-blacklist", follow=True)
        lines = [x.strip() for x in text.splitlines() if x.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise PrepError("cannot read the blacklist %s (%s)" % (path, e)) from None
    found, bad = set(), []
    for n, value in enumerate(lines, start=1):
        name = facts.VAL_NAME % int(value) if is_number(value) else _jpeg_name(value)
        if name in names and NAME_RE.match(name):
            found.add(name)
        else:
            bad.append("line %d: %s" % (n, value))
    if bad:
        raise PrepError("the blacklist %s names images that the labels do not have, nothing was "
                        "changed:\n%s\nexpected one image number (1-based) or file name per line"
                        % (path, problem_text([("unknown images", bad)])))
    return found


# ----------------------------------------------------------------------------- the tree on disk

def is_image(name: str) -> bool:
    return name.endswith(".JPEG") or (not name.startswith(".")
                                      and name.lower().endswith(IMAGE_SUFFIXES))


def _scan_class_dir(s: Scan, top: str, tree: str, wnid: str) -> None:
    where = (tree, wnid)
    s.class_dirs.append(where)
    placed = s.placed
    with os.scandir(os.path.join(top, wnid)) as it:
        for e in it:
            name = e.name
            kind = files.entry_kind(e)
            if kind is not None:
                s.kinds[e.path] = kind
            if is_image(name) and not e.is_dir(follow_symlinks=False):
                if name in placed:
                    s.extra.setdefault(name, []).append(where)
                else:
                    placed[name] = where
                if e.is_symlink():
                    s.links.add(name)
            elif files.temp_of(name) is not None:
                s.temps.append(e.path)
            else:
                s.others.append(e.path)


def scan(root: Path) -> Scan:
    """One scandir of ROOT/val, ROOT/val_blacklisted, each WNID folder and ROOT/val_flat: no
    per-file stat (the listing's file types say which entries are not regular files or folders:
    Scan.kinds)."""
    s = Scan()
    flat = {VAL_DIR: s.flat, KEPT_DIR: s.kept}        # where flat images are
    for tree in (VAL_DIR, BLACKLIST_DIR, KEPT_DIR):
        top = os.path.join(root, tree)
        if not os.path.isdir(top):
            continue
        subdirs = []
        with os.scandir(top) as it:
            for e in it:
                kind = files.entry_kind(e)
                if kind is not None:
                    s.kinds[e.path] = kind
                if e.is_dir():
                    if tree != KEPT_DIR and facts.WNID_RE.match(e.name):
                        subdirs.append(e.name)
                    else:
                        s.others.append(e.path + "/")
                elif tree in flat and is_image(e.name):
                    flat[tree].add(e.name)
                else:
                    s.others.append(e.path)
        for wnid in subdirs:
            _scan_class_dir(s, top, tree, wnid)
    return s


def _where(s: Scan, name: str) -> str:
    return ", ".join("%s/%s" % w for w in [s.placed[name]] + s.extra[name])


class _Forward:
    """plan_forward's working state: where each tree is, and the problems found so far.

    An image's original is flat: in ROOT/val (as 01 extracted it) or in ROOT/val_flat (where
    --copy, --link and --symlink keep it, so that ROOT/val holds class folders only). Moves
    take it from either; the other modes first move it from ROOT/val to ROOT/val_flat, then
    copy or link it from there: one rename or one link at a time, so a kill anywhere leaves
    every image whole at one of its places, and a rerun goes on from there."""

    def __init__(self, root: Path, s: Scan, mode: str) -> None:
        self.s, self.mode, self.p = s, mode, Plan()
        self.val = os.path.join(root, VAL_DIR)
        self.kept = os.path.join(root, KEPT_DIR)
        self.tops = {VAL_DIR: self.val, BLACKLIST_DIR: os.path.join(root, BLACKLIST_DIR)}
        # relative symlink text: ROOT/val/W/x and ROOT/val_blacklisted/W/x -> ../../val_flat/x
        self.up = {t: os.path.relpath(self.kept, os.path.join(d, "n00000000"))
                   for t, d in self.tops.items()}
        self.missing: list[str] = []
        self.wrong: list[str] = []
        self.twice: list[str] = []
        self.dangling: list[str] = []
        self.both: list[str] = []

    def original(self, name: str) -> Optional[str]:
        """The flat original's path (ROOT/val/NAME or ROOT/val_flat/NAME), None if there is
        none, "" if there are both (a problem)."""
        is_flat, is_kept = name in self.s.flat, name in self.s.kept
        if is_flat and is_kept:
            self.both.append(name)
            return ""
        if is_flat or is_kept:
            return "%s/%s" % (self.val if is_flat else self.kept, name)
        return None

    def keep(self, name: str, orig: str, tree: str, tdir: str) -> None:
        """Copy or link the original into class folder `tdir` of `tree`; from ROOT/val it is
        first moved to ROOT/val_flat."""
        kept = "%s/%s" % (self.kept, name)
        if orig != kept:
            self.p.dirs.add(self.kept)
            self.p.actions.append(("move", orig, kept))
        src = "%s/%s" % (self.up[tree], name) if self.mode == "symlink" else kept
        self.p.actions.append((self.mode, src, "%s/%s" % (tdir, name)))

    def new(self, name: str, wnid: str, tree: str) -> None:
        """An image not in any class folder yet (the common case)."""
        orig = self.original(name)
        if orig is None:
            self.missing.append(name)
        if not orig:
            return
        tdir = "%s/%s" % (self.tops[tree], wnid)
        self.p.dirs.add(tdir)
        if self.mode == "move":
            self.p.actions.append(("move", orig, "%s/%s" % (tdir, name)))
        else:
            self.keep(name, orig, tree, tdir)

    def again(self, name: str, wnid: str, tree: str, at: tuple[str, str]) -> None:
        """An image already in class folder `at`: in place, to move, or a problem."""
        s, actions = self.s, self.p.actions
        if name in s.extra:
            self.twice.append("%s (in %s)" % (name, _where(s, name)))
            return
        if at[1] != wnid:
            self.wrong.append("%s/%s/%s (label: %s)" % (at[0], at[1], name, wnid))
            return
        orig = self.original(name)
        if orig == "":
            return
        is_link = name in s.links
        if is_link and orig is None:
            self.dangling.append("%s/%s/%s" % (at[0], at[1], name))
            return
        here = at[0] == tree
        tdir = "%s/%s" % (self.tops[tree], wnid)
        dst, old = "%s/%s" % (tdir, name), "%s/%s/%s" % (self.tops[at[0]], at[1], name)
        if self.mode == "move":
            if orig is None and here:
                self.p.done += 1
                return
            self.p.dirs.add(tdir)
            if orig is None:
                actions.append(("move", old, dst))         # the other tree, same class
                return
            if not here:
                actions.append(("unlink", old, ""))
            actions.append(("move", orig, dst))           # replaces a copy or link
            return
        # copy, link, symlink: the original ends in ROOT/val_flat, and a link names it there
        is_kept = orig is not None and orig.startswith(self.kept + "/")
        if is_link:
            if here and is_kept and _link_text(old) == "%s/%s" % (self.up[at[0]], name):
                self.p.done += 1
                return
            self.p.dirs.add(tdir)
            actions.append(("unlink", old, ""))          # (made when the original was elsewhere)
            self.keep(name, orig, tree, tdir)
            return
        if here and (orig is None or is_kept):
            self.p.done += 1
            return
        self.p.dirs.add(tdir)
        if orig is not None and not is_kept:
            self.p.dirs.add(self.kept)
            actions.append(("move", orig, "%s/%s" % (self.kept, name)))
        if not here:
            actions.append(("move", old, dst))

    def finish(self, labelled: Collection[str]) -> Plan:
        """The plan, with every problem found (none: it can run)."""
        s, p, val = self.s, self.p, self.val
        found = s.flat.union(s.kept, s.placed)
        unlabelled = sorted(found.difference(labelled))
        if len(labelled) != len(found):
            p.problems.append(("label count does not match: the labels list %d images, %s holds %d"
                               % (len(labelled), val, len(found)), []))
        for offenders, title in (
                (self.missing, "labelled images not found in %s (re-extract the val archive with "
                               "01_unzip.sh)" % val),
                (unlabelled, "JPEG files in %s without a label (move them out, or pass labels "
                             "that cover them with --labels)" % val),
                (self.wrong, "images in the wrong class folder, left alone (check the labels, or "
                             "run --undo and start again)"),
                (self.twice, "images found in more than one class folder (keep one)"),
                (self.both, "images both in %s and in %s (keep one)" % (val, self.kept)),
                (self.dangling, "symlinks whose flat original is missing (restore %s)"
                                % self.kept)):
            if offenders:
                p.problems.append((title, offenders))
        return p


def _link_text(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


def plan_forward(root: Path, labels: Labels, excluded: Collection[str], s: Scan,
                 mode: str) -> Plan:
    """Per image: where it is (flat and/or one class folder) -> what to do, or a problem.
    `excluded` images go to ROOT/val_blacklisted/WNID/; mode is one of MODES."""
    f = _Forward(root, s, mode)
    placed = s.placed
    for name, wnid in labels.wnid_of.items():
        tree = BLACKLIST_DIR if name in excluded else VAL_DIR
        at = placed.get(name)
        if at is None:
            f.new(name, wnid, tree)
        else:
            f.again(name, wnid, tree, at)
    return f.finish(labels.wnid_of)


def foreign_folders(root: Path, s: Scan, classes: Collection[str]) -> Problems:
    """Class folders named like a class that the class list does not have: a loader would take
    each for a class (none: no problem). --undo is the way to empty them."""
    foreign = sorted("%s/%s" % (t, w) for t, w in s.class_dirs if w not in classes)
    if not foreign:
        return []
    return [("folders named like a class that %s does not have (a loader takes every folder for "
             "a class): move them out of %s (or run --undo, which empties and removes them)"
             % (SYNSETS_CSV.name, root / VAL_DIR), foreign)]


def plan_undo(root: Path, s: Scan) -> Plan:
    """Flatten: the flat original (in ROOT/val, or kept in ROOT/val_flat) goes back to ROOT/val;
    class-folder copies and links of it are removed; an image only in a class folder is moved
    back."""
    p = Plan()
    val, kept = os.path.join(root, VAL_DIR), os.path.join(root, KEPT_DIR)
    twice, dangling, both = [], [], []
    for name in s.kept:
        if name in s.flat:
            both.append(name)
        else:
            p.actions.append(("move", "%s/%s" % (kept, name), "%s/%s" % (val, name)))
    for name, (tree, wnid) in s.placed.items():
        path = "%s/%s/%s/%s" % (root, tree, wnid, name)
        if name in s.flat or name in s.kept:
            p.actions.append(("unlink", path, ""))
            p.actions.extend(("unlink", "%s/%s/%s/%s" % (root, t, w, name), "")
                             for t, w in s.extra.get(name, ()))
        elif name in s.extra:
            twice.append("%s (in %s)" % (name, _where(s, name)))
        elif name in s.links:
            dangling.append("%s/%s/%s" % (tree, wnid, name))
        else:
            p.actions.append(("move", path, "%s/%s" % (val, name)))
    p.actions.sort(key=lambda a: a[0] != "unlink")      # links first, then their originals move
    p.done = len(s.flat.difference(s.kept))
    for title, offenders in (
            ("images both in %s and in %s (keep one)" % (val, kept), both),
            ("images found in more than one class folder and not flat (keep one)", twice),
            ("symlinks whose flat original is missing", dangling)):
        if offenders:
            p.problems.append((title, offenders))
    return p


# ----------------------------------------------------------------------------- changing the tree

def _copy(src: str, dst: str) -> None:
    """Copy under a temporary name, then rename: never half a file under its final name."""
    head, tail = os.path.split(dst)
    tmp = os.path.join(head, files.temp_name(tail))
    try:
        shutil.copy2(src, tmp)
        os.rename(tmp, dst)
    except BaseException:            # Ctrl-C too: leave no half copy behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def execute(actions: list[Action], what: str) -> None:
    """Do the actions in order, each one a single rename, unlink, link or symlink (a copy: under a
    temporary name, then a rename), so a run stopped anywhere leaves every image whole. Progress
    in chunks of 1 %: a tqdm bar on a terminal, else a log line every 10 % (1,000 or more)."""
    total = len(actions)
    bar = Progress(what, total, "images", step=10) \
        if total >= PROGRESS_MIN or sys.stderr.isatty() else None
    do = {"move": os.rename, "unlink": lambda src, dst: os.unlink(src), "link": os.link,
          "symlink": os.symlink, "copy": _copy}
    chunk = max(1, total // 100)
    try:
        for start in range(0, total, chunk):
            for kind, src, dst in actions[start:start + chunk]:
                do[kind](src, dst)
            if bar is not None:
                bar.update(min(total, start + chunk))
    finally:
        if bar is not None:
            bar.close()


def write_val_labels(path: Path, text: str) -> bool:
    """Write val_labels.csv atomically unless it already holds `text`; True if it wrote.
    Temporary files a killed run left beside it are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.clear_temps(str(path.parent), path.name)
    return files.write_if_changed(str(path), text.encode("utf-8"))


def val_labels_text(labels: Labels, classes: dict[str, ClassRow]) -> str:
    """val_labels.csv; no field needs csv quoting (names and WNIDs are [A-Za-z0-9_.])."""
    rows = [",".join(VAL_LABELS_COLUMNS) + "\n"]
    for name in sorted(labels.wnid_of):
        c = classes[labels.wnid_of[name]]
        rows.append("%s,%s,%d,%d\n" % (name, c.wnid, c.ilsvrc_id, c.class_index))
    return "".join(rows)


def counts_text(s: Scan) -> str:
    """'val/: 1000 folders x 50 images = 50000' (or min..max) per tree."""
    parts = []
    for tree in (VAL_DIR, BLACKLIST_DIR):
        per = Counter(w for t, w in s.placed.values() if t == tree)
        if not per:
            continue
        lo, hi = min(per.values()), max(per.values())
        each = "%d" % lo if lo == hi else "%d..%d" % (lo, hi)
        parts.append("%s/: %d folders x %s images = %d" % (tree, len(per), each, sum(per.values())))
    if s.kept:
        parts.append("%s/: %d originals" % (KEPT_DIR, len(s.kept)))
    return "; ".join(parts) or "no images in class folders"


def drop_empty(root: Path, s: Scan) -> None:
    """Remove what a run leaves empty: class folders of ROOT/val_blacklisted (a run without
    --exclude-blacklist takes their images back), ROOT/val_blacklisted and ROOT/val_flat. A
    folder that still holds anything stays."""
    full = {(t, w) for t, w in s.placed.values()}
    full.update(w for ws in s.extra.values() for w in ws)
    for tree, wnid in s.class_dirs:
        if tree == BLACKLIST_DIR and (tree, wnid) not in full:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, tree, wnid))
    for folder in (BLACKLIST_DIR, KEPT_DIR):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, folder))


# ----------------------------------------------------------------------------- the manifest

MANIFEST_TREES = (VAL_DIR + "/", BLACKLIST_DIR + "/", KEPT_DIR + "/")


@dataclass
class ValManifest:
    """ROOT/meta/SHA256SUMS.val (written by 01_unzip.sh), kept in step with the images' places.

    An image's bytes do not change when 03 moves or links it, so its hash is known by its file
    name: the manifest is rewritten from a scan of the tree, never by reading an image again.
    Every image the manifest lists is listed at each place it is now: flat in val/, in
    val/WNID/, in val_blacklisted/WNID/ (--exclude-blacklist), or in both val_flat/ and
    val/WNID/ (--copy, --link, --symlink: the flat original is kept in val_flat/, loaders read
    the class folder).
    A listed image not found keeps its line, so `sha256sum -c` reports it missing."""

    path: str
    lines: dict[str, str]            # what the file lists now: path -> SHA-256
    digest_of: dict[str, str]        # image file name -> SHA-256, from the paths in MANIFEST_TREES

    @classmethod
    def load(cls, root: Path) -> Optional["ValManifest"]:
        """The manifest, or None when there is none and 01 wrote none (nothing to keep in step).
        A damaged one, one that is not a regular file, or one missing although 01_unzip.sh
        wrote it (manifest.load) is a PrepError, raised before anything changes."""
        path = manifest.path_of(str(root), VAL_DIR)
        try:
            lines = manifest.load(str(root), VAL_DIR)
        except PrepError as e:
            raise PrepError("%s; nothing was changed" % e) from None
        if lines is None:
            return None
        digest_of: dict[str, str] = {}
        clash = []
        for rel, digest in lines.items():
            if rel.startswith(MANIFEST_TREES) and \
                    digest_of.setdefault(rel.rsplit("/", 1)[1], digest) != digest:
                clash.append(rel)
        if clash:
            raise PrepError("%s lists images at several places with different SHA-256s (%s); "
                            "nothing was changed: extract val again with 01_unzip.sh to rewrite "
                            "it, or delete it" % (path, ", ".join(clash[:SHOW])))
        return cls(path, lines, digest_of)

    def entries(self, s: Scan) -> tuple[list[tuple[str, str]], list[str]]:
        """The lines for the tree `s` as (path, SHA-256), and the images found that the
        manifest does not list (they are left out: their bytes were never hashed)."""
        found: dict[str, list[str]] = {}
        for name in s.flat:
            found.setdefault(name, []).append("%s/%s" % (VAL_DIR, name))
        for name in s.kept:
            found.setdefault(name, []).append("%s/%s" % (KEPT_DIR, name))
        for name, (tree, wnid) in s.placed.items():
            found.setdefault(name, []).extend(
                "%s/%s/%s" % (t, w, name) for t, w in [(tree, wnid)] + s.extra.get(name, []))
        out = [(rel, d) for rel, d in self.lines.items()
               if not rel.startswith(MANIFEST_TREES) or rel.rsplit("/", 1)[1] not in found]
        out.extend((rel, self.digest_of[name]) for name, places in found.items()
                   if name in self.digest_of for rel in places)
        return out, sorted(name for name in found if name not in self.digest_of)

    def sync(self, s: Scan) -> bool:
        """Rewrite the manifest for the tree `s` (atomically, only if it changes; leftovers of a
        killed rewrite are removed first). True if it wrote."""
        entries, unlisted = self.entries(s)
        if unlisted:
            log.warning("warning: %d images are not listed in %s (first: %s): they were not in "
                        "the archive 01_unzip.sh extracted; 04_verify.py --full val reports them",
                        len(unlisted), self.path, ", ".join(unlisted[:SHOW]))
        folder, name = os.path.split(self.path)
        files.clear_temps(folder, name)
        wrote = files.write_if_changed(self.path, manifest.render(entries))
        if wrote:
            log.info("rewrote %s: %d paths, the images' places now (sha256sum -c checks them)",
                     self.path, len(entries))
        return wrote


# ----------------------------------------------------------------------------- the two commands

@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An flock on the folder itself, so two runs never work on it at once. No folder: nothing
    to lock (the run itself says what is missing)."""
    if not folder.is_dir():
        yield
        return
    busy = ("another run of %s is working on %s: let it finish (or stop it), then rerun"
            % (PROG, folder))
    with files.Lock(str(folder), busy):
        yield


def build(root: Path, undo: bool = False, dry_run: bool = False, mode: str = "move",
          labels_file: Optional[Path] = None, synsets_csv: Optional[Path] = None,
          blacklist: Optional[Path] = None) -> int:
    """03_build_val_class_folders.py: sort_val, or flatten_val with undo, holding the lock on
    ROOT/val. Returns 0; every failure is a PrepError (or an OSError) with nothing left half
    done."""
    with _locked(root / VAL_DIR):
        if undo:
            return flatten_val(root, dry_run)
        return sort_val(root, mode, dry_run, labels_file, synsets_csv, blacklist)


def _run_actions(plan: Plan, verb: str) -> None:
    try:
        execute(plan.actions, verb)
    except FileNotFoundError as e:
        raise PrepError("%s vanished while running (is another copy of this script running?); "
                        "rerun to finish" % e.filename) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise                    # console.run says the disk is full, and where
        hint = " (ROOT/val and its class folders must be on one filesystem)" \
            if e.errno == errno.EXDEV else ""
        raise PrepError("%s failed on %s: %s%s; fix it and rerun to finish"
                        % (verb, e.filename, e.strerror, hint)) from None


def _verify(root: Path, labels: Labels, excluded: Collection[str], mode: str) -> Scan:
    """A fresh scan must show every image exactly where its label says and nothing to do."""
    after = scan(root)
    check = plan_forward(root, labels, excluded, after, mode)
    if check.problems or check.actions or check.done != len(labels.wnid_of):
        raise PrepError("verification failed after the run: %d of %d images in place\n%s\nrerun "
                        "to finish" % (check.done, len(labels.wnid_of),
                                       problem_text(check.problems)))
    return after


def sort_val(root: Path, mode: str = "move", dry_run: bool = False,
             labels_file: Optional[Path] = None, synsets_csv: Optional[Path] = None,
             blacklist: Optional[Path] = None) -> int:
    """Put every labelled image of ROOT/val into ROOT/val/WNID/ (blacklisted ones into
    ROOT/val_blacklisted/WNID/), write ROOT/meta/val_labels.csv, verify. Returns 0. Without
    labels, a val already sorted into class folders (by a source's 01) is said to be so."""
    try:
        classes, labels = load_labels(root, synsets_csv, labels_file)
    except NoLabels:
        s = scan(root)
        if s.flat or s.kept or not s.placed:
            raise
        log.info("already done: val is sorted (%s), but there are no validation labels to "
                 "check the classes against (none in %s): pass --labels FILE to check them",
                 counts_text(s), root)
        return 0
    excluded = read_blacklist(blacklist, labels.wnid_of) if blacklist else set()
    if excluded:
        log.info("blacklist %s: %d images go to %s/WNID/", blacklist, len(excluded),
                 root / BLACKLIST_DIR)
    if not (root / VAL_DIR).is_dir():
        raise PrepError("%s not found: run 01_unzip.sh first (or pass --root DIR)"
                        % (root / VAL_DIR))
    s = scan(root)
    plan = plan_forward(root, labels, excluded, s, mode)
    plan.problems.extend(foreign_folders(root, s, classes))
    if plan.problems:
        raise PrepError("the plan has problems, nothing was changed:\n%s"
                        % problem_text(plan.problems))
    sums = ValManifest.load(root)
    if s.others:
        log.warning("warning: leaving %d other entries alone (first: %s)", len(s.others),
                    ", ".join(s.others[:SHOW]))
    verb = MODES[mode]
    summary = _forward_summary(root, plan, labels, bool(excluded), verb)
    out_csv = root / VAL_LABELS_CSV
    if dry_run:
        log.info("dry run: would %s; would write %s%s; nothing changed", summary, out_csv,
                 " and keep %s in step" % sums.path if sums else "")
        return 0
    for tmp in s.temps:
        os.unlink(tmp)
    text = val_labels_text(labels, classes)
    if not plan.actions:
        wrote = write_val_labels(out_csv, text)
        if sums:
            sums.sync(s)         # a run killed after its moves left the manifest behind
        drop_empty(root, s)
        log.info("already done: %d images in place, %s%s", plan.done, counts_text(s),
                 "; wrote %s" % out_csv if wrote else "")
        return 0
    have = {os.path.join(root, t, w) for t, w in s.class_dirs}
    for d in sorted(plan.dirs.difference(have)):
        os.makedirs(d, exist_ok=True)
    log.info("%s", summary[0].upper() + summary[1:])
    _run_actions(plan, verb)
    write_val_labels(out_csv, text)
    after = _verify(root, labels, excluded, mode)
    if sums:
        sums.sync(after)
    drop_empty(root, after)
    log.info("done: %d images verified in place (%s); wrote %s", len(labels.wnid_of),
             counts_text(after), out_csv)
    return 0


def _forward_summary(root: Path, plan: Plan, labels: Labels, excluding: bool, verb: str) -> str:
    kept = os.path.join(root, KEPT_DIR) + "/"
    keeping = sum(1 for a in plan.actions if a[0] == "move" and a[2].startswith(kept))
    placing = {os.path.basename(a[2]) for a in plan.actions
               if a[0] != "unlink" and not a[2].startswith(kept)}
    return ("%s %d images into %d class folders under %s%s%s (%d already in place; %s form "
            "labels)" % (verb, len(placing), len(set(labels.wnid_of.values())), root / VAL_DIR,
                         " and %s" % (root / BLACKLIST_DIR) if excluding else "",
                         "; move %d flat originals from %s to %s" % (
                             keeping, root / VAL_DIR, root / KEPT_DIR) if keeping else "",
                         plan.done, labels.form))


def flatten_val(root: Path, dry_run: bool = False) -> int:
    """--undo: every image back flat in ROOT/val (from ROOT/val_blacklisted too); class-folder
    copies and links are removed when the flat file exists; empty class folders go. Returns 0."""
    if not (root / VAL_DIR).is_dir():
        raise PrepError("%s not found: nothing to undo (check --root)" % (root / VAL_DIR))
    s = scan(root)
    plan = plan_undo(root, s)
    if plan.problems:
        raise PrepError("cannot flatten, nothing was changed:\n%s" % problem_text(plan.problems))
    sums = ValManifest.load(root)
    moves = sum(1 for a in plan.actions if a[0] == "move")
    summary = ("move %d images back to %s and remove %d class-folder copies/links (%d already "
               "flat)" % (moves, root / VAL_DIR, len(plan.actions) - moves, plan.done))
    if dry_run:
        log.info("dry run: would %s%s; nothing changed", summary,
                 " and keep %s in step" % sums.path if sums else "")
        return 0
    if not plan.actions and not s.class_dirs:
        if sums:
            sums.sync(s)
        drop_empty(root, s)
        log.info("already done: %d images flat in %s, no class folders", plan.done,
                 root / VAL_DIR)
        return 0
    log.info("%s", summary[0].upper() + summary[1:])
    try:
        for tmp in s.temps:
            os.unlink(tmp)
        execute(plan.actions, "undo")
    except OSError as e:
        raise PrepError("undo failed on %s: %s; rerun --undo to finish"
                        % (e.filename, e.strerror)) from None
    kept = []
    for tree, wnid in s.class_dirs:
        try:
            os.rmdir(root / tree / wnid)
        except OSError:
            kept.append("%s/%s" % (tree, wnid))
    drop_empty(root, Scan())
    if kept:
        log.warning("warning: %d folders still hold other files and were kept (first: %s)",
                    len(kept), ", ".join(kept[:SHOW]))
    after = scan(root)
    if after.placed or after.kept:
        raise PrepError("verification failed: %d images are still in class folders or %s; rerun "
                        "--undo" % (len(after.placed) + len(after.kept), root / KEPT_DIR))
    if sums:
        sums.sync(after)
    log.info("done: %d images flat in %s", len(after.flat), root / VAL_DIR)
    return 0
