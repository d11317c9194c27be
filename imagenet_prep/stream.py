"""01_unzip.sh --stream: from the link straight into the tree, with no archive on disk.

The archive's bytes are read once, in order, from the link (open_bytes). The reader (the main
thread) parses the tar and hands each member's bytes to a pool of writer threads (Writers), at
most --in-flight MiB at a time, so that memory stays flat for any class size: the writers create
the files and hash them (SHA-256, for the manifest), and the last writer of a class records it
and renames it into place (train.ClassWriter; val/test: unzip.FlatWriter). That work is system
calls and hashing, which run without Python's lock, so the threads share the cores. Every byte
also passes, in order, through a whole-file MD5 that runs in a thread of its own and whose state
can be saved (Counted).

Checkpoints (ROOT/.01_unzip/stream-SPLIT.json, Checkpoint) are saved by a thread of their own
(Saver), at most every CHECKPOINT_SECONDS, after a sync of the tree. A checkpoint goes at the
start of the oldest class (val/test: file) not yet written (Ledger), so that everything before it
is complete, and holds the MD5 state there, the SHA-256 of the 512 bytes found there (the tar
header a resumed read must find: else the file behind the link changed, or the checkpoint was
edited), the file's size and ETag, and what is done before it: train's classes, each with the
offset and MD5 state where it starts (a class removed later is fetched again alone and its bytes
proven by the states around it); val/test's files with their SHA-256. A rerun asks the server for
the rest from there (Range, with If-Range); whatever else the server answers is dealt with so that
bytes of two different files are never joined.

Nothing written before counts until the bytes of this reading have proved it: a class on disk
that the stream reaches again is written anew from the bytes read now and compared with its
record (kept if the same, else replaced), and val/test files written after the checkpoint are
written again. After a wrong MD5, a changed file or a checkpoint that does not fit, the reading
starts from byte 0, and so proves every class again, across any number of interruptions. The
split is done only when the size and MD5 of all the bytes read equal the official ones (or
MD5_<split>/SIZE_<split> in urls.sh).

The bytes come from the one fetch engine (transport.py), as 00_download.sh's do. With
--connections N they are fetched ahead over N connections into a bounded spool of windows
(ROOT/.01_unzip/spool/) that the reader consumes in order and deletes.
"""
from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import os
import queue
import re
import stat
import threading
import time
from typing import Callable, Optional

from . import md5state
from .console import DISK_FULL, PrepError, disk_full_text, human, log, preflight, some, thousands
from .extract import CHUNK, Config, done_marker, resolve_final
from .facts import WNID_RE
from .files import (Lock, NotRegular, atomic_write, clear_temps, kind_of, open_dir, open_regular,
                    parse_json, read_regular, remove_tree, temp_name, temp_of, try_flock, write_json)
from .progress import Progress
from .tarstream import BLOCK, Member, Source, iter_tar, read_data, sniff
from .train import (FLAT_NAME, RE_OUTER, ClassTar, ClassWriter, check_class_folders,
                    clear_split_leftovers, finish_train, foreign_reason, read_record, refused_text,
                    train_done, write_class)
from .transport import (FileChanged, LocalReader, Policy, Prefetcher, RangeReader, Validator,
                        Windows, spool)
from .urls import Link
from .verify import read_all

WINDOW = 64 << 20                     # bytes per spool window (--connections)
IN_FLIGHT = 64                        # --in-flight default: MiB of files read but not yet written
HASH_AHEAD = 16 << 20                 # bytes read but not yet through the MD5, at most
CHECKPOINT_SECONDS = 5.0              # a checkpoint (a sync of the tree) at most every this many s
CHECKPOINT_MAX = 64 << 20             # the largest checkpoint read (test's: ~15 MiB for 100,000 files)
CHECKPOINT_VERSION = 2
SHA_HEX = re.compile(r"[0-9a-f]{64}\Z")
MARK_BYTES = 1 << 20                  # val/test: a place for a checkpoint after about every MiB,
MARK_SECONDS = 0.5                    # or every half second on a slow link
PENDING = object()                    # an MD5 state not taken yet


# ----------------------------------------------------------------------------- checkpoints

def whole(value: object) -> bool:
    return type(value) is int


