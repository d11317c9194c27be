"""01_unzip.sh --stream: from the link straight into the tree, with no archive on disk.

The archive's bytes are read once, in order, from the link; the tar reader hands each class (or
val/test image) to the same writer 01 uses for an archive on disk, and every byte passes through
a whole-file MD5 whose state can be saved. After each class is complete and synced, a checkpoint
records where the next class starts, the MD5 state there, the file's size and its ETag
(ROOT/.01_unzip/stream-SPLIT.json). A rerun asks the server for the rest from there (Range, with
If-Range); whatever else the server answers is dealt with so that bytes of two different files
are never joined, and when the stream is read from its start again, every class already on disk
is checked against the hashes in its record. The split is done only when the size and MD5 of
all the bytes read equal the official ones (or MD5_<split>/SIZE_<split> in urls.sh).

The bytes come from the one fetch engine (transport.py), as 00_download.sh's do. With
--connections N they are fetched ahead over N connections into a bounded spool of windows
(ROOT/.01_unzip/spool/) that the reader consumes in order and deletes.
"""
from __future__ import annotations

import copy
import ctypes
import os
import queue
import threading
import time
from typing import Optional

from . import md5state
from .console import PrepError, human, log, preflight, thousands
from .extract import Config, done_marker, resolve_final
from .files import Lock, clear_temps, open_dir, read_json, remove_tree, temp_of, try_flock, write_json
from .progress import Progress
from .tarstream import BLOCK, Source, iter_tar, sniff
from .train import (RE_OUTER, ClassTar, check_class_folders, clear_split_leftovers, finish_train,
                    refused_text, train_done, write_class)
from .transport import (FileChanged, LocalReader, Policy, Prefetcher, RangeReader, Validator,
                        spool)
from .urls import Link

WINDOW = 64 << 20                     # bytes per spool window (--connections)
CHECKPOINT_BYTES = 256 << 20          # val/test: a checkpoint at the first member boundary after this
CHECKPOINT_SECONDS = 5.0              # and at most one (a sync of the tree) every this many seconds


# ----------------------------------------------------------------------------- checkpoints

class Checkpoint:
    """Where a stream may resume: offset (a member boundary), the MD5 state there, the file's
    size and ETag. Saved atomically and synced; read back strictly (it is input too)."""

    def __init__(self, path: str, link: Link, verify: bool) -> None:
        self.path, self.link, self.verify = path, link, verify
        self.offset, self.total, self.etag = 0, link.size, None
        self.md5 = md5state.ResumableMD5() if verify else None
        self.extra: dict = {}

    def load(self) -> bool:
        doc = read_json(self.path)
        if doc is None:
            return False
        try:
            if doc.get("archive") != self.link.name or not isinstance(doc.get("offset"), int) \
                    or doc["offset"] < 0 or doc["offset"] % BLOCK or not isinstance(doc.get("total"), int):
                raise ValueError("not a checkpoint of %s" % self.link.name)
            if self.link.size is not None and doc["total"] != self.link.size:
                raise ValueError("for a file of %d bytes" % doc["total"])
            md5 = None
            if self.verify:
                md5 = md5state.ResumableMD5.from_state(doc.get("md5") or "")
                if md5.offset != doc["offset"]:
                    raise ValueError("its MD5 state is not at its offset")
        except (ValueError, TypeError, AttributeError) as e:
            log.info("%s: ignoring %s (%s); reading the archive from its start",
                     self.link.split, self.path, e)
            return False
        self.offset, self.total, self.etag, self.md5 = doc["offset"], doc["total"], doc.get("etag"), md5
        self.extra = doc.get("extra") or {}
        return True

    def snapshot(self, offset: int) -> dict:
        """The checkpoint at `offset` (the MD5 must be exactly there), to be written later."""
        assert self.md5 is None or self.md5.offset == offset, (self.md5.offset, offset)
        self.offset = offset
        return {"archive": self.link.name, "offset": offset, "total": self.total, "etag": self.etag,
                "md5": self.md5.state() if self.md5 else None, "extra": copy.deepcopy(self.extra)}

    def write(self, doc: dict) -> None:
        write_json(self.path, doc)

    def restart(self) -> None:
        self.offset, self.etag = 0, None
        self.md5 = md5state.ResumableMD5() if self.verify else None

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)


