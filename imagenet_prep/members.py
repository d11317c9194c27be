"""The members of a split, from whatever holds them: one plan per source, for every sink to take.

A source (the image-net.org archives in ROOT/downloads/, or the tree 01 made) is planned before
anything is written: its members are indexed and checked as 01 checks them (names, types, each
once), val is placed into its class folders by 03's labels, a tree gets 04's structural checks,
its sizes against 01's records and its manifest's hashes for checking while it is read. The plan
then gives its entries in the source's order, each with its place in the split and where its bytes
are:

    Folder("n01440764", mtime)                            a class folder (mtime None: the sink's)
    Item("n01440764/n01440764_10026.JPEG", source, offset, size, mtime, archived, rel,
         method, csize, crc)
         path in the split: train WNID/NAME, val WNID/NAME, test NAME (the canonical path is
         split/path); `size` bytes at `offset` of the archive `source`, or the tree's file
         `source` (`rel`: its path relative to ROOT, the manifest's key), or a zip member's data
         at `offset`: stored, or deflated in `csize` bytes (`rel`: the member's name), its
         CRC-32 `crc` checked as it is read

The other sources (00_download.sh --source hf|kaggle, docs/sources.md) are planned from the files
00 recorded as verified (sources.load_record, check_files), with their side files kept where 02
and 03 look for them, as 01 keeps them (ROOT/hf/classes.py, ROOT/kaggle/LOC_*):

    the Kaggle zip, the tree inline    Items: each member where the central directory and its
                                       local header put it (random access, as an archive's)
    the Hub's tar.gz or Parquet files, Streams: files that are read only from their start, each
    the Kaggle zip's nested tar.gz     giving its images in its own order (sourceread's readers,
                                       01's checks); Plan.place gives each its path in the split

Sinks: 05 (squashfs.py) streams the entries into a SquashFS builder in this order; 06
(webdataset.py) indexes them and writes shuffled shards (a plan of streams: read twice, see
webdataset.py). A new source (another archive layout) is one more planner for plan_split to
choose.

Here: plan_split -> plan_train_archive (index_outer; entries read the class tars' headers as they
are asked for: one pass), plan_flat_archive (index_flat, place_val), plan_train_tree and
plan_flat_tree (tree_done, check_tree, check_sizes, flat_tree_items), or open_source ->
HubFiles.plan, KaggleZip.plan (place_names, val_classes); open_tree_file and Sums for reading a
tree's file; tar_header, the form of every tar member a sink writes; need_root.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator, Optional, Protocol, Union

from . import files, manifest, sourceread, sources, verify
from .console import PrepError, human, log, shown, some, thousands
from .extract import STATE, Config, Copy, check_archive, find_archive
from .sourcenames import KAGGLE_NESTED, kaggle_member
from .tarstream import REDO, Source, iter_tar
from .train import ClassTar, check_class_member, class_pattern, index_outer, read_record, refused_text
from .unzip import FlatNames
from .valfolders import HF_DIR, KAGGLE_DIR, KEPT_DIR, NoLabels, read_synsets, val_labels
from .zipread import ZipDirectory, file_range

DIR_MODE, FILE_MODE = 0o755, 0o644       # every folder and file a sink writes


class Inputs(Protocol):
    """What the planners read from a stage's settings."""
    root: str                        # absolute
    labels: Optional[str]            # val: the labels file (default: the devkit's, as 03 finds it)
    meta: Optional[str]              # val: the classes (default: ROOT/meta/synsets.csv)


@dataclass(frozen=True)
class Folder:
    """A class folder of the split; mtime None: the sink's own time."""
    path: str
    mtime: Optional[float]


@dataclass(frozen=True)
class Item:
    """An image: its path in the split, and where its bytes are: a member of an archive (`size`
    bytes at `offset`), or a file of a tree."""
    path: str
    source: str
    offset: int
    size: int
    mtime: float
    archived: bool = True
    rel: str = ""                    # a tree's file: its path relative to ROOT (the manifest's);
    #                                  a zip member: its name in the zip
    method: int = 0                  # 8: deflated, `csize` bytes at `offset` inflate to `size`
    csize: int = 0
    crc: Optional[int] = None        # a zip member's CRC-32, checked as it is read


Entry = Union[Folder, Item]


