"""Stage 06: train and val as shuffled WebDataset shards in timm's form, straight from the archives.

    ROOT/webdataset/imagenet1k-train-{0000..1023}.tar       1,281,167 samples, ~1,251 a shard
    ROOT/webdataset/imagenet1k-validation-{00..63}.tar      50,000 samples, 781 or 782 a shard
    ROOT/webdataset/_info.json                              timm's: splits.train, splits.validation
    ROOT/webdataset/.imagenet1k-SPLIT.json                  state: the plan, the shards written
    ROOT/webdataset/.imagenet1k-SPLIT.lock                  flock of the run writing SPLIT

A sample is three members, KEY = the image's file stem (n01440764_10026, ILSVRC2012_val_00000293):
KEY.cls (the sorted-WNID class index, decimal text), KEY.jpg (the image's bytes as the archive
holds them: the CMYK JPEGs and the PNG too) and KEY.json ({"filename": "WNID/NAME.JPEG", "label",
"wnid", "width", "height"}; the size is the frame header's, nothing is decoded). Every member has
owner 0, mode 0644 and time 0: a shard's bytes depend only on the images, the classes and the
settings.

The split's images come from members.plan_split (the archive: its headers indexed in one pass, val
placed by 03's labels; or --from-tree: 01's tree, checked by 04's structural checks and hashed
against the manifest as it is read; or --source: the Kaggle zip's members where they lie, deflated
ones inflated and their CRC-32 checked as they are read). Sorted by WNID/NAME, they are ranked by
BLAKE2b-128 of "SEED/WNID/NAME" (a permutation any program can recompute), and the ranked list is
dealt out to the shards like cards: sample j goes to shard j mod N, so shard lengths differ by at
most one. Shards are written in parallel (one worker process each, reading its samples where they
lie), each under a temporary name, renamed when complete and recorded in the state file. A rerun
writes only the shards not recorded there; the same plan gives the same bytes. _info.json gets the
split's entry only once every shard is there with the size recorded for it.

Files that can only be read from their start (members.Stream: the Hub's tar.gz and Parquet files,
the older Kaggle zip's nested tar.gz) are read twice, with nothing spooled. The first reading
(Scanner, one worker per file) indexes them: each image's name, size, CRC-32, width and height.
That fixes every member of every shard, so every sample's place (Layout). The shards still to
write are made as part files of their final size (.imagenet1k-train-0000.tar.part), and the second
reading (StreamWriter, one worker per file) writes each image and its members at their place,
checking its name, size and CRC-32 against the first. A file is recorded as done in the state
("streams") once the file system is synced; a rerun with the same files reads only those not done.
When all are, each part is renamed to its shard. Peak disk: the files plus the shards.

Here: Settings; Index (the plan's images, compact; Scanner for streams) -> Deal (the permutation
and the shards) -> ShardWriter (a worker: one shard) or Layout and StreamWriter (a worker: one
file) -> write_split (state, leftovers, workers, accounting, _info.json); make_shards is the
stage as 06_pack_webdataset.py runs it.
"""
from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import stat
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

from . import members
from .console import (DISK_FULL, ErrorList, PrepError, disk_full_text, each_split, human, log,
                      preflight, some, thousands)
from .extract import official_counts
from .files import (Lock, clear_leftover, clear_temps, fsync_dir, need_folder, read_json, temp_beside,
                    temp_of, try_flock, write_json)
from .images import HeadScan, ImageInfo
from .members import tar_header
from .parallel import run_parallel
from .progress import Progress
from .sources import file_id
from .tarstream import Source
from .valfolders import SYNSETS_CSV, read_synsets
from .zipread import member_data, member_error

PROG = "06_pack_webdataset.py"
SPLITS = ("train", "val")
OUT_DIR = "webdataset"                   # ROOT/webdataset/
PREFIX = "imagenet1k"                    # timm/imagenet-1k-wds's shard names
SPLIT_NAMES = {"train": "train", "val": "validation"}    # timm's split names
DEFAULT_SHARDS = {"train": 1024, "val": 64}
DATASET = "imagenet-1k"                  # _info.json's name
INFO = "_info.json"
MTIME = 0                                # every member's time
RECORD = 20 * 512                        # a tar file ends on a whole record, as tar writes them
CHUNK = 4 << 20                          # largest read of one image
SAMPLE_OVERHEAD = 3 * 512 + 3 * 511 + 200    # headers, padding and the .cls and .json, at most
FORMAT = 1                               # of the shards' layout: part of every plan's digest
FROM_TREE_HINT = "write the shards from the tree 01_unzip.sh made with --from-tree"
INTERRUPTED = "complete shards are kept (the one being written is not); run the same command " \
              "again to write the rest"


@dataclass(frozen=True)
class Settings:
    root: str                        # absolute
    from_tree: bool = False          # read ROOT/SPLIT/ instead of the archive
    shards: Optional[int] = None     # per split (default: DEFAULT_SHARDS)
    seed: int = 0
    jobs: int = 1                    # worker processes
    labels: Optional[str] = None     # val: the labels file (default: the devkit's, as 03 finds it)
    meta: Optional[str] = None       # the classes (default: ROOT/meta/synsets.csv)
    source: Optional[str] = None     # hf, kaggle: the files 00_download.sh --source left

    @property
    def out(self) -> str:
        return os.path.join(self.root, OUT_DIR)

    def count(self, split: str) -> int:
        return self.shards or DEFAULT_SHARDS[split]


def shard_names(split: str, n: int) -> list[str]:
    """imagenet1k-train-0000.tar ...: numbered 0..n-1 with the digits of n-1, at least 2."""
    digits = max(2, len(str(n - 1)))
    return ["%s-%s-%0*d.tar" % (PREFIX, SPLIT_NAMES[split], digits, k) for k in range(n)]


