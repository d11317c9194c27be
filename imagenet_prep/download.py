"""00_download.sh: the ILSVRC2012 archives from your own links into ROOT/downloads/, resumable and verified.

Per file NAME (one a split), in ROOT/downloads/:

    NAME.part              the bytes so far, in order from byte 0
    NAME.part.START-END    with --connections N: a window [START, END) being fetched, its first
                           bytes so far; appended to NAME.part in order (while it grows) and
                           deleted once its bytes are there (the layout of the bash 00 too)
    NAME.part.md5state     the hash of NAME.part's first bytes, with the size, time and inode
                           NAME.part had when it was saved (after every write): used only while
                           NAME.part is still exactly that file (.sha256state for a SHA-256)
    NAME.lock              flock: one 00_download.sh per file; removed when the run ends
    NAME                   the verified file (renamed from NAME.part), NAME.md5 the check done

The bytes come through the one fetch engine (transport.py): one connection read ahead in a
thread, or N connections each fetching a window into its piece file. A writer thread appends them
to NAME.part in batches, hashes each batch as it writes it (MD5, or SHA-256, resumable) and then
saves the hash state, so the check after the last byte is an fsync and a rename. A rerun continues
NAME.part, every piece, and the hash from its state; a state that does not fit NAME.part any more
(the file changed since, or the state is damaged or of the bash 00) is not used: NAME.part is
hashed again from its first byte, and a mismatch found with a saved state is confirmed by such a
full read before the file is set aside as NAME.bad.
"""
from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import sys
import threading
import time
from typing import Callable, Optional

from . import facts, md5state, transport, urls
from .console import (DISK_FULL, PrepError, Parser, disk_full_text, free_bytes, human, log,
                      preflight, run, scrub_links)
from .extract import Config, read_marker
from .files import Lock, clear_temps, fsync_dir, parse_json, read_regular, write_json
from .progress import Progress
from .transport import (FileChanged, IgnoredRange, Piece, TransferFailed, Unsatisfiable,
                        WebPage, looks_like_html, remove_file, write_all)

PROG = "00_download.sh"
INTERRUPTED = "rerun the same command to continue where it stopped"
PIECES_PER_CONNECTION = 8        # windows per connection: joins overlap the download
TAIL_WINDOW = 1 << 20            # the smallest window of the last rounds (a short tail)
BATCH_BYTES = 8 << 20             # NAME.part is written (and its hash state saved) per batch ...
BATCH_SECONDS = 0.5              # ... of at most this many bytes, or this old
HASH_QUEUE = 2                   # batches written and waiting for the hash, at most
JOIN_BELOW = 256 << 10           # a batch of pieces smaller than this (on average) is joined first
READ_WAIT = 0.2                  # the writer looks at its orders this often while no byte comes
STATE_MAX = 64 << 10             # a hash state file is far smaller; a larger one is not read
STATE_VERSION = 2
LOCK_TRIES = 5
PAUSE_WAIT = 5.0                 # seconds to wait for the writer to save before a Ctrl-Z stop
CHECK_READ = 4 << 20             # bytes read at a time to hash or compare what is on disk
RE_PIECE = re.compile(r"([0-9]{1,18})-([0-9]{1,18})\Z")
OWN_KNOBS = {"DOWNLOAD_PROGRESS_STEP": ("5", "percent"), "DOWNLOAD_PROGRESS_POLL": ("2", "seconds"),
             "DOWNLOAD_MIN_SEGMENT": ("4194304", "count")}
LINK_ARG = re.compile(r"://|[?&][A-Za-z0-9_.~-]*=")


# ----------------------------------------------------------------------------- the hash of NAME.part

class FileHash:
    """The digest of a file's first `offset` bytes as they are written: resumable (its state can be
    saved at any point, 64-byte aligned, the rest held back) where libcrypto allows, else
    hashlib's. `resumed`: part of it came from a saved state (a mismatch is then read again)."""

    saved: Optional[tuple] = None       # (file_id, offset) the state file holds

    def __init__(self, algo: str) -> None:
        self.algo, self.pending, self.resumed, self.why = algo, b"", False, ""
        try:
            self.h = md5state.new(algo)
            self.resumable = True
        except md5state.HashUnavailable:
            self.h, self.resumable = hashlib.new(algo), False
            self.why = md5state.unavailable_reason(algo)

    @classmethod
    def from_state(cls, algo: str, text: str) -> "FileHash":
        obj = cls.__new__(cls)
        obj.algo, obj.pending, obj.resumed, obj.why, obj.resumable = algo, b"", True, "", True
        obj.h = md5state.from_state(text)
        if obj.h.name != algo:
            raise ValueError("a state of %s, not %s" % (obj.h.name, algo))
        return obj

    @property
    def offset(self) -> int:
        return (self.h.offset if self.resumable else self._plain) + len(self.pending)

    _plain = 0

    def update(self, pieces: list) -> None:
        """Hash these buffers, in order: whole, as they are, but for the last bytes past a 64-byte
        boundary, held back so that the state can be saved (the file holds them)."""
        if not self.resumable:
            for data in pieces:
                self.h.update(data)
                self._plain += len(data)
            return
        views = ([self.pending] if self.pending else []) + [p for p in pieces if len(p)]
        keep = sum(len(v) for v in views) % md5state.BLOCK
        tail: list = []
        while keep:                            # peel the held-back bytes off the end
            last = views[-1]
            if len(last) <= keep:
                tail.insert(0, bytes(views.pop()))
                keep -= len(last)
            else:
                cut = len(last) - keep
                tail.insert(0, bytes(memoryview(last)[cut:]))
                views[-1], keep = memoryview(last)[:cut], 0
        for v in views:
            self.h.update(v)
        self.pending = b"".join(tail)

    def state(self) -> str:
        """The state at the aligned offset self.h.offset (the pending bytes are in the file)."""
        return self.h.state()

    def hexdigest(self) -> str:
        if not self.resumable:
            return self.h.hexdigest()
        if not self.pending:
            return self.h.hexdigest()
        h = self.h.copy()
        h.update(self.pending)
        return h.hexdigest()