def sync_tree(path: str) -> None:
    """Make what was written under `path` durable: syncfs on its file system (os.sync elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the bytes

def open_bytes(cfg: Config, link: Link, cp: Checkpoint, policy: Policy, connections: int):
    """A reader of the archive's bytes from cp.offset (read(n), close()), from the one fetch engine
    (transport.py); sets cp.total and cp.etag from the server. A server that no longer has the file
    begun (another size or ETag) is said, and the reading starts over from byte 0 with the
    checkpoint reset. With connections > 1 the bytes are fetched ahead in windows of WINDOW bytes
    in ROOT/.01_unzip/spool/ (at most 2N at once), read back in order and deleted."""
    remote = link.remote()
    if remote.local is not None:
        if not os.path.isfile(remote.local):
            raise PrepError("%s: the link in %s is a local file that does not exist" % (link.split,
                                                                                       link.urls_from))
        size = os.path.getsize(remote.local)
        if cp.total is not None and size != cp.total:
            raise PrepError("%s: %s is %s bytes, it should be %s (%s)" % (
                link.split, link.name, thousands(size), thousands(cp.total), link.size_from))
        cp.total = size
        return LocalReader(remote, cp.offset, None)
    for _ in range(2):
        validator = Validator(cp.total, cp.etag)
        reader = RangeReader(remote, cp.offset, None, policy, validator)
        try:
            first = reader.read(1)                     # connect: the headers are checked here
        except FileChanged as e:
            reader.close()
            if cp.offset == 0:
                raise
            log.warning("%s: %s; reading it from its start again (every class already on disk is "
                        "checked against its record)", link.split, e)
            cp.restart()
            cp.total = link.size
            continue
        except BaseException:
            reader.close()
            raise
        cp.total, cp.etag = reader.total, reader.etag
        if cp.total is None:
            reader.close()
            raise PrepError("%s: %s did not say how big %s is; --stream needs the size (set SIZE_%s in "
                            "%s)" % (link.split, link.host, link.name, link.variable[13:],
                                     link.urls_from))
        if cp.offset == 0:                             # a login page, or not a tar at all?
            first += reader.read(4095)
            sniff(link.shown, cp.total, first, False, "%s archive" % link.split, link=True)
        if connections > 1 and reader.first is not None and reader.first.status == 200:
            log.warning("%s: %s ignores byte ranges, which --connections needs: going on over one "
                        "connection", link.split, link.host)
        elif connections > 1:
            reader.close()
            return spool(remote, cp.offset, cp.total, policy, connections,
                         os.path.join(cfg.state, "spool"), validator, WINDOW)
        return Prefetcher(reader, first)
    raise PrepError("%s: the file behind the link keeps changing; try again later" % link.split)


class Saver:
    """Checkpoints written in a thread: first the files are synced (syncfs), then the checkpoint
    that counts on them is saved, while the reader goes on with the next class. Only the latest
    checkpoint waiting matters, and one is saved at most every CHECKPOINT_SECONDS (a sync after
    every class would hold up the writing); a kill loses at most the classes since the last one."""

    def __init__(self, cp: Checkpoint) -> None:
        self.cp, self.cond = cp, threading.Condition()
        self.pending: Optional[tuple[str, dict]] = None
        self.busy, self.closed = False, False
        self.error: list[BaseException] = []
        threading.Thread(target=self._run, daemon=True).start()

    def put(self, written: str, doc: dict) -> None:
        with self.cond:
            if self.error:
                raise self.error[0]
            self.pending = (written, doc)
            self.cond.notify_all()

    def _run(self) -> None:
        last = 0.0
        while True:
            with self.cond:               # at most one sync every CHECKPOINT_SECONDS, unless closing
                while not self.closed and (self.pending is None
                                           or time.monotonic() - last < CHECKPOINT_SECONDS):
                    self.cond.wait(max(0.05, CHECKPOINT_SECONDS - (time.monotonic() - last)))
                if self.pending is None:
                    return
                (written, doc), self.pending, self.busy = self.pending, None, True
            try:
                # the files, and the records beside the checkpoint (maybe another file system)
                folders = (written, os.path.dirname(self.cp.path))
                for folder in {os.stat(f).st_dev: f for f in folders}.values():
                    sync_tree(folder)
                self.cp.write(doc)
            except BaseException as e:
                self.error.append(e)
            last = time.monotonic()
            with self.cond:
                self.busy = False
                self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            while self.pending is not None or self.busy:
                self.cond.wait()
        if self.error:
            raise self.error[0]


class Counted:
    """What iter_tar reads from: the archive's bytes, each passing once through the MD5.

    The MD5 is updated in a thread of its own, in order, a little behind the reader (libcrypto
    runs without the GIL), so that hashing the archive overlaps writing the files. drain() waits
    until it has caught up: the MD5 state is then exactly that of the bytes read so far."""

    def __init__(self, raw, cp: Checkpoint) -> None:
        self.raw, self.cp = raw, cp
        self.saver = Saver(cp)
        self.queue: Optional[queue.Queue] = None
        self.error: list[BaseException] = []
        if cp.md5 is not None:
            self.queue = queue.Queue(maxsize=8)
            threading.Thread(target=self._hash, daemon=True).start()

    def _hash(self) -> None:
        chunks = self.queue
        while True:
            data = chunks.get()
            try:
                if data is None:
                    return
                if not self.error:
                    self.cp.md5.update(data)
            except BaseException as e:                 # handed to the reader at drain()
                self.error.append(e)
            finally:
                chunks.task_done()

    def read(self, n: int) -> bytes:
        data = self.raw.read(n)
        if data and len(data) < n:                     # a pipe may return less than asked
            out = bytearray(data)
            while len(out) < n:
                more = self.raw.read(n - len(out))
                if not more:
                    break
                out += more
            data = bytes(out)
        if self.queue is not None and data:
            self.queue.put(data)
        return data

    def drain(self) -> None:
        if self.queue is not None:
            self.queue.join()
            if self.error:
                raise self.error[0]

    def checkpoint(self, offset: int, written: str) -> None:
        """A checkpoint at `offset`, the position of the bytes read so far: saved by the Saver
        once what was written under `written` is on disk."""
        self.drain()
        self.saver.put(written, self.cp.snapshot(offset))

    def close(self) -> None:
        """Wait for the MD5 and the last checkpoint."""
        if self.queue is not None:
            self.drain()
            self.queue.put(None)
            self.queue = None
        self.saver.close()

    def source(self, pos: int) -> Source:
        return Source(self, pos=pos, seekable=False)


# ----------------------------------------------------------------------------- checking the end

def check_whole(link: Link, cp: Checkpoint, pos: int) -> None:
    """All bytes were read: their count and MD5 must be the expected ones."""
    if link.size is not None and pos != link.size:
        raise PrepError("%s: the stream held %s bytes, %s expects %s: the link serves another file; "
                        "nothing was marked done" % (link.split, thousands(pos), link.size_from,
                                                     thousands(link.size)))
    if cp.md5 is None or not link.md5:
        log.info("%s: MD5 not checked (--no-verify); size %s", link.split, thousands(pos))
        return
    got = cp.md5.hexdigest()
    if got != link.md5:
        cp.remove()
        raise PrepError("%s: the %s bytes read have MD5 %s, but %s says %s: some bytes arrived "
                        "damaged, or the link serves another file. The split is not marked done and "
                        "nothing was deleted; a rerun reads the archive again from its start and "
                        "checks every class already on disk against its record"
                        % (link.split, thousands(pos), got, link.md5_from, link.md5))
    log.info("%s: MD5 %s verified (%s), %s bytes, with no copy of the archive on disk",
             link.split, got, link.md5_from, thousands(pos))


# ----------------------------------------------------------------------------- train

def checkpoint_for(cfg: Config, split: str, link: Link, verify: bool) -> Checkpoint:
    if verify and link.md5 and not md5state.available():
        raise PrepError("%s: checking the MD5 of a stream across interruptions needs OpenSSL's "
                        "libcrypto with MD5_Init/MD5_Update/MD5_Final (Debian package %s), and %s. "
                        "Install it, or pass --no-verify to check only the size"
                        % (split, md5state.DEBIAN_PACKAGE, md5state.unavailable_reason()))
    return Checkpoint(cfg.checkpoint(split), link,
                      verify and link.md5 is not None)


def eta(bar: Progress, done: int, total: int, start: int) -> str:
    """'3.2 MiB/s, ETA 01:02:03' from the bytes of this run."""
    dt = max(time.monotonic() - bar.t0, 1e-6)
    rate = (done - start) / dt
    if dt < 5 or rate <= 0:
        return "%.1f MiB/s, ETA ?" % (rate / (1 << 20))
    left = (total - done) / rate
    return "%.1f MiB/s, ETA %02d:%02d:%02d" % (rate / (1 << 20), left // 3600, left % 3600 // 60,
                                                left % 60)


class TrainStream:
    """One run of the train stream: the classes as they come, a checkpoint after each."""

    def __init__(self, cfg: Config, link: Link, cp: Checkpoint) -> None:
        self.cfg, self.link, self.cp = cfg, link, cp
        self.train_dir = os.path.join(cfg.root, "train")
        self.records = os.path.join(cfg.state, "train")
        self.wnids: list[str] = list(cp.extra.get("wnids", [])) if cp.offset else []
        self.refused: list[str] = []
        self.new = self.images = 0

    def one_class(self, src: Source, tar: ClassTar, label: str, verifying: bool) -> None:
        """Write the class, or skip it when it is on disk already. When the stream is read from
        its start again (verifying), a class on disk is written anew and kept only if the files
        are the same; else the new bytes replace it: never a tree from two different files."""
        folder = os.path.join(self.train_dir, tar.wnid)
        if os.path.isdir(folder):
            check_class_folders(self.train_dir, self.records, [tar.wnid])   # foreign: says so
        if os.path.isdir(folder) and not verifying:
            src.skip_to(tar.offset + tar.size)
            return
        rec = write_class(src, tar, self.train_dir, self.records, label, self.cfg.manifest,
                          replace=True)
        self.new += 1
        self.images += rec["images"]

    def run(self, src: Source, bar: Progress) -> None:
        start, verifying = self.cp.offset, self.cp.offset == 0
        for m in iter_tar(src, start, self.cp.total, self.link.name, need_eof=True):
            if not m.is_file() or not RE_OUTER.match(m.name) or m.name[:-4] in self.wnids:
                self.refused.append(m.describe())
                continue
            tar = ClassTar(m.name[:-4], m.offset, m.size, m.mtime)
            self.wnids.append(tar.wnid)
            self.one_class(src, tar, "%s: %s" % (self.link.name, m.name), verifying)
            nxt = tar.offset + (tar.size + BLOCK - 1) // BLOCK * BLOCK
            src.skip_to(nxt)
            if not self.refused:
                self.cp.extra = {"wnids": self.wnids}
                src.f.checkpoint(nxt, self.train_dir)
            bar.update(src.pos, "%d classes (%d written now, %d images), %s" % (
                len(self.wnids), self.new, self.images, eta(bar, src.pos, self.cp.total, start)))


def stream_train(cfg: Config, link: Link, policy: Policy, connections: int, verify: bool) -> int:
    resolve_final(cfg.root, "train")                   # a link to a missing folder: said
    train_dir = os.path.join(cfg.root, "train")
    doc = train_done(cfg)
    if doc:
        log.info("train: already done (%d classes, %d images, %s in %s); nothing to do",
                 len(doc["classes"]), doc["images"], human(doc["bytes"]), train_dir)
        clear_split_leftovers(cfg, "train", train_dir)
        return 0
    with Lock(os.path.join(cfg.state, "train.shard-0-of-1.lock"),
              "another 01_unzip.sh is extracting train into this ROOT; let it finish, or stop it, "
              "then run again"):
        os.makedirs(os.path.join(cfg.state, "train"), exist_ok=True)
        os.makedirs(train_dir, exist_ok=True)
        for folder in (train_dir, os.path.join(cfg.state, "train"), cfg.state):
            for e in os.scandir(folder):              # what interrupted runs were writing
                if temp_of(e.name) and not e.name.endswith(".lock"):
                    clear_temps(folder, temp_of(e.name))
        cp = checkpoint_for(cfg, "train", link, verify)
        if cp.load():
            log.info("train: resuming the stream at byte %s (%s of %s)", thousands(cp.offset),
                     human(cp.offset), human(cp.total or 0))
        raw = open_bytes(cfg, link, cp, policy, connections)
        run = TrainStream(cfg, link, cp)
        try:
            preflight(cfg.root, cp.total - cp.offset + (2 * connections * WINDOW if connections > 1
                                                         else 0), "train")
            bar = Progress("train", cp.total, "B")
            counted = Counted(raw, cp)
            src = counted.source(cp.offset)
            try:
                run.run(src, bar)
                counted.close()
            finally:
                bar.close()
        finally:
            raw.close()
        log.info("train: this run wrote %d classes, %d images", run.new, run.images)
        if run.refused:
            raise PrepError(refused_text(link.name, run.refused))
        check_whole(link, cp, src.pos)
    finish_train(cfg, link.name, src.pos, sorted(run.wnids))      # (removes the checkpoint)
    return 0


# ----------------------------------------------------------------------------- val and test

def stream_flat(cfg: Config, split: str, link: Link, policy: Policy, connections: int,
                verify: bool) -> int:
    from .unzip import FlatWriter, finish_flat, prepare_final
    final = resolve_final(cfg.root, split)
    doc = done_marker(cfg, split, final)
    if doc:
        log.info("%s: already done (%d images, %s in %s); nothing to do", split, doc["images"],
                 human(doc["bytes"]), final)
        clear_split_leftovers(cfg, split, final)
        return 0
    with Lock(cfg.marker(split) + ".lock", "another 01_unzip.sh is extracting %s" % split, wait=True):
        if done_marker(cfg, split, final):
            log.info("%s: already done by another process; nothing to do", split)
            return 0
        clear_temps(cfg.state, os.path.basename(cfg.checkpoint(split)))
        cp = checkpoint_for(cfg, split, link, verify)
        partial = os.path.join(os.path.dirname(final), ".%s.tmp-stream" % os.path.basename(final))
        resumed = cp.load() and os.path.isdir(partial)
        if not resumed:
            cp.restart()
            prepare_final(cfg, final, split)
            remove_tree(partial)
            os.makedirs(partial)
        raw = open_bytes(cfg, link, cp, policy, connections)
        try:
            with open_dir(partial) as folder:
                if not try_flock(folder):
                    raise PrepError("%s: another run is writing %s" % (split, partial))
                out = resume_flat(FlatWriter(split, folder, link.name, cfg.manifest), cp, partial)
                preflight(os.path.dirname(final), cp.total - cp.offset, split)
                stream_members(link, raw, cp, out, partial)
        finally:
            raw.close()
        finish_flat(cfg, split, partial, final, (link.name, cp.total), (out.count, out.bytes, out.sums))
    return 0


def resume_flat(out, cp: Checkpoint, partial: str):
    """The writer, with what the checkpoint says was written; files written after it are removed
    (they are written again)."""
    if cp.offset == 0:
        for name in os.listdir(partial):
            os.remove(os.path.join(partial, name))
        return out
    kept = {name: sha for name, sha in cp.extra.get("files", [])}
    for name in os.listdir(partial):
        if name not in kept:
            os.remove(os.path.join(partial, name))
    missing = [n for n in kept if not os.path.exists(os.path.join(partial, n))]
    if missing:
        raise PrepError("%s is missing %d file(s) the checkpoint lists (e.g. %s); delete %s and run "
                        "again to start this split over" % (partial, len(missing), missing[0], cp.path))
    out.count, out.bytes = len(kept), cp.extra.get("bytes", 0)
    out.sums = [(n, s) for n, s in kept.items() if s]
    return out


def stream_members(link: Link, raw, cp: Checkpoint, out, partial: str) -> None:
    """Write the members from cp.offset on; a checkpoint every CHECKPOINT_BYTES."""
    start, last = cp.offset, cp.offset
    bar = Progress(link.split, cp.total, "B")
    counted = Counted(raw, cp)
    src = counted.source(cp.offset)
    names = {n: s for n, s in cp.extra.get("files", [])} if cp.offset else {}
    try:
        for m in iter_tar(src, cp.offset, cp.total, out.label, need_eof=True):
            before = len(out.sums)
            name = out.add(src, m)
            if name is None:
                continue
            names[name] = out.sums[-1][1] if len(out.sums) > before else None
            nxt = m.offset + (m.size + BLOCK - 1) // BLOCK * BLOCK
            src.skip_to(nxt)
            bar.update(src.pos, "%d images, %s" % (out.count, eta(bar, src.pos, cp.total, start)))
            if nxt - last >= CHECKPOINT_BYTES and not out.refused:
                cp.extra = {"files": sorted(names.items()), "bytes": out.bytes}
                counted.checkpoint(nxt, partial)
                last = nxt
        counted.close()
    finally:
        bar.close()
    out.check()
    check_whole(link, cp, src.pos)