def state_path(cfg: Settings, split: str) -> str:
    return os.path.join(cfg.out, ".%s-%s.json" % (PREFIX, SPLIT_NAMES[split]))


# ----------------------------------------------------------------------------- what goes in

def succeeded(func: Callable[[int], tuple], todo: list[int], jobs: int, errors: ErrorList,
              died: Callable[[int, Optional[int]], str]) -> Iterator[tuple[int, tuple]]:
    """The jobs `todo` run by `func` in up to `jobs` worker processes, none started once the disk
    is full: (k, result) of each that went well ("ok", k, ...). What went wrong is said into
    `errors`: ("error", k, message), a full disk once ("full", k, message), a worker that died
    (died(k, its exit code))."""
    full: list[int] = []

    def start() -> Iterator[int]:
        for k in todo:
            if full:
                return
            yield k

    for k, result, exitcode in run_parallel(func, start(), max(1, min(jobs, len(todo)))):
        if result is None:
            errors.add(died(k, exitcode))
        elif result[0] == "full":
            if not full:
                errors.add(result[2])
            full.append(k)
        elif result[0] == "error":
            errors.add(result[2])
        else:
            yield k, result


COLUMNS = ("paths", "sources", "rels", "offsets", "sizes", "csizes", "crcs", "widths", "heights",
           "archived", "methods")


class Index:
    """The plan's images sorted by path (WNID/NAME) and where each one's bytes are, in parallel
    lists and arrays (the real train split: about 400 MiB at the peak, while sorting); the
    workers inherit them. A zip member also has its method, compressed size and CRC-32 (crc -1:
    none). A plan of streams is read here once, in parallel (Scanner): each image's size, CRC-32
    and width and height (-1: none), its stream (`sources`: the stream's label) and its place in
    it (`offsets`); where[k][j] is the index of the j-th image of stream k, identity[label] the
    stream's file as it was read (sources.file_id)."""

    def __init__(self, plan: members.Plan, jobs: int = 1) -> None:
        self.split = plan.split
        self.paths: list[str] = []
        self.sources: list[str] = []
        self.rels: list[str] = []
        self.offsets, self.sizes = array.array("q"), array.array("q")
        self.csizes, self.crcs = array.array("q"), array.array("q")
        self.widths, self.heights = array.array("q"), array.array("q")
        self.archived, self.methods = bytearray(), bytearray()
        self.streams = list(plan.streams)
        self.identity: dict[str, list[int]] = {}
        self.where: list[array.array] = []
        if self.streams:
            self._scan(plan, jobs)
        else:
            self._entries(plan)
        order = sorted(range(len(self.paths)), key=self.paths.__getitem__)
        for name in COLUMNS:
            col = getattr(self, name)
            setattr(self, name, array.array(col.typecode, (col[i] for i in order))
                    if isinstance(col, array.array) else bytes(col[i] for i in order)
                    if isinstance(col, bytearray) else [col[i] for i in order])
        twice = [a for a, b in zip(self.paths, self.paths[1:]) if a == b]
        if twice:                                    # the planners refuse these: never here
            raise PrepError("%s: %d images appear twice in %s (%s); refused: is it damaged?"
                            % (plan.split, len(twice), plan.source, some(twice)))
        if self.streams:
            k_of = {st.label: k for k, st in enumerate(self.streams)}
            counts = [0] * len(self.streams)
            for label in self.sources:
                counts[k_of[label]] += 1
            self.where = [array.array("q", bytes(8 * n)) for n in counts]
            for i, (label, j) in enumerate(zip(self.sources, self.offsets)):
                self.where[k_of[label]][j] = i

    def add(self, path: str, source: str, rel: str, offset: int, size: int, archived: bool,
            method: int = 0, csize: int = 0, crc: Optional[int] = None,
            width: Optional[int] = None, height: Optional[int] = None) -> None:
        self.paths.append(path)
        self.sources.append(source)
        self.rels.append(rel)
        self.offsets.append(offset)
        self.sizes.append(size)
        self.archived.append(archived)
        self.methods.append(method)
        self.csizes.append(csize)
        self.crcs.append(-1 if crc is None else crc)
        self.widths.append(-1 if width is None else width)
        self.heights.append(-1 if height is None else height)

    def _entries(self, plan: members.Plan) -> None:
        bar, seen = Progress("%s: index" % plan.split, plan.total, "B"), 0
        for e in plan.entries():
            if isinstance(e, members.Folder):
                continue
            self.add(e.path, e.source, e.rel, e.offset, e.size, e.archived, e.method, e.csize,
                     e.crc)
            seen += e.size
            if len(self.paths) % 1024 == 0:
                bar.update(e.offset + e.size if e.archived else seen,
                           "%s images" % thousands(len(self.paths)))
        bar.update(plan.total, "%s images" % thousands(len(self.paths)))
        bar.close()

    def _scan(self, plan: members.Plan, jobs: int) -> None:
        """The streams' first reading, one worker per file: every image's name, size, CRC-32 and
        header size; then each placed in the split (Plan.place: val by its labels)."""
        streams = self.streams
        bar, done, errors = Progress("%s: index" % plan.split, plan.total, "B"), 0, ErrorList()
        got: dict[int, list] = {}
        for k, result in succeeded(Scanner(streams), list(range(len(streams))), jobs, errors,
                                   lambda k, code: "%s: the worker reading it died (exit code %s: "
                                   "killed, or out of memory?); run again" % (streams[k].label, code)):
            got[k] = result[2]
            self.identity[streams[k].label] = result[3]
            done += streams[k].size
            bar.update(done, "%d/%d files" % (len(got), len(streams)))
        bar.close()
        if errors:
            raise PrepError("%s: %s; no shard was written" % (plan.split, errors.summary()))
        rows = [(k, j, r) for k in range(len(streams)) for j, r in enumerate(got[k])]
        assert plan.place is not None
        placed = plan.place([(r[0], r[1]) for _, _, r in rows])
        for (k, j, (canonical, _, size, crc, width, height)), path in zip(rows, placed):
            self.add(path, streams[k].label, canonical, j, size, True, crc=crc, width=width,
                     height=height)

    def __len__(self) -> int:
        return len(self.paths)

    def wnids(self) -> list[str]:
        return sorted({p.split("/", 1)[0] for p in self.paths})

    def info(self, i: int) -> ImageInfo:
        """Image i's width and height as its first reading found them (a stream's)."""
        w, h = self.widths[i], self.heights[i]
        return ImageInfo(None, None if w < 0 else w, None if h < 0 else h)