class Checkpoint:
    """Where a stream may resume: `offset` (where a member's tar header starts, every class or
    file before it complete), the MD5 state there, `head` (the SHA-256 of the 512 bytes there),
    the file's size and ETag, and `extra`: train {"classes": [[WNID, start, MD5 state there],
    ...]}, val/test {"files": [[name, SHA-256], ...], "bytes": N}. Saved atomically after a sync;
    read back strictly (it is input too)."""

    def __init__(self, path: str, link: Link, verify: bool) -> None:
        self.path, self.link, self.verify = path, link, verify
        self.restart()
        self.total = link.size

    def restart(self) -> None:
        """From byte 0 (of whatever file the link serves now)."""
        self.offset, self.etag, self.head = 0, None, None
        self.md5 = md5state.ResumableMD5() if self.verify else None
        self.extra: dict = {}

    def load(self) -> bool:
        """The saved checkpoint, if it fits this link (else a note, and the stream starts from
        byte 0). A checkpoint that is not a regular file of reasonable size is an error."""
        try:
            text = read_regular(self.path, "01_unzip.sh --stream keeps its place in the %s stream "
                                "there: delete it and run again (the stream then starts from "
                                "byte 0)" % self.link.split, CHECKPOINT_MAX)
        except FileNotFoundError:
            return False
        try:
            self._take(parse_json(text))
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
            log.info("%s: ignoring %s (%s); reading the archive from its start", self.link.split,
                     self.path, e)
            self.restart()
            return False
        return True

    def _take(self, doc: dict) -> None:
        if not isinstance(doc, dict) or doc.get("version") != CHECKPOINT_VERSION:
            raise ValueError("not a checkpoint of this version of 01_unzip.sh")
        if doc.get("archive") != self.link.name:
            raise ValueError("not a checkpoint of %s" % self.link.name)
        offset, total = doc.get("offset"), doc.get("total")
        if not (whole(offset) and whole(total) and 0 < offset < total and offset % BLOCK == 0):
            raise ValueError("its offset and size do not fit")
        if self.link.size is not None and total != self.link.size:
            raise ValueError("for a file of %d bytes" % total)
        if not isinstance(doc.get("head"), str) or not SHA_HEX.match(doc["head"]):
            raise ValueError("it says no header")
        if doc.get("etag") is not None and not isinstance(doc["etag"], str):
            raise ValueError("its ETag is not text")
        if self.verify and doc.get("md5") is None:
            raise ValueError("it was saved by a stream with --no-verify, without the MD5 state this "
                             "one needs")
        md5 = self._md5(doc.get("md5"), offset) if self.verify else None
        extra = doc.get("extra")
        if not isinstance(extra, dict):
            raise ValueError("it says nothing of what is done")
        extra = self._classes(extra, offset) if self.link.split == "train" else self._files(extra)
        self.offset, self.total, self.etag, self.md5 = offset, total, doc.get("etag"), md5
        self.head, self.extra = doc["head"], extra

    @staticmethod
    def _md5(state: object, offset: int) -> md5state.ResumableMD5:
        md5 = md5state.ResumableMD5.from_state(state)
        if md5.offset != offset:
            raise ValueError("its MD5 state is not at its offset")
        return md5

    def _classes(self, extra: dict, offset: int) -> dict:
        classes, seen, last = extra["classes"], set(), -1
        for wnid, start, state in classes:
            if not (isinstance(wnid, str) and WNID_RE.match(wnid) and wnid not in seen
                    and whole(start) and last < start < offset and start % BLOCK == 0):
                raise ValueError("its classes are not a list of WNIDs in archive order")
            if self.verify:
                self._md5(state, start)
            seen.add(wnid)
            last = start
        return {"classes": [list(c) for c in classes]}

    @staticmethod
    def _files(extra: dict) -> dict:
        files, seen = extra["files"], set()
        for name, sha in files:
            if not (isinstance(name, str) and FLAT_NAME.match(name) and name not in seen
                    and (sha is None or isinstance(sha, str) and SHA_HEX.match(sha))):
                raise ValueError("its files are not a list of image names and hashes")
            seen.add(name)
        if not whole(extra["bytes"]) or extra["bytes"] < 0:
            raise ValueError("its byte count is not a number")
        return {"files": [list(f) for f in files], "bytes": extra["bytes"]}

    def doc(self, offset: int, md5: Optional[str], head: str, extra: dict) -> dict:
        return {"version": CHECKPOINT_VERSION, "archive": self.link.name, "offset": offset,
                "total": self.total, "etag": self.etag, "md5": md5, "head": head, "extra": extra}

    def write(self, doc: dict) -> None:
        write_json(self.path, doc)

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
        try:
            mode = os.stat(remote.local).st_mode
        except FileNotFoundError:
            raise PrepError("%s: the link in %s is a local file that does not exist"
                            % (link.split, link.urls_from)) from None
        if not stat.S_ISREG(mode):
            raise PrepError("%s: the link in %s is a local file that is not a regular file (%s), so it "
                            "was not read: point it at the archive itself" % (link.split, link.urls_from,
                                                                              kind_of(mode)))
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




# ----------------------------------------------------------------------------- the pipeline