@dataclass(frozen=True)
class Stream:
    """A file of a source that can be read only from its start (a Hub tar.gz or Parquet file, the
    older Kaggle zip's nested tar.gz). read(check) gives the split's images in the file's order,
    as sourceread Entries under their canonical names (train/WNID/NAME, val/NAME), checked by
    01's readers; with check, the whole file too (the Hub's: its size and SHA-256 against 00's
    record). Each entry's bytes must be read (or left) before the next is asked for."""
    label: str                       # its path in the source, for messages and the state
    local: str                       # the file
    size: int
    read: Callable[[bool], Iterator[sourceread.Entry]]


@dataclass
class Plan:
    """The members of one split from one source, checked as far as can be before any is read."""
    split: str
    origin: str                      # "archive" or "tree"
    source: str                      # the archive file, or the tree's folder
    archive: str                     # the archive's name (for a tree: the one 01 extracted)
    archive_size: int
    total: int                       # bytes to read, about (progress, preflight)
    newest: float                    # the newest time of the folders (train) or images (val, test)
    entries: Callable[[], Iterator[Entry]]   # the folders and images, in the source's order
    classes: bool = False            # the folders are the classes (train)
    check_official: bool = True
    expect_files: Optional[int] = None  # a tree: the images 01 extracted
    sums: Optional["Sums"] = None    # a tree: the manifest's hashes, to check while reading
    copy: Optional[Copy] = None      # another source's copy: official or not (its counts)
    redo: str = ""                   # another source: what to do when its bytes are damaged
    streams: tuple[Stream, ...] = ()    # files read from their start (then `entries` gives none)
    place: Optional[Callable[[list[tuple[str, Optional[str]]]], list[str]]] = None
    #                                  streams: the path in the split of each image, from its
    #                                  canonical name and the class the source gives it (or None)


# ----------------------------------------------------------------------------- the tar form

def _template(typ: bytes, mode: int) -> bytes:
    """A GNU tar header with everything but name, size, time and checksum filled in."""
    h = bytearray(tarfile.BLOCKSIZE)
    h[100:108] = b"%07o\0" % mode
    h[108:116] = h[116:124] = b"%07o\0" % 0
    h[148:156] = b" " * 8                           # the checksum is summed with spaces here
    h[156:157] = typ
    h[257:265] = tarfile.GNU_MAGIC
    return bytes(h)


HEADERS = {True: _template(tarfile.DIRTYPE, DIR_MODE), False: _template(tarfile.REGTYPE, FILE_MODE)}


def tar_header(path: str, size: int, mtime: int, is_dir: bool) -> bytes:
    """The header of one member of the stream: owner 0, mode 0755 or 0644. Built by hand (a third
    of the time tarfile takes; it counts with 1.3 M files); tarfile for the rare long name."""
    name = (path + "/" if is_dir else path).encode("utf-8", "surrogateescape")
    if len(name) > 99 or size >= 8 ** 11 or not 0 <= mtime < 8 ** 11:
        ti = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
        ti.type, ti.size = (tarfile.DIRTYPE, 0) if is_dir else (tarfile.REGTYPE, size)
        ti.mode, ti.mtime, ti.uname, ti.gname = (DIR_MODE if is_dir else FILE_MODE), mtime, "", ""
        return ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    h = bytearray(HEADERS[is_dir])
    h[0:len(name)] = name
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)



# ----------------------------------------------------------------------------- sources: the archives

def plan_train_archive(archive: str) -> Plan:
    """The outer tar's index, checked (01's rules) before anything is read; the class tars'
    headers are read as the entries are asked for."""
    label = os.path.basename(archive)
    classes, refused, broken = index_outer(archive)
    if refused:
        raise PrepError(refused_text(label, refused))
    if broken:
        raise PrepError(broken)
    if not classes:
        raise PrepError("%s holds no class tars (WNID.tar members); is it the right file? download "
                        "it again" % archive)
    classes.sort(key=lambda c: c.wnid)
    size = os.path.getsize(archive)
    log.info("train: %s holds %d class tars (%s)", archive, len(classes), human(size))
    return Plan("train", "archive", archive, label, size, size, max(c.mtime for c in classes),
                lambda: train_archive_entries(archive, classes), classes=True)


def train_archive_entries(archive: str, classes: list[ClassTar]) -> Iterator[Entry]:
    """Each class tar's folder, then its images as WNID/NAME, checked as 01 checks them."""
    name = os.path.basename(archive)
    with open(archive, "rb", buffering=0) as f:
        src = Source(f)
        for c in classes:
            label = "%s: %s.tar" % (name, c.wnid)
            pattern = class_pattern(c.wnid)
            seen: set[str] = set()
            yield Folder(c.wnid, c.mtime)
            for m in iter_tar(src, c.offset, c.offset + c.size, label, need_eof=False):
                check_class_member(m, c.wnid, label, pattern, seen)
                yield Item("%s/%s" % (c.wnid, m.name), archive, m.offset, m.size, m.mtime)
            if not seen:
                raise PrepError("%s: holds no images; the archive is damaged: download it again"
                                % label)