class Scanner:
    """A worker's job in the first reading of a plan's streams: stream k from its start, with
    every check its reader makes; each image's canonical name, the class the source gives it,
    size, CRC-32, width and height (from its headers, nothing decoded); nothing is written. Returns
    ("ok", k, rows, the file's identity) or ("error", k, message)."""

    def __init__(self, streams: list[members.Stream]) -> None:
        self.streams = streams

    def __call__(self, k: int) -> tuple:
        st = self.streams[k]
        try:
            before = file_id(st.local)
            rows = []
            for e in st.read(True):
                scan, crc, n = HeadScan(), 0, 0
                for chunk in e.chunks():
                    scan.feed(chunk)
                    crc = zlib.crc32(chunk, crc)
                    n += len(chunk)
                info = scan.end()
                rows.append((e.named.path, e.named.wnid, n, crc, info.width, info.height))
            if file_id(st.local) != before:
                raise PrepError("%s changed while it was read (a new download?); run this again"
                                % st.local)
            return ("ok", k, rows, before)
        except PrepError as e:
            return ("error", k, str(e))
        except OSError as e:
            return ("error", k, "%s: %s" % (st.label, e))
        except Exception as e:               # a bug must fail this file, not kill the worker
            return ("error", k, "%s: unexpected %s: %s" % (st.label, type(e).__name__, e))


def rank(seed: int, path: str) -> bytes:
    """An image's place in the shuffled order: BLAKE2b-128 of 'SEED/WNID/NAME'."""
    return hashlib.blake2b(("%d/%s" % (seed, path)).encode("utf-8", "surrogateescape"),
                           digest_size=16).digest()


@dataclass
class Deal:
    """Which images each shard holds, in order (indexes into the Index), and the plan's digest."""
    shards: list[list[int]]
    digest: str

    @classmethod
    def of(cls, index: Index, labels: dict[str, int], seed: int, n: int) -> "Deal":
        ranked = sorted(range(len(index)), key=lambda i: (rank(seed, index.paths[i]), i))
        shards = [ranked[k::n] for k in range(n)]
        h = hashlib.sha256(b"webdataset %d seed %d shards %d\n" % (FORMAT, seed, n))
        for k, shard in enumerate(shards):
            for i in shard:
                p = index.paths[i]
                h.update(("%d\t%s\t%d\t%d\n" % (k, p, index.sizes[i], labels[p.split("/", 1)[0]]))
                         .encode("utf-8", "surrogateescape"))
        return cls(shards, h.hexdigest())


def class_index(cfg: Settings) -> dict[str, int]:
    """{WNID: sorted-WNID index} from 02's synsets.csv (or --meta)."""
    path = Path(cfg.meta) if cfg.meta else Path(cfg.root) / SYNSETS_CSV
    return {w: c.class_index for w, c in read_synsets(path, given=bool(cfg.meta)).items()}


def labels_of(cfg: Settings) -> dict:
    """What the labels are made from, as the state records it: the class list's digest (a
    label is a class's place in it) and --labels. 'Already done' holds only for the same; with
    other ones the split is planned again (its shards are kept if they come out the same)."""
    h = hashlib.sha256()
    for wnid, index in sorted(class_index(cfg).items()):
        h.update(("%s\t%d\n" % (wnid, index)).encode("utf-8", "surrogateescape"))
    return {"classes": h.hexdigest(), "labels": cfg.labels}


# ----------------------------------------------------------------------------- one shard

def member_bytes(name: str, data: bytes) -> bytes:
    """A whole member of a shard: header, data, padding."""
    return tar_header(name, len(data), MTIME, False) + data + bytes(-len(data) % 512)


def key_of(path: str) -> str:
    """A sample's key: the image's file stem (WNID/n01440764_10026.JPEG -> n01440764_10026)."""
    return path.split("/", 1)[1].rsplit(".", 1)[0]


def sample_head(path: str, label: int, size: int) -> bytes:
    """What comes before an image's bytes in its sample: KEY.cls, then KEY.jpg's header."""
    key = key_of(path)
    return member_bytes(key + ".cls", b"%d" % label) + tar_header(key + ".jpg", size, MTIME, False)


def sample_tail(path: str, label: int, size: int, info: ImageInfo) -> bytes:
    """What comes after an image's bytes: their padding, then KEY.json."""
    doc = {"filename": path, "label": label, "wnid": path.split("/", 1)[0], "width": info.width,
           "height": info.height}
    return bytes(-size % 512) + member_bytes(key_of(path) + ".json",
                                             json.dumps(doc).encode("utf-8", "surrogateescape"))


def tar_end(size: int) -> bytes:
    """The end of a shard of `size` bytes of members: two zero blocks, then zeros to a whole
    record, as tar writes it."""
    return bytes(1024 + -(size + 1024) % RECORD)


