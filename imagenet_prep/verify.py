"""Stage 04: is this ImageNet tree complete and intact? Any tree, whoever made it.

Three levels, each one adding to the one before:
- structure (fast): the class folders are exactly the devkit's classes (ROOT/meta/synsets.csv, or
  the devkit's .mat under ROOT/devkit/); per-class train counts are num_train_images; every val
  image is in the folder its label names (or flat, before 03); the release's counts when the
  class set is the official one; no stray, hidden, temporary or empty file; every file starts like
  an image (the release's CMYK JPEGs and its PNG are known kinds: notes, not errors).
- full: every file against ROOT/meta/SHA256SUMS.SPLIT, the manifest 01_unzip.sh writes (missing,
  extra, changed).
- decode: every image decoded with Pillow (an optional dependency).

The main process lists the folders (one scandir each); the files are opened by worker processes
(parallel.run_parallel) in chunks, and only what is wrong comes back. verify() is the
whole stage as 04_verify.py runs it; it only reads.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from . import bootstrap, facts, files, manifest, valfolders
from .console import PrepError, human, log, shown, some, thousands
from .images import image_kind
from .parallel import run_parallel
from .progress import Progress
from .valfolders import ClassRow

PROG = "04_verify.py"
SPLITS = ("train", "val", "test")
STAGE_01, STAGE_02, STAGE_03 = "01_unzip.sh", "02_convert_meta_clsloc.py", \
    "03_build_val_class_folders.py"
VAL_RE = re.compile(r"ILSVRC2012_val_([0-9]{8})\.JPEG\Z")
TEST_RE = re.compile(r"ILSVRC2012_test_([0-9]{8})\.JPEG\Z")
TEST_NAME = "ILSVRC2012_test_%08d.JPEG"
PAGE = 4096                  # read first from each file; more only to reach its frame header
CHUNK_MAX = 1024             # files per worker job, at most
READERS = 4                  # threads per worker process, each reading its own files
PROGRESS_MIN = 1000          # fewer files: no progress lines in a log
NOT_IMAGE = "not a JPEG"     # image_kind's word for a file that is neither JPEG nor PNG
KNOWN_KINDS = ("CMYK JPEG", "PNG")

# What can be wrong, as the report names it.
NO_SPLIT = "split folder missing"
NO_CLASSES = "no class list"
CLASSES_MISSING = "class folders missing"
CLASSES_EXTRA = "folders that are not classes of the devkit (a loader takes them for classes)"
COUNT = "classes whose image count is not num_train_images"
VAL_COUNT = "classes without %d val images" % facts.VAL_PER_CLASS
BEYOND = "images numbered beyond the count (the release's, or what 01_unzip.sh extracted)"
GAPS = "images missing (by their numbers)"
LABELLED_MISSING = "labelled val images missing"
WRONG = "val images in the wrong class folder"
UNLABELLED = "val images without a label"
STILL_FLAT = ("val images still flat while the others are in class folders (a stopped %s? "
              "rerun it)" % STAGE_03)
TWICE = "val images in more than one class folder"
FLAT_TOP = ("val images at the top of val/ beside their class-folder copies or links (a loader "
            "that walks the tree, as timm's does, takes them for one more class, '', and shifts "
            "every class index by one): rerun %s, which keeps them in %s/" % (
                STAGE_03, valfolders.KEPT_DIR))
TEMP = "temporary files of a stopped run (rerun the stage that made them: it clears them)"
HIDDEN = "hidden files"
STRAY = "stray entries (not images of this split; loaders may read them)"
EMPTY = "empty files"
NOT_AN_IMAGE = "files that are not images (they start like neither a JPEG nor a PNG)"
UNREADABLE = "files that cannot be read"
NOT_REGULAR = ("entries that are not regular files, never opened (a FIFO, device or socket would "
               "hang or mislead a loader, a symbolic link may lead anywhere): put the image files "
               "themselves there")
LABELS = "validation labels unusable"
MANIFEST = "manifest unusable"
GONE = "files in the manifest but not in the tree"
NOT_LISTED = "files not in the manifest"
CHANGED = "files whose SHA-256 differs from the manifest (changed or damaged since extraction)"
UNDECODABLE = "images Pillow cannot decode"


@dataclass
class Findings:
    """What the check of one split found: problems by kind, notes, and what was checked."""

    split: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: str = ""
    checked: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)   # 03 --symlink's links -> their original
    odd: set[str] = field(default_factory=set)   # entries reported as not regular files

    def add(self, title: str, items: Iterable[str]) -> None:
        items = list(items)
        if items:
            self.problems.setdefault(title, []).extend(items)

    def count(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def lines(self) -> list[str]:
        """One line per kind of problem: what, how many, the first few."""
        return ["%s (%d): %s" % (title, len(items), some(sorted(items)))
                for title, items in self.problems.items()]


@dataclass
class Context:
    """What every split's check needs: where, the classes, and what to do with each file."""

    root: str
    classes: Optional[dict[str, ClassRow]]   # None: no class list (class_source says why)
    class_source: str
    jobs: int
    full: bool = False
    decoder: Optional[Callable[[bytes], Optional[str]]] = None
    val_labels: Optional[dict[str, str]] = None   # given (05 --labels): not looked for

    @property
    def official(self) -> bool:
        """The class set is the release's 1,000 (or unknown): the release's counts apply."""
        return self.classes is None or len(self.classes) == facts.CLASSES

    def expected_images(self, split: str) -> Optional[int]:
        """How many images val or test must hold: what 01_unzip.sh extracted (its done marker),
        else the release's count when the class set is the release's, else not known."""
        doc = manifest.read_done(self.root, split)
        if isinstance(doc, dict) and isinstance(doc.get("images"), int):
            return doc["images"]
        return facts.images(split) if self.official else None


