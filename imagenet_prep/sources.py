"""01_unzip.sh --source hf|kaggle: the files 00_download.sh --source ... downloaded, into the tree.

The tree is the image-net.org route's, name for name (train/WNID/WNID_N.JPEG, val/ILSVRC2012_val_N
.JPEG flat, test/ILSVRC2012_test_N.JPEG), with the same class records, manifests and done markers,
so 02-05 see no difference. What 00 leaves, and 01 reads strictly (load_record):

    ROOT/downloads/hf/source.json        the repository, revision, layout ("tar" or "parquet"), and
    ROOT/downloads/hf/data/...           every file of the splits asked: path, split, size,
    ROOT/downloads/hf/classes.py         SHA-256, verified
    ROOT/downloads/kaggle/source.json    the one zip: path, split "all", size, no checksum, verified
    ROOT/downloads/kaggle/imagenet-object-localization-challenge.zip

The members of a split arrive in any order and from several files (the Hub's train images are
mixed across its tar.gz files; the zip's order is not promised), so a split is built in a staging
folder beside its final place (Stage): ROOT/.train.tmp-hf/WNID/NAME, ROOT/.val.tmp-kaggle/NAME.
What is proven there is listed in an append-only journal, ROOT/.01_unzip/source-SOURCE-SPLIT
.journal, one line per file written:

    F <unit> <size> <sha256> <kind> <label> <path>     a file written (unit "-": proven by itself)
    D <unit>                                           every file of that unit is proven

A Hub file is a unit, proven when its whole SHA-256 matched; a Kaggle member is proven by its own
CRC-32 (unit "-"), except those inside the older zip's nested tar.gz, whose unit is that member.
The checkpoint ROOT/.01_unzip/source-SOURCE-SPLIT.json records how long the journal was when the
tree and it were last synced (at most every few seconds): a rerun cuts the journal there, removes
from the staging folder every file that no proven line names, and reads only what is not proven
(whole Hub files; Kaggle members). Only when every unit of the split is proven are the class
folders renamed into train/ with their records (train.finish_train then verifies and writes the
manifest and the marker), or the staging folder renamed to val/ or test/ (unzip.finish_flat).

A Hub file whose SHA-256 is wrong stops the run with exit 1 naming it, and what it wrote is
removed; it is remembered (by size, time and inode) in the checkpoint, so a rerun says so at once
until the file is replaced by a new download. A zip member whose CRC-32 is wrong stops it too;
only its own file is removed (the members proven before it stay).

A unit's work (Extraction.hf_unit, .kaggle_unit) takes a file and writes through StageFiles into
the staging folders; 01 --stream --source can give it a stream of bytes instead (the readers of
sourceread take any reader) and keep the rest: Stage, its journal, the placing of a split.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple, Optional

from . import facts
from .console import (DISK_FULL, ErrorList, PrepError, disk_full_text, human, log, preflight, shown,
                      some, thousands)
from .extract import (Config, Copy, create_file, done_marker, official_counts, resolve_final,
                      write_chunks)
from .files import (TMP_MARK, Lock, NotRegular, clear_temps, open_regular, parse_json, read_json,
                    read_regular, remove_tree, try_flock, write_if_changed, write_json)
from .parallel import run_parallel
from .progress import Progress
from .sourceread import Entry, hf_parquet_entries, hf_tar_entries, kaggle_entries
from .sourcenames import (HF_REPO, KAGGLE_COMPETITION, KAGGLE_FILES, KAGGLE_NESTED, KAGGLE_ZIP, NESTED,
                          SPLITS, hf_data_file, kaggle_member, marker_archive)
from .tarstream import REDO, Source
from .train import (check_class_folders, class_pattern, clear_split_leftovers, finish_train,
                    read_record, replace_class, train_done)
from .unzip import RE_FLAT, finish_flat, refuse_unfinished
from .zipread import ZipDirectory, file_range

NAMES = {"hf": "Hugging Face (%s)" % HF_REPO, "kaggle": "Kaggle (%s)" % KAGGLE_COMPETITION}
RECORD = "source.json"
RECORD_MAX = 1 << 20              # source.json: a few hundred files at most
FILES_MAX = 10000                 # files one record may list
SIZE_MAX = 1 << 50                # the largest file size believed (1 PiB)
KAGGLE_TEXT_MAX = {"LOC_train_solution.csv": 256 << 20}   # the others: KAGGLE_TEXT_DEFAULT
KAGGLE_TEXT_DEFAULT = 64 << 20
KAGGLE_FIRST_LINE = {"LOC_synset_mapping.txt": re.compile(r"n[0-9]{8} \S"),
                     "LOC_val_solution.csv": re.compile(r"ImageId,PredictionString\Z"),
                     "LOC_train_solution.csv": re.compile(r"ImageId,PredictionString\Z"),
                     "LOC_sample_submission.csv": re.compile(r"ImageId,PredictionString\Z")}
HF_LAYOUTS = {"tar": "tar.gz", "parquet": "parquet"}
HASHES_FROM = ("package", "the Hub's API")
CHECKPOINT_SECONDS = 5.0          # at most one sync of the tree (and checkpoint) this often
RANGE_MAX = 256 << 20             # the Kaggle zip is read in ranges of at most this many bytes ...
RANGE_MIN = 64 << 10              # ... and at least this many (or one member)
RANGES_PER_JOB = 4                # ... so that every worker has a few


def redo(source: str, splits: str) -> str:
    return "run 00_download.sh --source %s %s" % (source, splits)


# ----------------------------------------------------------------------------- what 00 wrote

@dataclass(frozen=True)
class SourceFile:
    """A file of a source as 00's record lists it, and where it lies."""
    path: str                     # in the source: data/..., or the zip's name
    split: str                    # train, val, test; "all" (the Kaggle zip)
    size: int
    sha256: Optional[str]         # None: the source publishes none (Kaggle)
    verified: bool                # 00 checked it (Kaggle: its size, as the storage link gave it)
    local: str                    # ROOT/downloads/SOURCE/path


@dataclass(frozen=True)
class Record:
    """ROOT/downloads/SOURCE/source.json, checked."""
    source: str
    folder: str                   # ROOT/downloads/SOURCE
    files: tuple[SourceFile, ...]
    revision: str = ""            # hf: the commit the files are from ...
    asked: str = ""               # ... the revision as the user gave it
    layout: str = ""              # ... "tar" or "parquet"
    hashes_from: str = ""         # ... "package" or "the Hub's API"

    def of(self, split: str) -> list[SourceFile]:
        return [f for f in self.files if f.split in (split, "all")]

    @property
    def archive(self) -> str:
        """What the done markers name as the split's archive."""
        return marker_archive(self.source, self.revision)

    def archive_size(self, split: str) -> int:
        return sum(f.size for f in self.of(split))


FIELDS = {"hf": ("source", "repo", "revision", "asked", "layout", "hashes_from", "files"),
          "kaggle": ("source", "competition", "files")}
FILE_FIELDS = ("path", "split", "size", "sha256", "verified")


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice: %s" % some(sorted(k for k in set(keys) if keys.count(k) > 1)))
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError("%s is not a JSON number" % name)