class TarOut:
    """Members written one after another into a file, in the shards' fixed form."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.size += len(data)

    def end(self) -> None:
        self.write(tar_end(self.size))


class ShardWriter:
    """A worker's job: shard k, written under a temporary name and renamed when complete. Returns
    ("ok", k, bytes, samples, [images whose size was not found]), ("full" | "error", k, message).
    The index and the deal are inherited from the main process, not sent."""

    def __init__(self, out: str, names: list[str], index: Index, deal: Deal,
                 labels: dict[str, int], sums: Optional[members.Sums], redo: str = "") -> None:
        self.out, self.names, self.index, self.deal = out, names, index, deal
        self.labels, self.sums, self.redo = labels, sums, redo
        self.fds: dict[str, int] = {}
        self.zips: dict[str, BinaryIO] = {}

    def __call__(self, k: int) -> tuple:
        final = os.path.join(self.out, self.names[k])
        try:
            size, nosize = self.write(k, final)
            return ("ok", k, size, len(self.deal.shards[k]), nosize)
        except PrepError as e:
            return ("error", k, "%s: %s" % (self.names[k], e))
        except OSError as e:
            if e.errno in DISK_FULL:
                return ("full", k, disk_full_text(self.out))
            return ("error", k, "%s: %s" % (self.names[k], e))
        except Exception as e:               # a bug must fail this shard, not kill the worker
            return ("error", k, "%s: unexpected %s: %s" % (self.names[k], type(e).__name__, e))
        finally:
            for fd in self.fds.values():
                os.close(fd)
            for f in self.zips.values():
                f.close()
            self.fds.clear()
            self.zips.clear()

    def write(self, k: int, final: str) -> tuple[int, list[str]]:
        tmp = temp_beside(final)
        nosize: list[str] = []
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try_flock(fd)                    # held while writing: a rerun leaves it alone
            with os.fdopen(os.dup(fd), "wb", buffering=1 << 20) as f:
                out = TarOut(f)
                for i in self.deal.shards[k]:
                    info = self.sample(out, i)
                    if info.width is None:
                        nosize.append(self.index.paths[i])
                out.end()
            os.fsync(fd)
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        return out.size, nosize

    def sample(self, out: TarOut, i: int) -> ImageInfo:
        """KEY.cls, KEY.jpg, KEY.json of image i."""
        path, size = self.index.paths[i], self.index.sizes[i]
        label = self.labels[path.split("/", 1)[0]]
        out.write(sample_head(path, label, size))
        info = self.copy(out, i, size)
        out.write(sample_tail(path, label, size, info))
        return info

    def copy(self, out: TarOut, i: int, size: int) -> ImageInfo:
        """The image's bytes into the shard, its headers read on the way; a zip member inflated
        (if deflated) and its CRC-32 checked; a tree's file hashed and checked against the
        manifest."""
        idx = self.index
        source, scan = idx.sources[i], HeadScan()
        if idx.crcs[i] >= 0:                         # a zip member
            f = self.zips.get(source)
            if f is None:
                f = self.zips[source] = open(source, "rb", buffering=0)
            f.seek(idx.offsets[i])
            for chunk in member_data(Source(f, pos=idx.offsets[i]), idx.methods[i], idx.csizes[i],
                                     size, idx.crcs[i], lambda what: self.damaged(i, what)):
                scan.feed(chunk)
                out.write(chunk)
            return scan.end()
        if idx.archived[i]:
            fd = self.fds.get(source)
            if fd is None:
                fd = self.fds[source] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            self.pump(fd, idx.offsets[i], size, source, out, scan, None)
            return scan.end()
        with members.open_tree_file(source, size) as (fd, _):
            sha = hashlib.sha256() if self.sums is not None else None
            self.pump(fd, 0, size, source, out, scan, sha)
            if self.sums is not None and sha is not None:
                self.sums.check(idx.rels[i], source, sha.hexdigest())
        return scan.end()

    def damaged(self, i: int, what: str) -> PrepError:
        """Zip member i's data is not what its central directory says."""
        e = member_error(os.path.basename(self.index.sources[i]), self.index.rels[i], what)
        return PrepError("%s (%s)" % (e, self.redo)) if self.redo else e

    @staticmethod
    def pump(fd: int, offset: int, size: int, source: str, out: TarOut, scan: HeadScan,
             sha: Any) -> None:
        left = size
        while left:
            buf = os.pread(fd, min(left, CHUNK), offset)
            if not buf:
                raise PrepError("%s ended %s bytes early, while being read (was it changed or "
                                "truncated meanwhile?); run again" % (source, thousands(left)))
            scan.feed(buf)
            if sha is not None:
                sha.update(buf)
            out.write(buf)
            offset += len(buf)
            left -= len(buf)


# ----------------------------------------------------------------------------- streams: read twice

def part_path(out: str, name: str) -> str:
    """Where shard `name` is put together from streams: .imagenet1k-train-0000.tar.part (kept
    across runs, unlike a temporary name: a rerun goes on filling it)."""
    return os.path.join(out, ".%s.part" % name)


@dataclass
class Layout:
    """Where every sample of a plan of streams goes, known before a byte is written (every
    member's size is: the image's, and its json's from the width and height of the first
    reading): shard_of[i], place_of[i] (its first byte in its shard), and each shard's members'
    end and whole size."""
    shard_of: array.array
    place_of: array.array
    ends: list[int]
    sizes: list[int]

    @classmethod
    def of(cls, index: Index, deal: Deal, labels: dict[str, int]) -> "Layout":
        n = len(index)
        shard_of, place_of = array.array("q", bytes(8 * n)), array.array("q", bytes(8 * n))
        ends, sizes = [], []
        for k, shard in enumerate(deal.shards):
            pos = 0
            for i in shard:
                path, size = index.paths[i], index.sizes[i]
                label = labels[path.split("/", 1)[0]]
                shard_of[i], place_of[i] = k, pos
                pos += len(sample_head(path, label, size)) + size + \
                    len(sample_tail(path, label, size, index.info(i)))
            ends.append(pos)
            sizes.append(pos + len(tar_end(pos)))
        return cls(shard_of, place_of, ends, sizes)