def index_flat(archive: str, split: str) -> list[Item]:
    """Every member of the val or test tar, checked as 01 checks them, headers only."""
    label = os.path.basename(archive)
    items, names = [], FlatNames(split, label)
    with open(archive, "rb", buffering=0) as f:
        for m in iter_tar(Source(f), 0, os.path.getsize(archive), label, need_eof=True):
            name = names.name(m)
            if name is not None and not names.refused:
                items.append(Item(name, archive, m.offset, m.size, m.mtime))
    names.check()
    if not items:
        raise PrepError("%s holds no images; is it the right file? download it again" % archive)
    return items


def val_classes(cfg: Inputs, names: Collection[str],
                own: Optional[dict[str, str]] = None) -> dict[str, str]:
    """{NAME: WNID} of the val images `names`, by 03's labels (val_labels: the devkit's, those a
    source keeps in ROOT, or --labels). `own`: the classes the source itself gives them (the
    Hub's names carry one), taken when ROOT has no labels, else checked against them. Every image
    must have a label and every label an image; checked before anything is built."""
    try:
        wnid_of = val_labels(Path(cfg.root), cfg.meta and Path(cfg.meta),
                             cfg.labels and Path(cfg.labels))
    except NoLabels as e:
        if own is None:
            raise PrepError("val: the images go into class folders by the validation labels, as "
                            "03 sorts them: %s" % e) from None
        log.info("val: no validation labels in %s (no devkit): the classes the source's names "
                 "carry are taken", cfg.root)
        wnid_of = own
    except PrepError as e:
        raise PrepError("val: the images go into class folders by the validation labels, as 03 "
                        "sorts them: %s" % e) from None
    else:
        differ = sorted(n for n, w in (own or {}).items() if wnid_of.get(n, w) != w)
        if differ:
            raise PrepError("val: %d images are given another class by the labels than their names "
                            "in the source carry (%s); find out which is right: pass the right "
                            "labels with --labels FILE" % (len(differ), some(
                                ["%s: %s, %s" % (n, wnid_of[n], own[n]) for n in differ])))
    unlabelled = sorted(set(names).difference(wnid_of))
    absent = sorted(set(wnid_of).difference(names))
    if unlabelled or absent:
        wrong = ["%d %s (%s)" % (len(found), what, some(found))
                 for found, what in ((unlabelled, "without a label"), (absent, "labelled but absent"))
                 if found]
        raise PrepError("val: the labels list %d images, the source holds %d: %s; use the labels "
                        "of this release (pass the right devkit to 01_unzip.sh devkit, then 02)"
                        % (len(wnid_of), len(set(names)), ", ".join(wrong)))
    return wnid_of


def place_val(cfg: Inputs, items: list[Item]) -> tuple[list[str], list[Item]]:
    """The val images in their class folders (03's labels): (folders, items as WNID/NAME)."""
    wnid_of = val_classes(cfg, [it.path for it in items])
    placed = [Item("%s/%s" % (wnid_of[it.path], it.path), it.source, it.offset, it.size,
                   it.mtime, it.archived, it.rel, it.method, it.csize, it.crc) for it in items]
    return sorted(set(wnid_of.values())), placed


def plan_flat_archive(cfg: Inputs, split: str, archive: str) -> Plan:
    items = index_flat(archive, split)
    folders: list[str] = []
    if split == "val":
        folders, items = place_val(cfg, items)
    size = os.path.getsize(archive)
    log.info("%s: %s holds %s images (%s)%s", split, archive, thousands(len(items)), human(size),
             ", for %d class folders" % len(folders) if folders else "")
    return Plan(split, "archive", archive, os.path.basename(archive), size, size,
                max(it.mtime for it in items), lambda: flat_entries(folders, items))


def flat_entries(folders: list[str], items: list[Item]) -> Iterator[Entry]:
    """The folders (time: the sink's), then every item."""
    for f in folders:
        yield Folder(f, None)
    yield from items


# ----------------------------------------------------------------------------- sources: a tree