def load_record(root: str, source: str) -> Record:
    """00's record of a source's files (ROOT/downloads/SOURCE/source.json): read only as a regular
    file of at most RECORD_MAX bytes, every field checked. A PrepError says what is wrong and to
    run 00 again (which writes it)."""
    folder = os.path.join(root, "downloads", source)
    path = os.path.join(folder, RECORD)
    again = ("it is 00_download.sh's record of the files it downloaded: %s to write it again"
             % redo(source, "SPLIT"))
    try:
        data = read_regular(path, again, limit=RECORD_MAX)
    except FileNotFoundError:
        raise PrepError("%s not found: the %s files are downloaded by 00_download.sh first: %s "
                        "(SPLIT: train val test all), then run this again"
                        % (path, NAMES[source], redo(source, "SPLIT"))) from None
    try:
        doc = parse_json(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
        return _record(doc, source, folder)
    except (UnicodeDecodeError, ValueError) as e:
        raise PrepError("%s is not a record this script can use (%s); %s" % (path, e, again)) from None


def _record(doc: object, source: str, folder: str) -> Record:
    """The Record of a parsed source.json; ValueError says what does not fit."""
    if not isinstance(doc, dict) or sorted(doc) != sorted(FIELDS[source]):
        raise ValueError("its fields must be exactly %s" % ", ".join(FIELDS[source]))
    if doc["source"] != source:
        raise ValueError("it is the record of source %r, not %r" % (doc["source"], source))
    extra = {}
    if source == "hf":
        if doc["repo"] != HF_REPO:
            raise ValueError("repo is %r, not %s" % (doc["repo"], HF_REPO))
        if not (isinstance(doc["revision"], str) and re.fullmatch(r"[0-9a-f]{40}", doc["revision"])):
            raise ValueError("revision is not a commit hash (40 hex digits)")
        if not (isinstance(doc["asked"], str) and 0 < len(doc["asked"]) <= 256
                and doc["asked"].isprintable()):
            raise ValueError("asked is not the revision as given (printable text)")
        if doc["layout"] not in HF_LAYOUTS:
            raise ValueError("layout is %r, not tar or parquet" % (doc["layout"],))
        if doc["hashes_from"] not in HASHES_FROM:
            raise ValueError("hashes_from is %r, not one of %s" % (doc["hashes_from"], HASHES_FROM))
        extra = {k: doc[k] for k in ("revision", "asked", "layout", "hashes_from")}
    elif doc["competition"] != KAGGLE_COMPETITION:
        raise ValueError("competition is %r, not %s" % (doc["competition"], KAGGLE_COMPETITION))
    items = doc["files"]
    if not isinstance(items, list) or not 0 < len(items) <= FILES_MAX:
        raise ValueError("files is not a list of 1 to %d files" % FILES_MAX)
    files, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or sorted(item) != sorted(FILE_FIELDS):
            raise ValueError("files[%d]: its fields must be exactly %s" % (i, ", ".join(FILE_FIELDS)))
        p, split, size, sha, ok = (item[k] for k in FILE_FIELDS)
        where = "files[%d] (%s)" % (i, shown(str(p)))
        if not isinstance(p, str) or p in seen:
            raise ValueError("%s: path is not text, or listed twice" % where)
        seen.add(p)
        if type(size) is not int or not 0 <= size <= SIZE_MAX:
            raise ValueError("%s: size is not a whole number of bytes" % where)
        if type(ok) is not bool:
            raise ValueError("%s: verified is not true or false" % where)
        if source == "hf":
            try:
                layout, named = hf_data_file(p)
            except PrepError as e:
                raise ValueError("%s: %s" % (where, e)) from None
            if layout != HF_LAYOUTS[doc["layout"]] or split != named:
                raise ValueError("%s: split %r and layout %s, but the path is of split %s, layout %s"
                                 % (where, split, doc["layout"], named, layout))
            if not (isinstance(sha, str) and facts.SHA256_RE.match(sha)):
                raise ValueError("%s: sha256 is not 64 lowercase hex digits" % where)
        elif (p, split, sha) != (KAGGLE_ZIP, "all", None):
            raise ValueError("%s: the Kaggle record lists one file, %s, split \"all\", sha256 null"
                             % (where, KAGGLE_ZIP))
        files.append(SourceFile(p, split, size, sha, ok, os.path.join(folder, *p.split("/"))))
    return Record(source, folder, tuple(files), **extra)


def check_files(record: Record, files: list[SourceFile], splits: str) -> None:
    """Every file verified by 00 and on disk as a regular file of its recorded size; else a
    PrepError listing what is not, and what to run."""
    problems = []
    for f in files:
        if not f.verified:
            problems.append("%s is not verified yet (00_download.sh has not finished it)" % f.path)
            continue
        try:
            st = os.lstat(f.local)
        except FileNotFoundError:
            problems.append("%s is missing" % f.local)
            continue
        if not os.path.isfile(f.local) or os.path.islink(f.local):
            problems.append("%s is not a regular file" % f.local)
        elif st.st_size != f.size:
            problems.append("%s is %s bytes, %s says %s" % (f.local, thousands(st.st_size), RECORD,
                                                            thousands(f.size)))
    if problems:
        raise PrepError("%s: %s; %s (it downloads and checks them), then run this again"
                        % (splits, some(problems, 4), redo(record.source, splits)))


def file_id(path: str) -> list[int]:
    """What tells a file from a new download of it: size, modification time, inode."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


# ----------------------------------------------------------------------------- the sources' side files

def hf_classes(root: str, record: Record) -> list[str]:
    """The Hub's classes.py as 00 downloaded it, read as data (never run) by 02's reader, and kept
    as ROOT/hf/classes.py for 02; its WNIDs in its order."""
    from .meta import FORMAT_HF, read_class_list
    path = os.path.join(record.folder, "classes.py")
    if not os.path.lexists(path):
        raise PrepError("%s not found: the class list of %s comes with its files; %s"
                        % (path, HF_REPO, redo("hf", "SPLIT")))
    found = read_class_list(Path(path), Path(root))
    if found.form != FORMAT_HF:
        raise PrepError("%s is a %s, not the Hub's classes.py; %s"
                        % (path, found.form, redo("hf", "SPLIT")))
    keep(root, "hf", "classes.py", found.source.data)
    return [w for w, _ in found.pairs]


def label_order(wnids: list[str], path: str) -> list[str]:
    """The classes a Parquet label indexes: the WNIDs of classes.py, which must be sorted, each
    once (the labels are indexes in that order)."""
    if wnids != sorted(set(wnids)):
        raise PrepError("%s: its classes are not in sorted-WNID order, each once, so the Parquet "
                        "labels (indexes in that order) cannot be read against it; %s"
                        % (path, redo("hf", "SPLIT")))
    return wnids


def keep(root: str, folder: str, name: str, data: bytes) -> None:
    """A side file of a source, as ROOT/FOLDER/NAME (written atomically, if it changed; what a
    killed run was writing of it goes)."""
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    clear_temps(os.path.join(root, folder), name)
    if write_if_changed(os.path.join(root, folder, name), data):
        log.info("%s/%s: written (%s)", folder, name, human(len(data)))


def kaggle_text(name: str, data: bytes, label: str) -> bytes:
    """One of the zip's LOC_* files, checked as the text it must be: UTF-8, no control
    characters but line ends and tabs, its first line of the expected form."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PrepError("%s: member %s is not UTF-8 text (%s); the zip is not the competition's"
                        % (label, name, e)) from None
    bare = text.replace("\n", "").replace("\r", "").replace("\t", "")
    bad = None if bare.isprintable() else next(c for c in bare if not c.isprintable())
    first = text.split("\n", 1)[0].rstrip("\r")
    if bad is not None or not KAGGLE_FIRST_LINE[name].match(first):
        raise PrepError("%s: member %s is not the competition's file (%s); the zip is not the one "
                        "expected" % (label, name, "a control character %r in it" % bad
                                      if bad is not None else "its first line is %r" % first[:80]))
    return data