# ----------------------------------------------------------------------------- the class list

def load_classes(root: Path) -> tuple[Optional[dict[str, ClassRow]], str]:
    """The classes from ROOT/meta/synsets.csv (02's output), else from the devkit's .mat under
    ROOT/devkit/, and where they came from; (None, how to get them) when neither is there. Only
    a regular file is read: a synsets.csv that is anything else is a PrepError."""
    path = root / valfolders.SYNSETS_CSV
    if os.path.lexists(path):
        return valfolders.read_synsets(path), str(path)
    if (root / valfolders.DEVKIT_DIR).is_dir():
        try:
            from . import meta               # scipy: only when the .mat must be read
        except ImportError as e:
            raise PrepError("reading the class list from %s %s" % (
                root / valfolders.DEVKIT_DIR, bootstrap.lacking_text([e.name or "scipy"]))) from None
        src = meta.find_meta(root)
        _, found = meta.load_classes(src, None)          # any number (miniature devkits too)
        index = {w: i for i, w in enumerate(sorted(s.wnid for s in found))}
        return ({s.wnid: ClassRow(s.ilsvrc_id, index[s.wnid], s.wnid, s.words, s.description,
                                  s.num_train_images) for s in found},
                "%s (%s would write %s from it)" % (src.shown, STAGE_02, path))
    return None, ("no %s and no devkit under %s: extract the devkit (00_download.sh devkit; "
                  "01_unzip.sh devkit), then run %s" % (path, root / valfolders.DEVKIT_DIR,
                                                        STAGE_02))


def load_val_labels(root: Path, classes: dict[str, ClassRow]) -> tuple[Optional[dict[str, str]],
                                                                        str]:
    """{val image name: WNID} from the devkit's ground truth (as 03 reads it), else from
    ROOT/meta/val_labels.csv (written by 03), and where from; (None, why not) when neither is
    there. Labels that do not fit the classes, or a file that is not a regular file, are a
    PrepError."""
    try:
        path = valfolders.find_labels(root)
    except PrepError as e:
        csv_path = root / valfolders.VAL_LABELS_CSV
        if not os.path.lexists(csv_path):
            return None, "%s; nor is there %s" % (e, csv_path)
        return _read_val_labels_csv(csv_path, classes), str(csv_path)
    return valfolders.read_labels(path, classes).wnid_of, str(path)


def _read_val_labels_csv(path: Path, classes: dict[str, ClassRow]) -> dict[str, str]:
    try:
        text = files.read_regular_text(str(path), "%s writes it: remove it and rerun %s"
                                       % (STAGE_03, STAGE_03))
    except (OSError, UnicodeDecodeError) as e:
        raise PrepError("cannot read %s (%s): rerun %s to rewrite it" % (path, e, STAGE_03)) \
            from None
    rows = text.splitlines()
    if not rows or rows[0].split(",") != valfolders.VAL_LABELS_COLUMNS:
        raise PrepError("%s does not start with %s: rerun %s to rewrite it"
                        % (path, ",".join(valfolders.VAL_LABELS_COLUMNS), STAGE_03))
    out, bad = {}, []
    for n, row in enumerate(rows[1:], start=2):
        cells = row.split(",")
        if len(cells) != 4 or not VAL_RE.match(cells[0]) or cells[1] not in classes:
            bad.append("line %d" % n)
        else:
            out[cells[0]] = cells[1]
    if bad:
        raise PrepError("%s: %d lines are not file,wnid,... of a known class (%s): rerun %s"
                        % (path, len(bad), some(bad), STAGE_03))
    return out


