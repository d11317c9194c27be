"""The MD5 of a file that is still being written, kept up to date so that checking it at the end
needs no second read (00_download.sh: NAME.part as curl writes it and pieces are joined to it).

    python3 -m imagenet_prep.md5follow [--log-as PROG] follow FILE STATE   # while FILE grows
    python3 -m imagenet_prep.md5follow [--log-as PROG] finish FILE STATE   # at the end

`follow` hashes what is appended to FILE and saves the MD5 state in STATE (a small JSON file,
replaced atomically) at 64-byte-aligned offsets, every few seconds and every 256 MiB, and once more
when it is stopped (SIGTERM) or its parent process ends. It waits while FILE does not exist; a
FILE cut back, rewritten before the hashed offset (as far as the 4 KiB before it show) or replaced
by another file (another inode) is hashed again from its start. With --log-as it says, in PROG's
log format, whether it continues from a saved state.

`finish` takes the saved state if it still describes FILE (same inode, at most its size, and the
4 KiB before the saved offset the bytes that were hashed there), hashes only the rest and prints
two lines: the MD5 of FILE, and how many bytes it had to read for it (all of FILE when no state
fits: a full read).

What the digest vouches for: the bytes of FILE as they were read when they were hashed. A state is
used only for the same file (inode) that still holds, just before the saved offset, the bytes that
were hashed there; a state of another file, of a file started over, cut back or rewritten there, is
never used. A byte changed in place further back, after it was hashed (same inode, same length),
is not read again and so not seen: the state follows a file that only grows, as a download does.

Exit codes: 0 done, 1 FILE cannot be read, 2 usage, 3 no resumable MD5 here (no usable libcrypto:
the message says why; the caller then reads the whole file another way).
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import time
from typing import Optional

from . import md5state
from .console import human, setup_logging
from .files import read_json, write_json

CHUNK = 4 << 20
SAVE_BYTES = 256 << 20
SAVE_SECONDS = 5.0
POLL = 0.2
PRINT = 4096                            # bytes before the saved offset that identify the file
UNAVAILABLE = 3                         # exit code: no resumable MD5 on this machine

log = logging.getLogger("imagenet_prep")


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler, but only while the follower sleeps (see Flags)."""


class Flags:
    """What the signal handler may do. A signal never interrupts hashing: an MD5 update cut between
    the library call and the count of bytes beside it would leave a state whose words and offset
    disagree. The handler sets `stop`; only during the pause between two looks (`napping`) does it
    also raise Stop, to end the pause at once."""

    def __init__(self) -> None:
        self.stop = False
        self.napping = False

    def handler(self, signum, frame) -> None:
        self.stop = True
        if self.napping:
            raise Stop()

    def nap(self, seconds: float) -> None:
        """Sleep, unless asked to stop; a stop ends the pause."""
        try:
            self.napping = True
            if not self.stop:
                time.sleep(seconds)
        except Stop:
            pass
        finally:
            self.napping = False


def fingerprint(f, offset: int) -> str:
    """SHA-1 of the (at most) PRINT bytes of f just before `offset`."""
    f.seek(max(0, offset - PRINT))
    return hashlib.sha1(f.read(min(offset, PRINT))).hexdigest()


class Follow:
    """The MD5 of the first `h.offset` bytes of a file, with what identifies them: the file's inode
    and the last PRINT bytes hashed (the fingerprint that a saved state carries)."""

    def __init__(self) -> None:
        self.h = md5state.ResumableMD5()
        self.inode: Optional[int] = None
        self.tail = b""                 # the last (at most PRINT) bytes fed to h

    @property
    def offset(self) -> int:
        return self.h.offset

    def start_over(self) -> None:
        self.h, self.tail = md5state.ResumableMD5(), b""

    def hash_to(self, f, end: int, flags: Optional[Flags] = None) -> None:
        """Feed bytes [offset, end) of f (less if `flags` says stop: between two chunks)."""
        f.seek(self.h.offset)
        while self.h.offset < end and not (flags and flags.stop):
            buf = f.read(min(CHUNK, end - self.h.offset))
            if not buf:
                break
            self.h.update(buf)
            self.tail = (self.tail + buf[-PRINT:])[-PRINT:]

    def fits(self, f) -> bool:
        """f still holds, before the offset, the bytes that were hashed there (as far as the
        fingerprint shows) and is the same file."""
        st = os.fstat(f.fileno())
        if self.offset == 0:
            return True
        return st.st_ino == self.inode and st.st_size >= self.offset and \
            fingerprint(f, self.offset) == hashlib.sha1(self.tail).hexdigest()

    def doc(self) -> dict:
        return {"inode": self.inode, "offset": self.offset, "md5": self.h.state(),
                "print": hashlib.sha1(self.tail).hexdigest()}