class Budget:
    """Bytes handed from one thread to others: take() waits while `limit` are out (one piece
    larger than that goes alone), give() returns them."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.cond = limit, 0, threading.Condition()

    def take(self, n: int) -> None:
        with self.cond:
            while self.used and self.used + n > self.limit:
                self.cond.wait()
            self.used += n

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


class Counted:
    """What the tar reader reads from: the archive's bytes from `start` on (`head`: bytes taken
    from `raw` already, read first), each passing once through the MD5, which runs in a thread of
    its own a little behind the reader (at most HASH_AHEAD bytes; libcrypto runs without the
    GIL). mark() notes the current position as one where a checkpoint may go: the MD5 thread
    takes its state there as it passes, and the 512 bytes read next (the header a resumed read
    must find there) are hashed."""

    def __init__(self, raw, md5: Optional[md5state.ResumableMD5], start: int,
                 head: bytes = b"") -> None:
        self.raw, self.md5, self.pos, self.held = raw, md5, start, head
        self.cond = threading.Condition()
        self.marks: dict[int, list] = {}          # offset -> [MD5 state, SHA-256 of its header]
        self.capture: Optional[tuple[int, bytearray]] = None
        self.error: list[BaseException] = []
        self.chunks: Optional[queue.Queue] = None
        self.buffer: list[bytes] = []             # read, not yet handed to the MD5 thread (joined:
        #                                           a copy here saves many calls there)
        self.buffered = 0
        if md5 is not None:
            self.hashed, self.due = start, collections.deque()    # marks the MD5 has not reached
            self.ahead = Budget(HASH_AHEAD)
            self.chunks = queue.Queue()
            threading.Thread(target=self._hash, daemon=True).start()

    # -- the reader's side
    def read(self, n: int) -> bytes:
        parts, got = [], 0
        if self.held:
            parts.append(self.held[:n])
            self.held = self.held[n:]
            got = len(parts[0])
        while got < n:
            data = self.raw.read(n - got)         # a pipe may return less than asked
            if not data:
                break
            parts.append(data)
            got += len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if data:
            if self.capture is not None:
                self._capture(data)
            if self.chunks is not None:
                self.buffer.append(data)
                self.buffered += len(data)
                if self.buffered >= 1 << 20:
                    self._push()
            self.pos += len(data)
        return data

    def mark(self) -> int:
        """Note the current position as one where a checkpoint may go; returns it."""
        at = self.pos
        with self.cond:
            if at in self.marks:
                return at
            self.marks[at] = [PENDING if self.md5 is not None else None, None]
        self.capture = (at, bytearray())
        if self.chunks is not None:
            self.due.append(at)
            self._push()
        return at

    def _capture(self, data: bytes) -> None:
        at, block = self.capture
        block += data[:BLOCK - len(block)]
        if len(block) == BLOCK:
            self.capture = None
            with self.cond:
                self.marks[at][1] = hashlib.sha256(block).hexdigest()
                self.cond.notify_all()

    def _push(self) -> None:
        """Hand what was read to the MD5 thread (an empty list: it notes the marks it reached)."""
        if self.error:
            raise self.error[0]
        data = self.buffer[0] if len(self.buffer) == 1 else b"".join(self.buffer)
        self.buffer, self.buffered = [], 0
        self.ahead.take(len(data))
        self.chunks.put(data)           # one piece: one call into libcrypto, not one per read

    # -- the MD5 thread
    def _hash(self) -> None:
        chunks = self.chunks
        while True:
            item = chunks.get()
            try:
                if item is None:
                    return
                if not self.error:
                    self._update(item)
                    self._reached()
            except BaseException as e:                 # raised in the reader
                self.error.append(e)
            finally:
                if item is not None:
                    self.ahead.give(len(item))
                chunks.task_done()

    def _update(self, data: bytes) -> None:
        """Hash `data`, stopping at each mark inside it to take the state there (a piece is
        pushed at each mark, so it ends there: most often it is hashed whole)."""
        self._reached()
        while self.due and self.due[0] < self.hashed + len(data):
            n = self.due[0] - self.hashed
            self.md5.update(memoryview(data)[:n])
            self.hashed += n
            data = data[n:]
            self._reached()
        self.md5.update(data)
        self.hashed += len(data)

    def _reached(self) -> None:
        while self.due and self.due[0] == self.hashed:
            at = self.due.popleft()
            state = self.md5.state()
            with self.cond:
                self.marks[at][0] = state
                self.cond.notify_all()

    # -- what the checkpoints need
    def known(self, at: int) -> bool:
        """The MD5 state at mark `at` and the hash of the header there are both known."""
        with self.cond:
            m = self.marks.get(at)
            return m is not None and m[0] is not PENDING and m[1] is not None

    def info(self, at: int) -> tuple[Optional[str], str]:
        with self.cond:
            return self.marks[at][0], self.marks[at][1]

    def forget(self, before: int) -> None:
        with self.cond:
            for at in [a for a in self.marks if a < before]:
                del self.marks[at]

    def close(self) -> None:
        """Wait until the MD5 has every byte read (cp.md5 is then that of all of them)."""
        if self.chunks is not None:
            self._push()
            self.chunks.join()
            self.chunks.put(None)
            self.chunks = None
            if self.error:
                raise self.error[0]


class Held:
    """A member's bytes, read already, as write_member reads them (read_data asks for them whole:
    no copy)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int) -> bytes:
        if n >= len(self.data):
            data, self.data = self.data, b""
        else:
            data, self.data = self.data[:n], self.data[n:]
        return data


def held(m: Member, data: bytes) -> Source:
    """A Source that gives member m's data (at m.offset) from memory."""
    return Source(Held(data), pos=m.offset, seekable=False)