# ----------------------------------------------------------------------------- listing folders

def _other(f: Findings, rel: str, is_dir: bool) -> None:
    """An entry that is no image of the split: a temporary, hidden or stray one."""
    name = rel.rstrip("/").rsplit("/", 1)[-1]
    shown = rel.rstrip("/") + ("/" if is_dir else "")
    if files.temp_of(name) is not None:
        f.add(TEMP, [shown])
    elif name.startswith("."):
        f.add(HIDDEN, [shown])
    else:
        f.add(STRAY, [shown])


def _not_regular(f: Findings, rel: str, kind: str) -> None:
    f.add(NOT_REGULAR, ["%s (not a regular file: %s)" % (rel, kind)])
    f.odd.add(rel)


def _reported(f: Findings, rel: str) -> bool:
    """`rel`, or a folder it is in, was reported as not a regular file (a FIFO, a link)."""
    parts = rel.split("/")
    return any("/".join(parts[:k]) in f.odd for k in range(1, len(parts) + 1))


def _listing(root: str, rel: str, images: Optional["re.Pattern[str]"], f: Findings,
             folders: Optional["re.Pattern[str]"] = None) -> tuple[list[str], list[str]]:
    """(names of regular files matching `images`, names of folders matching `folders`) in
    ROOT/rel, both sorted; any other entry is reported (a symbolic link is not followed)."""
    names, dirs = [], []
    with os.scandir(os.path.join(root, rel)) as it:
        for e in it:
            kind = files.entry_kind(e)
            if kind is not None:
                _not_regular(f, "%s/%s" % (rel, e.name), kind)
                continue
            is_dir = e.is_dir(follow_symlinks=False)
            if not is_dir and images is not None and images.match(e.name):
                names.append(e.name)
            elif is_dir and folders is not None and folders.match(e.name):
                dirs.append(e.name)
            else:
                _other(f, "%s/%s" % (rel, e.name), is_dir)
    return sorted(names), sorted(dirs)


def _class_set(ctx: Context, f: Findings, present: dict[str, str], expected: set[str]) -> None:
    """Folders named like classes ({WNID: its folder}) against the class list: none that is not
    a class, and one for each of `expected`."""
    if ctx.classes is None:
        return
    f.add(CLASSES_EXTRA, sorted(d + "/" for w, d in present.items() if w not in ctx.classes))
    f.add(CLASSES_MISSING, sorted(expected.difference(present)))


def _gaps(f: Findings, numbers: set[int], expect: Optional[int], name: str) -> None:
    """Images numbered 1..N are all there (N: `expect`, else the highest number found)."""
    top = expect if expect is not None else max(numbers, default=0)
    f.add(GAPS, [name % i for i in range(1, top + 1) if i not in numbers])
    f.add(BEYOND, [name % i for i in sorted(numbers) if i > top])


# ----------------------------------------------------------------------------- the three splits

def table_counts_apart(root: str) -> Optional[str]:
    """Why meta/synsets.csv's train counts do not apply to ROOT/train, or None when they do. 02
    without a devkit takes them from the package's table of the official release; a train that
    01 extracted from a copy that is not that release (its done marker says "official": false)
    has counts of its own. A devkit's counts always apply."""
    doc = manifest.read_done(root, "train")
    if not isinstance(doc, dict) or doc.get("official") is not False:
        return None
    syn = files.read_json(os.path.join(root, "meta", "synsets.json"), "02_convert_meta_clsloc.py "
                          "writes it: run it again")
    if not isinstance(syn, dict) or "class_table" not in syn:
        return None
    return ("the train counts of meta/synsets.csv are those of the official release (02 took them "
            "from the package's class table, there being no devkit), and train was extracted from "
            "%s, which is not it: the number of images per class is not compared"
            % shown(str(doc.get("archive"))))