def pwrite_all(fd: int, data: bytes, pos: int) -> int:
    """All of `data` at `pos`; where it ends."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return pos


class StreamWriter:
    """A worker's job in the second reading of a plan's streams: stream k from its start again,
    each image of a shard still to write put at its place in that shard's part file, its bytes
    checked against the first reading (name, size, CRC-32: a file that changed in between is an
    error, never a wrong shard); then the file system synced. Returns ("ok", k, image bytes
    written) or ("full" | "error", k, message). The main process syncs the file system before it
    records the file as done."""

    FDS = 256                               # part files kept open at once

    def __init__(self, out: str, names: list[str], index: Index, layout: Layout,
                 labels: dict[str, int], todo: set[int]) -> None:
        self.out, self.names, self.index, self.layout = out, names, index, layout
        self.labels, self.todo = labels, todo
        self.fds: dict[int, int] = {}

    def __call__(self, k: int) -> tuple:
        label = self.index.streams[k].label
        try:
            return ("ok", k, self.write(k))
        except PrepError as e:
            return ("error", k, str(e))
        except OSError as e:
            if e.errno in DISK_FULL:
                return ("full", k, disk_full_text(self.out))
            return ("error", k, "%s: %s" % (label, e))
        except Exception as e:               # a bug must fail this file, not kill the worker
            return ("error", k, "%s: unexpected %s: %s" % (label, type(e).__name__, e))
        finally:
            for fd in self.fds.values():
                os.close(fd)
            self.fds.clear()

    def part(self, s: int) -> int:
        fd = self.fds.pop(s, None)
        if fd is None:
            if len(self.fds) >= self.FDS:
                os.close(self.fds.pop(next(iter(self.fds))))
            fd = os.open(part_path(self.out, self.names[s]),
                         os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.fds[s] = fd                     # the most recently used last
        return fd

    def write(self, k: int) -> int:
        idx, lay = self.index, self.layout
        st, ids = idx.streams[k], idx.where[k]

        def changed(what: str) -> PrepError:
            return PrepError("%s %s since it was first read in this run (a new download?); run "
                             "again: it is read anew" % (st.local, what))

        if file_id(st.local) != idx.identity[st.label]:
            raise changed("changed")
        j = written = 0
        for e in st.read(False):
            if j >= len(ids):
                raise changed("holds more images")
            i = ids[j]
            j += 1
            if e.named.path != idx.rels[i] or e.size != idx.sizes[i]:
                raise changed("holds %s (%s B) where it held %s (%s B)"
                              % (e.named.path, thousands(e.size), idx.rels[i],
                                 thousands(idx.sizes[i])))
            s = lay.shard_of[i]
            if s not in self.todo:
                continue
            path, size = idx.paths[i], idx.sizes[i]
            label = self.labels[path.split("/", 1)[0]]
            fd = self.part(s)
            pos = pwrite_all(fd, sample_head(path, label, size), lay.place_of[i])
            crc = 0
            for chunk in e.chunks():
                crc = zlib.crc32(chunk, crc)
                pos = pwrite_all(fd, chunk, pos)
            if crc != idx.crcs[i]:
                raise changed("gives other bytes for %s" % e.named.path)
            pwrite_all(fd, sample_tail(path, label, size, idx.info(i)), pos)
            written += size
        if j != len(ids):
            raise changed("holds fewer images")
        return written


def write_streams(cfg: Settings, split: str, names: list[str], index: Index, deal: Deal,
                  labels: dict[str, int], state: dict, todo: list[int]) -> None:
    """The shards `todo` of a plan of streams: their part files made at their final size, each
    stream read again and its images written in place (in parallel, one worker per file), each
    file recorded in the state as done once what it wrote is synced; once all are, each part
    renamed to its shard and recorded. Killed, a rerun with the same files goes on with the files
    not done."""
    from .stream import sync_tree
    layout = Layout.of(index, deal, labels)
    identity = {st.label: index.identity[st.label] for st in index.streams}
    rec = state.get("streams")
    done = list(rec["done"]) if isinstance(rec, dict) and rec.get("files") == identity else []
    fresh = [k for k in todo if not part_ok(cfg.out, names[k], layout.sizes[k])]
    if fresh and done:
        log.info("%s: %d part files are missing: every file is read again", split, len(fresh))
        done = []
    if done:
        log.info("%s: resuming: %d of %d files were written into the shards by an earlier run",
                 split, len(done), len(index.streams))
    kept = sum(os.lstat(part_path(cfg.out, names[k])).st_blocks * 512 for k in todo if k not in fresh)
    preflight(cfg.out, max(0, sum(layout.sizes[k] for k in todo) - kept), "%s shards" % split)
    for k in fresh:                                  # made anew (never through a link)
        part = part_path(cfg.out, names[k])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.ftruncate(fd, layout.sizes[k])
            pwrite_all(fd, tar_end(layout.ends[k]), layout.ends[k])
        finally:
            os.close(fd)
    state["streams"] = {"files": identity, "done": done}
    write_json(state_path(cfg, split), state)
    left = [k for k, st in enumerate(index.streams) if st.label not in done]
    writer = StreamWriter(cfg.out, names, index, layout, labels, set(todo))
    errors = ErrorList()
    total = sum(st.size for st in index.streams)
    bar = Progress(split, total, "B")
    t0, nbytes, seen = time.monotonic(), 0, total - sum(index.streams[k].size for k in left)
    for k, result in succeeded(writer, left, cfg.jobs, errors,
                               lambda k, code: "%s: the worker reading it died (exit code %s: "
                               "killed, or out of memory?); a rerun reads it again"
                               % (index.streams[k].label, code)):
        sync_tree(cfg.out)
        done.append(index.streams[k].label)
        write_json(state_path(cfg, split), state)
        nbytes += result[2]
        seen += index.streams[k].size
        bar.update(seen, "%d/%d files" % (len(done), len(index.streams)))
    bar.close()
    if errors:
        raise PrepError("%s: %s; what the files read so far wrote is kept, a rerun reads the "
                        "others" % (split, errors.summary()))
    for k in todo:
        os.rename(part_path(cfg.out, names[k]), os.path.join(cfg.out, names[k]))
        state["written"][names[k]] = [layout.sizes[k], len(deal.shards[k])]
        write_json(state_path(cfg, split), state)
    del state["streams"]
    write_json(state_path(cfg, split), state)
    fsync_dir(cfg.out)
    dt = time.monotonic() - t0
    log.info("%s: this run wrote %d shards, %s of images in %.1f s (%.1f MiB/s)", split, len(todo),
             human(nbytes), dt, nbytes / max(dt, 1e-6) / (1 << 20))


def part_ok(out: str, name: str, size: int) -> bool:
    """The part file of shard `name` is there, a regular file of its final size."""
    try:
        st = os.lstat(part_path(out, name))
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def remove_parts(cfg: Settings, names: list[str]) -> None:
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part_path(cfg.out, n))


# ----------------------------------------------------------------------------- _info.json

def info_path(cfg: Settings) -> str:
    return os.path.join(cfg.out, INFO)


def read_info(cfg: Settings) -> dict:
    """_info.json as it is ({} when there is none); one this stage did not write is an error."""
    path = info_path(cfg)
    if not os.path.lexists(path):
        return {}
    doc = read_json(path, "%s writes it from the shards' state: remove it and run %s again for "
                          "each split" % (PROG, PROG))
    if not (isinstance(doc, dict) and isinstance(doc.get("splits"), dict)):
        raise PrepError("%s is not the dataset info %s writes (no \"splits\"): remove it and run "
                        "%s again for each split (the shards are kept)" % (path, PROG, PROG))
    return doc


def set_info(cfg: Settings, split: str, entry: Optional[dict]) -> bool:
    """Put the split's entry into _info.json (None: take it out); True if the file changed.
    An entry already there as it should be takes no lock and writes nothing: complete shards on
    a read-only disk are still 'already done'."""
    if read_info(cfg).get("splits", {}).get(SPLIT_NAMES[split]) == entry:
        return False
    with Lock(os.path.join(cfg.out, ".%s.lock" % INFO), "another %s is updating %s; ..."
              % (PROG, INFO), wait=True):
        clear_temps(cfg.out, INFO)                  # what a killed run was writing
        doc = read_info(cfg)
        name = SPLIT_NAMES[split]
        if doc.get("splits", {}).get(name) == entry:
            return False
        if entry is None and not doc:
            return False
        doc = {**doc, "name": doc.get("name", DATASET)}
        doc["splits"] = {k: v for k, v in doc.get("splits", {}).items() if k != name}
        if entry is not None:
            doc["splits"][name] = entry
        write_json(info_path(cfg), doc)
    return True


def info_entry(split: str, names: list[str], lengths: list[int]) -> dict:
    return {"name": SPLIT_NAMES[split], "num_samples": sum(lengths), "filenames": names,
            "shard_lengths": lengths}


# ----------------------------------------------------------------------------- the state

def read_state(cfg: Settings, split: str) -> Optional[dict]:
    path = state_path(cfg, split)
    if not os.path.lexists(path):
        return None
    doc = read_json(path, "%s writes it while it writes the shards: remove it and the split's "
                          "shards, then run again" % PROG)
    if not (isinstance(doc, dict) and isinstance(doc.get("filenames"), list)
            and isinstance(doc.get("written"), dict) and isinstance(doc.get("digest"), str)
            and all(isinstance(n, str) and "/" not in n and n.startswith(PREFIX + "-")
                    for n in doc["filenames"])
            and whole_numbers(doc.get("lengths"), len(doc["filenames"]))
            and whole_numbers([doc.get("seed")], 1)
            and all(n in doc["filenames"] and whole_numbers(r, 2)      # [bytes, samples]
                    for n, r in doc["written"].items())
            and streams_ok(doc.get("streams", {"files": {}, "done": []}))):
        raise PrepError("%s is damaged or not %s's: remove it and the shards %s-%s-*.tar beside "
                        "it, then run again" % (path, PROG, PREFIX, SPLIT_NAMES[split]))
    return doc


def streams_ok(rec: Any) -> bool:
    """The state's record of a plan of streams: {"files": {label: its identity}, "done": [the
    labels of the files written into the part files]}."""
    return isinstance(rec, dict) and isinstance(rec.get("files"), dict) \
        and all(isinstance(k, str) and whole_numbers(v, 3) for k, v in rec["files"].items()) \
        and isinstance(rec.get("done"), list) and all(isinstance(d, str) and d in rec["files"]
                                                      for d in rec["done"])


def whole_numbers(value: Any, n: int) -> bool:
    """`value` is a list of `n` whole numbers >= 0 (as the state records them; JSON's true and
    false are not numbers here)."""
    return isinstance(value, list) and len(value) == n and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def on_disk(cfg: Settings, name: str, record: Any) -> bool:
    """Shard `name` is there with the size recorded for it ([bytes, samples])."""
    try:
        return isinstance(record, list) and len(record) == 2 and \
            os.path.getsize(os.path.join(cfg.out, name)) == record[0]
    except OSError:
        return False


def already_done(cfg: Settings, split: str) -> bool:
    """The split's shards are complete for these settings: say so, and mend _info.json's entry
    if it is not the one they make."""
    doc = read_state(cfg, split)
    if not (doc and doc.get("complete") is True and doc["seed"] == cfg.seed
            and len(doc["filenames"]) == cfg.count(split)
            and {k: doc.get(k) for k in ("classes", "labels")} == labels_of(cfg)
            and all(on_disk(cfg, n, doc["written"].get(n)) and doc["written"][n][1] == length
                    for n, length in zip(doc["filenames"], doc["lengths"]))):
        return False
    lengths = [doc["written"][n][1] for n in doc["filenames"]]
    if set_info(cfg, split, info_entry(split, doc["filenames"], lengths)):
        log.info("%s: wrote its entry in %s", split, info_path(cfg))
    log.info("%s: already done (%s shards, %s samples, %s in %s, seed %d); nothing to do", split,
             thousands(len(lengths)), thousands(sum(lengths)),
             human(sum(doc["written"][n][0] for n in doc["filenames"])), cfg.out, cfg.seed)
    return True


def start_state(cfg: Settings, split: str, names: list[str], deal: Deal,
                plan: members.Plan) -> dict:
    """The state for this plan: the one on disk if it is for the same plan, else a new one, after
    the shards of the old plan are removed. A shard under one of our names that no state speaks
    of was not written here: refused."""
    old = read_state(cfg, split)
    made_of = labels_of(cfg)
    if old is not None and old["digest"] == deal.digest and old["filenames"] == names:
        if any(old.get(k) != v for k, v in made_of.items()):    # the same labels, said otherwise
            old.update(made_of)
            write_json(state_path(cfg, split), old)
        return old
    if old is None:
        foreign = [n for n in names if os.path.lexists(os.path.join(cfg.out, n))]
        if foreign:
            raise PrepError("%s: %d shards in %s were not written by %s (no %s): %s; move them "
                            "away or delete them, then run again"
                            % (split, len(foreign), cfg.out, PROG,
                               os.path.basename(state_path(cfg, split)), some(foreign)))
    set_info(cfg, split, None)                      # never an entry for shards not all there
    remove_parts(cfg, names + (old["filenames"] if old is not None else []))
    if old is not None:
        gone = [n for n in old["filenames"] if os.path.lexists(os.path.join(cfg.out, n))]
        log.info("%s: the shards in %s were written for another plan (seed %s, %s shards, or other "
                 "images or labels): removing %d of them, writing all anew", split, cfg.out,
                 old.get("seed"),
                 len(old["filenames"]), len(gone))
        for n in gone:
            os.remove(os.path.join(cfg.out, n))
    doc = {"split": split, "name": SPLIT_NAMES[split], "seed": cfg.seed, "digest": deal.digest,
           "filenames": names, "lengths": [len(s) for s in deal.shards], "written": {},
           "complete": False, "origin": plan.origin, "source": plan.source,
           "archive": plan.archive, "archive_size": plan.archive_size, **made_of}
    write_json(state_path(cfg, split), doc)
    return doc


# ----------------------------------------------------------------------------- a split

Opener = Callable[[], Optional[members.SourceFiles]]


def plan_split(cfg: Settings, split: str,
               source: Opener = lambda: None) -> tuple[members.Plan, Index, dict[str, int]]:
    """The split's images, checked: counts (official ones are errors if wrong), classes known.
    `source`: another source's files, opened (once for all splits) before the class list is
    read: opening keeps the source's class list where 02 finds it."""
    opened = source()
    try:
        labels = class_index(cfg)                  # first: it is quick, and needed
    except PrepError as e:
        if opened is None or cfg.meta or os.path.lexists(os.path.join(cfg.root, SYNSETS_CSV)):
            raise
        raise PrepError("%s: 02 finds the source's class list in %s, kept there by this run, as "
                        "01 keeps it" % (e, opened.class_list)) from None
    plan = members.plan_split(cfg, split, cfg.from_tree, FROM_TREE_HINT, opened)
    index = Index(plan, cfg.jobs)
    wnids = index.wnids()
    if plan.expect_files is not None and len(index) != plan.expect_files:
        raise PrepError("%s: %s holds %s images, but 01_unzip.sh extracted %s: the tree changed "
                        "since; extract it again with 01_unzip.sh, or use the archive"
                        % (split, plan.source, thousands(len(index)), thousands(plan.expect_files)))
    if plan.check_official:
        official_counts(split, plan.archive_size, len(wnids) if plan.classes else None, len(index),
                        plan.copy)
    unknown = [w for w in wnids if w not in labels]
    if unknown:
        raise PrepError("%s: %d classes of %s are not in the class list %s (%s): their class index "
                        "is not known; is the class list from this release's devkit? run "
                        "02_convert_meta_clsloc.py again (or pass --meta CSV)"
                        % (split, len(unknown), plan.source, cfg.meta or SYNSETS_CSV, some(unknown)))
    if len(wnids) < len(labels):
        log.info("%s: %d of the %d classes of the class list have images here; the labels are "
                 "their index among all %d", split, len(wnids), len(labels), len(labels))
    return plan, index, labels


