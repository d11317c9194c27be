#!/usr/bin/env python3
"""Sort the ILSVRC2012 validation images into one folder per class (WNID), safely and resumably.

Before (after 01_unzip.sh and 02_convert_meta_clsloc.py)::

    ROOT/val/ILSVRC2012_val_00000001.JPEG ... ILSVRC2012_val_00050000.JPEG   flat, 50,000 images
    ROOT/meta/synsets.csv                                                     from 02
    ROOT/devkit/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt

After::

    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG ...   1,000 folders x 50 images
    ROOT/meta/val_labels.csv                              file,wnid,ilsvrc_id,class_index
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
folder, and a rerun finishes the job. --undo puts every image back flat (ROOT/val_blacklisted too).
"""
from __future__ import annotations

import argparse
import csv
import errno
import io
import logging
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

SCRIPT = "03_build_val_class_folders.py"
VAL_DIR = "val"                                  # ROOT/val: flat images, then ROOT/val/WNID/
BLACKLIST_DIR = "val_blacklisted"                # ROOT/val_blacklisted/WNID/ (--exclude-blacklist)
SYNSETS_CSV = Path("meta") / "synsets.csv"       # written by 02_convert_meta_clsloc.py
VAL_LABELS_CSV = Path("meta") / "val_labels.csv"  # written by this script
DEVKIT_DIR = "devkit"
DEVKIT_LABEL_FILES = ("ILSVRC2012_validation_ground_truth.txt",
                      "ILSVRC2015_clsloc_validation_ground_truth.txt")
SYNSETS_COLUMNS = ["ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images"]
VAL_LABELS_COLUMNS = ["file", "wnid", "ilsvrc_id", "class_index"]
KAGGLE_HEADER = ["ImageId", "PredictionString"]
VAL_NAME = "ILSVRC2012_val_%08d.JPEG"
REAL_CLASSES = 1000
REAL_VAL_IMAGES = 50_000
IMAGE_SUFFIXES = (".jpeg", ".jpg")
TMP_MARK = ".tmp-"                               # work in progress: .NAME.tmp-PID beside NAME
PROGRESS_MIN = 1000                              # fewer actions: no progress lines in a log
SHOW = 5                                         # offenders listed per problem
WNID_RE = re.compile(r"n\d{8}\Z")
NAME_RE = re.compile(r"[\w.-]+\Z")                # image names we accept from a labels file
FORM_NAMES = {
    "devkit": "devkit ground truth: one devkit class ID per line, line k = image k",
    "kaggle": "Kaggle LOC_val_solution.csv: ImageId,PredictionString rows in any order",
    "wnid": "WNID list: one WNID per line, line k = image k (tensorflow/models form)",
}

log = logging.getLogger(SCRIPT)


class Failure(Exception):
    """A problem the user has to fix; main() prints it and exits 1."""


@dataclass
class Synset:
    ilsvrc_id: int
    class_index: int
    wnid: str


@dataclass
class Labels:
    form: str                        # one of FORM_NAMES
    source: Path
    wnid_of: Dict[str, str]          # image file name -> WNID, in image order


@dataclass
class Scan:
    """What is on disk: one os.scandir of ROOT/val, ROOT/val_blacklisted and each WNID folder."""

    flat: Set[str] = field(default_factory=set)                  # image names directly in ROOT/val
    placed: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # name -> (tree, wnid) folder
    extra: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)  # more folders, if any
    links: Set[str] = field(default_factory=set)                 # names with a symlink in a folder
    class_dirs: List[Tuple[str, str]] = field(default_factory=list)  # (tree, wnid) folders
    temps: List[str] = field(default_factory=list)               # leftovers of a killed run
    others: List[str] = field(default_factory=list)              # anything else (left alone)


@dataclass
class Plan:
    actions: List[Tuple[str, str, str]] = field(default_factory=list)  # (kind, src, dst)
    done: int = 0
    problems: List[Tuple[str, List[str]]] = field(default_factory=list)
    dirs: Set[str] = field(default_factory=set)                  # class folders to create


# ----------------------------------------------------------------------------- reading inputs