def check_train(ctx: Context, f: Findings) -> list[str]:
    """train/WNID/WNID_N.JPEG: the class folders and their counts; returns the image paths."""
    _, wnids = _listing(ctx.root, "train", None, f, facts.WNID_RE)
    paths: list[str] = []
    wrong = []
    apart = table_counts_apart(ctx.root) if ctx.classes else None
    if apart:
        f.notes.append(apart)
    for wnid in wnids:
        names, _ = _listing(ctx.root, "train/" + wnid,
                            re.compile(re.escape(wnid) + r"_[0-9]+\.JPEG\Z"), f)
        paths.extend("train/%s/%s" % (wnid, n) for n in names)
        want = ctx.classes[wnid].num_train_images if ctx.classes and wnid in ctx.classes \
            and not apart else None
        if want is not None and len(names) != want:
            wrong.append("%s (%d images, expected %d)" % (wnid, len(names), want))
    _class_set(ctx, f, {w: "train/" + w for w in wnids}, set(ctx.classes or ()))
    f.add(COUNT, wrong)
    f.summary = "%d classes, %s images" % (len(wnids), thousands(len(paths)))
    return paths


def check_test(ctx: Context, f: Findings) -> list[str]:
    """test/ILSVRC2012_test_%08d.JPEG, flat: 100,000 of them in the release."""
    names, _ = _listing(ctx.root, "test", TEST_RE, f)
    numbers = {int(TEST_RE.match(n).group(1)) for n in names}
    _gaps(f, numbers, ctx.expected_images("test"), "test/" + TEST_NAME)
    f.summary = "%s images" % thousands(len(names))
    return ["test/" + n for n in names]


def _val_places(ctx: Context, s: valfolders.Scan, f: Findings) -> dict[str, list[str]]:
    """{val image name: the folders it is in ("val" when flat, "val/WNID", "val_blacklisted/
    WNID")}; entries that are no val image are reported."""
    for path in s.others + s.temps:
        if path.rstrip("/") not in s.kinds:          # those are reported as not regular
            _other(f, os.path.relpath(path.rstrip("/"), ctx.root), path.endswith("/"))
    where: dict[str, list[str]] = {}        # a flat place (val, val_flat) holds no "/"
    for name in s.flat:
        where.setdefault(name, []).append(valfolders.VAL_DIR)
    for name in s.kept:
        where.setdefault(name, []).append(valfolders.KEPT_DIR)
    for name, at in s.placed.items():
        for tree, wnid in [at] + s.extra.get(name, []):
            where.setdefault(name, []).append("%s/%s" % (tree, wnid))
    f.links = _val_not_regular(ctx, s, where, f)
    for name in [n for n in where if not VAL_RE.match(n)]:
        for folder in where.pop(name):
            _other(f, "%s/%s" % (folder, name), False)
    return where


def _val_not_regular(ctx: Context, s: valfolders.Scan, where: dict[str, list[str]],
                     f: Findings) -> dict[str, str]:
    """The val entries that are not regular files: the links 03 --symlink makes (val/WNID/NAME
    and val_blacklisted/WNID/NAME -> ../../val_flat/NAME) are read through their flat original:
    {link: original}; any other is reported and taken out of `where` (never opened)."""
    links = {}
    for full, kind in sorted(s.kinds.items()):
        rel = os.path.relpath(full, ctx.root)
        folder, name = os.path.split(rel)
        original = "%s/%s" % (valfolders.KEPT_DIR, name)
        if kind == files.LINK and folder.count("/") == 1 and _points_to(full, rel, original):
            links[rel] = original
            continue
        _not_regular(f, rel, kind)
        if folder in where.get(name, ()):
            where[name].remove(folder)
            if not where[name]:
                del where[name]
    return links


def _points_to(full: str, rel: str, original: str) -> bool:
    """The symbolic link `full` (ROOT/`rel`) names `original` (relative to ROOT) 03's way: by a
    relative path."""
    try:
        text = os.readlink(full)
    except OSError:
        return False
    return not os.path.isabs(text) and \
        os.path.normpath(os.path.join(os.path.dirname(rel), text)) == original


def _val_against_labels(where: dict[str, list[str]], labels: dict[str, str],
                        f: Findings) -> None:
    """Every labelled image there, in its label's folder (or flat, before 03); no other."""
    missing, wrong = [], []
    for name, wnid in labels.items():
        folders = where.get(name)
        if folders is None:
            missing.append("%s (class %s)" % (name, wnid))
            continue
        wrong.extend("%s/%s (label: %s)" % (d, name, wnid) for d in folders
                     if "/" in d and d.rsplit("/", 1)[1] != wnid)
    f.add(LABELLED_MISSING, missing)
    f.add(WRONG, wrong)
    f.add(UNLABELLED, ["%s/%s" % (d, n) for n, ds in where.items() if n not in labels for d in ds])