def file_id(st: os.stat_result) -> dict:
    """What ties a saved state to the file as it was written: size, time, inode, device."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "device": st.st_dev}


# ----------------------------------------------------------------------------- the writer

class Hasher(threading.Thread):
    """Hashes, in order, the batches the writer has written, beside it (libcrypto runs without the
    GIL, so on a fast link the hash keeps pace instead of following the writes). `snapshot`: the
    latest (offset, state text) to save, None before the first 64 bytes or without libcrypto."""

    def __init__(self, fh: FileHash) -> None:
        super().__init__(daemon=True)
        self.fh = fh
        self.queue: queue.Queue = queue.Queue(maxsize=HASH_QUEUE)
        self.error: Optional[BaseException] = None
        self.snapshot = self._snap()
        self.start()

    def _snap(self) -> Optional[tuple[int, str]]:
        return (self.fh.h.offset, self.fh.state()) if self.fh.resumable and self.fh.h.offset else None

    def run(self) -> None:
        while True:
            pieces = self.queue.get()
            try:
                if pieces is None:
                    return
                if self.error is None:
                    self.fh.update(pieces)
                    self.snapshot = self._snap()
            except BaseException as e:               # handed to the writer at drain()
                self.error = e
            finally:
                self.queue.task_done()

    def put(self, pieces: list) -> None:
        """Hash these buffers next, in order (they must not change any more)."""
        if self.error is not None:
            raise self.error
        self.queue.put(pieces)

    def drain(self) -> None:
        """Wait until every batch handed over is hashed."""
        self.queue.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(None)
        self.join()


class Writer(threading.Thread):
    """Appends what `make_source()` delivers to NAME.part in batches; each batch, once written, is
    hashed (first the bytes of NAME.part not yet hashed) by a Hasher beside it, and the hash state
    so far is saved after every write, tied to NAME.part as written (size, time, inode). Runs in a
    thread of its own, so no signal ever lands between a write and its bookkeeping: the main
    thread handles signals and gives orders (stop, pause, resume, abort). Without a source it
    only hashes what is in `path`."""

    def __init__(self, job: "FileJob", fh: Optional[FileHash],
                 make_source: Optional[Callable[[], object]], path: Optional[str] = None,
                 save: bool = True) -> None:
        super().__init__(daemon=True)
        self.job, self.fh, self.make_source = job, fh, make_source
        self.path, self.save = path or job.part, save
        self.hasher: Optional[Hasher] = None
        self.source = None
        self.fd = -1
        self.error: Optional[BaseException] = None
        self.stopping = self.aborted = False
        self.pause_asked, self.paused, self.resumed = False, threading.Event(), threading.Event()
        self.appended = 0                     # bytes written to NAME.part by this writer
        self.left_at_end = 0                  # bytes not yet hashed when the source ended
        self.batch: list = []                 # buffers written next, and their size
        self.batched = 0
        self.batch_t = 0.0
        self.sniffed = False
        self.lock = threading.Lock()          # source creation vs stop from the main thread

    # -- orders from the main thread
    def stop(self) -> None:
        """Write, hash and save what has come, then end (the caller closes the source)."""
        self.stopping = True
        self.resumed.set()

    def abort(self) -> None:
        """End without writing anything more (NAME.part is not ours any more)."""
        self.aborted = self.stopping = True
        self.resumed.set()

    def pause(self) -> bool:
        """Write, hash and save what has come, then wait for resume(); True once that is done."""
        self.resumed.clear()
        self.pause_asked = True
        return self.paused.wait(PAUSE_WAIT) or not self.is_alive()

    def resume(self) -> None:
        self.pause_asked = False
        self.paused.clear()
        self.resumed.set()

    def close_source(self) -> None:
        with self.lock:
            source, self.stopping = self.source, True
        if source is not None:
            source.close()

    # -- the thread
    def run(self) -> None:
        if self.fh is not None:
            self.hasher = Hasher(self.fh)
        try:
            self._run()
        except BaseException as e:               # handed to the main thread
            self.error = e
            try:
                if not self.aborted:
                    self._flush()
            except BaseException:
                pass
        finally:
            try:
                if self.hasher is not None:
                    if not self.aborted:
                        self.hasher.drain()
                    self.hasher.close()
                self._save()
            except BaseException as e:
                self.error = self.error or e
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def _orders(self) -> bool:
        """Obey a pause (write, hash and save, then wait) and say whether to stop."""
        if self.pause_asked and not self.stopping:
            self._flush()
            if self.hasher is not None:
                self.hasher.drain()
            self._save()
            self.paused.set()
            self.resumed.wait()
        return self.stopping

    def _run(self) -> None:
        if self.fh is not None:
            self._catch_up()
        if self.make_source is None or self.stopping:
            return
        with self.lock:
            if self.stopping:
                return
            self.source = self.make_source()
        windows = isinstance(self.source, transport.Windows)
        while True:
            if self._orders():
                while not windows and not self.aborted:    # what came is written (pieces are
                    data = self.source.chunk(timeout=0)    # on disk already)
                    if not data:
                        break
                    self.batch.append(data)
                    self.batched += len(data)
                self._flush()
                return
            if windows:
                data = self.source.read(transport.CHUNK, timeout=READ_WAIT)
            else:
                data = self.source.chunk(timeout=READ_WAIT)
            if data is None:
                if self.batch and time.monotonic() - self.batch_t >= BATCH_SECONDS:
                    self._flush()
                continue
            if not len(data):
                if not self.stopping:
                    self._flush()
                    self.job.last_byte_at = getattr(self.source, "done_at", None)
                    self.job.sent_more = getattr(self.source, "sent_more", None)
                    snap = self.hasher.snapshot if self.hasher is not None else None
                    self.left_at_end = self.appended - (snap[0] if snap else 0) \
                        if self.fh is not None and self.fh.resumable else 0
                return
            if not self.batch:
                self.batch_t = time.monotonic()
            self.batch.append(data)
            self.batched += len(data)
            if self.batched >= BATCH_BYTES or time.monotonic() - self.batch_t >= BATCH_SECONDS:
                self._flush()
                if windows:
                    self.source.drop_consumed()

    def _catch_up(self) -> None:
        """Hash the bytes of NAME.part the hash has not seen (all of it, without a usable state)."""
        job, fh = self.job, self.fh
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        at = fh.offset
        if at >= size:
            return
        if size - at > CHECK_READ and self.make_source is not None:
            log.info("%s: hashing the %s already in %s%s; this reads them once", job.split,
                     human(size - at), os.path.basename(self.path),
                     " after byte %d" % at if at else "")
        with open(self.path, "rb", buffering=0) as f:
            f.seek(at)
            while at < size:
                if self.pause_asked or self.stopping:
                    self.hasher.drain()
                    self._save()
                    if self._orders():
                        return
                buf = f.read(min(CHECK_READ, size - at))
                if not buf:
                    raise PrepError("%s shrank while it was hashed; rerun" % self.path)
                self.hasher.put([buf])
                at += len(buf)
        self.hasher.drain()
        self._save()

    def _flush(self) -> None:
        """Write the batch to NAME.part, hand it to the hasher, save the state so far."""
        if self.aborted or not self.batch:
            return
        job, pieces, size = self.job, self.batch, self.batched
        if self.fd < 0:
            at = os.path.getsize(job.part) if os.path.exists(job.part) else 0
            head = b"".join(bytes(p) for p in pieces)[:transport.HTML_SNIFF] if at == 0 else b""
            if at == 0 and not self.sniffed and looks_like_html(head):
                job.save_html(b"".join(bytes(p) for p in pieces))
                self.batch, self.batched = [], 0
                raise WebPage("the link answered with a web page")
            self.sniffed = True
            self.fd = os.open(job.part, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if len(pieces) > 8 and size // len(pieces) < JOIN_BELOW:
            pieces = [b"".join(pieces)]        # many small pieces: one write, one call of the hash
        try:
            write_all(self.fd, pieces)
        except OSError as e:
            raise job.write_error(e) from None
        self.batch, self.batched = [], 0
        self.appended += size
        if self.hasher is not None:
            self.hasher.put(pieces)
        self._save()

    def _save(self) -> None:
        """Save the hash state so far, tied to NAME.part as written now (resumable hashes only)."""
        fh = self.fh
        if fh is None or not fh.resumable or self.aborted or not self.save:
            return
        snap = self.hasher.snapshot if self.hasher is not None else None
        if snap is None:
            return
        try:
            st = os.fstat(self.fd) if self.fd >= 0 else os.stat(self.path)
        except OSError:
            return
        ident = file_id(st)
        if fh.saved == (ident, snap[0]):
            return                             # the state file says just that already
        doc = dict(ident, version=STATE_VERSION, algorithm=fh.algo, state=snap[1], offset=snap[0])
        try:
            write_json(self.job.state, doc, sync=False)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise self.job.write_error(e) from None
            raise
        fh.saved = (ident, snap[0])

    def position(self) -> int:
        """Bytes received so far by the source in this run (for progress)."""
        source = self.source
        return getattr(source, "received", 0) if source is not None else 0


# ----------------------------------------------------------------------------- one file

class FileJob:
    """Everything about downloading one file: a split's link (urls.Link), where it goes, and the
    words of its messages (the split, the variable and file of its link)."""

    def __init__(self, settings: "Settings", link: urls.Link) -> None:
        self.s, self.link = settings, link
        self.split, self.name, self.host = link.split, link.name, link.host
        self.remote = link.remote()
        self.digest = self.remote.digest if settings.verify else None
        self.final = os.path.join(settings.dl, link.name)
        self.part = self.final + ".part"
        algo = self.digest.algo if self.digest else "md5"
        self.state = "%s.%sstate" % (self.part, algo)
        self.lockpath = self.final + ".lock"
        self.suffix = link.suffix
        self.marker = "%s.%s" % (self.final, algo)      # NAME.md5 (NAME.sha256): the check done
        self.unchecked = "MD5 not checked: --no-verify"  # what finish says of a file without digest
        self.lock: Optional[Lock] = None
        self.writer: Optional[Writer] = None
        self.windows: Optional[transport.Windows] = None
        self.total: Optional[int] = link.size
        self.validator = transport.Validator(link.size)
        self.last_byte_at: Optional[float] = None
        self.sent_more: Optional[str] = None
        self.started_over = False
        self.fetched = self.left_at_end = 0     # bytes received by this run; not yet hashed at its end
        self.pause_id: Optional[dict] = None

    # -- words
    def check_link(self) -> str:
        return "Check %s in %s" % (self.link.variable, self.link.url_from)

    def retry_advice(self) -> str:
        """What to do when the server serves another file than the one begun."""
        return "%s (a fresh link?) and rerun" % self.check_link()

    def kept(self) -> str:
        n = sum(os.path.getsize(p) for p in [self.part] + [q.path for q in self.list_pieces()]
                if os.path.exists(p))
        return "The %s already in %s.part%s are kept as they are (nothing was discarded)" % (
            human(n), self.name, " and its pieces" if self.list_pieces() else "")

    def web_page_error(self, saved: bool = False, kept: bool = False) -> PrepError:
        return PrepError(
            "%s: the link answered with a web page (HTML), not with %s%s: it has expired, or the site "
            "wants you to log in.%s Log in at image-net.org, copy a fresh link for %s into %s (%s) and "
            "rerun." % (self.split, self.name, " (it was saved as %s.html)" % self.final if saved else "",
                        " " + self.kept() + "." if kept else "", self.name, self.link.variable,
                        self.link.url_from))

    def write_error(self, e: OSError) -> PrepError:
        """A write that failed: a full disk only when the disk says so (ENOSPC, EDQUOT, or less
        free space than what is left to fetch), named with ROOT's disk and its free space."""
        left = (self.total or 0) - (os.path.getsize(self.part) if os.path.exists(self.part) else 0)
        try:
            short = free_bytes(self.s.dl) < left
        except OSError:
            short = False
        if e.errno in DISK_FULL or short:
            return PrepError("%s: %s. The download continues where it stopped." % (
                self.split, disk_full_text(self.s.dl, max(left, 0) or None)))
        return PrepError("%s: cannot write %s (%s); fix that and rerun: the download continues where "
                         "it stopped" % (self.split, e.filename or self.part, e.strerror))

    def save_html(self, data: bytes) -> None:
        """What came instead of the file, a web page, as NAME.html for the user to look at."""
        try:
            with open(self.final + ".html", "wb") as f:
                f.write(data[:1 << 20])
        except OSError:
            pass

    # -- the run
    def run(self) -> None:
        self.take_lock()
        try:
            self.fetch_or_check()
        finally:
            self.release_lock()

    def take_lock(self) -> None:
        busy = ("%s: another %s is already downloading %s into %s (lock %s held). Wait for it to "
                "finish, or stop it first." % (self.split, PROG, self.name, self.s.dl,
                                               os.path.basename(self.lockpath)))
        for _ in range(LOCK_TRIES):
            lock = Lock(self.lockpath, busy)
            try:                                  # is it still the file under that name?
                if os.stat(self.lockpath).st_ino == os.fstat(lock.fd).st_ino:
                    self.lock = lock
                    return
            except FileNotFoundError:
                pass
            lock.release()
        raise PrepError(busy)

    def release_lock(self) -> None:
        if self.lock is not None:
            remove_file(self.lockpath)            # (still held: no one else has it)
            self.lock.release()
            self.lock = None

    def fetch_or_check(self) -> None:
        if os.path.lexists(self.final):
            return self.check_final()
        if self.extracted_by_01():
            log.info("%s: already done (extracted into %s by 01_unzip.sh; the archive is not kept)",
                     self.split, os.path.join(self.s.root, self.split))
            if os.path.exists(self.part):
                log.info("%s: %s (%s) is not needed: delete it (and %s.part.*) to free the space",
                         self.split, self.part, human(os.path.getsize(self.part)), self.name)
            return
        log.info("%s: %s -> %s", self.split, self.link.shown, self.final)
        clear_temps(self.s.dl, os.path.basename(self.state))
        if os.path.lexists(self.part) and not os.path.isfile(self.part) or os.path.islink(self.part):
            raise PrepError("%s: %s is not a regular file; move it away and rerun" % (self.split,
                                                                                   self.part))
        have = self.part_size()
        if self.link.size is not None and have == self.link.size and not self.list_pieces():
            log.info("%s: %s.part is complete already (%s); no need to ask the server", self.split,
                     self.name, human(have))
            self.total = self.link.size
            return self.finish(self.load_hash(), fetched=False)
        if self.link.size is not None and have > self.link.size:
            raise self.too_long(have, self.link.size)
        t0 = time.monotonic()
        fh = self.fetch(have)
        self.log_fetched(t0)
        self.finish(fh, fetched=True)

    # -- the server's answers
    def fetch(self, have: int) -> Optional[FileHash]:
        """NAME.part gets the whole file; the hash of what was written (None: not checked)."""
        local = self.remote.local is not None
        if local:
            if not os.path.isfile(self.remote.local):
                raise PrepError("%s: %s in %s is a local file that does not exist (or is not a "
                                "file)" % (self.split, self.link.variable, self.link.url_from))
            pr = transport.Probe(os.path.getsize(self.remote.local), True)
        else:
            pr = self.ask(transport.probe, self.remote, self.s.policy, on_wait=self.wait_note)
        total = pr.total
        if self.link.size is not None and total is not None and total != self.link.size:
            raise PrepError("%s: %s reports %d bytes for %s, but it should be %d bytes (%s): the link "
                            "may point to another file, or the server misreports the length. %s."
                            % (self.split, self.host, total, self.name, self.link.size,
                               self.link.size_from, self.check_link()))
        total = self.link.size if self.link.size is not None else total
        if total is None:
            ends = [p.end for p in self.list_pieces()]
            total = max(ends) if ends else None
        if total is not None and total > transport.MAX_FILE_SIZE:
            raise PrepError("%s: the size of %s would be %d bytes, more than 1 PiB: no archive of the "
                            "release is near that; %s misreports it, or SIZE_%s in %s is wrong. "
                            "Nothing was fetched." % (self.split, self.name, total, self.host,
                                                      self.suffix, self.link.urls_from))
        if total is not None and have > total:
            raise PrepError("%s: %s now reports %d bytes for %s, a smaller size than the %d bytes "
                            "already downloaded into %s.part: the file on the server changed, the link "
                            "leads to another file, or the server misreports the length. Nothing was "
                            "fetched; %s.part is kept as it is. %s; only if "
                            "the server is right, move %s away and rerun to download %s again."
                            % (self.split, self.host, total, self.name, have, self.name, self.name,
                               self.retry_advice(), self.part, self.name))
        self.total = total
        self.validator.total = total
        fh = self.load_hash()
        n = self.s.connections if self.link.url.startswith(("http://", "https://")) else 1
        pieces = self.fitting_pieces(total) if total is not None else []
        ranges, sample = pr.ranges, pr.sample
        if total is not None and (n > 1 or pieces):
            if ranges is None:
                more = self.ask(transport.probe, self.remote, self.s.policy, ranged=True,
                                on_wait=self.wait_note)
                ranges, sample = more.ranges, more.sample
            if ranges is not False:
                return self.fetch_windows(fh, n, total, pieces)
            log.info("%s: %s does not serve byte ranges: one connection, no resume", self.split,
                     self.host)
            if pieces or have:
                self.start_over("%s cannot resume" % self.host, total, sample)
                fh = self.load_hash()
        elif self.s.connections > 1:
            log.info("%s: one connection for %s (several need an http(s) link with a known size)",
                     self.split, self.link.shown)
        if self.list_pieces():
            log.info("%s: discarding the pieces of an earlier run (%s does not tell the size of %s)",
                     self.split, self.host, self.name)
            self.remove_pieces()
        return self.fetch_single(fh, total, ranges, sample)

    def ask(self, fn, *args, **kw):
        """A call to the engine, its errors worded for this split (what to check, where)."""
        try:
            return fn(*args, **kw)
        except WebPage:
            raise self.web_page_error() from None
        except transport.BadHeader as e:
            raise PrepError("%s: %s. %s." % (self.split, e, self.check_link())) from None
        except TransferFailed as e:
            raise self.failed(e) from None

    def failed(self, e: TransferFailed) -> PrepError:
        if e.action == "give-up":
            return PrepError("%s: %s; or check %s in %s." % (self.split, e, self.link.variable,
                                                            self.link.url_from))
        return PrepError("%s: %s. The link is %s in %s; rerun once it is fixed." % (
            self.split, e, self.link.variable, self.link.url_from))

    def wait_note(self, text: str) -> None:
        log.info("%s: %s", self.split, text)

    # -- one connection
    def fetch_single(self, fh: Optional[FileHash], total: Optional[int], ranges: Optional[bool],
                     sample: bytes) -> Optional[FileHash]:
        have = self.part_size()
        if ranges is False and have > 0:
            self.start_over("%s does not support resuming (no byte ranges)" % self.host, total, sample)
            fh, have = self.load_hash(), 0
        if total is not None:
            preflight(self.s.dl, total - have, "%s: %s (%s left to fetch)" % (self.split, self.name,
                                                                            human(total - have)))
        if have > 0:
            log.info("%s: resuming %s at byte %d (%s already here)", self.split, self.name, have,
                     human(have))
        best = restarts = 0
        while True:
            start = self.part_size()

            def source(start=start):
                reader = transport.open_range(self.remote, start, total, self.s.policy, self.validator,
                                              self.wait_note, transport.RAISE,
                                              whole_file=total is not None)
                return transport.Prefetcher(reader)
            try:
                fh = self.write(fh, source)
                if self.sent_more:
                    raise PrepError(
                        "%s: %s sent more than the %d bytes of %s (%s): the file on the server is not "
                        "the one expected, or the server misreports its length. %s.part holds its "
                        "first %d bytes, nothing past them. %s; rerun to check what is there (remove "
                        "%s to download it again)." % (self.split, self.host, total, self.name,
                                                       self.sent_more, self.name, total,
                                                       self.check_link(), self.part))
                return fh
            except IgnoredRange as e:
                got = self.part_size()
                if got > best:
                    best, restarts = got, 0
                else:
                    restarts += 1
                action, delay, _ = transport.decide(self.s.policy, 33, 200, restarts)
                if action != "retry":
                    raise PrepError(
                        "%s: %s cannot resume (it ignores byte ranges), and the connection broke %d "
                        "times in a row no further than %s into %s. Giving up: rerun later, or use a "
                        "link to a server that can resume (--retries N allows more attempts)."
                        % (self.split, self.host, self.s.policy.retries, human(best), self.name)) \
                        from None
                self.start_over("%s ignored the byte range of a resume (it sent the whole file "
                                "again)" % self.host, e.response.length, e.head)
                fh = self.load_hash()
                time.sleep(delay)

    # -- several connections
    def fetch_windows(self, fh: Optional[FileHash], n: int, total: int,
                      pieces: list[Piece]) -> Optional[FileHash]:
        have = self.part_size()
        if not pieces:
            preflight(self.s.dl, total - have, "%s: %s (%s left to fetch)" % (
                self.split, self.name, human(total - have)))
            plan = self.plan(have, total, n)
            if len(plan) < 2:                  # too small to be worth cutting
                return self.fetch_single(fh, total, True, b"")
            log.info("%s: fetching %s in %d pieces over %d connections", self.split, self.name,
                     len(plan), min(len(plan), n))
        else:
            plan = self.fill_gaps(pieces, have, total, n)
            log.info("%s: resuming %s: the pieces of an earlier run, over %d connection(s)",
                     self.split, self.name, n)
        on_disk = have + sum(p.have - p.skip for p in plan)
        longest = max(p.size for p in plan)
        preflight(self.s.dl, total - on_disk + longest, "%s: %s (%s left to fetch + %s to join a "
                  "piece)" % (self.split, self.name, human(total - on_disk), human(longest)))
        if on_disk > 0:
            log.info("%s: %s of %s already here", self.split, human(on_disk), self.name)

        def source():
            self.windows = transport.Windows(self.remote, plan, self.s.policy, n, self.validator,
                                             on_wait=self.wait_note, keep=True)
            return self.windows
        try:
            return self.write(fh, source)
        except IgnoredRange as e:
            self.start_over("%s ignored a byte-range request (it cannot serve ranges; the pieces go "
                            "too)" % self.host, e.response.length, e.head)
            return self.fetch_single(self.load_hash(), total, False, b"")

    def plan(self, have: int, total: int, n: int) -> list[Piece]:
        """What NAME.part lacks cut into windows for n connections: PIECES_PER_CONNECTION each, of
        at least DOWNLOAD_MIN_SEGMENT bytes, in whole rounds (no connection idles at the end). The
        last round is cut again into rounds of windows half as large, down to TAIL_WINDOW: the
        windows of a round end at about the same time, and only the bytes of the last round are
        left to join and hash after the last byte."""
        rem, p, least = total - have, n * PIECES_PER_CONNECTION, self.s.min_segment
        if rem // p < least:
            p = rem // least
        if p > n:
            p = p // n * n
        if p < 2:
            return []
        w = rem // p
        sizes = [w] * (p - n)
        tail, floor, half = rem - w * (p - n), min(least, TAIL_WINDOW), w // 2
        while half >= floor and tail - n * half >= n * floor:
            sizes += [half] * n
            tail -= n * half
            half //= 2
        sizes += [tail // n] * (n - 1) + [tail - tail // n * (n - 1)]
        out, at = [], have
        for size in sizes:
            out.append(Piece(at, at + size, self.piece_path(at, at + size)))
            at += size
        return out

    def fill_gaps(self, pieces: list[Piece], have: int, total: int, n: int) -> list[Piece]:
        """The pieces of an earlier run, and new ones for what lies between them."""
        size = max(self.s.min_segment, (total - have) // max(1, n * PIECES_PER_CONNECTION))
        out, at = [], have
        for p in pieces + [None]:
            end = total if p is None else p.start
            while at < end:
                b = end if end - at < 2 * size else at + size
                out.append(Piece(at, b, self.piece_path(at, b)))
                at = b
            if p is not None:
                out.append(p)
                at = p.end
        return out

    def piece_path(self, a: int, b: int) -> str:
        return "%s.%d-%d" % (self.part, a, b)

    # -- the writer
    def write(self, fh: Optional[FileHash], source: Optional[Callable[[], object]],
              path: Optional[str] = None) -> Optional[FileHash]:
        """Run a writer appending `source()` to NAME.part until it ends (None: only hash what is in
        `path`, NAME.part by default); the hash."""
        w = self.writer = Writer(self, fh, source, path, save=path is None)
        progress = Progress(self.name, self.total, "B", self.s.progress_step) if self.total else None
        base, t0 = self.part_size() + sum(p.have for p in self.list_pieces()), time.monotonic()
        try:
            w.start()
            while w.is_alive():
                w.join(self.s.progress_poll)
                if progress is not None and w.is_alive():
                    got = w.position()
                    progress.update(min(base + got, self.total), "%.1f MiB/s" % (
                        got / max(time.monotonic() - t0, 1e-6) / (1 << 20)))
        finally:
            w.stop()
            w.close_source()
            w.join()
            self.fetched += w.position()
            self.left_at_end = max(self.left_at_end, w.left_at_end)
            if self.windows is not None:
                self.windows.close()
                if w.error is None:
                    self.windows.drop_consumed()
                self.windows = None
            self.writer = None
            if progress is not None:
                if w.error is None:
                    progress.update(min(base + w.position(), self.total))
                progress.close()
        if w.error is not None:
            raise self.worded(w.error)
        return fh

    def worded(self, e: BaseException) -> BaseException:
        """An error of the engine or the writer, with this split's words."""
        if isinstance(e, WebPage):
            saved = os.path.exists(self.final + ".html") and not os.path.exists(self.part)
            return self.web_page_error(saved=saved, kept=os.path.exists(self.part))
        if isinstance(e, IgnoredRange):
            return e
        if isinstance(e, TransferFailed):
            return self.failed(e)
        if isinstance(e, Unsatisfiable):
            return PrepError("%s: %s. Try again later or get a fresh link; %s.part is kept (remove it "
                             "to start over)." % (self.split, e, self.name))
        if isinstance(e, (FileChanged, transport.BadHeader)):
            return PrepError("%s: %s. %s. %s; remove %s* only if you want to start over."
                             % (self.split, e, self.kept(), self.retry_advice(), self.part))
        if isinstance(e, OSError):
            return self.write_error(e)
        if isinstance(e, PrepError) and not str(e).startswith(self.split + ":"):
            return PrepError("%s: %s" % (self.split, e))
        return e

    # -- starting over
    def start_over(self, why: str, length: Optional[int], head: bytes) -> None:
        """Discard NAME.part and its pieces to fetch NAME from byte 0 — only when what a fresh
        start brings (`length`, the first bytes `head`) is the whole file again and begins with the
        bytes NAME.part begins with; else nothing is touched, and it says why."""
        head = head or self.sample()
        if looks_like_html(head):
            raise self.web_page_error(kept=True)
        if self.total is None:
            raise PrepError("%s: %s ignores byte ranges and does not tell the size of %s, so it cannot "
                            "be checked that starting over would bring the same file. %s. Set SIZE_%s "
                            "in %s if you know the size, or remove %s* to start over."
                            % (self.split, self.host, self.name, self.kept(), self.suffix,
                               self.link.urls_from, self.part))
        if length != self.total:
            raise PrepError("%s: %s ignored the byte range of a resume and sent a whole file (HTTP 200) "
                            "of %s, but %s has %d bytes: the link now leads to another file, or the "
                            "server changed it. %s. %s; remove %s* only if you want to start over."
                            % (self.split, self.host, "unknown length (no Content-Length)"
                               if length is None else "%d bytes" % length, self.name, self.total,
                               self.kept(), self.retry_advice(), self.part))
        n = min(self.part_size(), len(head), transport.HTML_SNIFF)
        if n and self.read_part(0, n) != head[:n]:
            raise PrepError("%s: %s ignores byte ranges, and what it sends now does not begin with the "
                            "bytes %s.part begins with: the link leads to another file than the one "
                            "begun. %s. %s; remove %s* only to start over."
                            % (self.split, self.host, self.name, self.kept(), self.retry_advice(),
                               self.part))
        log.info("%s: %s: discarding the %s in %s.part and starting over, so no byte is duplicated",
                 self.split, why, human(self.part_size()), self.name)
        self.remove_pieces()
        remove_file(self.state)
        remove_file(self.part)                 # a new file (a new inode) from byte 0
        self.started_over = True

    def sample(self) -> bytes:
        """The first bytes a fresh start would bring (a server that said it serves no ranges)."""
        reader = transport.open_range(self.remote, 0, transport.HTML_SNIFF, self.s.policy,
                                      transport.Validator(self.total), self.wait_note)
        try:
            out = b""
            while len(out) < transport.HTML_SNIFF:
                got = self.ask(reader.read, transport.HTML_SNIFF - len(out))
                if not got:
                    break
                out += got
            return out
        finally:
            reader.close()

    # -- what is on disk
    def part_size(self) -> int:
        try:
            return os.path.getsize(self.part)
        except FileNotFoundError:
            return 0

    def read_part(self, at: int, n: int, path: Optional[str] = None) -> bytes:
        with open(path or self.part, "rb") as f:
            f.seek(at)
            return f.read(n)

    def list_pieces(self) -> list[Piece]:
        """The piece files NAME.part.START-END there are, by start."""
        out = []
        folder, prefix = os.path.dirname(self.part), os.path.basename(self.part) + "."
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        for name in names:
            m = RE_PIECE.match(name[len(prefix):]) if name.startswith(prefix) else None
            if m:
                path = os.path.join(folder, name)
                out.append(Piece(int(m.group(1)), int(m.group(2)), path, os.path.getsize(path)))
        return sorted(out, key=lambda p: (p.start, p.end))

    def remove_pieces(self) -> None:
        for p in self.list_pieces():
            remove_file(p.path)

    def fitting_pieces(self, total: int) -> list[Piece]:
        """The pieces of an earlier run, checked against the file's size and NAME.part: each inside
        the file, none over another, none longer than its window. Pieces planned for another size
        that are all empty are removed; with bytes in them they are named, NAME.part is not. Where
        NAME.part already holds bytes of a piece (a run stopped while joining it), those bytes must
        be the piece's: the piece is then read from past them, or dropped when it has no more."""
        pieces = self.list_pieces()
        prev, bad = 0, False
        for p in pieces:
            if p.start < prev or p.start >= p.end or p.end > total or p.have > p.size:
                bad = True
            prev = max(prev, p.end)
        if bad:
            held = sum(p.have for p in pieces)
            if held == 0:
                log.info("%s: removing the empty piece files of an earlier run, planned for another "
                         "size", self.split)
                self.remove_pieces()
                return []
            raise PrepError("%s: the piece files %s.part.[0-9]*-[0-9]* (%s) do not fit a file of %d "
                            "bytes (did the file on the server change?). %s.part is not the problem: "
                            "remove only the pieces (rm %s.[0-9]*-[0-9]*) and rerun."
                            % (self.split, self.name, human(held), total, self.name, self.part))
        have, out = self.part_size(), []
        for p in pieces:
            if p.start >= have:
                out.append(p)
                continue
            common = min(have, p.end) - p.start     # bytes NAME.part and the piece both should hold
            n = min(common, p.have)
            if not self.same_bytes(p, n) or have > p.end and p.have < p.size:
                raise PrepError("%s: %s.part holds %d bytes, past the start of its piece %s, and not "
                                "what a stopped join leaves (their bytes differ). %s. Remove %s* and "
                                "rerun to start over." % (self.split, self.name, have,
                                                          os.path.basename(p.path), self.kept(),
                                                          self.part))
            if p.have > common:
                p.skip = common                       # read from past what NAME.part holds
                out.append(p)
            else:
                remove_file(p.path)                   # all its bytes are in NAME.part
                if have < p.end:
                    out.append(Piece(have, p.end, self.piece_path(have, p.end)))
        return out

    def same_bytes(self, p: Piece, n: int) -> bool:
        with open(self.part, "rb") as a, open(p.path, "rb") as b:
            a.seek(p.start)
            while n > 0:
                k = min(n, CHECK_READ)
                if a.read(k) != b.read(k):
                    return False
                n -= k
        return True

    def too_long(self, have: int, size: int) -> PrepError:
        return PrepError("%s: %s.part holds %d bytes, more than the %d bytes of %s. It is kept as it "
                         "is; move it away (mv %s %s.bad) and rerun to download %s again."
                         % (self.split, self.name, have, size, self.name, self.part, self.part,
                            self.name))

    # -- the hash state
    def load_hash(self) -> Optional[FileHash]:
        """The hash to continue NAME.part with: from its saved state when that still fits
        NAME.part exactly, else a fresh one (which first reads what NAME.part holds). None when
        the file is not to be checked."""
        if self.digest is None:
            return None
        algo = self.digest.algo
        fh = FileHash(algo)
        if not fh.resumable:
            log.info("%s: note: the %s is computed as the bytes arrive, but cannot be saved for a "
                     "rerun here (%s); a rerun reads what %s.part already holds once more. Install "
                     "%s to spare that.", self.split, self.digest.name, fh.why, self.name,
                     md5state.DEBIAN_PACKAGE)
            return fh
        if not os.path.lexists(self.state):
            return fh
        raw = read_regular(self.state, "it is %s's saved hash of %s.part: remove it and rerun (the "
                           "hash is then computed again from the first byte)" % (PROG, self.name),
                           limit=STATE_MAX)
        why, got = self.fitting_state(raw, algo)
        if got is None:
            log.info("%s does not fit %s.part (%s): its %s starts from the beginning",
                     os.path.basename(self.state), self.name, why, self.digest.name)
            return fh
        log.info("%s: the %s continues from %s (%s hashed by an earlier run)", self.split,
                 self.digest.name, os.path.basename(self.state), human(got.h.offset))
        return got

    def fitting_state(self, raw: bytes, algo: str) -> tuple[str, Optional[FileHash]]:
        try:
            doc = parse_json(raw)
        except ValueError:
            return "it is damaged: not JSON", None
        if not isinstance(doc, dict):
            return "it is damaged", None
        if doc.get("version") != STATE_VERSION:
            if "print" in doc and "inode" in doc:
                return "it was saved by the MD5 follower of an earlier 00_download.sh, whose states " \
                       "this one does not take", None
            return "it is of another version", None
        try:
            got = FileHash.from_state(algo, doc.get("state") or "")
        except (ValueError, TypeError) as e:
            return "it is damaged: %s" % e, None
        ident = {k: doc.get(k) for k in ("size", "mtime_ns", "inode", "device")}
        if got.h.offset != doc.get("offset") or not all(isinstance(v, int) for v in ident.values()):
            return "it is damaged", None
        try:
            now = file_id(os.stat(self.part))
        except FileNotFoundError:
            return "there is no %s.part" % self.name, None
        if now != ident or got.h.offset > now["size"]:
            return "%s.part changed since it was saved (its size, time or inode differ)" % self.name, None
        got.saved = (ident, got.h.offset)
        return "", got

    # -- the end
    def log_fetched(self, t0: float) -> None:
        if self.started_over:
            text = "%d bytes (%s was started over from byte 0)" % (self.part_size(), self.name)
        else:
            text = "%d bytes" % self.fetched
        log.info("%s: fetched %s in %.2f s", self.split, text, time.monotonic() - t0)

    def finish(self, fh: Optional[FileHash], fetched: bool) -> None:
        """NAME.part is there, not empty nor a web page, of the size and digest: rename it to
        NAME, write NAME.md5. Nothing is left half-done under a name a rerun trusts."""
        size = self.part_size()
        if not os.path.isfile(self.part) or size == 0:
            remove_file(self.part)
            remove_file(self.state)
            raise PrepError("%s: %s sent no bytes for %s (an empty file is not the archive): the link "
                            "may be wrong or expired. %s and rerun." % (self.split, self.host,
                                                                        self.name, self.check_link()))
        if looks_like_html(self.read_part(0, transport.HTML_SNIFF)):
            remove_file(self.state)
            os.replace(self.part, self.final + ".html")
            raise self.web_page_error(saved=True)
        if self.total is not None and size != self.total:
            if size > self.total:
                os.replace(self.part, self.final + ".bad")
                remove_file(self.state)
                raise PrepError("%s: %s came out %d bytes, expected %d: moved to %s.bad. The server "
                                "sent more than the file's length; rerun to download it again, or %s."
                                % (self.split, self.name, size, self.total, self.final,
                                   self.check_link().lower()))
            raise PrepError("%s: %s is incomplete: %d of %d bytes. Rerun to continue."
                            % (self.split, self.name, size, self.total))
        if self.digest is not None:
            t0 = self.last_byte_at if fetched and self.last_byte_at else time.monotonic()
            if not fetched or fh is None or fh.offset != size:
                if not fetched:
                    log.info("%s: checking the %s of %s (%s)", self.split, self.digest.name, self.name,
                             human(size))
                fh = self.write(fh or FileHash(self.digest.algo), None)
            actual = fh.hexdigest()
            how = "hashed as it was written; %s left to hash at the end" % human(self.left_at_end)
            if actual != self.digest.hex and fh.resumed:
                log.info("%s: the %s does not match; %s.part is read again in full to be sure the saved "
                         "state %s was not at fault", self.split, self.digest.name, self.name,
                         os.path.basename(self.state))
                remove_file(self.state)
                fh = self.write(FileHash(self.digest.algo), None)
                actual, how = fh.hexdigest(), "a full read of %s.part" % self.name
            if actual != self.digest.hex:
                return self.mismatch(actual)
            if fetched and self.last_byte_at:
                log.info("%s: %s verified %.2f s after the last byte (%s)", self.split, self.digest.name,
                         time.monotonic() - t0, how)
            else:
                log.info("%s: %s verified in %.2f s", self.split, self.digest.name, time.monotonic() - t0)
        t0 = time.monotonic()
        fd = os.open(self.part, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(self.part, self.final)
        except OSError as e:
            raise PrepError("%s: cannot rename %s to %s (%s); check the permissions of %s and rerun"
                            % (self.split, self.part, self.final, e.strerror, self.s.dl)) from None
        fsync_dir(self.s.dl)
        remove_file(self.state)
        self.remove_pieces()
        if self.digest is not None:
            self.write_marker()
            log.info("%s: done: %s (%s, %s %s verified; fsync and rename %.2f s)", self.split,
                     self.final, human(size), self.digest.name, self.digest.hex,
                     time.monotonic() - t0)
        else:
            log.info("%s: done: %s (%s, %s)", self.split, self.final, human(size), self.unchecked)

    def mismatch(self, actual: str) -> None:
        remove_file(self.state)
        self.remove_pieces()
        try:
            os.replace(self.part, self.final + ".bad")
        except OSError:
            raise PrepError("%s: checksum mismatch for %s, and it cannot be moved to %s.bad: remove %s "
                            "and rerun" % (self.split, self.name, self.final, self.part)) from None
        raise PrepError("%s: checksum mismatch for %s: expected %s %s (%s), got %s. The file was moved "
                        "to %s.bad and nothing was written under its final name. Rerun to download it "
                        "again (delete %s.bad when you no longer need it)%s." % (
                            self.split, self.name, self.digest.name, self.digest.hex,
                            self.digest.source, actual, self.final, self.name, self.trust_hint(actual)))

    def trust_hint(self, actual: str) -> str:
        """The end of the mismatch message: how to accept the file anyway, where one can."""
        return "; if this link is a mirror you trust, set %s_%s=%s in %s" % (
            self.digest.name.replace("-", ""), self.suffix, actual, self.link.urls_from)

    def write_marker(self) -> None:
        """NAME.md5 (NAME.sha256): the check is done (a failure only costs a new check next time)."""
        try:
            from .files import atomic_write
            atomic_write(self.marker, ("%s  %s\n" % (self.digest.hex,
                                                     os.path.basename(self.final))).encode())
        except OSError:
            log.info("%s: warning: cannot write %s; a rerun checks the %s again", self.split,
                     self.marker, self.digest.name)

    def check_final(self) -> None:
        """A file already under its final name: check it (once; NAME.md5 remembers), leave it."""
        size = os.path.getsize(self.final)
        if self.link.size is not None and size != self.link.size:
            raise PrepError("%s: %s exists but is %d bytes, not %d. It was not written by this script; "
                            "move it away (mv %s %s.bad) and rerun to download it again."
                            % (self.split, self.final, size, self.link.size, self.final, self.final))
        if self.digest is None:
            self.tidy()
            log.info("%s: already done: %s is present (%s, %s)", self.split, self.final, human(size),
                     self.unchecked)
            return
        marker = self.marker
        try:
            if os.path.getmtime(self.final) <= os.path.getmtime(marker):
                text = read_regular(marker, "it is %s's record of the check of %s: remove it (the "
                                    "check is then done again)" % (PROG, self.name), limit=4096)
                if text.split(b" ", 1)[0].decode("ascii", "replace") == self.digest.hex:
                    self.tidy()
                    log.info("%s: already done: %s (%s, %s verified earlier, see %s)", self.split,
                             self.final, human(size), self.digest.name, os.path.basename(marker))
                    return
        except FileNotFoundError:
            pass
        log.info("%s: checking the %s of the existing %s (%s)", self.split, self.digest.name, self.name,
                 human(size))
        actual = self.write(FileHash(self.digest.algo), None, self.final).hexdigest()
        if actual != self.digest.hex:
            raise PrepError("%s: %s exists but its %s is %s, expected %s (%s). It was left as it is; "
                            "move it away (mv %s %s.bad) and rerun to download it again."
                            % (self.split, self.final, self.digest.name, actual, self.digest.hex,
                               self.digest.source, self.final, self.final))
        self.write_marker()
        self.tidy()
        log.info("%s: already done: %s (%s, %s verified)", self.split, self.final, human(size),
                 self.digest.name)

    def tidy(self) -> None:
        """Pieces and hash states of an older run are of no use beside a finished file."""
        self.remove_pieces()
        remove_file(self.state)

    def extracted_by_01(self) -> bool:
        """01_unzip.sh extracted and verified this very archive into ROOT/SPLIT (its marker names
        it), and may have removed it (--remove-archive)."""
        cfg = Config(self.s.root)
        try:
            doc = read_marker(cfg, self.split)
        except PrepError:
            return False
        return bool(doc) and doc.get("archive") == self.name and \
            os.path.isdir(os.path.join(self.s.root, self.split))

    # -- Ctrl-Z
    def before_stop(self) -> None:
        """Ctrl-Z: the writer writes and saves what came, the pieces are left alone, curl is
        stopped, and the lock is given up (removed: should this process be killed while stopped,
        nothing is left to hold the file)."""
        w, win = self.writer, self.windows
        if win is not None:
            win.hold()
        if w is not None:
            w.pause()
        transport.signal_children(signal.SIGSTOP)
        self.pause_id = self.part_id()
        self.release_lock()

    def after_continue(self) -> None:
        """fg/bg: take the lock again; if another run took the file meanwhile, stop without
        writing another byte."""
        try:
            self.take_lock()
            if self.part_id() != self.pause_id:
                raise PrepError("%s: while this run was stopped (Ctrl-Z), %s.part was changed by another "
                                "run; this one stops here without writing: rerun when that one is done"
                                % (self.split, self.name))
        except PrepError:
            if self.writer is not None:
                self.writer.abort()
            if self.windows is not None:
                self.windows.abort()
            transport.signal_children(signal.SIGCONT)
            raise
        transport.signal_children(signal.SIGCONT)
        if self.windows is not None:
            self.windows.release()
        if self.writer is not None:
            self.writer.resume()

    def part_id(self) -> Optional[dict]:
        try:
            return file_id(os.stat(self.part))
        except FileNotFoundError:
            return None


# ----------------------------------------------------------------------------- the command line

class Settings:
    def __init__(self, root: str, connections: int, verify: bool, policy: transport.Policy,
                 env=os.environ) -> None:
        self.root, self.connections, self.verify, self.policy = root, connections, verify, policy
        self.dl = os.path.join(root, "downloads")
        values = {k: transport.knob(k, d, kind, env) for k, (d, kind) in OWN_KNOBS.items()}
        self.progress_step = values["DOWNLOAD_PROGRESS_STEP"]
        self.progress_poll = values["DOWNLOAD_PROGRESS_POLL"]
        self.min_segment = values["DOWNLOAD_MIN_SEGMENT"]


def help_table() -> str:
    rows, seen = [], set()
    for a in facts.archives():
        if a.split in seen:
            continue
        seen.add(a.split)
        size = " (%s)" % human(a.size) if a.size else ""
        rows.append("  %-7s %-25s %s%s" % (a.split, "DOWNLOAD_URL_" + a.suffix, a.name, size))
    return "\n".join(rows)


EPILOG = """\
{table}

The links come from --urls FILE, else $IMAGENET_URLS, else ./urls.sh, else urls.sh in this
repository folder (start from urls.sh.example); a variable already set in the environment wins over
the file. The file is read, not run: NAME="value" lines (or NAME='value', export NAME=...), comments
and blank lines. The file name is the last part of the link's path. MD5_<split> / SIZE_<split> in
urls.sh (e.g. MD5_val, MD5_devkit_t12) override the checksums of the official archives
(imagenet_prep/release.tsv), for mirrors. Needs python3 and the folder imagenet_prep/ beside this
script: copy or clone the whole repository folder.

Environment: DOWNLOAD_SPEED_LIMIT (1024 B/s) and DOWNLOAD_SPEED_TIME (60 s): slower than that for
that long counts as a stall and is retried; DOWNLOAD_CONNECT_TIMEOUT (30 s); DOWNLOAD_RETRY_DELAY
(5 s, doubled per failed attempt up to DOWNLOAD_RETRY_DELAY_MAX, 300 s): the policy of the fetch
engine imagenet_prep/transport.py, shared with 01_unzip.sh --stream, where an attempt counts as
progress once it brought a stall's worth (LIMIT x TIME bytes, or a quarter of what was left);
DOWNLOAD_PROGRESS_STEP (5 %: one progress line per step when stderr is not a terminal). The MD5
is computed as the bytes are written and its state saved in NAME.part.md5state with every write,
so the check after the last byte is an fsync and a rename (DOWNLOAD_MD5_FOLLOW of earlier versions
is not needed any more, and not read).

A rerun continues NAME.part where it stopped and says "already done" for a verified file without
touching the network (NAME.md5 records the check; delete it to check again), and for a split that
01_unzip.sh extracted and verified before it removed the archive (--remove-archive). A file that
is full size but fails its checksum is moved to NAME.bad and the split fails; a rerun downloads it
again. A web page received instead of the archive (an expired link, a login page) is set aside as
NAME.html. NAME.lock keeps a second {prog} off the same file; it is removed when the
run ends or is stopped (and given up during a Ctrl-Z). Exit codes: 0 all requested splits present
and verified, 1 failure, 2 usage, 130 stopped by Ctrl-C, 143 stopped by SIGTERM (129 by SIGHUP).
Example: {prog} --root /data/imagenet --connections 4 val devkit

--source hf: the gated Hugging Face dataset ILSVRC/imagenet-1k instead of your links, into
ROOT/downloads/hf/ (data/..., classes.py, and source.json for 01_unzip.sh --source hf); SPLIT:
train val test all. Accept its terms on https://huggingface.co/datasets/ILSVRC/imagenet-1k, then
give a token with read access in HF_TOKEN, HF_TOKEN_PATH or $HF_HOME/token (`hf auth login` saves
it there); HF_ENDPOINT for another endpoint. The default revision is the tar.gz one ({revision}),
whose sizes and SHA-256 ship with the package; --hf-revision REV takes another one (its Parquet
files too), checked against the sizes and SHA-256 of the Hub's API. Each file's SHA-256 is computed
as it is written and saved with every write (NAME.part.sha256state; NAME.sha256 at the end).

--source kaggle: the one zip of the Kaggle competition imagenet-object-localization-challenge into
ROOT/downloads/kaggle/ (any SPLIT, or none, means the zip: it holds them all). Accept the rules on
https://www.kaggle.com/competitions/imagenet-object-localization-challenge/rules; credentials from
KAGGLE_API_TOKEN or $KAGGLE_CONFIG_DIR/access_token (Bearer), else KAGGLE_USERNAME + KAGGLE_KEY or
$KAGGLE_CONFIG_DIR/kaggle.json (default ~/.kaggle); KAGGLE_API_ENDPOINT for another endpoint. Kaggle
publishes no checksum: its size and every byte are checked here, each member's CRC-32 by 01.
With a source there is no devkit: 02 takes the classes from the source's own list. Credentials go
to curl on its standard input, to the API only (never to the storage it redirects to), and are
never printed. Example: {prog} --root /data/imagenet --source hf val
"""


def build_parser() -> Parser:
    p = Parser(prog=PROG, usage="%(prog)s [options] SPLIT...",
               description="Download ILSVRC2012 archives into ROOT/downloads/.",
               epilog=EPILOG.format(table=help_table(), prog=PROG,
                                    revision=facts.hf_release()[0][:8] + "..."))
    p.add_argument("splits", nargs="*", metavar="SPLIT", help="%s all" % " ".join(facts.SPLITS))
    p.add_argument("--root", metavar="DIR",
                   help="data folder (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--urls", metavar="FILE", help="file with the DOWNLOAD_URL_* links (default: see "
                   "below)")
    p.add_argument("--connections", metavar="N", default="1", help="fetch N byte ranges of a file at "
                   "once, N from 1 to 32: windows of at least 4 MiB (8 per connection), appended to "
                   "NAME.part in order as they arrive; needs free space for the file plus one window")
    p.add_argument("--retries", metavar="N", help="attempts in a row without progress before giving "
                   "up (default: 10, or $DOWNLOAD_RETRIES)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="do not check the MD5 "
                   "(default: check); needed for a file with no known checksum")
    p.add_argument("--source", choices=("hf", "kaggle"), help="download from the Hugging Face Hub "
                   "(hf) or Kaggle (kaggle) instead of your image-net.org links; see below")
    p.add_argument("--hf-revision", metavar="REV", help="with --source hf: a commit hash, branch or "
                   "tag of ILSVRC/imagenet-1k (default: the package's tar.gz revision)")
    return p


def link_in(argv: list[str], env) -> bool:
    """A link on the command line (pasted as a SPLIT, or as the value of an option), or in
    IMAGENET_ROOT / IMAGENET_URLS: refused before anything prints it (it may carry a token)."""
    return any(LINK_ARG.search(a) for a in list(argv) + [env.get("IMAGENET_ROOT") or "",
                                                          env.get("IMAGENET_URLS") or ""])


def splits_of(parser: Parser, names: list[str]) -> list[str]:
    if not names:
        parser.error("no SPLIT given (one or more of: %s all)" % " ".join(facts.SPLITS))
    out: list[str] = []
    for s in names:
        for one in (facts.SPLITS if s == "all" else [s]):
            if one not in facts.SPLITS:
                shown = s if re.fullmatch(r"[A-Za-z0-9_.,+-]{1,40}", s) else "(not shown)"
                parser.error("unknown split: %s (use: %s all)" % (shown, " ".join(facts.SPLITS)))
            if one not in out:
                out.append(one)
    return out


ACTIVE: list[FileJob] = []      # the file being fetched, for the Ctrl-Z handler


def _on_sigtstp(signum, frame) -> None:
    """Ctrl-Z: save and stop everything of the run, then this process; on fg/bg continue."""
    job = ACTIVE[0] if ACTIVE else None
    if job is not None:
        job.before_stop()
    else:
        transport.signal_children(signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGSTOP)
    if job is not None:
        job.after_continue()
    else:
        transport.signal_children(signal.SIGCONT)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if link_in(argv, os.environ):
        parser.error("an argument (or $IMAGENET_ROOT, $IMAGENET_URLS) looks like a link (not shown: "
                     "it may carry a token). Links are not given on the command line: put each into "
                     "urls.sh as DOWNLOAD_URL_<split>=\"...\" (cp urls.sh.example urls.sh && chmod 600 "
                     "urls.sh), then run %s SPLIT..." % PROG)
    args = parser.parse_args(argv)
    from . import sourcefetch
    sourcefetch.check_options(parser, args)
    splits = sourcefetch.source_splits(parser, args.source, args.splits) if args.source else \
        splits_of(parser, args.splits)
    if not re.fullmatch(r"[1-9][0-9]?", args.connections) or int(args.connections) > 32:
        parser.error("--connections must be a whole number from 1 to 32, not '%s'"
                     % scrub_links(args.connections)[:40])
    if args.retries is not None and not re.fullmatch(r"[1-9][0-9]{0,8}", args.retries):
        parser.error("--retries must be a whole number >= 1, not '%s'" % args.retries[:40])
    def body() -> int:               # (inside console.run: a Ctrl-C from now on is a clean stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTSTP, _on_sigtstp)
        for sig in (signal.SIGTTOU, signal.SIGTTIN):       # a log line on a terminal, `stty tostop`
            signal.signal(sig, signal.SIG_IGN)
        return download(args, splits)

    return run(PROG, argv, body, INTERRUPTED)


def download(args, splits: list[str]) -> int:
    t0 = time.monotonic()
    root = args.root or os.environ.get("IMAGENET_ROOT") or "."
    policy = transport.policy_from_env(retries=int(args.retries) if args.retries else None)
    settings = Settings(root, int(args.connections), args.verify, policy)
    if os.environ.get("DOWNLOAD_MD5_FOLLOW"):
        log.info("note: DOWNLOAD_MD5_FOLLOW is not read any more: the MD5 is computed as the bytes are "
                 "written")
    links = [] if args.source else urls.load(splits, args.urls, args.verify, prog=PROG)
    try:
        os.makedirs(settings.dl, exist_ok=True)
    except OSError as e:
        raise PrepError("cannot create %s (%s); check --root" % (settings.dl, e.strerror)) from None
    if not os.access(settings.dl, os.W_OK):
        raise PrepError("cannot write to %s; check --root and permissions" % settings.dl)
    if args.source == "hf":
        from . import sourcefetch
        return sourcefetch.download_hf(settings, splits, args.hf_revision)
    if args.source == "kaggle":
        from . import sourcefetch
        return sourcefetch.download_kaggle(settings, splits)
    failed = []
    for link in links:
        job = FileJob(settings, link)
        ACTIVE[:] = [job]
        try:
            job.run()
        except PrepError as e:
            log.error("error: %s", e)
            failed.append(link.split)
        finally:
            ACTIVE.clear()
    took = time.monotonic() - t0
    if failed:
        log.error("failed: %s (messages above); took %ds. Rerun the same command to retry; finished "
                  "files are kept.", " ".join(failed), took)
        return 1
    log.info("all done: %s in %s; took %ds", " ".join(splits), settings.dl, took)
    return 0


if __name__ == "__main__":
    sys.exit(main())