def write_split(cfg: Settings, split: str, source: Opener) -> None:
    n = cfg.count(split)
    names = shard_names(split, n)
    plan, index, labels = plan_split(cfg, split, source)
    if n > len(index):
        raise PrepError("%s: %d shards asked for, but the split has %s images: ask for fewer "
                        "(--shards N)" % (split, n, thousands(len(index))))
    deal = Deal.of(index, labels, cfg.seed, n)
    state = start_state(cfg, split, names, deal, plan)
    ours = set(names)
    for e in list(os.scandir(cfg.out)):             # what killed runs were writing
        if temp_of(e.name) in ours:
            clear_leftover(e.path)
    todo = []
    for k, name in enumerate(names):
        rec = state["written"].get(name)
        if on_disk(cfg, name, rec) and rec[1] == len(deal.shards[k]):
            continue
        if os.path.lexists(os.path.join(cfg.out, name)):
            log.info("%s: %s is not as it was recorded when written (or was not recorded): "
                     "writing it again", split, name)
        todo.append(k)
    log.info("%s: %s images in %d shards (seed %d): %d already written, %d to write with %d "
             "workers%s", split, thousands(len(index)), n, cfg.seed, n - len(todo), len(todo),
             min(cfg.jobs, max(len(todo) if not index.streams else len(index.streams), 1)),
             ", each reading its files from their start again" if index.streams and todo else "")
    if todo and index.streams:
        write_streams(cfg, split, names, index, deal, labels, state, todo)
    elif todo:
        remove_parts(cfg, names)                     # another route's: not needed
        state.pop("streams", None)
        need = sum(index.sizes[i] + SAMPLE_OVERHEAD for k in todo for i in deal.shards[k])
        preflight(cfg.out, need, "%s shards" % split)
        write_shards(cfg, split, names, index, deal, labels, plan, state, todo)
    account(cfg, split, names, deal, state)