def _val_counts(ctx: Context, where: dict[str, list[str]], sort: bool, f: Findings) -> None:
    """Without labels: 50 images per class and 50,000 in all in the release; no gap in the
    numbers in any release."""
    numbers = {int(VAL_RE.match(n).group(1)) for n in where}
    _gaps(f, numbers, ctx.expected_images("val"), valfolders.VAL_DIR + "/" + facts.VAL_NAME)
    if sort and ctx.official and ctx.classes:
        per = Counter(d.rsplit("/", 1)[1] for ds in where.values() for d in ds if "/" in d)
        f.add(VAL_COUNT, ["%s (%d)" % (w, per[w]) for w in sorted(ctx.classes)
                          if per[w] != facts.VAL_PER_CLASS])


def check_val(ctx: Context, f: Findings) -> list[str]:
    """val/ flat (before 03) or val/WNID/ (and val_blacklisted/WNID/); returns the paths."""
    s = valfolders.scan(Path(ctx.root))
    where = _val_places(ctx, s, f)
    flat = valfolders.VAL_DIR
    sort = any("/" in d for ds in where.values() for d in ds)
    labels = ctx.val_labels
    if labels is None and ctx.classes is not None:
        try:
            labels, source = load_val_labels(Path(ctx.root), ctx.classes)
        except PrepError as e:
            f.add(LABELS, [str(e)])
            source = ""
        if labels is None and source:
            f.notes.append("no validation labels, so the class of each image is not checked: %s"
                           % source)
    if labels is not None:
        _val_against_labels(where, labels, f)
    else:
        _val_counts(ctx, where, sort, f)
    if sort:
        expected = set(labels.values()) if labels else set(ctx.classes or ())
        _class_set(ctx, f, {w: "%s/%s" % (t, w) for t, w in s.class_dirs}, expected)
        f.add(STILL_FLAT, ["%s/%s" % (ds[0], n) for n, ds in where.items()
                           if len(ds) == 1 and "/" not in ds[0]])
        f.add(FLAT_TOP, ["val/" + n for n, ds in where.items() if flat in ds and len(ds) > 1])
    f.add(TWICE, ["%s (in %s)" % (n, ", ".join(ds)) for n, ds in where.items()
                  if len([d for d in ds if "/" in d]) > 1])
    _val_notes(where, sort, f)
    return sorted("%s/%s" % (d, n) for n, ds in where.items() for d in ds)


def _val_notes(where: dict[str, list[str]], sort: bool, f: Findings) -> None:
    black = valfolders.BLACKLIST_DIR + "/"
    kept = sum(1 for ds in where.values() if valfolders.KEPT_DIR in ds)
    aside = sum(1 for ds in where.values() if any(d.startswith(black) for d in ds))
    folders = {d for ds in where.values() for d in ds if "/" in d}
    f.summary = "%s images" % thousands(len(where))
    if sort:
        f.summary += " in %d class folders" % len(folders)
    else:
        f.notes.append("val is flat, as extracted: %s sorts it into class folders (which "
                       "ImageFolder-style loaders need)" % STAGE_03)
    if kept:
        f.notes.append("%d flat originals kept in %s/ for their class-folder copies or links (03 "
                       "--copy/--link/--symlink); loaders read val/" % (kept, valfolders.KEPT_DIR))
    if aside:
        f.notes.append("%d images set aside in %s (03 --exclude-blacklist)" % (aside, black))


CHECKS = {"train": check_train, "val": check_val, "test": check_test}


# ----------------------------------------------------------------------------- the manifest