def load(path: str, state: str) -> tuple[Follow, bool]:
    """The saved state if it still describes the file at `path`, else a fresh one; and whether a
    state file was there at all."""
    doc = read_json(state)
    fresh = Follow()
    try:
        if not isinstance(doc, dict) or not isinstance(doc.get("offset"), int) \
                or not isinstance(doc.get("inode"), int):
            raise ValueError
        got = Follow()
        got.h = md5state.ResumableMD5.from_state(doc.get("md5") or "")
        got.inode = doc["inode"]
        if got.offset != doc["offset"] or got.offset <= 0:
            raise ValueError
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_ino != got.inode or st.st_size < got.offset:
                raise ValueError
            f.seek(got.offset - min(got.offset, PRINT))
            got.tail = f.read(min(got.offset, PRINT))
            if hashlib.sha1(got.tail).hexdigest() != doc.get("print"):
                raise ValueError
        return got, True
    except (OSError, ValueError, TypeError):
        return fresh, doc is not None


def save(state: str, fw: Follow) -> None:
    """Save the state; a follower that had to start over (offset 0 after looking at the file)
    removes the state it can no longer vouch for."""
    if fw.offset:
        write_json(state, fw.doc(), sync=False)
    elif fw.inode is not None:
        try:
            os.unlink(state)
        except FileNotFoundError:
            pass


def step(path: str, fw: Follow, flags: Optional[Flags] = None) -> bool:
    """One look at the file: hash what was appended since. False if it is not there (now)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return False
    with f:
        st = os.fstat(f.fileno())
        if not fw.fits(f):
            fw.start_over()             # cut back, rewritten or replaced: read it again
        fw.inode = st.st_ino
        aligned = st.st_size - st.st_size % md5state.BLOCK
        if aligned > fw.offset:
            fw.hash_to(f, aligned, flags)
    return True


def follow(path: str, state: str, fw: Follow, flags: Flags, parent: Optional[int] = None) -> int:
    """Hash FILE as it grows until the parent ends or `flags` says stop."""
    parent = parent or os.getppid()
    saved_at, saved_time = fw.offset, time.monotonic()
    while os.getppid() == parent and not flags.stop:
        if not step(path, fw, flags):
            fw.start_over()             # gone for now: whatever comes under the name is new
        if fw.offset != saved_at and (abs(fw.offset - saved_at) >= SAVE_BYTES
                                      or time.monotonic() - saved_time >= SAVE_SECONDS):
            save(state, fw)
            saved_at, saved_time = fw.offset, time.monotonic()
        try:
            flags.nap(POLL)
        except Stop:                    # raised just as the pause ended: nothing was being hashed
            pass
    return 0


def follow_then_save(path: str, state: str, talk: bool) -> int:
    """follow, and on the way out (parent gone, SIGTERM, SIGINT, SIGHUP) save how far it got: the state
    saved is always one whose MD5, inode and fingerprint belong together."""
    flags = Flags()
    signal.signal(signal.SIGTERM, flags.handler)
    signal.signal(signal.SIGINT, flags.handler)
    signal.signal(signal.SIGHUP, flags.handler)         # an orphaned, stopped group gets HUP + CONT
    fw = Follow()
    try:
        fw, had_state = load(path, state)
        if talk and fw.offset:
            log.info("%s: the MD5 continues from %s (%s hashed by an earlier run)",
                     os.path.basename(path), os.path.basename(state), human(fw.offset))
        elif talk and had_state:
            log.info("%s does not fit %s (another file, or changed since): its MD5 starts from the "
                     "beginning", os.path.basename(state), os.path.basename(path))
        return follow(path, state, fw, flags)
    except Stop:                        # (only while napping, see Flags)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the last save is not cut short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            save(state, fw)
        except OSError:
            pass


def finish(path: str, state: str) -> tuple[str, int]:
    """(MD5 of FILE, bytes read for it here)."""
    fw, _ = load(path, state)
    start = fw.offset
    with open(path, "rb") as f:
        fw.hash_to(f, os.fstat(f.fileno()).st_size)
    return fw.h.hexdigest(), fw.offset - start


def main(argv: list[str]) -> int:
    prog = None
    if argv[:1] == ["--log-as"] and len(argv) >= 2:
        prog, argv = argv[1], argv[2:]
    if len(argv) != 3 or argv[0] not in ("follow", "finish"):
        print("usage: python3 -m imagenet_prep.md5follow [--log-as PROG] follow|finish FILE STATE",
              file=sys.stderr)
        return 2
    if prog:
        setup_logging(prog)
    if not md5state.available():
        if prog and argv[0] == "follow":
            log.info("note: the MD5 cannot be kept while downloading here (%s); it is checked with a "
                     "full read at the end", md5state.unavailable_reason())
        else:
            print("error: %s" % md5state.unavailable_reason(), file=sys.stderr)
        return UNAVAILABLE
    if argv[0] == "follow":
        return follow_then_save(argv[1], argv[2], talk=prog is not None)
    try:
        digest, read = finish(argv[1], argv[2])
    except OSError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    print(digest)
    print(read)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