def reextract(split: str) -> str:
    return "01_unzip.sh %s%s" % (split, ", then 03_build_val_class_folders.py" if split == "val"
                                 else "")


@dataclass(frozen=True)
class Sums:
    """ROOT/meta/SHA256SUMS.SPLIT of a tree being packed: each file is hashed while it is
    streamed (no second read) and must have the SHA-256 the manifest lists for it."""
    split: str
    path: str
    digest_of: dict                  # path relative to ROOT -> SHA-256
    undone: str = "nothing was built"   # what a mismatch leaves unwritten, as the sink says it

    def check(self, rel: str, source: str, got: Optional[str]) -> None:
        want = self.digest_of.get(rel)
        if want is not None and got != want:
            raise PrepError("%s: %s is not the file 01_unzip.sh extracted: its SHA-256 differs "
                            "from the one %s lists (changed, truncated or damaged since); %s: "
                            "extract the split again (%s), or run 04_verify.py --full %s to find "
                            "every such file" % (self.split, source, self.path, self.undone,
                                                 reextract(self.split), self.split))


def check_tree(cfg: Inputs, split: str) -> tuple[list[str], Optional[Sums]]:
    """04's checks that open no image (verify.check_structure), before anything is written: the
    class folders, names and counts, no entry that is not a regular file, and the paths against
    ROOT/meta/SHA256SUMS.SPLIT when it is there. A problem refuses the tree, and so does a
    manifest that is not a regular file, or missing although 01 wrote one (manifest.present).
    Returns the image paths (relative to ROOT) and the manifest's hashes, checked while
    reading."""
    root = Path(cfg.root)
    try:
        with_sums = manifest.present(cfg.root, split)
    except PrepError as e:
        raise PrepError("%s: %s; nothing was built (or pack the archive: without --from-tree)"
                        % (split, e)) from None
    classes, source = (read_synsets(Path(cfg.meta), given=True), cfg.meta) if cfg.meta \
        else verify.load_classes(root)
    labels = None
    if split == "val" and classes is not None and (cfg.labels or cfg.meta):
        labels = val_labels(root, cfg.meta and Path(cfg.meta), cfg.labels and Path(cfg.labels))
    sums = manifest.path_of(cfg.root, split)
    ctx = verify.Context(cfg.root, classes, source, 1, with_sums, val_labels=labels)
    f, paths, expected = verify.check_structure(ctx, split)
    if classes is None and split != "test":
        log.info("%s: the class folders are not checked against a class list: %s", split, source)
    if f.problems:
        raise PrepError("%s: %s is not the tree %s extracted, nothing was built:\n  %s\nif "
                        "entries do not belong there, move them out (an image holds the split and "
                        "nothing else); if images are missing or damaged, extract it again (%s); "
                        "04_verify.py --full %s lists every problem"
                        % (split, os.path.join(cfg.root, split), "01_unzip.sh",
                           "\n  ".join(f.lines()), reextract(split), split))
    if expected is None:
        return paths, None
    return paths, Sums(split, os.path.relpath(sums, cfg.root), dict(zip(paths, expected)))


@contextlib.contextmanager
def open_tree_file(source: str, size: Optional[int] = None) -> Iterator[tuple[int, os.stat_result]]:
    """(descriptor, fstat) of one file of a tree, opened only if it is a regular file (no symbolic
    link followed) and, given `size`, of that size. The caller hashes what it reads when the plan
    has `sums`, and checks it (Sums.check)."""
    try:
        fd = files.open_regular(source)
    except (OSError, files.NotRegular) as e:
        raise PrepError("%s: cannot read it (%s); the tree changed while being packed? run again"
                        % (source, getattr(e, "strerror", None) or e)) from None
    try:
        st = os.fstat(fd)
        if size is not None and st.st_size != size:
            raise PrepError("%s changed while being packed (%s bytes, was %s); run again"
                            % (source, thousands(st.st_size), thousands(size)))
        yield fd, st
    finally:
        os.close(fd)


def tree_done(root: str, split: str) -> dict:
    """01's done marker of the split: the tree is complete and verified."""
    doc = manifest.read_done(root, split)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), int):
        raise PrepError("%s: %s is not complete (01_unzip.sh has not marked it done in %s): run "
                        "01_unzip.sh %s first, or pack the archive (without --from-tree)"
                        % (split, os.path.join(root, split), os.path.join(root, STATE), split))
    return doc