def against_manifest(ctx: Context, paths: list[str], f: Findings) -> Optional[list[Optional[str]]]:
    """--full: the tree's image paths against ROOT/meta/SHA256SUMS.SPLIT (missing, extra); the
    SHA-256 each path must have (None: not listed), or None when there is no manifest. A
    manifest that is not a regular file is a problem, never opened; a listed path already
    reported as not a regular file is not reported again as missing."""
    path = manifest.path_of(ctx.root, f.split)
    shown = os.path.relpath(path, ctx.root)
    if not os.path.lexists(path):
        if manifest.written_by_01(ctx.root, f.split):       # it was there: its loss is a problem
            f.add(MANIFEST, ["%s is missing, but %s wrote one when it extracted %s (%s says so), "
                             "so the bytes cannot be checked: %s" % (
                                 shown, STAGE_01, f.split, os.path.relpath(manifest.done_path(
                                     ctx.root, f.split), ctx.root),
                                 manifest.rewrite_hint(ctx.root, f.split))])
            return None
        f.notes.append("no manifest %s: --full needs one (%s writes it while extracting); the "
                       "structure was checked, not the bytes" % (shown, STAGE_01))
        return None
    try:
        listed = manifest.read(path)
    except PrepError as e:
        f.add(MANIFEST, [str(e)])
        return None
    except OSError as e:
        f.add(MANIFEST, ["cannot read %s: %s" % (path, e.strerror or e)])
        return None
    on_disk = set(paths)
    gone = sorted(p for p in listed if p not in on_disk and not _reported(f, p))
    extra = [p for p in paths if p not in listed]
    f.add(GONE, gone)
    f.add(NOT_LISTED, extra)
    moved = {p.rsplit("/", 1)[1] for p in gone} & {p.rsplit("/", 1)[1] for p in extra}
    if moved:
        f.notes.append("%d images are listed in %s at another place than they are (the folders "
                       "were rearranged after it was written)%s" % (
                           len(moved), shown, "; %s rewrites it: rerun it" % STAGE_03
                           if f.split == "val" else ""))
    f.checked.append("SHA-256 against %s (%s files listed)" % (shown, thousands(len(listed))))
    return [listed.get(p) for p in paths]


# ----------------------------------------------------------------------------- the files

