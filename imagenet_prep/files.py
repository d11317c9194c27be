"""Writing files and folders so that a reader, or a rerun, never sees half of one.

- Temporary names: ``.NAME.tmp-HOST.PID`` beside NAME (hidden, and never a final name; a rerun
  removes those that no live run holds; note that torchvision's ImageFolder does not skip hidden
  folders); this module makes and recognises them.
- atomic_write / write_json: temporary file, fsync, rename.
- Lock: an flock on a file or a folder, released when the process ends, even by SIGKILL.
- entry_kind / open_regular: a file of a tree is opened only if it is a regular file (a FIFO, a
  device, a socket or a symbolic link put in a tree would hang or mislead a reader).
- open_input / read_regular / read_regular_text / read_json(path, what): the one way stages 03, 04
  and 05 read an input file (a class list, labels, a blacklist, a manifest, a done marker): only a
  regular file, only up to a size, else a PrepError naming the path, what it is and what to do.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import socket
import stat
from typing import Any, Iterator, Optional

from .console import PrepError, human, log

TMP_MARK = ".tmp-"


@functools.lru_cache(maxsize=None)
def run_tag() -> str:
    """HOST.PID of this run (workers forked later keep their parent's)."""
    return "%s.%d" % (socket.gethostname().split(".")[0] or "host", os.getpid())


def temp_name(name: str) -> str:
    """The hidden temporary name under which NAME is built by this run."""
    return ".%s%s%s" % (name, TMP_MARK, run_tag())


def temp_of(name: str) -> Optional[str]:
    """NAME if `name` is a temporary name made by temp_name (by any run), else None."""
    if not name.startswith(".") or TMP_MARK not in name:
        return None
    return name[1:].rsplit(TMP_MARK, 1)[0] or None


def temp_beside(path: str) -> str:
    return os.path.join(os.path.dirname(path), temp_name(os.path.basename(path)))


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, sync: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, fsync, rename: never half a file."""
    tmp = temp_beside(str(path))
    try:
        with open(tmp, "wb") as f:
            try_flock(f.fileno())               # held while writing: clear_leftover leaves it
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_if_changed(path: str, data: bytes) -> bool:
    """atomic_write unless `path` already holds exactly `data`; True if it wrote. What is there
    is read only if it is a regular file (a FIFO there would never answer): anything else is
    replaced."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            if f.read(len(data) + 1) == data:
                return False
    except (OSError, NotRegular):
        pass
    atomic_write(path, data)
    return True


def write_json(path: str, doc: Any, sync: bool = True) -> None:
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    atomic_write(path, text.encode("utf-8"), sync=sync)


def parse_json(text, **kw) -> Any:
    """json.loads of input from outside, whose nesting deeper than the parser goes is a ValueError
    like any other text that is not a usable document (json raises RecursionError there)."""
    try:
        return json.loads(text, **kw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: str, what: Optional[str] = None) -> Any:
    """The document in `path`, or None if it is missing or not JSON (nested deeper than the
    parser goes, too). With `what` (what to do about it), the file is read only if it is a regular
    file of at most INPUT_MAX bytes (read_regular), else a PrepError: stages 03-05 read 01's and
    05's markers so."""
    try:
        if what is not None:
            return parse_json(read_regular(path, what))
        with open(path, encoding="utf-8") as f:
            return parse_json(f.read())
    except (OSError, ValueError):
        return None


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def clear_temps(folder: str, name: str, keep: str = "") -> None:
    """Remove the temporary files and folders of NAME in `folder` that no live run holds (but
    `keep`, one the caller holds and uses)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        if temp_of(e.name) == name and e.name != keep:
            clear_leftover(e.path)


def clear_leftover(path: str) -> None:
    """Remove a temporary file or folder unless a live run holds its flock (it is still writing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if try_flock(fd):
            if os.path.isdir(path):
                remove_tree(path)
            else:
                os.unlink(path)
        else:
            log.info("%s is being written by another run; leaving it alone", path)
    finally:
        os.close(fd)


def need_folder(path: str, what: str) -> None:
    """`path` is a folder, a link to one, or not there yet (the caller makes it); anything else is
    a PrepError naming it. `what` says what goes into it ("the shards")."""
    if not os.path.lexists(path) or os.path.isdir(path):
        return
    if os.path.islink(path):
        raise PrepError("%s is a symbolic link to %s, which is not a folder (or is not there): %s "
                        "go into that folder; point the link to a folder, or remove it, then run "
                        "again" % (path, os.readlink(path), what))
    raise PrepError("%s is not a folder: %s go into a folder of that name; move it away, then run "
                    "again" % (path, what))


@contextlib.contextmanager
def open_dir(path: str) -> Iterator[int]:
    """A descriptor of folder `path`, to create files in it without walking the path again."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- regular files only

LINK = "a symbolic link"
KINDS = ((stat.S_ISLNK, LINK), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file"))


class NotRegular(Exception):
    """A path that is not a regular file where one was expected; str: 'not a regular file: a
    FIFO' (or a socket, a device, a symbolic link, a folder)."""

    def __init__(self, kind: str) -> None:
        super().__init__("not a regular file: %s" % kind)
        self.kind = kind


def kind_of(mode: int) -> str:
    """'a FIFO', 'a symbolic link', ... for an lstat st_mode."""
    return next((word for test, word in KINDS if test(mode)), "of an unknown kind")


def entry_kind(e: os.DirEntry) -> Optional[str]:
    """None for a regular file or a folder (a symbolic link is not followed), else what the
    entry is. From the listing's file type: an lstat only where the file system gives none."""
    if e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False):
        return None
    try:
        return kind_of(e.stat(follow_symlinks=False).st_mode)
    except OSError:
        return "gone while being listed"


def open_regular(path: str) -> int:
    """A descriptor of `path`, opened only if it is a regular file: lstat first, then an open
    that follows no symbolic link and does not wait (a FIFO put there meanwhile), then fstat.
    Anything else raises NotRegular, having opened nothing but, at worst, that FIFO."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(kind_of(st.st_mode))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegular(kind_of(st.st_mode))
    return fd


INPUT_MAX = 1 << 30     # the largest input read whole (the train manifest: 0.14 GiB)
NOT_READ = ("%s is not a regular file (%s), so it was not read (a FIFO, a device or a link to "
            "one could keep the run waiting, or reading, forever); %s")


def open_input(path: str, what: str, limit: int = INPUT_MAX, follow: bool = False) -> int:
    """A descriptor of the input file `path` (a class list, labels, a manifest, a done marker),
    opened only if it is a regular file (open_regular) of at most `limit` bytes. Anything else
    is a PrepError: 'PATH is not a regular file (a FIFO), so it was not read (...); WHAT', `what`
    saying what to do. A missing file raises FileNotFoundError: the caller says what that means.
    `follow`: a path the user named: it may be a symbolic link to a regular file, and a folder
    is said as 'PATH is a folder, not a file: WHAT'."""
    target = os.path.realpath(path) if follow else path
    try:
        fd = open_regular(target)
    except NotRegular as e:
        if follow and e.kind == "a folder":          # a folder named for a file: said plainly
            raise PrepError("%s is a folder, not a file: %s" % (path, what)) from None
        kind = e.kind
        if kind == LINK:
            with contextlib.suppress(OSError):
                kind += " to %s" % os.readlink(path)
        elif follow and os.path.islink(path):
            kind = "a symbolic link to %s, %s" % (target, kind)
        raise PrepError(NOT_READ % (path, kind, what)) from None
    size = os.fstat(fd).st_size
    if size > limit:
        os.close(fd)
        raise PrepError(too_large(path, size, limit, what))
    return fd


def too_large(path: str, size: int, limit: int, what: str) -> str:
    return ("%s is %s, more than the %s such a file can be, so it was not read; %s"
            % (path, human(size), human(limit), what))


def read_regular(path: str, what: str, limit: int = INPUT_MAX, follow: bool = False) -> bytes:
    """The bytes of the input file `path`, opened with open_input; never more than `limit`
    bytes are read, even from a file that grows meanwhile."""
    fd = open_input(path, what, limit, follow)
    parts, total = [], 0
    try:
        while True:
            part = os.read(fd, min(1 << 20, limit + 1 - total))
            if not part:
                return b"".join(parts)
            parts.append(part)
            total += len(part)
            if total > limit:
                raise PrepError(too_large(path, total, limit, what))
    finally:
        os.close(fd)


def read_regular_text(path: str, what: str, encoding: str = "utf-8", limit: int = INPUT_MAX,
                      follow: bool = False) -> str:
    """read_regular, decoded (a UnicodeDecodeError is the caller's to word)."""
    return read_regular(path, what, limit, follow).decode(encoding)


# ----------------------------------------------------------------------------- locks

_NO_FLOCK: list = []     # the file system refused flock once: warned already


def try_flock(fd: int) -> bool:
    """True if we now hold an exclusive flock on fd, False if another process holds one.

    Where the file system has no flock (Lustre mounted without -o flock) we go on without it,
    with one warning.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if not _NO_FLOCK:
            _NO_FLOCK.append(e)
            log.warning("warning: this file system does not support flock (%s); do not start two "
                        "runs on the same data at once", e)
    return True


class Lock:
    """An flock on `path` (a lock file, created if needed, or a folder). Held until release() or
    the end of the process. Busy: raise PrepError(busy) or, with wait, wait for it."""

    def __init__(self, path: str, busy: str, wait: bool = False) -> None:
        self.path = path
        if os.path.isdir(path):
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if try_flock(self.fd):
            return
        if not wait:
            os.close(self.fd)
            raise PrepError(busy)
        log.info("%s; waiting for it", busy.split(";")[0])
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