def problem_text(problems: List[Tuple[str, List[str]]]) -> str:
    """'what is wrong: N (first: a, b, ...)' per problem, one per line."""
    lines = []
    for title, offenders in problems:
        if not offenders:
            lines.append("  " + title)
            continue
        shown = ", ".join(offenders[:SHOW]) + (", ..." if len(offenders) > SHOW else "")
        lines.append("  %s: %d (first: %s)" % (title, len(offenders), shown))
    return "\n".join(lines)


def read_synsets(path: Path) -> Dict[str, Synset]:
    """synsets.csv (contract of 02) -> {wnid: Synset}; checks columns and class_index order."""
    if not path.is_file():
        raise Failure("%s not found: run 02_convert_meta_clsloc.py first (or pass --meta CSV)"
                      % path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise Failure("cannot read %s (%s): rerun 02_convert_meta_clsloc.py" % (path, e)) from None
    if not rows or rows[0] != SYNSETS_COLUMNS:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise Failure("%s does not start with the header %s (found %s): rerun "
                      "02_convert_meta_clsloc.py" % (path, ",".join(SYNSETS_COLUMNS), found))
    by_wnid: Dict[str, Synset] = {}
    ids: Set[int] = set()
    for n, row in enumerate(rows[1:], start=2):
        try:
            s = Synset(int(row[0]), int(row[1]), row[2])
        except (ValueError, IndexError):
            raise Failure("%s line %d is not ilsvrc_id,class_index,wnid,...: %r; rerun "
                          "02_convert_meta_clsloc.py" % (path, n, ",".join(row))) from None
        if not WNID_RE.match(s.wnid) or s.wnid in by_wnid or s.ilsvrc_id in ids:
            raise Failure("%s line %d: bad or repeated class %s (ID %d); rerun "
                          "02_convert_meta_clsloc.py" % (path, n, s.wnid, s.ilsvrc_id))
        by_wnid[s.wnid] = s
        ids.add(s.ilsvrc_id)
    if not by_wnid:
        raise Failure("%s lists no classes: rerun 02_convert_meta_clsloc.py" % path)
    for i, wnid in enumerate(sorted(by_wnid)):
        if by_wnid[wnid].class_index != i:
            raise Failure("%s: class_index of %s is %d, but its place in sorted-WNID order is %d; "
                          "rerun 02_convert_meta_clsloc.py"
                          % (path, wnid, by_wnid[wnid].class_index, i))
    return by_wnid


def find_labels(root: Path) -> Path:
    """The devkit ground truth under ROOT/devkit (2012 name first, then the 2015/2017 name)."""
    devkit = root / DEVKIT_DIR
    for name in DEVKIT_LABEL_FILES:
        found = sorted(devkit.glob("**/" + name)) if devkit.is_dir() else []
        if found:
            return found[0]
    raise Failure("no validation labels found under %s (looked for %s): run 01_unzip.sh to extract "
                  "the devkit, or pass --labels FILE" % (devkit, " or ".join(DEVKIT_LABEL_FILES)))


def read_labels(path: Path, synsets: Dict[str, Synset]) -> Labels:
    """Detect the label form, parse it, and check every class against synsets.csv."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise Failure("cannot read the labels %s (%s)" % (path, e)) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise Failure("the labels file %s is empty" % path)
    first = lines[0].strip()
    by_id = {s.ilsvrc_id: s.wnid for s in synsets.values()}
    wnid_of: Dict[str, str] = {}
    bad: List[str] = []        # lines that are not in the detected form
    unknown: List[str] = []    # classes that synsets.csv does not have
    repeated: List[str] = []
    if first.split(",")[:2] == KAGGLE_HEADER:
        form = "kaggle"
        for n, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
            tokens = row[1].split() if len(row) >= 2 else []
            name = row[0].strip()
            if not tokens or not NAME_RE.match(name):
                bad.append("line %d: %r" % (n, ",".join(row)))
                continue
            name = name if name.upper().endswith(".JPEG") else name + ".JPEG"
            if name in wnid_of:
                repeated.append(name)
            elif tokens[0] not in synsets:
                unknown.append("line %d: %s" % (n, tokens[0]))
            wnid_of[name] = tokens[0]
    elif first.isdigit():
        form = "devkit"
        for n, line in enumerate(lines, start=1):
            value = line.strip()
            if not value.isdigit():
                bad.append("line %d: %r" % (n, line))
            elif int(value) not in by_id:
                unknown.append("line %d: %s" % (n, value))
            else:
                wnid_of[VAL_NAME % n] = by_id[int(value)]
    elif WNID_RE.match(first):
        form = "wnid"
        for n, line in enumerate(lines, start=1):
            value = line.strip()
            if not WNID_RE.match(value):
                bad.append("line %d: %r" % (n, line))
            elif value not in synsets:
                unknown.append("line %d: %s" % (n, value))
            wnid_of[VAL_NAME % n] = value
    else:
        raise Failure("cannot tell the form of the labels %s from its first line %r: expected "
                      "devkit class IDs (ILSVRC2012_validation_ground_truth.txt), a Kaggle "
                      "LOC_val_solution.csv, or one WNID per line" % (path, lines[0][:80]))
    problems = []
    if bad:
        problems.append(("lines that are not in the %s form" % form, bad))
    if repeated:
        problems.append(("images listed more than once", repeated))
    if unknown:
        ids = sorted(by_id)
        problems.append(("labels naming a class that %s does not have (it has %d classes, "
                         "IDs %d..%d)" % (SYNSETS_CSV.name, len(ids), ids[0], ids[-1]), unknown))
    if problems:
        hint = ("; the labels and synsets.csv seem to describe different class sets" if unknown
                and len(unknown) * 10 >= len(lines) else "")
        raise Failure("the labels %s (read as %s) are not usable, nothing was changed:\n%s\n"
                      "fix or replace the labels file%s"
                      % (path, FORM_NAMES[form], problem_text(problems), hint))
    return Labels(form, path, wnid_of)


def read_blacklist(path: Path, labels: Labels) -> Set[str]:
    """Image indices (1-based, one per line) or file names -> set of labelled file names."""
    try:
        lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise Failure("cannot read the blacklist %s (%s)" % (path, e)) from None
    names, bad = set(), []
    for n, value in enumerate(lines, start=1):
        if value.isdigit():
            name = VAL_NAME % int(value)
        else:
            name = value if value.upper().endswith(".JPEG") else value + ".JPEG"
        if name in labels.wnid_of and NAME_RE.match(name):
            names.add(name)
        else:
            bad.append("line %d: %s" % (n, value))
    if bad:
        raise Failure("the blacklist %s names images that the labels do not have, nothing was "
                      "changed:\n%s\nexpected one image number (1-based) or file name per line"
                      % (path, problem_text([("unknown images", bad)])))
    return names


# ----------------------------------------------------------------------------- the tree on disk

def is_image(name: str) -> bool:
    return name.endswith(".JPEG") or (not name.startswith(".")
                                      and name.lower().endswith(IMAGE_SUFFIXES))


def scan(root: Path) -> Scan:
    """One scandir of ROOT/val, ROOT/val_blacklisted and each WNID folder: no per-file stat."""
    s = Scan()
    flat, placed, links = s.flat, s.placed, s.links
    for tree in (VAL_DIR, BLACKLIST_DIR):
        top = os.path.join(root, tree)
        if not os.path.isdir(top):
            continue
        subdirs = []
        with os.scandir(top) as it:
            for e in it:
                name = e.name
                if e.is_dir():
                    if WNID_RE.match(name):
                        subdirs.append(name)
                    else:
                        s.others.append(e.path + "/")
                elif tree == VAL_DIR and is_image(name):
                    flat.add(name)
                else:
                    s.others.append(e.path)
        for wnid in subdirs:
            where = (tree, wnid)
            s.class_dirs.append(where)
            with os.scandir(os.path.join(top, wnid)) as it:
                for e in it:
                    name = e.name
                    if is_image(name) and not e.is_dir(follow_symlinks=False):
                        if name in placed:
                            s.extra.setdefault(name, []).append(where)
                        else:
                            placed[name] = where
                        if e.is_symlink():
                            links.add(name)
                    elif name.startswith(".") and TMP_MARK in name:
                        s.temps.append(e.path)
                    else:
                        s.others.append(e.path)
    return s


def _where(s: Scan, name: str) -> str:
    return ", ".join("%s/%s" % w for w in [s.placed[name]] + s.extra[name])


def plan_forward(root: Path, labels: Labels, excluded: Set[str], s: Scan, mode: str) -> Plan:
    """Per image: where it is (flat and/or one class folder) -> what to do, or a problem."""
    p = Plan()
    actions, dirs = p.actions, p.dirs
    flat, placed, extra, links = s.flat, s.placed, s.extra, s.links
    val = os.path.join(root, VAL_DIR)
    tops = {VAL_DIR: val, BLACKLIST_DIR: os.path.join(root, BLACKLIST_DIR)}
    # relative symlink text: ROOT/val/W/x -> ../x, ROOT/val_blacklisted/W/x -> ../../val/x
    up = {t: os.path.relpath(val, os.path.join(d, "n00000000")) for t, d in tops.items()}
    missing, wrong, twice, dangling = [], [], [], []
    done = 0
    for name, wnid in labels.wnid_of.items():
        tree = BLACKLIST_DIR if name in excluded else VAL_DIR
        e = placed.get(name)
        if e is None:                                     # the common case: flat, not yet placed
            if name not in flat:
                missing.append(name)
                continue
            tdir = "%s/%s" % (tops[tree], wnid)
            dirs.add(tdir)
            if mode == "symlink":
                actions.append((mode, "%s/%s" % (up[tree], name), "%s/%s" % (tdir, name)))
            else:
                actions.append((mode, "%s/%s" % (val, name), "%s/%s" % (tdir, name)))
            continue
        if name in extra:
            twice.append("%s (in %s)" % (name, _where(s, name)))
            continue
        if e[1] != wnid:
            wrong.append("%s/%s/%s (label: %s)" % (e[0], e[1], name, wnid))
            continue
        is_flat = name in flat
        is_link = name in links
        if is_link and not is_flat:
            dangling.append("%s/%s/%s" % (e[0], e[1], name))
            continue
        here = e[0] == tree
        if here and (mode != "move" or not is_flat):
            done += 1
            continue
        tdir = "%s/%s" % (tops[tree], wnid)
        dst = "%s/%s" % (tdir, name)
        old = "%s/%s/%s" % (tops[e[0]], e[1], name)
        dirs.add(tdir)
        if mode == "move":
            if is_flat:
                if not here:
                    actions.append(("unlink", old, ""))
                actions.append(("move", "%s/%s" % (val, name), dst))  # replaces a copy/link at dst
            else:
                actions.append(("move", old, dst))
        elif not is_link:
            actions.append(("move", old, dst))            # the other tree, same class
        else:
            actions.append(("unlink", old, ""))
            src = "%s/%s" % (up[tree] if mode == "symlink" else val, name)
            actions.append((mode, src, dst))
    p.done = done
    found = flat.union(placed)
    unlabelled = sorted(found.difference(labels.wnid_of))
    if len(labels.wnid_of) != len(found):
        p.problems.append(("label count does not match: the labels list %d images, %s holds %d"
                           % (len(labels.wnid_of), val, len(found)), []))
    if missing:
        p.problems.append(("labelled images not found in %s (re-extract the val archive with "
                           "01_unzip.sh)" % val, missing))
    if unlabelled:
        p.problems.append(("JPEG files in %s without a label (move them out, or pass labels "
                           "that cover them with --labels)" % val, unlabelled))
    if wrong:
        p.problems.append(("images in the wrong class folder, left alone (check the labels, or run "
                           "--undo and start again)", wrong))
    if twice:
        p.problems.append(("images found in more than one class folder (keep one)", twice))
    if dangling:
        p.problems.append(("symlinks whose flat original is missing (restore %s)" % val, dangling))
    return p


def plan_undo(root: Path, s: Scan) -> Plan:
    """Flatten: the flat file is the original; class-folder entries are moved back or removed."""
    p = Plan()
    val = os.path.join(root, VAL_DIR)
    twice, dangling = [], []
    for name, (tree, wnid) in s.placed.items():
        path = "%s/%s/%s/%s" % (root, tree, wnid, name)
        if name in s.flat:
            p.actions.append(("unlink", path, ""))
            p.actions.extend(("unlink", "%s/%s/%s/%s" % (root, t, w, name), "")
                             for t, w in s.extra.get(name, ()))
        elif name in s.extra:
            twice.append("%s (in %s)" % (name, _where(s, name)))
        elif name in s.links:
            dangling.append("%s/%s/%s" % (tree, wnid, name))
        else:
            p.actions.append(("move", path, "%s/%s" % (val, name)))
    p.done = len(s.flat)
    if twice:
        p.problems.append(("images found in more than one class folder and not flat (keep one)",
                           twice))
    if dangling:
        p.problems.append(("symlinks whose flat original is missing", dangling))
    return p


# ----------------------------------------------------------------------------- changing the tree

def execute(actions: List[Tuple[str, str, str]], what: str) -> None:
    """Do the actions in chunks of 1 %: tqdm bar on a terminal, else a log line every 10 %."""
    total = len(actions)
    tty = sys.stderr.isatty()
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=what, unit="img", disable=None, leave=False)
    except ImportError:
        bar = None
    rename, pid = os.rename, os.getpid()
    chunk = max(1, total // 100)
    tenths = 0
    for start in range(0, total, chunk):
        for kind, src, dst in actions[start:start + chunk]:
            if kind == "move":
                rename(src, dst)
            elif kind == "unlink":
                os.unlink(src)
            elif kind == "link":
                os.link(src, dst)
            elif kind == "symlink":
                os.symlink(src, dst)
            else:  # copy under a temporary name, then rename: never half a file under its name
                head, tail = os.path.split(dst)
                tmp = "%s/.%s%s%d" % (head, tail, TMP_MARK, pid)
                shutil.copy2(src, tmp)
                rename(tmp, dst)
        n = min(total, start + chunk)
        if bar is not None:
            bar.update(n - start)
        if not tty and total >= PROGRESS_MIN and n * 10 // total > tenths:
            tenths = n * 10 // total
            log.info("%s: %d/%d (%d%%)", what, n, total, 100 * n // total)
    if bar is not None:
        bar.close()


def write_atomic(path: Path, text: str) -> bool:
    """Write text to path via a temporary file in the same folder; False if already identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(".%s%s*" % (path.name, TMP_MARK)):  # left by a killed run
        stale.unlink()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = path.with_name(".%s%s%d" % (path.name, TMP_MARK, os.getpid()))
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


def val_labels_text(labels: Labels, synsets: Dict[str, Synset]) -> str:
    """val_labels.csv; no field needs csv quoting (names and WNIDs are [A-Za-z0-9_.])."""
    rows = [",".join(VAL_LABELS_COLUMNS) + "\n"]
    for name in sorted(labels.wnid_of):
        s = synsets[labels.wnid_of[name]]
        rows.append("%s,%s,%d,%d\n" % (name, s.wnid, s.ilsvrc_id, s.class_index))
    return "".join(rows)


def counts_text(s: Scan) -> str:
    """'val: 1000 folders x 50 images' (or min..max) per tree."""
    parts = []
    for tree in (VAL_DIR, BLACKLIST_DIR):
        per = Counter(w for t, w in s.placed.values() if t == tree)
        if not per:
            continue
        lo, hi = min(per.values()), max(per.values())
        each = "%d" % lo if lo == hi else "%d..%d" % (lo, hi)
        parts.append("%s/: %d folders x %s images = %d" % (tree, len(per), each, sum(per.values())))
    return "; ".join(parts) or "no images in class folders"


# ----------------------------------------------------------------------------- the two commands

def resolve_root(arg: Optional[Path]) -> Path:
    if arg is not None:
        return arg
    return Path(os.environ.get("IMAGENET_ROOT") or ".")


def lock_folder(folder: Path) -> Optional[int]:
    """Hold an exclusive flock on the folder itself, so two runs never work on it at once.

    Returns the descriptor (closing it releases the lock), or None where there is nothing to lock
    or the filesystem does not support flock.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None  # no folder yet: the run itself says what is missing
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Failure("another run of %s is working on %s: let it finish (or stop it), then "
                      "rerun" % (SCRIPT, folder)) from None
    except OSError:
        os.close(fd)
        return None
    return fd


def run_forward(args: argparse.Namespace, root: Path) -> int:
    synsets = read_synsets(args.meta or root / SYNSETS_CSV)
    label_path = args.labels or find_labels(root)
    if not label_path.is_file():
        raise Failure("the labels file %s does not exist" % label_path)
    labels = read_labels(label_path, synsets)
    log.info("labels: %s (%d images), read as %s", label_path, len(labels.wnid_of),
             FORM_NAMES[labels.form])
    if len(synsets) == REAL_CLASSES and len(labels.wnid_of) != REAL_VAL_IMAGES:
        log.warning("warning: the real validation set has %d images; these labels list %d",
                    REAL_VAL_IMAGES, len(labels.wnid_of))
    excluded = read_blacklist(args.exclude_blacklist, labels) if args.exclude_blacklist else set()
    if excluded:
        log.info("blacklist %s: %d images go to %s/WNID/", args.exclude_blacklist, len(excluded),
                 root / BLACKLIST_DIR)
    if not (root / VAL_DIR).is_dir():
        raise Failure("%s not found: run 01_unzip.sh first (or pass --root DIR)" % (root / VAL_DIR))
    s = scan(root)
    plan = plan_forward(root, labels, excluded, s, args.mode)
    if plan.problems:
        raise Failure("the plan has problems, nothing was changed:\n%s"
                      % problem_text(plan.problems))
    if s.others:
        log.warning("warning: leaving %d other entries alone (first: %s)", len(s.others),
                    ", ".join(s.others[:SHOW]))
    verb = {"move": "move", "copy": "copy", "link": "hard-link", "symlink": "symlink"}[args.mode]
    n_new = sum(1 for a in plan.actions if a[0] != "unlink")
    summary = ("%s %d images into %d class folders under %s%s (%d already in place; %s form labels)"
               % (verb, n_new, len(set(labels.wnid_of.values())), root / VAL_DIR,
                  " and %s" % (root / BLACKLIST_DIR) if excluded else "", plan.done, labels.form))
    out_csv = root / VAL_LABELS_CSV
    text = val_labels_text(labels, synsets)
    if args.dry_run:
        print("dry run: would %s; would write %s; nothing changed" % (summary, out_csv))
        return 0
    for tmp in s.temps:
        os.unlink(tmp)
    if not plan.actions:
        wrote = write_atomic(out_csv, text)
        print("already done: %d images in place, %s%s" % (
            plan.done, counts_text(s), "; wrote %s" % out_csv if wrote else ""))
        return 0
    have = {os.path.join(root, t, w) for t, w in s.class_dirs}
    for d in sorted(plan.dirs.difference(have)):
        os.makedirs(d, exist_ok=True)
    log.info("%s", summary[0].upper() + summary[1:])
    try:
        execute(plan.actions, verb)
    except FileNotFoundError as e:
        raise Failure("%s vanished while running (is another copy of this script running?); rerun "
                      "to finish" % e.filename) from None
    except OSError as e:
        hint = " (ROOT/val and its class folders must be on one filesystem)" \
            if e.errno == errno.EXDEV else ""
        raise Failure("%s failed on %s: %s%s; fix it and rerun to finish"
                      % (verb, e.filename, e.strerror, hint)) from None
    write_atomic(out_csv, text)
    # verify: a fresh scan must show every image exactly where its label says and nothing to do
    after = scan(root)
    check = plan_forward(root, labels, excluded, after, args.mode)
    if check.problems or check.actions or check.done != len(labels.wnid_of):
        raise Failure("verification failed after the run: %d of %d images in place\n%s\nrerun to "
                      "finish" % (check.done, len(labels.wnid_of), problem_text(check.problems)))
    print("done: %d images verified in place (%s); wrote %s" % (check.done, counts_text(after),
                                                                  out_csv))
    return 0


def run_undo(args: argparse.Namespace, root: Path) -> int:
    if not (root / VAL_DIR).is_dir():
        raise Failure("%s not found: nothing to undo (check --root)" % (root / VAL_DIR))
    s = scan(root)
    plan = plan_undo(root, s)
    if plan.problems:
        raise Failure("cannot flatten, nothing was changed:\n%s" % problem_text(plan.problems))
    moves = sum(1 for a in plan.actions if a[0] == "move")
    removes = len(plan.actions) - moves
    summary = ("move %d images back to %s and remove %d class-folder copies/links (%d already flat)"
               % (moves, root / VAL_DIR, removes, plan.done))
    if args.dry_run:
        print("dry run: would %s; nothing changed" % summary)
        return 0
    if not plan.actions and not s.class_dirs:
        print("already done: %d images flat in %s, no class folders" % (plan.done, root / VAL_DIR))
        return 0
    log.info("%s", summary[0].upper() + summary[1:])
    try:
        for tmp in s.temps:
            os.unlink(tmp)
        execute(plan.actions, "undo")
    except OSError as e:
        raise Failure("undo failed on %s: %s; rerun --undo to finish" % (e.filename, e.strerror)) \
            from None
    kept = []
    for tree, wnid in s.class_dirs:
        try:
            os.rmdir(root / tree / wnid)
        except OSError:
            kept.append("%s/%s" % (tree, wnid))
    try:
        os.rmdir(root / BLACKLIST_DIR)
    except OSError:
        pass
    if kept:
        log.warning("warning: %d folders still hold other files and were kept (first: %s)",
                    len(kept), ", ".join(kept[:SHOW]))
    after = scan(root)
    if after.placed:
        raise Failure("verification failed: %d images are still in class folders; rerun --undo"
                      % len(after.placed))
    print("done: %d images flat in %s" % (len(after.flat), root / VAL_DIR))
    return 0


# ----------------------------------------------------------------------------- command line

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except None: those options say their default in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=SCRIPT, formatter_class=HelpFormatter,
        description="Sort ROOT/val/ILSVRC2012_val_*.JPEG into ROOT/val/WNID/ folders using the "
                    "validation labels and ROOT/meta/synsets.csv (from 02). Checks the whole plan "
                    "first; safe to kill and rerun; --undo flattens back.",
        epilog="Exit codes: 0 ok (a rerun of a finished job says 'already done'), 1 failure "
               "(nothing changed when the plan has problems), 2 usage. "
               "Example: python3 %s --root /data/imagenet" % SCRIPT)
    p.add_argument("--root", type=Path, default=None, metavar="DIR",
                   help="dataset root (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="validation labels: devkit class IDs, Kaggle LOC_val_solution.csv or one "
                        "WNID per line (default: the devkit ground truth found under ROOT/devkit/)")
    p.add_argument("--meta", type=Path, default=None, metavar="CSV",
                   help="class metadata CSV (default: ROOT/meta/synsets.csv)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", dest="mode", action="store_const", const="copy",
                      help="copy into the class folders; the flat files stay")
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="hard-link into the class folders; the flat files stay")
    mode.add_argument("--symlink", dest="mode", action="store_const", const="symlink",
                      help="relative symlinks in the class folders; the flat files stay")
    p.set_defaults(mode="move")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--undo", action="store_true",
                   help="put every image back flat in ROOT/val (also from ROOT/val_blacklisted); "
                        "class-folder copies/links are removed when the flat file exists")
    p.add_argument("--exclude-blacklist", type=Path, default=None, metavar="FILE",
                   help="put the images listed in FILE (1-based numbers, e.g. "
                        "ILSVRC2015_clsloc_validation_blacklist.txt) in ROOT/val_blacklisted/WNID/ "
                        "instead; rerun without it (or --undo) to bring them back")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(name)s %(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.monotonic()
    log.info("%s %s", SCRIPT, " ".join(sys.argv[1:] if argv is None else argv))
    root = resolve_root(args.root)
    lock = None
    try:
        lock = lock_folder(root / VAL_DIR)
        rc = run_undo(args, root) if args.undo else run_forward(args, root)
    except Failure as e:
        log.error("error: %s", e)
        return 1
    except KeyboardInterrupt:
        log.error("error: interrupted; every image is either flat or in its folder: rerun the same "
                  "command to finish")
        return 1
    except OSError as e:
        log.error("error: %s; fix it and rerun the same command", e)
        return 1
    finally:
        if lock is not None:
            os.close(lock)
    log.info("elapsed %.1f s", time.monotonic() - start)
    return rc


if __name__ == "__main__":
    sys.exit(main())