def recorded_sizes(root: str, wnid: str) -> Optional[dict[str, int]]:
    """{name: size} of the files 01 wrote into train/WNID, from its record ROOT/.01_unzip/train/
    WNID.json ([name, size, sha256] per file); None when there is no usable one (older records
    hold no files). Read only if it is a regular file."""
    rec = read_record(os.path.join(root, STATE, "train"), wnid)
    got = rec.get("files") if rec else None
    return {f[0]: f[1] for f in got} if got else None


def check_sizes(cfg: Inputs, split: str, size: dict[str, int], doc: dict,
                records: bool) -> None:
    """The sizes of the tree's files ({path relative to ROOT: size}, from their metadata),
    before anything is read: each against 01's record (`records`: train), the total against
    01's done marker. A file of another size (e.g. a huge sparse file put in place of an image)
    is refused before it is read, let alone hashed."""
    wrong = []
    if records:
        recs: dict[str, Optional[dict[str, int]]] = {}
        for p in size:                               # train/WNID/NAME
            _, wnid, name = p.split("/")
            if wnid not in recs:
                recs[wnid] = recorded_sizes(cfg.root, wnid)
            want = (recs[wnid] or {}).get(name)
            if want is not None and size[p] != want:
                wrong.append("%s (%s B, 01_unzip.sh wrote %s B)"
                             % (p, thousands(size[p]), thousands(want)))
    total, want_total = sum(size.values()), doc.get("bytes")
    if not wrong and isinstance(want_total, int) and total != want_total:
        big = sorted(size, key=lambda p: -size[p])[:3]
        wrong.append("in all %s B, but 01_unzip.sh extracted %s B (%s); the largest: %s"
                     % (thousands(total), thousands(want_total), manifest.done_path(cfg.root, split),
                        ", ".join("%s (%s)" % (p, human(size[p])) for p in big)))
    if wrong:
        raise PrepError("%s: files of another size than 01_unzip.sh wrote (changed, truncated or "
                        "replaced since), nothing was built and none was read: %s; %s, or run "
                        "04_verify.py --full %s to find every such file"
                        % (split, some(wrong), "delete the class folders that hold them and run "
                           "01_unzip.sh train: it extracts those classes again" if records else
                           "move %s away and extract it again (%s)"
                           % (os.path.join(cfg.root, split), reextract(split)), split))


def plan_train_tree(cfg: Inputs) -> Plan:
    """ROOT/train as 01 made it, checked (check_tree, check_sizes) before anything is read."""
    doc = tree_done(cfg.root, "train")
    top = os.path.join(cfg.root, "train")
    paths, sums = check_tree(cfg, "train")
    stats = {p: os.lstat(os.path.join(cfg.root, p)) for p in paths}
    check_sizes(cfg, "train", {p: st.st_size for p, st in stats.items()}, doc, records=True)
    names: dict[str, list[tuple[str, int, float]]] = {}
    for p in paths:                                  # train/WNID/NAME, sorted
        _, wnid, name = p.split("/")
        names.setdefault(wnid, []).append((name, stats[p].st_size, stats[p].st_mtime))
    with os.scandir(top) as it:                      # only class folders: checked above
        classes = sorted((e.name, int(e.stat(follow_symlinks=False).st_mtime)) for e in it)
    if not classes:
        raise PrepError("%s holds no class folders: run 01_unzip.sh train" % top)
    empty = [os.path.join(top, w) for w, _ in classes if w not in names]
    if empty:
        raise PrepError("%s: %d class folders are empty (%s); run 01_unzip.sh train to extract "
                        "them again" % (top, len(empty), some(empty)))
    log.info("train: %s holds %d class folders (%s images, %s, says 01_unzip.sh)", top,
             len(classes), thousands(doc["images"]), human(doc.get("bytes", 0)))
    return Plan("train", "tree", top, str(doc.get("archive")), int(doc.get("archive_size") or 0),
                int(doc.get("bytes") or 0), max(m for _, m in classes),
                lambda: train_tree_entries(top, classes, names), classes=True,
                expect_files=doc["images"], sums=sums)


def train_tree_entries(top: str, classes: list[tuple[str, int]],
                       names: dict[str, list[tuple[str, int, float]]]) -> Iterator[Entry]:
    for wnid, mtime in classes:
        yield Folder(wnid, mtime)
        for name, size, when in names[wnid]:
            yield Item("%s/%s" % (wnid, name), os.path.join(top, wnid, name), 0, size, when,
                       archived=False, rel="train/%s/%s" % (wnid, name))


