"""The MD5 of a file that is still being written, kept up to date so that checking it at the end
needs no second read (00_download.sh: NAME.part as curl writes it and pieces are joined to it).

    python3 -m imagenet_prep.md5follow follow FILE STATE   # in the background while FILE grows
    python3 -m imagenet_prep.md5follow finish FILE STATE   # at the end: prints the MD5 of FILE

`follow` hashes what is appended to FILE and saves the MD5 state in STATE (a small JSON file,
replaced atomically) at 64-byte-aligned offsets, every few seconds and every 256 MiB; it ends when
its parent process ends or FILE is gone. `finish` takes the saved state if it still describes
FILE (same inode, at most its size, and the 4 KiB before the saved offset unchanged), hashes only
the rest and prints the digest; with no usable state it reads the whole file. A wrong state can
only cost time: the digest is always that of FILE's bytes.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Optional

from . import md5state
from .files import read_json, write_json

CHUNK = 4 << 20
SAVE_BYTES = 256 << 20
SAVE_SECONDS = 5.0
POLL = 0.2
PRINT = 4096                            # bytes before the saved offset that identify the file


def fingerprint(f, offset: int) -> str:
    f.seek(max(0, offset - PRINT))
    return hashlib.sha1(f.read(min(offset, PRINT))).hexdigest()


def load(path: str, state: str) -> tuple[md5state.ResumableMD5, int]:
    """The saved MD5 if it still describes the file at `path`, else a fresh one (offset 0)."""
    doc = read_json(state)
    try:
        st = os.stat(path)
        if not isinstance(doc, dict) or doc.get("inode") != st.st_ino or \
                not isinstance(doc.get("offset"), int) or not 0 < doc["offset"] <= st.st_size:
            raise ValueError
        h = md5state.ResumableMD5.from_state(doc.get("md5") or "")
        if h.offset != doc["offset"]:
            raise ValueError
        with open(path, "rb") as f:
            if fingerprint(f, h.offset) != doc.get("print"):
                raise ValueError
        return h, h.offset
    except (OSError, ValueError, TypeError):
        return md5state.ResumableMD5(), 0


def save(path: str, state: str, h: md5state.ResumableMD5, f) -> None:
    write_json(state, {"inode": os.fstat(f.fileno()).st_ino, "offset": h.offset, "md5": h.state(),
                       "print": fingerprint(f, h.offset)}, sync=False)
    f.seek(h.offset)


def hash_to(f, h: md5state.ResumableMD5, end: int) -> None:
    """Feed bytes [h.offset, end) of f to h."""
    f.seek(h.offset)
    while h.offset < end:
        buf = f.read(min(CHUNK, end - h.offset))
        if not buf:
            break
        h.update(buf)


def follow(path: str, state: str, parent: Optional[int] = None, progress: Optional[list] = None) -> int:
    """Hash FILE as it grows until the parent ends; `progress` receives the current MD5 object."""
    parent = parent or os.getppid()
    h, _ = load(path, state)
    saved_at, saved_time = h.offset, time.monotonic()
    seen = ""                                   # fingerprint of the bytes just before h.offset
    if h.offset:
        with open(path, "rb") as f:
            seen = fingerprint(f, h.offset)
    while os.getppid() == parent:
        try:
            f = open(path, "rb")
        except OSError:
            return 0
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < h.offset or (h.offset and fingerprint(f, h.offset) != seen):
                h, saved_at = md5state.ResumableMD5(), 0    # cut back or rewritten: read it again
            aligned = size - size % md5state.BLOCK
            if aligned > h.offset:
                hash_to(f, h, aligned)
            if progress is not None:
                progress[:] = [h]
            seen = fingerprint(f, h.offset) if h.offset else ""
            if h.offset > saved_at and (h.offset - saved_at >= SAVE_BYTES
                                        or time.monotonic() - saved_time >= SAVE_SECONDS):
                save(path, state, h, f)
                saved_at, saved_time = h.offset, time.monotonic()
        time.sleep(POLL)
    return 0


def follow_then_save(path: str, state: str) -> int:
    """follow, and on the way out (parent gone, SIGTERM) save how far it got."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    last: list = []
    try:
        return follow(path, state, progress=last)
    except KeyboardInterrupt:
        return 0
    finally:
        if last and last[0].offset:
            try:
                with open(path, "rb") as f:
                    save(path, state, last[0], f)
            except OSError:
                pass


def finish(path: str, state: str) -> str:
    h, _ = load(path, state)
    with open(path, "rb") as f:
        hash_to(f, h, os.fstat(f.fileno()).st_size)
    return h.hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("follow", "finish"):
        print("usage: python3 -m imagenet_prep.md5follow follow|finish FILE STATE", file=sys.stderr)
        return 2
    if not md5state.available():
        print("error: %s" % md5state.unavailable_reason(), file=sys.stderr)
        return 3
    if argv[0] == "follow":
        return follow_then_save(argv[1], argv[2])
    try:
        print(finish(argv[1], argv[2]))
    except OSError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