class _FileView:
    """An open file as image_kind reads it (len, index, slice), fetched a page at a time with
    pread: the pages holding segment headers are read, what lies between them (an ICC profile,
    a thumbnail) is jumped over."""

    def __init__(self, fd: int, size: int, first: bytes) -> None:
        self.fd, self.size, self.pages = fd, size, {0: first}

    def __len__(self) -> int:
        return self.size

    def _page(self, n: int) -> bytes:
        page = self.pages.get(n)
        if page is None:
            page = self.pages[n] = os.pread(self.fd, PAGE, n * PAGE)
        return page

    def __getitem__(self, key):
        if not isinstance(key, slice):
            return self._page(key // PAGE)[key % PAGE]
        start, stop, _ = key.indices(self.size)
        return b"".join(self._page(n)[max(0, start - n * PAGE):stop - n * PAGE]
                        for n in range(start // PAGE, (stop - 1) // PAGE + 1)) \
            if stop > start else b""


def read_all(fd: int) -> bytes:
    """The bytes of an open regular file, in one read when it does not grow meanwhile (a read
    shorter than asked is its end)."""
    want = os.fstat(fd).st_size + 1
    data = os.read(fd, want)
    if len(data) < want:
        return data
    parts = [data]
    while parts[-1]:
        parts.append(os.read(fd, 1 << 20))
    return b"".join(parts)


def file_kind(fd: int, size: int) -> Optional[str]:
    """image_kind of an open file, reading only the pages it needs (usually the first)."""
    head = os.pread(fd, PAGE, 0)
    if len(head) >= size:
        return image_kind(head)
    try:
        return image_kind(_FileView(fd, size, head))
    except IndexError:               # shorter than its size said: it changed while read
        return None


@dataclass
class _Chunk:
    """What a worker sends back for one chunk of files: only what is wrong or worth a note."""

    files: int = 0
    nbytes: int = 0                  # of the files that have no other name in the split
    problems: list[tuple[str, str]] = field(default_factory=list)
    kinds: list[tuple[str, str]] = field(default_factory=list)
    shared: list[tuple[tuple[int, int], int]] = field(default_factory=list)  # ((dev, inode), size)

    @classmethod
    def merge(cls, parts: Iterable["_Chunk"]) -> "_Chunk":
        out = cls()
        for p in parts:
            out.files, out.nbytes = out.files + p.files, out.nbytes + p.nbytes
            out.problems.extend(p.problems)
            out.kinds.extend(p.kinds)
            out.shared.extend(p.shared)
        return out


@dataclass(frozen=True)
class _Seen:
    """One file as a worker found it: its size and kind, its bytes when whole files are read, and
    its (device, inode) when it may have another name in the split (a hard link, 03 --link; the
    original of a symbolic link, 03 --symlink), so that its bytes are counted once."""
    size: int
    kind: Optional[str]
    data: Optional[bytes]
    inode: Optional[tuple[int, int]]


class _Inspector:
    """A worker's job: the files paths[lo:hi], each opened once: its size, its kind, its SHA-256
    (when `expected`), its pixels (when `decoder`). The lists are inherited by the forked
    workers, not sent through the pipes; a job is two numbers."""

    def __init__(self, root: str, paths: list[str], expected: Optional[list[Optional[str]]],
                 decoder: Optional[Callable[[bytes], Optional[str]]],
                 links: Optional[dict[str, str]] = None) -> None:
        self.root, self.paths, self.expected, self.decoder = root, paths, expected, decoder
        self.links = links or {}                 # read these paths through their original
        self.shared = set(self.links) | set(self.links.values())   # one file, two names
        self.reads = expected is not None or decoder is not None     # whole files

    def __call__(self, span: tuple[int, int]) -> _Chunk:
        # READERS threads, each taking every READERS-th file: several reads in flight keep a
        # disk (or a network file system) busy when the cache is cold (2x faster than one at a
        # time on small files); open, read, hash and decode release the GIL
        indexes = range(*span)
        with ThreadPoolExecutor(READERS) as pool:
            return _Chunk.merge(pool.map(self.part, (indexes[k::READERS] for k in range(READERS))))

    def part(self, indexes: range) -> _Chunk:
        out = _Chunk()
        for i in indexes:
            self.judge(i, self.look(i), out)
        return out

    def look(self, i: int) -> Union[OSError, files.NotRegular, _Seen]:
        """What file i is, or the error. Only a regular file is opened (files.open_regular): a
        FIFO or a device would never end."""
        rel = self.links.get(self.paths[i], self.paths[i])
        try:
            fd = files.open_regular(os.path.join(self.root, rel))
            try:
                st = os.fstat(fd)
                inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 or self.paths[i] in self.shared \
                    else None
                if not self.reads:
                    return _Seen(st.st_size, file_kind(fd, st.st_size), None, inode)
                data = read_all(fd)
                return _Seen(len(data), image_kind(data), data, inode)
            finally:
                os.close(fd)
        except (OSError, files.NotRegular) as e:
            return e

    def judge(self, i: int, seen: Union[OSError, files.NotRegular, _Seen], out: _Chunk) -> None:
        rel = self.paths[i]
        if isinstance(seen, files.NotRegular):
            out.problems.append((NOT_REGULAR, "%s (%s)" % (rel, seen)))
            return
        if isinstance(seen, OSError):
            out.problems.append((UNREADABLE, "%s (%s)" % (rel, seen.strerror or seen)))
            return
        size, kind, data = seen.size, seen.kind, seen.data
        out.files += 1
        if seen.inode is None:
            out.nbytes += size
        else:
            out.shared.append((seen.inode, size))
        if size == 0:
            out.problems.append((EMPTY, rel))
            return
        if kind == NOT_IMAGE:
            out.problems.append((NOT_AN_IMAGE, rel))
        elif kind is not None:
            out.kinds.append((rel, kind))
        want = self.expected[i] if self.expected is not None else None
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            out.problems.append((CHANGED, rel))
        if self.decoder is not None and kind != NOT_IMAGE:
            why = self.decoder(data)
            if why:
                out.problems.append((UNDECODABLE, "%s (%s)" % (rel, why)))


def pillow_decoder() -> Callable[[bytes], Optional[str]]:
    """A function that decodes an image's bytes with Pillow: None, or why it failed. Pillow is
    optional: without it, say how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise PrepError("--decode needs Pillow, which is not installed here: pip install Pillow "
                        "(or run without --decode)") from None

    def decode(data: bytes) -> Optional[str]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # e.g. "Corrupt EXIF data": it decodes
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
        except Exception as e:  # noqa: BLE001  Pillow raises OSError, SyntaxError, ValueError, ...
            return "%s: %s" % (type(e).__name__, e)
        return None
    return decode


def inspect(ctx: Context, paths: list[str], expected: Optional[list[Optional[str]]],
            f: Findings) -> None:
    """Open every file of `paths` in worker processes; add what they find to `f`."""
    n = len(paths)
    work = _Inspector(ctx.root, paths, expected, ctx.decoder, f.links)
    step = max(16, min(CHUNK_MAX, n // (ctx.jobs * 32) + 1))
    spans = ((lo, min(lo + step, n)) for lo in range(0, n, step))
    what = "decoding" if ctx.decoder else "hashing" if expected else "reading"
    bar = Progress("%s: %s" % (f.split, what), n, "files", step=10) \
        if n >= PROGRESS_MIN or sys.stderr.isatty() else None
    done = nbytes = 0
    kinds: list[tuple[str, str]] = []
    shared: dict[tuple[int, int], int] = {}          # files with two names: their size, once
    try:
        for span, res, code in run_parallel(work, spans, ctx.jobs):
            if res is None:
                f.add(UNREADABLE, ["%s ... %s (the worker reading them died: exit code %s)"
                                   % (paths[span[0]], paths[span[1] - 1], code)])
                continue
            done, nbytes = done + res.files, nbytes + res.nbytes
            shared.update(res.shared)
            for title, item in res.problems:
                f.add(title, [item])
            kinds.extend(res.kinds)
            if bar is not None:
                bar.update(done, "%s, %s" % (human(nbytes), bar.rate(nbytes)))
    finally:
        if bar is not None:
            bar.close()
    f.summary += ", %s" % human(nbytes + sum(shared.values()))
    _kinds_note(ctx, kinds, f)


def _kinds_note(ctx: Context, kinds: list[tuple[str, str]], f: Findings) -> None:
    if not kinds:
        return
    per = Counter(k for _, k in kinds)
    text = ", ".join("%d %s%s" % (per[k], k, "s" if per[k] > 1 else "") for k in KNOWN_KINDS
                     if per[k])
    if ctx.official and f.split == "train":
        text += " (the release has %d CMYK JPEGs and 1 PNG, %s)" % (facts.CMYK_FILES,
                                                                     facts.PNG_FILE)
    f.notes.append("known kinds, not errors (some decoders need care): %s: %s"
                   % (text, some(["%s (%s)" % (r, k) for r, k in sorted(kinds)])))


# ----------------------------------------------------------------------------- the stage

def check_structure(ctx: Context, split: str) -> tuple[Findings, list[str],
                                                      Optional[list[Optional[str]]]]:
    """The checks that open no image: the split's folders, names and counts, and with ctx.full
    its paths against the manifest. (findings, the image paths, the SHA-256 each must have or
    None). 05_pack_squashfs.py --from-tree checks a tree with it before packing it."""
    f = Findings(split)
    if not os.path.isdir(os.path.join(ctx.root, split)):
        f.add(NO_SPLIT, ["%s/ is not in %s (%s %s extracts it)" % (split, ctx.root, STAGE_01,
                                                                    split)])
        return f, [], None
    paths = CHECKS[split](ctx, f)
    f.checked.append("structure")
    expected = against_manifest(ctx, paths, f) if ctx.full else None
    return f, paths, expected


def check_split(ctx: Context, split: str) -> Findings:
    f, paths, expected = check_structure(ctx, split)
    if not f.checked:
        return f
    if split != "test" and ctx.classes is None:
        f.add(NO_CLASSES, [ctx.class_source])
    inspect(ctx, paths, expected, f)
    if ctx.decoder is not None:
        f.checked.append("every image decoded")
    return f


def report(f: Findings) -> int:
    """Log the problems (the first few of each kind, and how many), the notes, and a summary;
    returns the number of problems."""
    for line in f.lines():
        log.error("%s: error: %s", f.split, line)
    for text in f.notes:
        log.info("%s: note: %s", f.split, text)
    n = f.count()
    log.info("%s: %s: %s%s", f.split, verdict(n), f.summary or "not checked",
             "; checked: " + ", ".join(f.checked) if f.checked else "")
    return n


def verdict(problems: int) -> str:
    return "ok" if not problems else "FAILED (%d problem%s)" % (problems,
                                                              "s" if problems > 1 else "")


def verify(root: Path, splits: list[str], every: bool = False, full: bool = False,
           decode: bool = False, jobs: int = 1) -> int:
    """04_verify.py: check `splits` of the tree at `root` (`every`: the ones that are there),
    log what is wrong; 0 when everything checks, else 1. Changes nothing."""
    decoder = pillow_decoder() if decode else None
    if not root.is_dir():
        raise PrepError("ROOT %s is not a folder: pass --root DIR (the folder holding train/, "
                        "val/, test/) or set IMAGENET_ROOT" % root)
    if every:
        absent = [s for s in splits if not (root / s).is_dir()]
        splits = [s for s in splits if s not in absent]
        if not splits:
            raise PrepError("none of train/, val/, test/ is in %s: is it the right ROOT?" % root)
        if absent:
            log.info("not there, so not checked: %s", ", ".join(s + "/" for s in absent))
    classes, source = load_classes(root)     # test too: the class set says if it is the release
    if classes is not None:
        log.info("classes: %d, from %s", len(classes), source)
    ctx = Context(str(root), classes, source, jobs, full, decoder)
    results = {s: report(check_split(ctx, s)) for s in splits}
    log.info("result: %s", ", ".join("%s %s" % (s, verdict(n)) for s, n in results.items()))
    return 1 if any(results.values()) else 0