def write_shards(cfg: Settings, split: str, names: list[str], index: Index, deal: Deal,
                 labels: dict[str, int], plan: members.Plan, state: dict, todo: list[int]) -> None:
    """The shards `todo`, in parallel; each one recorded in the state as it is renamed."""
    sums = plan.sums and dataclasses.replace(plan.sums,
                                             undone="the shard holding it was not written")
    writer = ShardWriter(cfg.out, names, index, deal, labels, sums, plan.redo)
    errors, nosize = ErrorList(), []
    total = sum(index.sizes[i] for k in todo for i in deal.shards[k])
    bar = Progress(split, total, "B")
    t0, done, nbytes = time.monotonic(), 0, 0
    temp_beside(os.path.join(cfg.out, names[0]))     # this run's tag, before the workers fork
    try:
        for k, result in succeeded(writer, todo, cfg.jobs, errors,
                                   lambda k, code: "%s: the worker writing it died (exit code %s: "
                                   "killed, or out of memory?); a rerun writes it" % (names[k], code)):
            _, _, size, samples, missing = result
            state["written"][names[k]] = [size, samples]
            write_json(state_path(cfg, split), state)
            nosize.extend(missing)
            done += 1
            nbytes += sum(index.sizes[i] for i in deal.shards[k])
            bar.update(nbytes, "%d/%d shards" % (done, len(todo)))
    finally:                                       # stopped (Ctrl-C, SIGTERM): workers are gone,
        for k in todo:                             # and with them what they were writing
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_beside(os.path.join(cfg.out, names[k])))
    bar.close()
    fsync_dir(cfg.out)
    if nosize:
        log.warning("%s: warning: %d images have no size in their headers (no frame header where "
                    "one should be; their json says null): %s", split, len(nosize), some(nosize))
    if errors:
        raise PrepError("%s: %s; the complete shards are kept, a rerun writes the rest"
                        % (split, errors.summary()))
    dt = time.monotonic() - t0
    log.info("%s: this run wrote %d shards, %s of images in %.1f s (%.1f MiB/s)", split, done,
             human(nbytes), dt, nbytes / max(dt, 1e-6) / (1 << 20))


