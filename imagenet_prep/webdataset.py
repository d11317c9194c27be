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
against the manifest as it is read). Sorted by WNID/NAME, they are ranked by BLAKE2b-128 of
"SEED/WNID/NAME" (a permutation any program can recompute), and the ranked list is dealt out to the
shards like cards: sample j goes to shard j mod N, so shard lengths differ by at most one. Shards
are written in parallel (one worker process each, reading its samples where they lie), each under a
temporary name, renamed when complete and recorded in the state file. A rerun writes only the
shards not recorded there; the same plan gives the same bytes. _info.json gets the split's entry
only once every shard is there with the size recorded for it.

Here: Settings; Index (the plan's images, compact) -> Deal (the permutation and the shards) ->
ShardWriter (a worker: one shard) -> write_split (state, leftovers, workers, accounting,
_info.json); make_shards is the stage as 06_pack_webdataset.py runs it.
"""
from __future__ import annotations

import array
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional

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
from .valfolders import SYNSETS_CSV, read_synsets

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

class Index:
    """The plan's images sorted by path (WNID/NAME) and where each one's bytes are, in parallel
    lists and arrays (the real train split: about 400 MiB at the peak, while sorting); the
    workers inherit them."""

    def __init__(self, plan: members.Plan) -> None:
        paths: list[str] = []
        sources: list[str] = []
        rels: list[str] = []
        offsets, sizes, archived = array.array("q"), array.array("q"), bytearray()
        bar, seen = Progress("%s: index" % plan.split, plan.total, "B"), 0
        for e in plan.entries():
            if isinstance(e, members.Folder):
                continue
            paths.append(e.path)
            sources.append(e.source)
            rels.append(e.rel)
            offsets.append(e.offset)
            sizes.append(e.size)
            archived.append(e.archived)
            seen += e.size
            if len(paths) % 1024 == 0:
                bar.update(e.offset + e.size if e.archived else seen,
                           "%s images" % thousands(len(paths)))
        bar.update(plan.total, "%s images" % thousands(len(paths)))
        bar.close()
        order = sorted(range(len(paths)), key=paths.__getitem__)
        self.paths = [paths[i] for i in order]
        self.sources = [sources[i] for i in order]
        self.rels = [rels[i] for i in order]
        self.offsets = array.array("q", (offsets[i] for i in order))
        self.sizes = array.array("q", (sizes[i] for i in order))
        self.archived = bytes(archived[i] for i in order)
        twice = [a for a, b in zip(self.paths, self.paths[1:]) if a == b]
        if twice:                                    # the planners refuse these: never here
            raise PrepError("%s: %d images appear twice in %s (%s); refused: is it damaged?"
                            % (plan.split, len(twice), plan.source, some(twice)))

    def __len__(self) -> int:
        return len(self.paths)

    def wnids(self) -> list[str]:
        return sorted({p.split("/", 1)[0] for p in self.paths})


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

class TarOut:
    """Members written one after another into a file, in the shards' fixed form."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.size += len(data)

    def header(self, name: str, size: int) -> None:
        self.write(tar_header(name, size, MTIME, False))

    def pad(self, size: int) -> None:
        self.write(bytes(-size % 512))

    def member(self, name: str, data: bytes) -> None:
        self.header(name, len(data))
        self.write(data)
        self.pad(len(data))

    def end(self) -> None:
        self.write(bytes(1024))
        self.write(bytes(-self.size % RECORD))


class ShardWriter:
    """A worker's job: shard k, written under a temporary name and renamed when complete. Returns
    ("ok", k, bytes, samples, [images whose size was not found]), ("full" | "error", k, message).
    The index and the deal are inherited from the main process, not sent."""

    def __init__(self, out: str, names: list[str], index: Index, deal: Deal,
                 labels: dict[str, int], sums: Optional[members.Sums]) -> None:
        self.out, self.names, self.index, self.deal = out, names, index, deal
        self.labels, self.sums = labels, sums
        self.fds: dict[str, int] = {}

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
            self.fds.clear()

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
        path = self.index.paths[i]
        wnid, name = path.split("/", 1)
        key = name.rsplit(".", 1)[0]
        label = self.labels[wnid]
        out.member(key + ".cls", b"%d" % label)
        size = self.index.sizes[i]
        out.header(key + ".jpg", size)
        info = self.copy(out, i, size)
        out.pad(size)
        doc = {"filename": path, "label": label, "wnid": wnid, "width": info.width,
               "height": info.height}
        out.member(key + ".json", json.dumps(doc).encode("utf-8", "surrogateescape"))
        return info

    def copy(self, out: TarOut, i: int, size: int) -> ImageInfo:
        """The image's bytes into the shard, its headers read on the way; a tree's file hashed
        and checked against the manifest."""
        source, scan = self.index.sources[i], HeadScan()
        if self.index.archived[i]:
            fd = self.fds.get(source)
            if fd is None:
                fd = self.fds[source] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            self.pump(fd, self.index.offsets[i], size, source, out, scan, None)
            return scan.end()
        with members.open_tree_file(source, size) as (fd, _):
            sha = hashlib.sha256() if self.sums is not None else None
            self.pump(fd, 0, size, source, out, scan, sha)
            if self.sums is not None and sha is not None:
                self.sums.check(self.index.rels[i], source, sha.hexdigest())
        return scan.end()

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
                    for n, r in doc["written"].items())):
        raise PrepError("%s is damaged or not %s's: remove it and the shards %s-%s-*.tar beside "
                        "it, then run again" % (path, PROG, PREFIX, SPLIT_NAMES[split]))
    return doc


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