def tree_item(top: str, path: str, rel: str) -> Item:
    """A file of ROOT/val or ROOT/test (`rel`: relative to ROOT); a symbolic link (03 --symlink)
    only to a file in `top` or in ROOT/val_flat, where 03 keeps the originals."""
    full = os.path.join(os.path.dirname(top), rel)
    real = os.path.realpath(full)
    inside = tuple(os.path.realpath(d) + os.sep
                   for d in (top, os.path.join(os.path.dirname(top), KEPT_DIR)))
    if real != full and not (real.startswith(inside) and os.path.isfile(real)):
        raise PrepError("%s is a symbolic link to %s, outside %s; refused" % (full, real, top))
    st = os.stat(real)
    return Item(path, real, 0, st.st_size, st.st_mtime, archived=False, rel=rel)


def flat_tree_items(cfg: Inputs, split: str, top: str,
                    paths: list[str]) -> tuple[list[str], list[Item]]:
    """(class folders, items) of ROOT/val (sorted by 03 into class folders: as it is; still
    flat: placed by the labels) or ROOT/test, from the checked paths."""
    mine = [p for p in paths if p.startswith(split + "/")]    # not val_blacklisted/, val_flat/
    in_folders = [p for p in mine if p.count("/") == 2]
    flat = [p for p in mine if p.count("/") == 1]
    if in_folders:                   # (flat images beside them: check_tree has refused them)
        return (sorted({p.split("/")[1] for p in in_folders}),
                [tree_item(top, p.split("/", 1)[1], p) for p in in_folders])
    items = [tree_item(top, p.split("/", 1)[1], p) for p in flat]
    if split != "val":
        return [], items
    folders, items = place_val(cfg, items)
    return folders, sorted(items, key=lambda it: it.path)   # as 03 sorts: the same image


def plan_flat_tree(cfg: Inputs, split: str) -> Plan:
    """ROOT/val (sorted by 03 into class folders, or still flat: placed by the labels), ROOT/test."""
    root = cfg.root
    doc = tree_done(root, split)
    top = os.path.join(root, split)
    paths, sums = check_tree(cfg, split)
    folders, items = flat_tree_items(cfg, split, top, paths)
    if not items:
        raise PrepError("%s holds no images: run 01_unzip.sh %s" % (top, split))
    set_aside = split == "val" and os.path.isdir(os.path.join(root, "val_blacklisted"))
    if not set_aside:                                # the sizes, before anything is read
        check_sizes(cfg, split, {it.rel: it.size for it in items}, doc, records=False)
    if set_aside:
        log.info("val: %s exists (03 --exclude-blacklist): packing the %d images of %s; the "
                 "official count is not checked", os.path.join(root, "val_blacklisted"),
                 len(items), top)
    return Plan(split, "tree", top, str(doc.get("archive")), int(doc.get("archive_size") or 0),
                sum(it.size for it in items), max(it.mtime for it in items),
                lambda: flat_entries(folders, items), check_official=not set_aside,
                expect_files=None if set_aside else doc["images"], sums=sums)


# ----------------------------------------------------------------------------- sources: the Hub, Kaggle

UNDONE = "no shard was written"          # what a damaged Hub file leaves undone here


def stream_entries() -> Iterator[Entry]:
    """The entries of a plan of streams: none in any order but the files' own (Plan.streams)."""
    raise PrepError("these files are read only from their start (Plan.streams), not as entries")


def place_names(cfg: Inputs, split: str, names: list[tuple[str, Optional[str]]]) -> list[str]:
    """The path in the split (WNID/NAME) of each image of a plan's streams, from its canonical
    name (train/WNID/NAME, val/NAME) and the class the source gives it (the Hub's val names carry
    one; None: the labels 03 reads decide)."""
    flat = [c.split("/", 1)[1] for c, _ in names]
    if split != "val":
        return flat
    own = {n: w for n, (_, w) in zip(flat, names) if w is not None}
    wnid_of = val_classes(cfg, flat, own or None)
    return ["%s/%s" % (wnid_of[n], n) for n in flat]