def account(cfg: Settings, split: str, names: list[str], deal: Deal, state: dict) -> None:
    """Every shard there, of the size recorded when it was written, holding the samples the deal
    gave it: only then the split is complete and _info.json gets its entry."""
    lengths = [len(s) for s in deal.shards]
    wrong = [n for n, length in zip(names, lengths)
             if not on_disk(cfg, n, state["written"].get(n)) or state["written"][n][1] != length]
    if wrong:
        raise PrepError("%s: %d shards are missing or not as written (%s): run again to write them"
                        % (split, len(wrong), some(wrong)))
    state["complete"] = True
    write_json(state_path(cfg, split), state)
    set_info(cfg, split, info_entry(split, names, lengths))
    size = sum(state["written"][n][0] for n in names)
    log.info("%s: complete: %s shards, %s samples, %s in %s; %s lists them", split,
             thousands(len(names)), thousands(sum(lengths)), human(size), cfg.out,
             info_path(cfg))


def need_out(cfg: Settings) -> None:
    """ROOT/webdataset is a folder, a link to one, or not there yet (make_split makes it)."""
    need_folder(cfg.out, "the shards")


def make_split(cfg: Settings, split: str, source: Opener) -> int:
    need_out(cfg)
    if os.path.isdir(cfg.out) and already_done(cfg, split):
        return 0
    try:
        os.makedirs(cfg.out, exist_ok=True)
        lock = Lock(os.path.join(cfg.out, ".%s-%s.lock" % (PREFIX, SPLIT_NAMES[split])),
                    "another %s is writing the %s shards in %s; let it finish, or stop it, then "
                    "run again" % (PROG, split, cfg.out))
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise PrepError("%s: cannot write in %s (%s): make it writable, or pass --root DIR on a "
                        "disk you can write to" % (split, cfg.out, e.strerror)) from None
    with lock:
        clear_temps(cfg.out, os.path.basename(state_path(cfg, split)))   # a killed run's
        if already_done(cfg, split):
            return 0
        write_split(cfg, split, source)
    return 0


def make_shards(cfg: Settings, splits: list[str]) -> int:
    """Write each split's shards; go on with the other split after a failure."""
    members.need_root(cfg.root)
    log.info("ROOT=%s splits=%s source=%s seed=%d jobs=%d", cfg.root, " ".join(splits),
             "the trees (--from-tree)" if cfg.from_tree else "the archives in downloads/"
             if cfg.source is None else "downloads/%s/ (--source %s)" % (cfg.source, cfg.source),
             cfg.seed, cfg.jobs)
    opened: list[members.SourceFiles] = []

    def source() -> Optional[members.SourceFiles]:
        if cfg.source is None:
            return None
        if not opened:
            opened.append(members.open_source(cfg, cfg.source, splits))
        return opened[0]

    return each_split(splits, lambda split: make_split(cfg, split, source), cfg.out)


def iter_splits(names: list[str]) -> list[str]:
    """The requested splits, once each, in the order train, val."""
    return [s for s in SPLITS if s in names]