class Writers:
    """Threads that write the files the reader hands them (put), at most `limit` bytes of files
    waiting or being written at a time. The first error of a writer is raised in the reader at
    its next put(); the files handed over after it are dropped."""

    def __init__(self, threads: int, limit: int) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.budget = Budget(limit)
        self.error: list[BaseException] = []
        self.stopping = False
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def put(self, job: Callable[[], None], nbytes: int) -> None:
        self.check()
        self.budget.take(nbytes)
        self.jobs.put((job, nbytes))

    def check(self) -> None:
        if self.error:
            raise self.error[0]

    def _run(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            job, nbytes = item
            try:
                if not self.error and not self.stopping:
                    job()
            except BaseException as e:                 # raised in the reader
                self.error.append(e)
            finally:
                self.budget.give(nbytes)

    def close(self, drop: bool = False) -> None:
        """Wait until every file handed over is written (drop: until the writers have finished
        the file each is writing; the rest is dropped), then end the threads."""
        self.stopping = self.stopping or drop
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join()
        if not drop:
            self.check()


class Ledger:
    """The units of a stream (train classes, val/test files) in archive order, as the reader opens
    them and the writers finish them, and the reader's marks between members (a unit starts at
    the last mark before it). A checkpoint may go at the start of the oldest unit not finished,
    or, with all finished, at the mark after the last one: everything before it is written."""

    def __init__(self, start: int) -> None:
        self.lock = threading.Lock()
        self.units: collections.deque = collections.deque()     # [start, info or PENDING]
        self.finished: list = []                  # units done, before the first open one
        self.last, self.opened, self.saved = start, -1, start
        self.frozen = False

    def mark(self, at: int) -> None:
        with self.lock:
            self.last = at

    def open(self) -> list:
        """A unit that starts at the last mark."""
        with self.lock:
            unit = [self.last, PENDING]
            self.opened = self.last
            self.units.append(unit)
            return unit

    def done(self, unit: list, info: tuple) -> None:
        with self.lock:
            unit[1] = info
            while self.units and self.units[0][1] is not PENDING:
                self.finished.append(self.units.popleft())

    def freeze(self) -> None:
        """No checkpoint from now on (a member was refused: the run fails at its end)."""
        with self.lock:
            self.frozen = True

    def take(self, ready: Callable[[int], bool]) -> Optional[tuple[int, list]]:
        """(offset, infos of the units finished since the last take) where a new checkpoint may
        go, if ready(offset); else None."""
        with self.lock:
            if self.frozen:
                return None
            if self.units:
                at = self.units[0][0]
            elif self.last > self.opened:
                at = self.last
            else:
                return None                       # the end of the last unit is not marked yet
            if at == self.saved or not ready(at):
                return None
            self.saved = at
            n = len(self.finished)            # (units since the mark at `at` are after it)
            while n and self.finished[n - 1][0] >= at:
                n -= 1
            infos = [info for _, info in self.finished[:n]]
            del self.finished[:n]
            return at, infos


class Saver:
    """Checkpoints saved in a thread of their own, at most one every CHECKPOINT_SECONDS and once
    more at close(): where the ledger says, once the MD5 has passed there; first the files are
    synced (syncfs), then the checkpoint that counts on them is written. `extra(infos, counted)`
    adds the units finished since the last one and returns the checkpoint's `extra`."""

    def __init__(self, cp: Checkpoint, counted: Counted, ledger: Ledger,
                 extra: Callable[[list, Counted], dict], folders: tuple[str, ...]) -> None:
        self.cp, self.counted, self.ledger, self.extra, self.folders = cp, counted, ledger, extra, folders
        self.cond = threading.Condition()
        self.closing = self.dropped = False
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = -CHECKPOINT_SECONDS
        while True:
            with self.cond:
                while not self.closing and time.monotonic() - last < CHECKPOINT_SECONDS:
                    self.cond.wait(CHECKPOINT_SECONDS - (time.monotonic() - last))
                closing = self.closing
                if self.dropped:
                    return
            try:
                got = self.ledger.take(self.counted.known)
                if got is not None:
                    self._save(*got)
                    last = time.monotonic()
            except BaseException as e:                 # raised at close()
                self.error.append(e)
                return
            if closing:
                return
            if got is None:
                with self.cond:
                    if not self.closing:
                        self.cond.wait(0.1)

    def _save(self, at: int, infos: list) -> None:
        state, head = self.counted.info(at)
        extra = self.extra(infos, self.counted)
        for folder in {os.stat(f).st_dev: f for f in self.folders}.values():
            sync_tree(folder)
        with self.cond:
            if self.dropped:
                return
        self.cp.write(self.cp.doc(at, state, head, extra))
        self.counted.forget(at)

    def close(self, drop: bool = False) -> None:
        """Save the last checkpoint and stop (drop: stop without it, at once)."""
        with self.cond:
            self.closing, self.dropped = True, drop
            self.cond.notify_all()
        if not drop:
            self.thread.join()
            if self.error:
                raise self.error[0]


def pump(cp: Checkpoint, raw, head: bytes, reader, folders: tuple[str, ...], threads: int,
         in_flight: int) -> int:
    """Read the archive from cp.offset through `reader` (TrainStream, FlatStream) with the writer
    pool, the MD5 and the checkpoints; the position at the end."""
    counted = Counted(raw, cp.md5, cp.offset, head)
    ledger = Ledger(cp.offset)
    writers = Writers(threads, in_flight)
    saver = Saver(cp, counted, ledger, reader.extra, folders)
    src = Source(counted, pos=cp.offset, seekable=False)
    try:
        reader.run(src, counted, ledger, writers)
        writers.close()
        counted.close()
    except BaseException:
        saver.close(drop=True)
        writers.close(drop=True)
        reader.abort()
        raise
    saver.close()
    return src.pos


# ----------------------------------------------------------------------------- checking the ends

def open_checked(cfg: Config, link: Link, cp: Checkpoint, policy: Policy,
                 connections: int) -> tuple[object, bytes]:
    """open_bytes, and where a checkpoint resumes, the check that the 512 bytes there are the
    header it expects: else the file behind the link changed (a server without ETag) or the
    checkpoint was edited, and the reading starts from byte 0. (reader, the bytes read)."""
    raw = open_bytes(cfg, link, cp, policy, connections)
    if cp.offset == 0:
        return raw, b""
    head = b""
    try:
        while len(head) < BLOCK:
            more = raw.read(BLOCK - len(head))
            if not more:
                break
            head += more
    except BaseException:
        raw.close()
        raise
    if hashlib.sha256(head).hexdigest() == cp.head:
        return raw, head
    raw.close()
    log.warning("%s: the bytes at byte %s of %s are not the tar header %s expects there: the file "
                "behind the link changed, or that checkpoint was edited; reading the archive from "
                "its start again (%s)", link.split, thousands(cp.offset), link.name, cp.path,
                reread_note(link.split))
    cp.restart()
    cp.total = link.size
    return open_bytes(cfg, link, cp, policy, connections), b""


def room(cfg: Config, tree: str, raw, connections: int, cp: Checkpoint, what: str,
         rewritten: tuple[int, int] = (0, 0)) -> None:
    """The disk preflight: room in `tree` for what is left to write and, over --connections N,
    in ROOT/.01_unzip for the spool (at most 2N windows, and never more than what is left).
    `rewritten`: the bytes of the tree on disk that the stream writes again (compared, then kept
    or replaced: they need no more room) and the room their copies take at once."""
    left = cp.total - cp.offset
    spooled = min(2 * connections * WINDOW, left) if isinstance(raw, Windows) else 0
    on_disk, at_once = rewritten
    left = max(left - on_disk, 0) + min(on_disk, at_once)
    if spooled and os.stat(tree).st_dev != os.stat(cfg.state).st_dev:
        preflight(cfg.state, spooled, what)
        spooled = 0
    preflight(tree, left + spooled, what)


def reread_note(split: str) -> str:
    if split == "train":
        return ("every class already on disk is written again from the bytes read and compared "
                "with its record: kept if the same, else replaced")
    return "the files written so far are written again"


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
                        "nothing was deleted; a rerun reads the archive again from its start (%s)"
                        % (link.split, thousands(pos), got, link.md5_from, link.md5,
                           reread_note(link.split)))
    log.info("%s: MD5 %s verified (%s), %s bytes, with no copy of the archive on disk",
             link.split, got, link.md5_from, thousands(pos))


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