class HubFiles:
    """The Hub's files of ILSVRC/imagenet-1k in ROOT/downloads/hf/ as 00_download.sh --source hf
    recorded them. gzip has no random access and a Parquet file's images lie in row groups
    (compressed pages of many images), so each file is a Stream. Opened: the record read and the
    class list, kept as ROOT/hf/classes.py for 02 (as 01 --source hf keeps it)."""

    def __init__(self, cfg: Inputs) -> None:
        self.cfg = cfg
        self.record = rec = sources.load_record(cfg.root, "hf")
        log.info("hf: %s at revision %s (asked as %s), %s layout", sources.NAMES["hf"],
                 rec.revision, shown(rec.asked), sources.HF_LAYOUTS[rec.layout])
        self.wnids = sources.hf_classes(cfg.root, rec)
        self.class_list = os.path.join(cfg.root, HF_DIR, "classes.py")
        if rec.layout == "parquet":
            sources.label_order(self.wnids, os.path.join(rec.folder, "classes.py"))
            from .parquetread import pyarrow_modules
            pyarrow_modules()                        # says what to install

    def plan(self, split: str) -> Plan:
        """The split's files, verified by 00 and of their recorded size, as Streams."""
        rec = self.record
        found = rec.of(split)
        if not found:
            raise PrepError("%s: %s lists no %s files (00 was run for other splits); %s, then run "
                            "this again" % (split, os.path.join(rec.folder, sources.RECORD), split,
                                            sources.redo("hf", split)))
        sources.check_files(rec, found, split)
        streams = tuple(Stream(f.path, f.local, f.size, functools.partial(self.read, f))
                        for f in found)
        size = rec.archive_size(split)
        log.info("%s: %d file(s) in %s (%s), each read from its start", split, len(found),
                 rec.folder, human(size))
        return Plan(split, "hf", rec.folder, rec.archive, size, size, 0.0, stream_entries,
                    classes=split == "train", copy=sources.hf_copy(rec), streams=streams,
                    place=functools.partial(place_names, self.cfg, split))

    def read(self, f: sources.SourceFile, check: bool) -> Iterator[sourceread.Entry]:
        """The images of file f, as 01 --source hf reads them; with check, its size and SHA-256
        against the record too (a Parquet file is hashed first: pyarrow reads it itself)."""
        try:
            fd = files.open_regular(f.local)
        except files.NotRegular as e:
            raise PrepError("%s is %s; %s" % (f.local, e, sources.redo("hf", f.split))) from None
        with os.fdopen(fd, "rb") as raw:
            if f.path.endswith(".parquet"):
                if check:
                    sources.hf_check(f, sources.hash_file(raw), None, UNDONE)
                yield from sourceread.hf_parquet_entries(f.local, f.split, self.wnids, f.path)
                return
            hashed = sources.Hashed(raw)
            try:
                yield from sourceread.hf_tar_entries(hashed if check else raw, f.split, f.path)
            except PrepError as e:
                if check:
                    hashed.drain()
                    sources.hf_check(f, hashed, str(e), UNDONE)
                raise
            if check:
                hashed.drain()
                sources.hf_check(f, hashed, None, UNDONE)