# ----------------------------------------------------------------------------- the tree writer

class Written(NamedTuple):
    """A file written into a staging folder (a line of the journal)."""
    path: str                     # canonical: train/WNID/NAME, val/NAME, test/NAME
    size: int
    sha: Optional[str]            # None: not hashed (--no-manifest)
    kind: Optional[str]           # images.HeadScan's kind: None for a plain JPEG
    label: Optional[str]          # val: the class its name carries (the Hub's names)


LINE_F = re.compile(r"F\t([^\t\n]{1,400})\t([0-9]{1,15})\t(-|[0-9a-f]{64})\t([^\t\n]{1,40})\t"
                    r"(-|n[0-9]{8})\t([^\t\n]{1,400})\Z")
LINE_D = re.compile(r"D\t([^\t\n]{1,400})\Z")
LINE_MAX = 1024                   # the longest line of a journal
SELF = "-"                        # the unit of a line proven by itself (a Kaggle member's CRC-32)


def canonical(path: str, split: str) -> bool:
    """`path` is the canonical name of an image of `split` (a journal is input too: its names are
    used as paths only once they are one)."""
    parts = path.split("/")
    if split == "train":
        return len(parts) == 3 and parts[0] == "train" and bool(facts.WNID_RE.match(parts[1])) \
            and bool(class_pattern(parts[1]).match(parts[2]))
    return len(parts) == 2 and parts[0] == split and bool(RE_FLAT[split].match(parts[1]))


def journal_line(unit: str, w: Written) -> str:
    return "F\t%s\t%d\t%s\t%s\t%s\t%s\n" % (unit, w.size, w.sha or "-", w.kind or "-",
                                             w.label or "-", w.path)