def plan_split(cfg: Settings, split: str) -> tuple[members.Plan, Index, dict[str, int]]:
    """The split's images, checked: counts (official ones are errors if wrong), classes known."""
    labels = class_index(cfg)                      # first: it is quick, and needed
    plan = members.plan_split(cfg, split, cfg.from_tree, FROM_TREE_HINT)
    index = Index(plan)
    wnids = index.wnids()
    if plan.expect_files is not None and len(index) != plan.expect_files:
        raise PrepError("%s: %s holds %s images, but 01_unzip.sh extracted %s: the tree changed "
                        "since; extract it again with 01_unzip.sh, or use the archive"
                        % (split, plan.source, thousands(len(index)), thousands(plan.expect_files)))
    if plan.check_official:
        official_counts(split, plan.archive_size, len(wnids) if plan.classes else None, len(index))
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


def write_split(cfg: Settings, split: str) -> None:
    n = cfg.count(split)
    names = shard_names(split, n)
    plan, index, labels = plan_split(cfg, split)
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
    need = sum(index.sizes[i] + SAMPLE_OVERHEAD for k in todo for i in deal.shards[k])
    preflight(cfg.out, need, "%s shards" % split)
    log.info("%s: %s images in %d shards (seed %d): %d already written, %d to write with %d "
             "workers", split, thousands(len(index)), n, cfg.seed, n - len(todo), len(todo),
             min(cfg.jobs, max(len(todo), 1)))
    if todo:
        write_shards(cfg, split, names, index, deal, labels, plan, state, todo)
    account(cfg, split, names, deal, state)


def write_shards(cfg: Settings, split: str, names: list[str], index: Index, deal: Deal,
                 labels: dict[str, int], plan: members.Plan, state: dict, todo: list[int]) -> None:
    """The shards `todo`, in parallel; each one recorded in the state as it is renamed."""
    sums = plan.sums and dataclasses.replace(plan.sums,
                                             undone="the shard holding it was not written")
    writer = ShardWriter(cfg.out, names, index, deal, labels, sums)
    errors, full, nosize = ErrorList(), [], []
    total = sum(index.sizes[i] for k in todo for i in deal.shards[k])
    bar = Progress(split, total, "B")
    t0, done, nbytes = time.monotonic(), 0, 0

    def jobs():
        for k in todo:
            if full:
                return
            yield k

    temp_beside(os.path.join(cfg.out, names[0]))     # this run's tag, before the workers fork
    try:
        for k, result, exitcode in run_parallel(writer, jobs(), cfg.jobs):
            if result is None:
                errors.add("%s: the worker writing it died (exit code %s: killed, or out of memory?); "
                           "a rerun writes it" % (names[k], exitcode))
            elif result[0] == "full":
                if not full:
                    errors.add(result[2])
                full.append(k)
            elif result[0] == "error":
                errors.add(result[2])
            else:
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


def make_split(cfg: Settings, split: str) -> int:
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
        write_split(cfg, split)
    return 0


def make_shards(cfg: Settings, splits: list[str]) -> int:
    """Write each split's shards; go on with the other split after a failure."""
    members.need_root(cfg.root)
    log.info("ROOT=%s splits=%s source=%s seed=%d jobs=%d", cfg.root, " ".join(splits),
             "the trees (--from-tree)" if cfg.from_tree else "the archives in downloads/",
             cfg.seed, cfg.jobs)
    return each_split(splits, lambda split: make_split(cfg, split), cfg.out)


def iter_splits(names: list[str]) -> list[str]:
    """The requested splits, once each, in the order train, val."""
    return [s for s in SPLITS if s in names]