# ----------------------------------------------------------------------------- train

class TrainStream:
    """The reader of the train stream: each class tar as it comes, its images handed to the
    writers; the last one done finishes the class. A class already on disk is written anew and
    compared with its record (ClassWriter.finish(replace=True)): whatever was written before is
    kept only if the bytes read now prove it."""

    def __init__(self, cfg: Config, link: Link, cp: Checkpoint, bar: Progress) -> None:
        self.cfg, self.link, self.cp, self.bar = cfg, link, cp, bar
        self.train_dir = os.path.join(cfg.root, "train")
        self.records = os.path.join(cfg.state, "train")
        self.classes: list[list] = [list(c) for c in cp.extra.get("classes", [])]  # the Saver's
        self.wnids = [c[0] for c in self.classes]
        self.seen = set(self.wnids)
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.active: set[ClassWriter] = set()         # classes begun, not finished
        self.counts: collections.Counter = collections.Counter()

    def run(self, src: Source, counted: Counted, ledger: Ledger, writers: Writers) -> None:
        start = self.cp.offset
        ledger.mark(counted.mark())
        for m in iter_tar(src, start, self.cp.total, self.link.name, need_eof=True):
            if not m.is_file() or not RE_OUTER.match(m.name) or m.name[:-4] in self.seen:
                self.refused.append(m.describe())
                ledger.freeze()
            else:
                tar = ClassTar(m.name[:-4], m.offset, m.size, m.mtime)
                self.seen.add(tar.wnid)
                self.wnids.append(tar.wnid)
                self.one_class(src, tar, ledger, writers)
            src.skip_to(m.offset + (m.size + BLOCK - 1) // BLOCK * BLOCK)
            ledger.mark(counted.mark())
            with self.lock:
                done = "%d classes (%d written now, %d images)" % (
                    len(self.wnids) - len(self.active), self.counts["new"] + self.counts["replaced"],
                    self.counts["images"])
            self.bar.update(src.pos, "%s, %s" % (done, eta(self.bar, src.pos, self.cp.total, start)))

    def one_class(self, src: Source, tar: ClassTar, ledger: Ledger, writers: Writers) -> None:
        on_disk = os.path.isdir(os.path.join(self.train_dir, tar.wnid))
        if on_disk:
            check_class_folders(self.train_dir, self.records, [tar.wnid])   # foreign: says so
        label = "%s: %s.tar" % (self.link.name, tar.wnid)
        # a class on disk is compared with the bytes read now by content: hashed also without a
        # manifest (names and sizes alone would keep an image damaged in transit)
        out = ClassWriter(tar, self.train_dir, self.records, label, self.cfg.manifest or on_disk)
        with self.lock:
            self.active.add(out)
        job = ClassJob(out, functools.partial(self.finished, out, ledger.open(), ledger))
        for m in iter_tar(src, tar.offset, tar.offset + tar.size, label, need_eof=False):
            out.check(m)
            if m.size > CHUNK:
                out.write(src, m)               # a large file: written here, CHUNK at a time
            else:
                data = b"".join(read_data(src, m, CHUNK, label))
                job.hold()
                writers.put(functools.partial(job.write, m, data), m.size + BLOCK)
        job.release()

    def finished(self, out: ClassWriter, unit: list, ledger: Ledger) -> None:
        """The last file of the class is written: record it and give it its name."""
        if out.digest and os.path.isdir(out.final):
            hash_record(self.records, out.final, out.tar.wnid)
        rec = out.finish(replace=True)
        with self.lock:
            self.active.discard(out)
            self.counts[out.outcome] += 1
            if out.outcome != "same":
                self.counts["images"] += rec["images"]
        ledger.done(unit, (out.tar.wnid, unit[0]))

    def extra(self, infos: list, counted: Counted) -> dict:
        """The Saver's: the classes finished, each with the MD5 state where it starts."""
        for wnid, start in infos:
            self.classes.append([wnid, start, counted.info(start)[0]])
        return {"classes": self.classes}

    def abort(self) -> None:
        with self.lock:
            active, self.active = list(self.active), set()
        for out in active:
            out.abort()

    def summary(self) -> None:
        c = self.counts
        log.info("train: this run wrote %d classes, %d images", c["new"] + c["replaced"], c["images"])
        if c["same"] or c["replaced"]:
            log.info("train: %d classes written before were compared with the bytes read now: %d "
                     "the same (kept), %d different (replaced)", c["same"] + c["replaced"],
                     c["same"], c["replaced"])


def hash_record(records: str, final: str, wnid: str) -> None:
    """A class on disk whose record holds no SHA-256 (written with --no-manifest) can be compared
    with the bytes read now only by its files' contents: its record gets the SHA-256 of each file
    as it is on disk (a regular file of its recorded size). Where that cannot be, the record is left
    as it is: not proven, the class is replaced by the bytes read now."""
    rec = read_record(records, wnid)
    if rec is None or not rec.get("files") or all(f[2] for f in rec["files"]) \
            or foreign_reason(final, rec, sizes=True):
        return
    files = []
    for name, size, _ in rec["files"]:
        try:
            fd = open_regular(os.path.join(final, name))
        except (OSError, NotRegular):
            return
        try:
            data = read_all(fd)
        finally:
            os.close(fd)
        if len(data) != size:
            return
        files.append([name, size, hashlib.sha256(data).hexdigest()])
    write_json(os.path.join(records, wnid + ".json"), dict(rec, files=files), sync=False)


class ClassJob:
    """The files of one class in the writers' hands: the reader holds one share until it has
    handed every file; whoever releases the last share finishes the class."""

    def __init__(self, out: ClassWriter, finish: Callable[[], None]) -> None:
        self.out, self.finish, self.left, self.lock = out, finish, 1, threading.Lock()

    def hold(self) -> None:
        with self.lock:
            self.left += 1

    def write(self, m: Member, data: bytes) -> None:
        self.out.write(held(m, data), m)
        self.release()

    def release(self) -> None:
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.finish()


def fetch_missing(cfg: Config, link: Link, cp: Checkpoint, policy: Policy) -> bool:
    """Classes the checkpoint counts as written that are not on disk (removed since): each one is
    fetched again alone, its bytes proven by the MD5 states saved where it starts and where the
    next one does, and written. False when the bytes differ (the file behind the link changed):
    the checkpoint is then reset, to read the archive from its start."""
    train_dir = os.path.join(cfg.root, "train")
    classes = cp.extra.get("classes", [])
    ends = [(c[1], c[2]) for c in classes[1:]] + [(cp.offset, cp.md5.state() if cp.md5 else None)]
    missing = [(c, end) for c, end in zip(classes, ends)
               if not os.path.isdir(os.path.join(train_dir, c[0]))]
    if not missing:
        return True
    log.info("train: %d classes that the checkpoint counts as written are not in %s (removed "
             "since?): %s; fetching them again", len(missing), train_dir,
             some([c[0] for c, _ in missing]))
    for (wnid, start, state), (end, end_state) in missing:
        if not fetch_class(cfg, link, cp, policy, (wnid, start, state), (end, end_state)):
            log.warning("train: the bytes of %s fetched again are not those read before: the file "
                        "behind the link changed; reading the archive from its start again (%s)",
                        wnid, reread_note("train"))
            cp.restart()
            cp.total = link.size
            return False
        log.info("train: %s fetched again%s", wnid, " (its bytes are those read before: MD5 "
                 "states at its start and end)" if cp.md5 else "")
    return True


def fetch_class(cfg: Config, link: Link, cp: Checkpoint, policy: Policy, begin: tuple,
                end: tuple) -> bool:
    """One class, bytes [start, end) of the link, into a file under ROOT/.01_unzip (a class at a
    time), proven by the MD5 (the state at its start, hashed on, must give the state at its end),
    then written. False if the bytes are not those read before."""
    (wnid, start, state), (stop, stop_state) = begin, end
    part = Checkpoint(cp.path, link, cp.verify)
    part.offset, part.total, part.etag = start, cp.total, cp.etag
    part.md5 = md5state.ResumableMD5.from_state(state) if cp.md5 is not None else None
    path = os.path.join(cfg.state, temp_name(wnid + ".tar"))
    raw = open_bytes(cfg, link, part, policy, 1)
    try:
        if part.offset != start:                # open_bytes found another file: from byte 0
            return False
        with open(path, "wb") as f:
            pos = start
            while pos < stop:
                data = raw.read(min(CHUNK, stop - pos))
                if not data:
                    return False
                if part.md5 is not None:
                    part.md5.update(data)
                f.write(data)
                pos += len(data)
        if part.md5 is not None and part.md5.state() != stop_state:
            return False
        with open(path, "rb") as f:
            src = Source(f)
            try:
                m = next(iter_tar(src, 0, stop - start, link.name, need_eof=False), None)
            except PrepError:
                if part.md5 is not None:
                    raise
                return False                     # (--no-verify: not proven, so not that class)
            if m is None or m.name != wnid + ".tar" or not m.is_file():
                return False
            write_class(src, ClassTar(wnid, m.offset, m.size, m.mtime), os.path.join(cfg.root, "train"),
                        os.path.join(cfg.state, "train"), "%s: %s" % (link.name, m.name), cfg.manifest)
    finally:
        raw.close()
        if os.path.exists(path):
            os.remove(path)
    return True


def stream_train(cfg: Config, link: Link, policy: Policy, connections: int, verify: bool,
                 in_flight: int = IN_FLIGHT) -> int:
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
        if not os.path.lexists(cfg.unproven("train")):  # before any class: kept until train is done
            atomic_write(cfg.unproven("train"), b"a --stream of train began; what it wrote counts once "
                                                b"train is done\n")
        if cp.load():
            log.info("train: resuming the stream at byte %s (%s of %s)", thousands(cp.offset),
                     human(cp.offset), human(cp.total or 0))
        try:
            run, pos = train_run(cfg, link, cp, policy, connections, in_flight)
            if run.refused:
                raise PrepError(refused_text(link.name, run.refused))
            check_whole(link, cp, pos)
            missing = [w for w in run.wnids if not os.path.isdir(os.path.join(train_dir, w))]
            if missing and cp.load():                  # removed while the stream ran
                fetch_missing(cfg, link, cp, policy)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise PrepError("train: %s" % disk_full_text(train_dir)) from None
            raise
    if not finish_train(cfg, link.name, pos, sorted(run.wnids)) and not train_done(cfg):
        missing = [w for w in run.wnids if not os.path.isdir(os.path.join(train_dir, w))]
        raise PrepError("train: %d classes read by this stream are not in %s (e.g. %s): something "
                        "removed them; the split is not marked done: run the same command again, "
                        "it fetches them" % (len(missing), train_dir, some(missing)))
    return 0


def train_run(cfg: Config, link: Link, cp: Checkpoint, policy: Policy, connections: int,
              in_flight: int) -> tuple[TrainStream, int]:
    """One reading of the train stream, from the checkpoint (classes it counts that are gone are
    fetched first) or from byte 0; (the run, the position at the end)."""
    if cp.offset:
        fetch_missing(cfg, link, cp, policy)
    on_disk = any(not e.name.startswith(".") for e in os.scandir(os.path.join(cfg.root, "train")))
    if cp.offset == 0 and on_disk:
        log.info("train: reading the archive from byte 0: %s", reread_note("train"))
    raw, head = open_checked(cfg, link, cp, policy, connections)
    try:
        room(cfg, os.path.join(cfg.root, "train"), raw, connections, cp, "train",
             reached_again(cfg, cp, in_flight << 20))
        bar = Progress("train", cp.total, "B")
        run = TrainStream(cfg, link, cp, bar)
        try:
            pos = pump(cp, raw, head, run, (run.train_dir, cfg.state), cfg.jobs, in_flight << 20)
        finally:
            bar.close()
    finally:
        raw.close()
    run.summary()
    return run, pos


def reached_again(cfg: Config, cp: Checkpoint, in_flight: int) -> tuple[int, int]:
    """The bytes of the classes on disk that this reading reaches again (all but those the
    checkpoint counts), and the room their new copies take at once: each is written beside the
    old one, then one of the two removed; at most the classes with files in the writers' hands,
    about the in-flight bytes and the two largest classes."""
    counted = {c[0] for c in cp.extra.get("classes", [])}
    train_dir, records = os.path.join(cfg.root, "train"), os.path.join(cfg.state, "train")
    sizes = []
    for e in os.scandir(train_dir):
        if WNID_RE.match(e.name) and e.name not in counted and e.is_dir(follow_symlinks=False):
            rec = read_record(records, e.name)
            if rec is not None:
                sizes.append(rec["bytes"])
    sizes.sort()
    return sum(sizes), in_flight + sum(sizes[-2:])


# ----------------------------------------------------------------------------- val and test

def stream_flat(cfg: Config, split: str, link: Link, policy: Policy, connections: int,
                verify: bool, in_flight: int = IN_FLIGHT) -> int:
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
        try:
            raw, head = open_checked(cfg, link, cp, policy, connections)
            try:
                with open_dir(partial) as folder:
                    if not try_flock(folder):
                        raise PrepError("%s: another run is writing %s" % (split, partial))
                    out = resume_flat(FlatWriter(split, folder, link.name, cfg.manifest), cp, partial)
                    room(cfg, os.path.dirname(final), raw, connections, cp, split)
                    stream_members(cfg, link, raw, head, cp, out, partial, in_flight)
            finally:
                raw.close()
        except OSError as e:
            if e.errno in DISK_FULL:
                raise PrepError("%s: %s" % (split, disk_full_text(os.path.dirname(final)))) from None
            raise
        finish_flat(cfg, split, partial, final, (link.name, cp.total), (out.count, out.bytes, out.sums))
    return 0


def resume_flat(out, cp: Checkpoint, partial: str):
    """The writer, with what the checkpoint says was written; files written after it are removed
    (they are written again from the bytes read now)."""
    if cp.offset == 0:
        for name in os.listdir(partial):
            os.remove(os.path.join(partial, name))
        return out
    kept = {name: sha for name, sha in cp.extra["files"]}
    for name in os.listdir(partial):
        if name not in kept:
            os.remove(os.path.join(partial, name))
    missing = [n for n in kept if not os.path.exists(os.path.join(partial, n))]
    if missing:
        raise PrepError("%s is missing %d file(s) the checkpoint lists (e.g. %s); delete %s and run "
                        "again to start this split over" % (partial, len(missing), missing[0], cp.path))
    out.count, out.bytes = len(kept), cp.extra["bytes"]
    out.sums = [(n, s) for n, s in kept.items() if s]
    return out


class FlatStream:
    """The reader of a val or test stream: each image handed to the writers. A checkpoint may go
    at a mark, one after about every MARK_BYTES or MARK_SECONDS (at the start of the oldest image
    not written: a rerun writes the images after it again)."""

    def __init__(self, link: Link, cp: Checkpoint, out, bar: Progress) -> None:
        self.link, self.cp, self.out, self.bar = link, cp, out, bar
        self.files: list[list] = [list(f) for f in cp.extra.get("files", [])]    # the Saver's
        self.bytes = cp.extra.get("bytes", 0)

    def run(self, src: Source, counted: Counted, ledger: Ledger, writers: Writers) -> None:
        start = last = self.cp.offset
        when = time.monotonic()
        ledger.mark(counted.mark())
        for m in iter_tar(src, start, self.cp.total, self.out.label, need_eof=True):
            name = self.out.name(m)
            if self.out.refused:
                ledger.freeze()
            if name is not None:
                unit = ledger.open()
                if m.size > CHUNK:
                    self.write(src, m, name, unit, ledger)
                else:
                    data = b"".join(read_data(src, m, CHUNK, self.out.label))
                    writers.put(functools.partial(self.write, held(m, data), m, name, unit, ledger),
                                m.size + BLOCK)
            src.skip_to(m.offset + (m.size + BLOCK - 1) // BLOCK * BLOCK)
            if src.pos - last >= MARK_BYTES or time.monotonic() - when >= MARK_SECONDS:
                last, when = counted.mark(), time.monotonic()
                ledger.mark(last)
            self.bar.update(src.pos, "%d images, %s" % (self.out.count,
                                                        eta(self.bar, src.pos, self.cp.total, start)))

    def write(self, src: Source, m: Member, name: str, unit: list, ledger: Ledger) -> None:
        sha = self.out.write(src, m, name)
        ledger.done(unit, (name, sha, m.size))

    def extra(self, infos: list, counted: Counted) -> dict:
        """The Saver's: the files written, with their hashes."""
        for name, sha, size in infos:
            self.files.append([name, sha])
            self.bytes += size
        return {"files": self.files, "bytes": self.bytes}

    def abort(self) -> None:
        """(files written after the last checkpoint are removed by the rerun)"""


def stream_members(cfg: Config, link: Link, raw, head: bytes, cp: Checkpoint, out, partial: str,
                   in_flight: int) -> None:
    """Write the members from cp.offset on, with checkpoints."""
    bar = Progress(link.split, cp.total, "B")
    try:
        pos = pump(cp, raw, head, FlatStream(link, cp, out, bar), (partial, cfg.state), cfg.jobs,
                   in_flight << 20)
    finally:
        bar.close()
    out.check()
    check_whole(link, cp, pos)