class Stage:
    """A split being built from a source's files: its staging folder (ROOT/.SPLIT.tmp-SOURCE,
    beside the split's final folder, on the same file system), its journal and its checkpoint
    (ROOT/.01_unzip/source-SOURCE-SPLIT.journal / .json). `identity` is what the files are (a
    checkpoint of other files is not resumed). open() resumes or starts; record() adds proven
    files; checkpoint() makes them durable; place_train / place_flat give the split its final
    name."""

    def __init__(self, cfg: Config, split: str, source: str, identity: dict) -> None:
        self.cfg, self.split, self.source, self.identity = cfg, split, source, identity
        self.final = resolve_final(cfg.root, split)
        self.dir = os.path.join(os.path.dirname(self.final),
                                ".%s%s%s" % (os.path.basename(self.final), TMP_MARK, source))
        base = os.path.join(cfg.state, "source-%s-%s" % (source, split))
        self.journal, self.cp = base + ".journal", base + ".json"
        self.entries: dict[str, Written] = {}      # proven files, by canonical path
        self.done: set[str] = set()                # proven units
        self.bad: dict[str, dict] = {}             # files found damaged: path -> file_id, message
        self.phase = "reading"                     # "placing": train's classes being renamed
        self.fd, self.jf, self.last = -1, None, 0.0

    # -- resuming -------------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the staging folder (made if needed), then resume from the checkpoint: the journal
        cut to its synced length, every file that no proven line names removed. Anything that
        does not fit is said, and the split starts over."""
        os.makedirs(self.dir, 0o755, exist_ok=True)
        self.fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not try_flock(self.fd):
            os.close(self.fd)
            self.fd = -1
            raise PrepError("%s: another run is writing %s; let it finish, or stop it, then run "
                            "again" % (self.split, self.dir))
        clear_temps(self.cfg.state, os.path.basename(self.cp))
        clear_split_leftovers(self.cfg, self.split, self.final, os.path.basename(self.dir))
        why = self._load()
        if why is None:
            why = self._scan()
        if why:
            log.info("%s: %s; extracting the split from its start", self.split, why)
            self._wipe()
        self.jf = open(self.journal, "ab")
        if self.entries:
            log.info("%s: resuming: %s files proven by an earlier run are kept (%s)", self.split,
                     thousands(len(self.entries)), self.dir)

    def _load(self) -> Optional[str]:
        """Read the checkpoint and the journal up to its synced length; why not, if they cannot
        be used (None: resumed, or nothing to resume)."""
        doc = read_json(self.cp, "01_unzip.sh --source writes it; delete it (the split is then "
                                 "extracted from its start) and run again")
        if doc is None:
            journal = os.path.lexists(self.journal) and (os.path.islink(self.journal) or not
                                                         os.path.isfile(self.journal) or
                                                         os.path.getsize(self.journal) > 0)
            return "no usable checkpoint %s" % self.cp if journal or os.listdir(self.dir) else None
        ok = isinstance(doc, dict) and doc.get("version") == 1 and type(doc.get("journal")) is int \
            and doc["journal"] >= 0 and doc.get("phase") in ("reading", "placing") \
            and isinstance(doc.get("bad"), dict)
        if not ok:
            return "%s is not a checkpoint of this version" % self.cp
        self.bad = {p: v for p, v in doc["bad"].items() if isinstance(v, dict)}
        if doc.get("identity") != self.identity:
            return "the files are not those of the interrupted run (another revision, or downloaded " \
                   "anew)"
        length = doc["journal"]
        try:
            with os.fdopen(open_regular(self.journal), "rb") as f:
                if os.fstat(f.fileno()).st_size < length:
                    return "%s is shorter than its checkpoint says" % self.journal
                why = self._parse(f, length)
        except FileNotFoundError:
            return None if length == 0 else "%s is missing" % self.journal
        except NotRegular as e:
            return "%s is %s" % (self.journal, e)
        except PrepError as e:                           # a file listed twice
            why = str(e)
        if why:
            return why
        os.truncate(self.journal, length)
        self.phase = doc["phase"]
        return None

    def _parse(self, f: BinaryIO, length: int) -> Optional[str]:
        """The proven files and units of the journal's first `length` bytes (whole lines); why
        not, if a line is not one of a journal."""
        pending: dict[str, list[Written]] = {}
        pos = n = 0
        while pos < length:
            raw = f.readline(min(LINE_MAX, length - pos))
            n += 1
            pos += len(raw)
            if not raw.endswith(b"\n"):
                return "%s line %d is cut (or too long) where its checkpoint says it ends" \
                    % (self.journal, n)
            line = raw[:-1].decode("utf-8", "replace")
            m = LINE_F.match(line)
            if m:
                unit, size, sha, kind, label, path = m.groups()
                if not canonical(path, self.split):
                    return "%s line %d names no image of %s" % (self.journal, n, self.split)
                w = Written(path, int(size), None if sha == "-" else sha, None if kind == "-" else kind,
                            None if label == "-" else label)
                if unit == SELF:
                    self._add([w])
                else:
                    pending.setdefault(unit, []).append(w)
                continue
            m = LINE_D.match(line)
            if not m:
                return "%s line %d is not a line of a journal" % (self.journal, n)
            self._add(pending.pop(m.group(1), []))
            self.done.add(m.group(1))
        return None

    def _add(self, items: list[Written]) -> None:
        for w in items:
            if w.path in self.entries:
                raise PrepError("%s: %s is written a second time; refused (two members of one name "
                                "in the source?)" % (self.split, w.path))
            self.entries[w.path] = w

    def _scan(self) -> Optional[str]:
        """Remove from the staging folder what no proven line names; why the split must start
        over, if a proven file is missing there (unless train's classes are being placed)."""
        found, removed = set(), 0
        depth = 2 if self.split == "train" else 1
        for e in os.scandir(self.dir):
            if depth == 2 and e.is_dir(follow_symlinks=False) and facts.WNID_RE.match(e.name):
                for f in os.scandir(e.path):
                    path = "train/%s/%s" % (e.name, f.name)
                    if f.is_file(follow_symlinks=False) and path in self.entries:
                        found.add(path)
                    else:
                        removed += 1
                        _remove(f.path)
                continue
            path = "%s/%s" % (self.split, e.name)
            if depth == 1 and e.is_file(follow_symlinks=False) and path in self.entries:
                found.add(path)
            else:
                removed += 1
                _remove(e.path)
        if removed:
            log.info("%s: removed %s file(s) of %s that an interrupted run had not proven yet",
                     self.split, thousands(removed), self.dir)
        missing = len(self.entries) - len(found)
        if missing and self.phase == "reading":
            lost = sorted(set(self.entries) - found)
            return "%s lacks %d file(s) the journal lists as written (e.g. %s): something removed " \
                   "them" % (self.dir, missing, lost[0])
        return None

    def _wipe(self) -> None:
        for e in os.scandir(self.dir):
            _remove(e.path)
        _remove(self.journal)
        with open(self.journal, "xb"):
            pass
        self.entries, self.done, self.phase = {}, set(), "reading"
        self.checkpoint(force=True, sync=False)

    # -- what a run adds ------------------------------------------------------------------------
    def record(self, unit: str, items: list[Written]) -> None:
        """Files of `unit`, proven, and the unit itself done; unit "-": files each proven by
        itself, of no unit."""
        lines = "".join(journal_line(unit, w) for w in items)
        if unit != SELF:
            lines += "D\t%s\n" % unit
        self._add(items)
        self.jf.write(lines.encode("utf-8"))
        if unit != SELF:
            self.done.add(unit)

    def checkpoint(self, force: bool = False, sync: bool = True) -> None:
        """At most every CHECKPOINT_SECONDS (or now, `force`): sync the tree and the journal,
        then record the journal's length."""
        if not force and time.monotonic() - self.last < CHECKPOINT_SECONDS:
            return
        length = 0
        if self.jf is not None:
            self.jf.flush()
            if sync:
                from .stream import sync_tree
                sync_tree(self.dir)
                os.fsync(self.jf.fileno())
            length = self.jf.tell()
        write_json(self.cp, {"version": 1, "source": self.source, "split": self.split,
                             "identity": self.identity, "journal": length, "phase": self.phase,
                             "bad": self.bad})
        self.last = time.monotonic()

    def close(self) -> None:
        """Checkpoint what is done (a rerun resumes there) and let go of the folder."""
        try:
            if self.jf is not None:
                self.checkpoint(force=True)
        finally:
            self.release()

    def release(self) -> None:
        if self.jf is not None:
            self.jf.close()
            self.jf = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def forget(self) -> None:
        """The split is done: its staging folder (empty, or renamed into place), journal and
        checkpoint go."""
        self.release()
        remove_tree(self.dir)
        for path in (self.journal, self.cp):
            if os.path.exists(path):
                os.remove(path)

    # -- damaged files --------------------------------------------------------------------------
    def known_bad(self, f: SourceFile) -> Optional[str]:
        """What an earlier run found wrong with file f, if f has not changed since."""
        seen = self.bad.get(f.path)
        if seen is None:
            return None
        if seen.get("id") == file_id(f.local) and isinstance(seen.get("said"), str):
            return shown(seen["said"])
        del self.bad[f.path]
        return None


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def forget_stages(cfg: Config, source: str, split: str) -> None:
    """A split done (by any route): what runs of `source` left for it goes."""
    final = resolve_final(cfg.root, split)
    stage = os.path.join(os.path.dirname(final), ".%s%s%s" % (os.path.basename(final), TMP_MARK,
                                                              source))
    base = os.path.join(cfg.state, "source-%s-%s" % (source, split))
    if os.path.isdir(stage):
        fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not try_flock(fd):
                return
            remove_tree(stage)
        finally:
            os.close(fd)
    for path in (base + ".journal", base + ".json"):
        if os.path.exists(path):
            os.remove(path)


class StageFiles:
    """What one unit writes into the staging folders of its splits (`dirs`, split -> folder):
    every file new (a second of one name is refused), class folders made as needed; remove()
    takes back all it wrote (the unit failed)."""

    def __init__(self, dirs: dict[str, str], digest: bool) -> None:
        self.dirs, self.digest = dirs, digest
        self.fds: dict[str, int] = {}
        self.classes: set[str] = set()
        self.written: list[tuple[str, str]] = []     # (split, path in its staging folder)

    def _fd(self, split: str) -> int:
        if split not in self.fds:
            self.fds[split] = os.open(self.dirs[split], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self.fds[split]

    def write(self, e: Entry) -> Written:
        split, rel = e.named.path.split("/", 1)
        fd = self._fd(split)
        if split == "train" and e.named.wnid not in self.classes:
            try:
                os.mkdir(e.named.wnid, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            self.classes.add(e.named.wnid)
        out = create_file(fd, rel, e.origin)
        self.written.append((split, rel))
        try:
            kind, sha = write_chunks(e.chunks(), out, e.mode, e.mtime, self.digest)
        finally:
            os.close(out)
        return Written(e.named.path, e.size, sha, kind, e.named.wnid if split == "val" else None)

    def remove(self) -> None:
        for split, rel in self.written:
            try:
                os.unlink(rel, dir_fd=self._fd(split))
            except FileNotFoundError:
                pass
        self.written = []

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


class Hashed:
    """A reader that hashes (SHA-256) and counts every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha, self.count = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def hash_file(f: BinaryIO) -> Hashed:
    h = Hashed(f)
    h.drain()
    return h


def hf_check(f: SourceFile, hashed: Hashed, stopped: Optional[str],
             undone: str = "what this file wrote here was removed") -> None:
    """The whole file's size and SHA-256, as read, against 00's record (`undone`: what the
    caller leaves undone when they are wrong)."""
    digest = hashed.sha.hexdigest()
    if hashed.count == f.size and digest == f.sha256:
        return
    what = ("%s bytes, %s says %s" % (thousands(hashed.count), RECORD, thousands(f.size))
            if hashed.count != f.size else
            "SHA-256 mismatch (the file gives %s, %s says %s)" % (digest, RECORD, f.sha256))
    raise Damaged("%s: %s: the file is damaged%s; delete it (rm %s) and %s: it downloads the "
                  "file again; %s"
                  % (f.path, what, " (reading it stopped at: %s)" % stopped if stopped else "",
                     f.local, redo("hf", f.split), undone))


# ----------------------------------------------------------------------------- units of work

@dataclass(frozen=True)
class Unit:
    """A piece of a source read at once: a Hub file, or a range of the Kaggle zip's members in
    file order ([first, end)). `size`: its bytes (progress, disk); `splits`: those it writes."""
    id: str
    size: int
    splits: tuple[str, ...]
    file: Optional[SourceFile] = None
    first: int = 0
    end: int = 0
    nested: bool = False


@dataclass
class Done:
    """What became of a unit: kind "ok" (note: what it held), "bad" (a damaged file: `file`, its
    id), "error" or "full" (the disk; start no more units), with the message; `written`: the files
    it proved, by split (also when a Kaggle range failed at a later member)."""
    unit: str
    kind: str
    text: str
    written: dict = field(default_factory=dict)
    file: Optional[list] = None


def failed(unit: Unit, e: BaseException, written: Optional[dict] = None) -> Done:
    """A unit's failure as a Done (a worker must not die of it)."""
    if isinstance(e, PrepError):
        return Done(unit.id, "error", str(e), written or {})
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return Done(unit.id, "full", "%s: %s" % (unit.id, disk_full_text(e.filename or ".")),
                    written or {})
    if isinstance(e, OSError):
        return Done(unit.id, "error", "%s: %s" % (unit.id, e), written or {})
    return Done(unit.id, "error", "%s: unexpected %s: %s" % (unit.id, type(e).__name__, e),
                written or {})                 # a bug fails this unit, not the run's bookkeeping


def guarded(work: Callable[[Unit], Done]) -> Callable[[Unit], Done]:
    def run(unit: Unit) -> Done:
        try:
            return work(unit)
        except Exception as e:
            return failed(unit, e)
    return run


class Extraction:
    """One run of 01 --source over the splits asked: the stages, the units, the workers."""

    def __init__(self, cfg: Config, record: Record) -> None:
        self.cfg, self.record, self.source = cfg, record, record.source
        self.stages: dict[str, Stage] = {}
        self.errors = ErrorList()
        self.wnids: list[str] = []                 # hf parquet: the classes, in label order
        self.directory: Optional[ZipDirectory] = None
        self.emit: Optional[Callable[[str, Written], None]] = None
        self.images = 0

    # -- the Hub --------------------------------------------------------------------------------
    def hf_unit(self, unit: Unit) -> Done:
        """One Hub file into its split's staging folder; its size and SHA-256 checked on the
        bytes read. A damaged file is a "bad" Done (remembered); what it wrote is removed."""
        f, split = unit.file, unit.splits[0]
        out = StageFiles({split: self.stages[split].dir}, self.cfg.manifest)
        try:
            try:
                fd = open_regular(f.local)
            except NotRegular as e:
                raise PrepError("%s is %s; %s" % (f.local, e, redo("hf", split))) from None
            with os.fdopen(fd, "rb") as raw:
                before = file_id(f.local)
                if f.path.endswith(".parquet"):
                    hf_check(f, hash_file(raw), None)          # pyarrow reads the file itself
                    got = [out.write(e) for e in hf_parquet_entries(f.local, split, self.wnids, f.path)]
                else:
                    got = self.hf_targz(raw, f, out)
                if file_id(f.local) != before:
                    raise PrepError("%s changed while it was read (a new download?); run this again"
                                    % f.local)
        except PrepError as e:
            out.remove()
            if isinstance(e, Damaged):
                return Done(unit.id, "bad", str(e), file=file_id(f.local))
            raise
        except OSError:
            out.remove()
            raise
        finally:
            out.close()
        return Done(unit.id, "ok", "%s images, its size and SHA-256 as %s says"
                    % (thousands(len(got)), RECORD), {split: got})

    def hf_targz(self, raw: BinaryIO, f: SourceFile, out: StageFiles) -> list[Written]:
        """The images of a Hub tar.gz from `raw`, its bytes from the first (a file, or a stream:
        01 --stream --source), written through `out`; its size and SHA-256 checked on those
        bytes, also when the reading stops early (a Damaged error then says both)."""
        hashed = Hashed(raw)
        got = []
        try:
            for e in hf_tar_entries(hashed, f.split, f.path):
                got.append(out.write(e))
        except PrepError as e:
            hashed.drain()
            hf_check(f, hashed, str(e))
            raise
        hashed.drain()
        hf_check(f, hashed, None)
        return got

    # -- Kaggle ---------------------------------------------------------------------------------
    def kaggle_unit(self, unit: Unit) -> Done:
        """A range of the zip's members in file order into the staging folders of its splits;
        members already proven are skipped (not read). Each member is proven by its CRC-32 once
        written (a failure later keeps it), but those of the nested tar.gz only all together."""
        d, f = self.directory, self.record.files[0]
        out = StageFiles({s: self.stages[s].dir for s in unit.splits}, self.cfg.manifest)
        got: dict[str, list[Written]] = {s: [] for s in unit.splits}
        try:
            with os.fdopen(open_regular(f.local), "rb") as raw:
                src = Source(raw)
                src.skip_to(d.start_of(unit.first))
                self.kaggle_members(src, unit, out, got)
        except Exception as e:
            out.remove()
            if unit.nested:
                got = {}
            if isinstance(e, PrepError) and str(e).endswith(REDO):
                e = PrepError("%s (delete %s and %s; the members extracted and checked so far are "
                              "kept)" % (e, f.local, redo("kaggle", " ".join(self.stages))))
            return failed(unit, e, got)
        finally:
            out.close()
        return Done(unit.id, "ok", "%s images" % thousands(sum(len(v) for v in got.values())), got)

    def kaggle_members(self, src: Source, unit: Unit, out: StageFiles,
                       got: dict[str, list[Written]]) -> None:
        """The members of `unit` from `src`, at the first one's local header (a file, or a
        stream: 01 --stream --source), written through `out` into `got` (those of splits not in
        `got`, or proven already, are skipped: not read)."""
        for e in kaggle_entries(self.directory, src, unit.first, unit.end):
            split = e.named.split
            if split not in got or e.named.path in self.stages[split].entries:
                continue
            w = out.write(e)
            if unit.nested:
                got[split].append(w)
                continue
            out.written = []                          # proven: kept whatever comes later
            if self.emit is not None:
                self.emit(split, w)
            else:
                got[split].append(w)

    # -- running them ---------------------------------------------------------------------------
    def run(self, units: list[Unit], work: Callable[[Unit], Done], what: str) -> None:
        """The units, in worker processes (--jobs) or, for one job or one unit, here; each
        result recorded in its splits' journals as it comes, a checkpoint every few seconds."""
        total = sum(u.size for u in units)
        bar = Progress(what, total, "B")
        t0, done = time.monotonic(), 0
        stop: list[str] = []

        def todo() -> Iterator[Unit]:
            for u in units:
                if stop:
                    return
                yield u

        for stage in self.stages.values():       # nothing buffered is copied into the workers
            if stage.jf is not None:
                stage.jf.flush()
        if self.cfg.jobs == 1 or len(units) == 1:
            self.emit = self._emit
            results = ((u, guarded(work)(u), None) for u in todo())
        else:
            self.emit = None
            results = run_parallel(guarded(work), todo(), min(self.cfg.jobs, len(units)))
        for unit, result, exitcode in results:
            done += unit.size
            if result is None:
                self.errors.add("%s: the worker reading it died (exit code %s: killed, or out of "
                                "memory?); a rerun reads it again" % (unit.id, exitcode))
                continue
            whole = unit.file or unit.nested             # else members proven by their CRC-32
            for split, items in result.written.items():
                if items or (whole and result.kind == "ok"):
                    self.stages[split].record(unit.id if whole else SELF, items)
                self.images += len(items)
            if result.kind == "ok":
                if unit.file:
                    log.info("%s: %s", unit.id, result.text)
            else:
                self.errors.add(result.text)
                if result.kind == "bad":
                    self.stages[unit.splits[0]].bad[unit.file.path] = {"id": result.file,
                                                                       "said": result.text}
                if result.kind == "full":
                    stop.append(unit.id)
            for s in unit.splits:                 # a whole file or tar.gz: worth a sync at once
                self.stages[s].checkpoint(force=bool(unit.file or unit.nested))
            bar.update(done, "%s images, %s" % (thousands(self.images), bar.rate(done)))
        bar.close()
        dt = time.monotonic() - t0
        log.info("%s: this run read %s in %.1f s (%.1f MiB/s)", what, human(done), dt,
                 done / max(dt, 1e-6) / (1 << 20))

    def _emit(self, split: str, w: Written) -> None:
        """In this process: a member proven by itself goes into the journal at once."""
        stage = self.stages[split]
        stage.record(SELF, [w])
        stage.checkpoint()
        self.images += 1


class Damaged(PrepError):
    """A source file whose bytes are not those 00 verified."""


# ----------------------------------------------------------------------------- placing a split

def group_classes(stage: Stage) -> dict[str, list[Written]]:
    classes: dict[str, list[Written]] = {}
    for w in stage.entries.values():
        classes.setdefault(w.path.split("/")[1], []).append(w)
    return classes


def place_train(stage: Stage, record: Record, copy: Copy) -> None:
    """train: the counts (official ones for an official copy) checked before anything moves, then
    every class folder renamed into train/ with its record, then finish_train."""
    cfg = stage.cfg
    classes = group_classes(stage)
    if not classes:
        raise PrepError("train: the source's files hold no train images; %s"
                        % redo(record.source, "train"))
    if copy.official:
        official_counts("train", record.archive_size("train"), len(classes), len(stage.entries), copy)
    stage.phase = "placing"
    stage.checkpoint(force=True)
    train_dir = os.path.join(cfg.root, "train")
    records = os.path.join(cfg.state, "train")
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(records, exist_ok=True)
    wnids = sorted(classes)
    check_class_folders(train_dir, records, wnids)
    for wnid in wnids:
        files = sorted([w.path.rsplit("/", 1)[1], w.size, w.sha] for w in classes[wnid])
        rec = {"wnid": wnid, "images": len(files), "bytes": sum(f[1] for f in files),
               "special": {w.path.rsplit("/", 1)[1]: w.kind for w in classes[wnid] if w.kind},
               "files": files}
        tmp, final = os.path.join(stage.dir, wnid), os.path.join(train_dir, wnid)
        if os.path.isdir(tmp):
            if os.path.isdir(final):
                replace_class(tmp, final, records, rec)
            else:
                write_json(os.path.join(records, wnid + ".json"), rec, sync=False)
                os.rename(tmp, final)
        elif not (os.path.isdir(final) and (read_record(records, wnid) or {}).get("files") == files):
            raise PrepError("train: class %s is neither in %s nor, as written, in %s: something "
                            "moved it; delete %s and %s* and run again to extract the split anew"
                            % (wnid, stage.dir, train_dir, final, stage.journal[:-len(".journal")]))
    finish_train(cfg, record.archive, record.archive_size("train"), wnids)


def refuse_foreign_classes(cfg: Config) -> None:
    """Before anything is read: class folders in train/ that 01_unzip.sh did not write (no
    matching record) are refused now, not once the split is read (check_class_folders)."""
    train_dir = os.path.join(cfg.root, "train")
    if os.path.isdir(train_dir):
        check_class_folders(train_dir, os.path.join(cfg.state, "train"),
                            sorted(e.name for e in os.scandir(train_dir)
                                   if e.is_dir() and facts.WNID_RE.match(e.name)))


def place_flat(stage: Stage, record: Record) -> None:
    """val or test: the staging folder checked against the journal (names and sizes), then
    finish_flat: the counts, the manifest, the marker, the rename."""
    cfg, split = stage.cfg, stage.split
    names = {w.path.split("/", 1)[1]: w for w in stage.entries.values()}
    if not names:
        raise PrepError("%s: the source's files hold no %s images; %s"
                        % (split, split, redo(record.source, split)))
    there = {e.name: e.stat(follow_symlinks=False).st_size for e in os.scandir(stage.dir)}
    wrong = sorted(n for n in set(there) | set(names) if n not in there or n not in names
                   or there[n] != names[n].size)
    if wrong:
        raise PrepError("%s: %s does not hold the files the journal lists (%s); delete it and %s*, "
                        "then run again" % (split, stage.dir, some(wrong),
                                            stage.journal[:-len(".journal")]))
    with Lock(cfg.marker(split) + ".lock", "another 01_unzip.sh is finishing %s" % split, wait=True):
        if done_marker(cfg, split, stage.final):
            log.info("%s: already done by another process; nothing to do", split)
            return
        refuse_unfinished(cfg, stage.final, split)
        sums = [(n, w.sha) for n, w in names.items() if w.sha]
        finish_flat(cfg, split, stage.dir, stage.final, (record.archive, record.archive_size(split)),
                    (len(names), sum(w.size for w in names.values()), sums))


def hf_val_labels(root: str, stage: Stage) -> None:
    """ROOT/hf/val_labels.csv: the class each val image's name carried, in Kaggle's form (03 reads
    it when there is no devkit)."""
    if any(w.label is None for w in stage.entries.values()):
        raise PrepError("val: some images carry no class in their name; the files are not the "
                        "Hub's; %s" % redo("hf", "val"))
    rows = sorted("%s,%s\n" % (w.path[4:-5], w.label) for w in stage.entries.values())
    keep(root, "hf", "val_labels.csv", ("ImageId,PredictionString\n" + "".join(rows)).encode())


# ----------------------------------------------------------------------------- the command

def split_done(cfg: Config, split: str) -> Optional[dict]:
    """The split's done marker, if the split is complete (by any route)."""
    if split == "train":
        resolve_final(cfg.root, "train")
        return train_done(cfg)
    return done_marker(cfg, split, resolve_final(cfg.root, split))


def done_before(cfg: Config, source: str, split: str) -> Optional[dict]:
    """The split's done marker if it is complete (by any route): said, and what runs of `source`
    (or killed finishes) left for it cleared."""
    doc = split_done(cfg, split)
    if doc is None:
        return None
    final = resolve_final(cfg.root, split)
    log.info("%s: already done (%s%s images, %s in %s, from %s); nothing to do", split,
             "%d classes, " % len(doc["classes"]) if split == "train" else "",
             thousands(doc["images"]), human(doc["bytes"]), final, shown(str(doc.get("archive"))))
    forget_stages(cfg, source, split)
    clear_split_leftovers(cfg, split, final)
    return doc


def remove_files(cfg: Config, record: Record, split: str, doc: Optional[dict]) -> None:
    """--remove-archive, Hub: the split's files, once it is complete and verified from them."""
    if not cfg.remove or doc is None or doc.get("archive") != record.archive \
            or doc.get("archive_size") != record.archive_size(split):
        return
    gone = [f for f in record.of(split) if os.path.isfile(f.local) and os.path.getsize(f.local) == f.size]
    for f in gone:
        os.remove(f.local)
    if gone:
        log.info("%s: removed %d file(s), %s, as asked (--remove-archive): %s; the split is complete "
                 "and verified", split, len(gone), human(sum(f.size for f in gone)),
                 some([f.path for f in gone]))


def extract(cfg: Config, source: str, splits: list[str]) -> int:
    """01_unzip.sh --source SOURCE SPLIT...: the exit code."""
    with Lock(os.path.join(cfg.state, "source-%s.lock" % source),
              "another 01_unzip.sh --source %s is working in this ROOT; let it finish, or stop it, "
              "then run again" % source):
        if source == "hf":
            return extract_hf(cfg, splits)
        return extract_kaggle(cfg, splits)


def hf_copy(record: Record) -> Copy:
    revision, _ = facts.hf_release()
    short = record.revision[:8] + "..."
    if record.revision == revision:
        return Copy("the Hub's tar.gz revision %s" % short, True,
                    "they are not that revision's files: %s" % redo("hf", "SPLIT"))
    return Copy("revision %s of %s is not the package's tar.gz revision (%s...): its counts are "
                "those of its own files" % (short, HF_REPO, revision[:8]), False)


def extract_hf(cfg: Config, splits: list[str]) -> int:
    record, wnids = None, None
    rc = 0
    for split in splits:
        doc = done_before(cfg, "hf", split)
        if doc:
            if cfg.remove:
                record = record or load_record(cfg.root, "hf")
                remove_files(cfg, record, split, doc)
            continue
        if wnids is None:
            record = record or load_record(cfg.root, "hf")
            log.info("hf: %s at revision %s (asked as %s), %s layout, SHA-256 from %s", HF_REPO,
                     record.revision, shown(record.asked), HF_LAYOUTS[record.layout],
                     "the package" if record.hashes_from == "package" else record.hashes_from)
            wnids = hf_classes(cfg.root, record)
            if record.layout == "parquet":
                label_order(wnids, os.path.join(record.folder, "classes.py"))
        try:
            rc = max(rc, hf_split(cfg, record, split, wnids))
        except PrepError as e:
            log.error("error: %s", e)
            rc = 1
    return rc


def hf_split(cfg: Config, record: Record, split: str, wnids: list[str]) -> int:
    files = record.of(split)
    if not files:
        raise PrepError("%s: %s lists no %s files (00 was run for other splits); %s, then run this "
                        "again" % (split, os.path.join(record.folder, RECORD), split,
                                   redo("hf", split)))
    check_files(record, files, split)
    if record.layout == "parquet" and importlib.util.find_spec("pyarrow") is None:
        from .parquetread import pyarrow_modules
        pyarrow_modules()                        # says what to install
    cfg.copy = hf_copy(record)
    stage = Stage(cfg, split, "hf", {"revision": record.revision,
                                     "files": [[f.path, f.size, f.sha256] for f in files]})
    if split == "train":
        refuse_foreign_classes(cfg)
    else:
        refuse_unfinished(cfg, stage.final, split)
    job = Extraction(cfg, record)
    job.stages[split], job.wnids = stage, wnids
    stage.open()
    try:
        for f in files:
            said = stage.known_bad(f)
            if said:
                raise PrepError("%s (found by an earlier run; the file has not changed since)" % said)
        todo = [Unit(f.path, f.size, (split,), f) for f in files if f.path not in stage.done]
        if todo:
            preflight(os.path.dirname(stage.final), sum(u.size for u in todo), split)
            log.info("%s: %d of %d file(s) to read (%s), with %d worker(s)", split, len(todo),
                     len(files), human(sum(u.size for u in todo)), min(cfg.jobs, len(todo)))
            job.run(todo, job.hf_unit, split)
        if job.errors:
            log.error("error: %s: %s; the files read and checked are kept, a rerun reads the rest",
                      split, job.errors.summary())
            return 1
        finish_split(stage, record, cfg.copy)
    finally:
        stage.close()
    stage.forget()
    remove_files(cfg, record, split, split_done(cfg, split))
    return 0


def finish_split(stage: Stage, record: Record, copy: Copy) -> None:
    if stage.split == "train":
        place_train(stage, record, copy)
        return
    if stage.split == "val" and record.source == "hf":
        hf_val_labels(stage.cfg.root, stage)
    place_flat(stage, record)


# ----------------------------------------------------------------------------- Kaggle

@dataclass
class KagglePlan:
    """The zip's members as the central directory lists them: where the images of each split
    are (the ranges to read), how many, and where the LOC_* files and the nested tar.gz are."""
    counts: dict[str, int]
    classes: set
    extra: dict[str, int]            # LOC_* name -> place in file order
    nested: Optional[int]            # the nested tar.gz's place in file order
    units: list[Unit]
    need: int                        # bytes still to write (the images not proven yet)


def kaggle_plan(d: ZipDirectory, stages: dict[str, Stage], jobs: int) -> KagglePlan:
    """Every name checked (kaggle_member) before anything is written; the members of the splits
    asked and not proven yet cut into ranges of file order."""
    counts = {s: 0 for s in SPLITS}
    classes, extra, nested, nested_size = set(), {}, None, 0
    wanted: list[tuple[int, str, int]] = []          # (place, split, bytes) of what is to write
    inline = False
    for k, e in enumerate(d.in_file_order()):
        named = kaggle_member(e.name, d.label)
        if named is None:
            continue
        if named.split == NESTED:
            nested, nested_size = k, e.csize
        elif named.split == "kaggle":
            extra[e.name] = k
        else:
            inline = True
            counts[named.split] += 1
            if named.wnid and named.split == "train":
                classes.add(named.wnid)
            if named.split in stages and named.path not in stages[named.split].entries:
                wanted.append((k, named.split, e.size))
    if nested is not None and inline:
        raise PrepError("%s holds both %s and the images themselves (ILSVRC/Data/CLS-LOC/...): "
                        "it is not one of the competition's zips" % (d.label, KAGGLE_NESTED))
    if nested is None and not inline:
        raise PrepError("%s holds no images (no ILSVRC/Data/CLS-LOC/... and no %s): it is not the "
                        "competition's zip; %s" % (d.label, KAGGLE_NESTED,
                                                   redo("kaggle", " ".join(stages))))
    missing = [n for n in KAGGLE_FILES if n not in extra]
    if missing:
        raise PrepError("%s lacks %s (at its top level): it is not the competition's zip"
                        % (d.label, " and ".join(missing)))
    units: list[Unit] = []
    if nested is not None:
        todo = tuple(s for s in stages if "nested" not in stages[s].done)
        if todo:
            units.append(Unit("nested", nested_size, todo, first=nested, end=nested + 1, nested=True))
    else:
        total = sum(b for _, _, b in wanted)
        step = max(RANGE_MIN, min(RANGE_MAX, total // max(1, jobs * RANGES_PER_JOB)))
        i = 0
        while i < len(wanted):
            j, size = i, 0
            while j < len(wanted) and (j == i or size < step):
                size += wanted[j][2]
                j += 1
            first, end = wanted[i][0], wanted[j - 1][0] + 1
            splits = tuple(s for s in stages if any(w[1] == s for w in wanted[i:j]))
            units.append(Unit("members %d-%d" % (first, end - 1), size, splits, first=first, end=end))
            i = j
    need = sum(b for _, _, b in wanted) if nested is None else sum(u.size for u in units)
    return KagglePlan(counts, classes, extra, nested, units, need)


def kaggle_copy(size: int, nested: bool) -> Copy:
    if size >= facts.KAGGLE_REAL_MIN:
        return Copy("the competition's zip (%s: over %s, taken for the real one, whose exact size "
                    "is not published)" % (human(size), human(facts.KAGGLE_REAL_MIN)), True,
                    "the zip is not the competition's, or damaged: %s" % redo("kaggle", "SPLIT"))
    return Copy("the zip is %s, smaller than the competition's (over 150 GiB): its counts are those "
                "of its own %s" % (human(size), "nested tar.gz" if nested else "central directory"),
                False)


def keep_kaggle_files(cfg: Config, d: ZipDirectory, local: str, places: dict[str, int]) -> None:
    """The LOC_* files at the top of the zip, checked (CRC-32, text), as ROOT/kaggle/NAME."""
    with os.fdopen(open_regular(local), "rb") as raw:
        src = Source(raw)
        for name in KAGGLE_FILES:
            k = places[name]
            src.skip_to(d.start_of(k))
            member = next(d.members(src, k, check_end=False))
            data = member.read_all(KAGGLE_TEXT_MAX.get(name, KAGGLE_TEXT_DEFAULT))
            keep(cfg.root, "kaggle", name, kaggle_text(name, data, d.label))


def extract_kaggle(cfg: Config, splits: list[str]) -> int:
    todo = []
    for split in splits:
        if not done_before(cfg, "kaggle", split):
            todo.append(split)
    record = None
    if todo:
        record = load_record(cfg.root, "kaggle")
        rc = kaggle_splits(cfg, record, todo)
        if rc:
            return rc
    if cfg.remove and all(split_done(cfg, s) for s in splits):
        record = record or load_record(cfg.root, "kaggle")
        f = record.files[0]
        if os.path.isfile(f.local) and os.path.getsize(f.local) == f.size:
            os.remove(f.local)
            rest = [s for s in SPLITS if s not in splits and not split_done(cfg, s)]
            log.info("removed %s as asked (--remove-archive): %s, the split(s) asked, are complete "
                     "and verified%s", f.local, " ".join(splits),
                     "; it also held %s: extracting that now needs the zip downloaded again"
                     % " and ".join(rest)
                     if rest else "")
    return 0


def kaggle_splits(cfg: Config, record: Record, todo: list[str]) -> int:
    f = record.files[0]
    check_files(record, [f], " ".join(todo))
    log.info("kaggle: %s (%s). Kaggle publishes no checksum for it: the CRC-32 of every member, "
             "checked as it is written, is the check there is for this source (and the zip's size, "
             "as the download was told it)", f.local, human(f.size))
    with open(f.local, "rb") as raw:
        d = ZipDirectory(f.size, file_range(raw), f.path)
    identity = {"zip": f.size, "directory": hashlib.sha256(d.cd).hexdigest()}
    job = Extraction(cfg, record)
    job.directory = d
    for split in todo:
        stage = Stage(cfg, split, "kaggle", identity)
        if split == "train":
            refuse_foreign_classes(cfg)
        else:
            refuse_unfinished(cfg, stage.final, split)
        job.stages[split] = stage
    try:
        for stage in job.stages.values():
            stage.open()
        plan = kaggle_plan(d, job.stages, cfg.jobs)
        cfg.copy = kaggle_copy(f.size, plan.nested is not None)
        if plan.nested is None:
            for split in todo:
                log.info("%s: %s images in %s%s (its central directory)", split,
                         thousands(plan.counts[split]), f.path,
                         " in %d classes" % len(plan.classes) if split == "train" else "")
                if cfg.copy.official:
                    official_counts(split, f.size, len(plan.classes) if split == "train" else None,
                                    plan.counts[split], cfg.copy)
        keep_kaggle_files(cfg, d, f.local, plan.extra)
        if plan.units:
            preflight(cfg.root, plan.need, " ".join(todo))
            log.info("kaggle: %s to write (%s), %d range(s) of the zip, with %d worker(s)",
                     " ".join(todo), human(plan.need), len(plan.units),
                     min(cfg.jobs, len(plan.units)))
            job.run(plan.units, job.kaggle_unit, "kaggle")
        if job.errors:
            log.error("error: kaggle: %s; the members extracted and checked are kept, a rerun "
                      "reads the rest", job.errors.summary())
            return 1
        rc = 0
        for split in todo:
            stage = job.stages[split]
            try:
                if plan.nested is None and len(stage.entries) != plan.counts[split]:
                    raise PrepError("%s: %s images written, the central directory lists %s; run "
                                    "this again" % (split, thousands(len(stage.entries)),
                                                    thousands(plan.counts[split])))
                if plan.nested is not None:
                    log.info("%s: %s images in %s", split, thousands(len(stage.entries)), KAGGLE_NESTED)
                finish_split(stage, record, cfg.copy)
            except PrepError as e:
                log.error("error: %s", e)
                rc = 1
                continue
            stage.close()
            stage.forget()
        return rc
    finally:
        for stage in job.stages.values():
            stage.close()