class KaggleZip:
    """The Kaggle competition's zip in ROOT/downloads/kaggle/ as 00_download.sh --source kaggle
    recorded it. Opened: its central directory read and checked, every name by sourcenames'
    rules (sources.kaggle_plan), and its LOC_* files kept as ROOT/kaggle/ (02's classes, 03's
    val labels), as 01 --source kaggle keeps them. The tree inline: every image is a member
    where the directory puts it (Items); the older shape, the tree in one tar.gz member: that
    member is a Stream."""

    def __init__(self, cfg: Inputs, splits: list[str]) -> None:
        self.cfg = cfg
        self.record = rec = sources.load_record(cfg.root, "kaggle")
        self.file = f = rec.files[0]
        sources.check_files(rec, [f], " ".join(splits))
        self.redo = "delete %s and %s: it downloads the zip again" % (f.local, sources.redo(
            "kaggle", " ".join(splits)))
        log.info("kaggle: %s (%s). Kaggle publishes no checksum for it: the CRC-32 of every image, "
                 "checked as it is read, is the check there is for this source (and the zip's "
                 "size, as the download was told it)", f.local, human(f.size))
        with self.damaged():
            with os.fdopen(self._open(), "rb") as raw:
                self.directory = ZipDirectory(f.size, file_range(raw), f.path)
            self.zplan = sources.kaggle_plan(self.directory, {}, 1)
            sources.keep_kaggle_files(cfg, self.directory, f.local, self.zplan.extra)
        self.copy = sources.kaggle_copy(f.size, self.zplan.nested is not None)
        self.class_list = os.path.join(cfg.root, KAGGLE_DIR, "LOC_synset_mapping.txt")

    @contextlib.contextmanager
    def damaged(self) -> Iterator[None]:
        """A reader's words that the zip is damaged, with what to do: 00 checked only its size."""
        try:
            yield
        except PrepError as e:
            if not str(e).endswith(REDO):
                raise
            raise PrepError("%s (%s)" % (e, self.redo)) from None

    def _open(self) -> int:
        try:
            return files.open_regular(self.file.local)
        except files.NotRegular as e:
            raise PrepError("%s is %s; %s" % (self.file.local, e, sources.redo("kaggle", "all"))) \
                from None

    def plan(self, split: str) -> Plan:
        f, d, z = self.file, self.directory, self.zplan
        place = functools.partial(place_names, self.cfg, split)
        if z.nested is not None:
            member = next(d.in_file_order(z.nested))
            log.info("%s: %s holds its images in %s (%s): read from its start", split, f.path,
                     KAGGLE_NESTED, human(member.csize))
            stream = Stream("%s: %s" % (f.path, KAGGLE_NESTED), f.local, member.csize,
                            functools.partial(self.nested, split))
            return Plan(split, "kaggle", f.local, self.record.archive, f.size, member.csize, 0.0,
                        stream_entries, classes=split == "train", copy=self.copy,
                        streams=(stream,), place=place, redo=self.redo)
        items = self.members(split)
        if not items:
            raise PrepError("%s holds no %s images; is it the competition's zip? %s"
                            % (f.path, split, sources.redo("kaggle", split)))
        folders = sorted({it.path.split("/")[0] for it in items}) if split == "train" else []
        log.info("%s: %s images in %s%s (its central directory)", split, thousands(len(items)),
                 f.path, " in %d classes" % len(folders) if folders else "")
        if split == "val":
            folders, items = place_val(self.cfg, items)
        return Plan(split, "kaggle", f.local, self.record.archive, f.size, f.size,
                    max(it.mtime for it in items),
                    lambda: flat_entries(folders, items), classes=split == "train", copy=self.copy,
                    redo=self.redo)

    def members(self, split: str) -> list[Item]:
        """The split's images where their data lies: every local header read in file order and
        checked against the central directory, as 01 reads them (nothing between them, the
        directory read again at the end), no data read."""
        d, items = self.directory, []
        with self.damaged(), os.fdopen(self._open(), "rb", buffering=0) as raw:
            for m in d.members(Source(raw)):
                e = m.entry
                named = kaggle_member(e.name, d.label)
                if named is not None and named.split == split:
                    items.append(Item(named.path.split("/", 1)[1], self.file.local, m.data_offset,
                                      e.size, e.mtime, rel=e.name, method=e.method, csize=e.csize,
                                      crc=e.crc))
        return items

    def nested(self, split: str, check: bool) -> Iterator[sourceread.Entry]:
        """The split's images in the nested tar.gz, as 01 reads them: the zip member's CRC-32 and
        the gzip's own checked at its end (`check`: nothing more to check)."""
        d, k = self.directory, self.zplan.nested
        with self.damaged(), os.fdopen(self._open(), "rb") as raw:
            src = Source(raw)
            src.skip_to(d.start_of(k))
            for e in sourceread.kaggle_entries(d, src, k, k + 1):
                if e.named.split == split:
                    yield e


SourceFiles = Union[HubFiles, KaggleZip]


def open_source(cfg: Inputs, name: str, splits: list[str]) -> SourceFiles:
    """The files 00_download.sh --source NAME left (hf, kaggle), checked as 01 checks them before
    it reads them, their side files kept for 02 and 03."""
    return HubFiles(cfg) if name == "hf" else KaggleZip(cfg, splits)


# ----------------------------------------------------------------------------- choosing the source

def need_root(root: str) -> None:
    """ROOT must be a folder before any split is planned."""
    if not os.path.isdir(root):
        raise PrepError("ROOT '%s' is not a folder; pass --root DIR (the folder holding downloads/)"
                        % root)


def plan_split(cfg: Inputs, split: str, from_tree: bool, other: str,
               source: Optional[SourceFiles] = None) -> Plan:
    """The plan of a split: another source's files (`source`, open_source), the tree 01 made
    (from_tree), else the split's archive in ROOT/downloads/ (`other`: what else the user can do
    when it is not there)."""
    if source is not None:
        return source.plan(split)
    if from_tree:
        return plan_train_tree(cfg) if split == "train" else plan_flat_tree(cfg, split)
    archive = find_archive(Config(cfg.root), split, other)
    check_archive(archive, split)
    if split == "train":
        return plan_train_archive(archive)
    return plan_flat_archive(cfg, split, archive)
