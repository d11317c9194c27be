"""Reading tar archives with exact byte accounting, and tarfile made strict.

iter_tar is our own header loop, for where every byte's place matters: the outer train tar's
index (each class tar is a byte range extracted on its own), and archives read as a stream from
the network. It reads ustar, GNU long names and base-256 sizes, and pax headers; every number
in a header is checked, every step moves forward, and an archive must end where its file ends.
read_tarfile wraps the standard library's tarfile (for the small devkit archive, gzip included)
so that a truncated archive or a bad header is an error instead of a silent end.
"""
from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional

from .console import PrepError, human, shown, thousands

BLOCK = 512
ZERO = bytes(BLOCK)
RECORD_MAX = 1 << 20                 # the largest tar record (blocking factor 2048) we accept
TAIL_MAX = RECORD_MAX + 2 * BLOCK    # end-of-archive blocks plus padding to one record
EXT_MAX = 1 << 20                    # largest long name or pax header we read
FILE_TYPES = (b"0", b"\0", b"7")
KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"5": "folder", b"1": "hard link",
         b"2": "symbolic link", b"3": "character device", b"4": "block device", b"6": "FIFO"}
OCTAL = re.compile(rb"[0-7]{1,12}\Z")
PAX_SIZE = re.compile(r"[0-9]{1,20}\Z")
PAX_TIME = re.compile(r"-?[0-9]{1,12}(\.[0-9]{0,9})?\Z")
REDO = "the download is incomplete or damaged: download it again"


@dataclass
class Member:
    name: str
    type: bytes
    size: int
    offset: int          # where its data starts
    linkname: str
    header: int          # where its (first) header starts
    mode: int = 0o644
    mtime: float = 0.0

    def is_file(self) -> bool:
        return self.type in FILE_TYPES

    def kind(self) -> str:
        return KINDS.get(self.type, "entry of type %r" % self.type.decode("latin-1"))

    def describe(self) -> str:
        """'name', or 'name -> target is a symbolic link' for anything but a file."""
        if self.is_file():
            return self.name
        return "%s%s is a %s" % (shown(self.name), " -> " + shown(self.linkname) if self.linkname else "",
                                 self.kind())


class Source:
    """Bytes read in order, from a file (may seek) or a stream (may only skip forward).

    `pos` is the offset in the archive of the next byte read; `seen` (optional) receives every
    byte that passes, skipped ones included (a stream's running checksum).
    """

    def __init__(self, f: BinaryIO, pos: int = 0, seekable: bool = True, seen=None) -> None:
        self.f, self.pos, self.seekable, self.seen = f, pos, seekable, seen

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.pos += len(data)
        if self.seen is not None and data:
            self.seen(data)
        return data

    def skip_to(self, pos: int) -> None:
        if pos == self.pos:
            return
        if self.seekable:
            self.f.seek(pos)
            self.pos = pos
            return
        if pos < self.pos:
            raise ValueError("a stream cannot go back from byte %d to %d" % (self.pos, pos))
        while self.pos < pos:
            if not self.read(min(pos - self.pos, 1 << 20)):
                return                        # the caller sees the short read at pos


def number(field: bytes, where: str) -> int:
    """A number field of a tar header: octal text, or GNU base-256 (positive only)."""
    if field[:1] and field[0] & 0x80:
        if field[0] != 0x80:
            raise PrepError("%s: corrupt tar header (negative base-256 number)" % where)
        return int.from_bytes(field[1:], "big")
    s = field.split(b"\0", 1)[0].strip(b" ")
    if not s:
        return 0
    if not OCTAL.match(s):
        raise PrepError("%s: corrupt tar header (bad number %r)" % (where, s))
    return int(s, 8)


def text(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def header_ok(h: bytes) -> bool:
    """A real tar header block: not zeros, and its checksum adds up."""
    try:
        return h != ZERO and number(h[148:156], "") == sum(h) - sum(h[148:156]) + 256
    except PrepError:
        return False


def parse_pax(payload: bytes, where: str) -> dict[str, str]:
    """Records 'LENGTH key=value\\n'; every record must move forward, every number is checked."""
    out, i, n = {}, 0, len(payload)
    while i < n:
        if not payload[i:].strip(b"\0"):
            break                                       # NUL padding after the last record
        sp = payload.find(b" ", i, i + 21)
        length = payload[i:sp] if sp > i else b""
        if not (length.isdigit() and len(length) <= 20):
            raise PrepError("%s: corrupt pax header (record at offset %d has no length)" % (where, i))
        size = int(length)
        if size <= sp - i + 2 or i + size > n or payload[i + size - 1] != 0x0A:
            raise PrepError("%s: corrupt pax header (record at offset %d claims %d bytes)"
                            % (where, i, size))
        key, eq, value = payload[sp + 1:i + size - 1].partition(b"=")
        if not eq:
            raise PrepError("%s: corrupt pax header (record at offset %d has no '=')" % (where, i))
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        i += size
    if "size" in out and not PAX_SIZE.match(out["size"]):
        raise PrepError("%s: corrupt pax header (size=%r is not a number)" % (where, out["size"][:40]))
    if "mtime" in out and not PAX_TIME.match(out["mtime"]):
        raise PrepError("%s: corrupt pax header (mtime=%r is not a time)" % (where, out["mtime"][:40]))
    return out


def check_tail(src: Source, pos: int, end: Optional[int], label: str) -> None:
    """The end-of-archive blocks start at `pos`: up to `end` (the archive's size) there may be only
    zeros, and no more than one record of them. end None: a stream whose length is known only at
    its end (a tar read through gunzip): it must go on with the second zero block, then only
    zeros up to its end, a record's worth at most."""
    if end is None:
        check_stream_tail(src, pos, label)
        return
    tail = end - pos
    if tail > TAIL_MAX:
        raise PrepError("%s: the archive's members end at byte %s, but the file goes on for %s more: "
                        "an unfinished download (a preallocated file not filled in yet?) or "
                        "something appended to it; download it again (00_download.sh resumes and "
                        "checks the MD5)" % (label, thousands(pos), human(tail)))
    if src.pos < pos or src.pos > end:           # (iter_tar has read the first zero block)
        src.skip_to(pos)
    want = end - src.pos
    rest = src.read(want)
    if len(rest) < want:
        raise PrepError("%s: truncated at byte %s, in the end-of-archive blocks; %s"
                        % (label, thousands(src.pos), REDO))
    if rest.strip(b"\0"):
        raise PrepError("%s: data after the end-of-archive marker at byte %s; the file is damaged or "
                        "two files were joined: download it again" % (label, thousands(pos)))


def check_stream_tail(src: Source, pos: int, label: str) -> None:
    """check_tail for a stream of unknown length (iter_tar has read the first zero block)."""
    src.skip_to(pos + BLOCK)
    got = 0
    while got <= TAIL_MAX:
        part = src.read(min(1 << 16, TAIL_MAX + 1 - got))
        if not part:
            break
        if part.strip(b"\0"):
            raise PrepError("%s: data after the end-of-archive marker at byte %s; the file is damaged "
                            "or two files were joined: download it again" % (label, thousands(pos)))
        got += len(part)
    if got + BLOCK > TAIL_MAX:
        raise PrepError("%s: the archive's members end at byte %s, but the stream goes on with more "
                        "than %s of zeros: something was appended to it; download it again"
                        % (label, thousands(pos), human(TAIL_MAX)))
    if got < BLOCK:
        raise PrepError("%s: truncated at byte %s, in the end-of-archive blocks; %s"
                        % (label, thousands(src.pos), REDO))


class _Extended:
    """Long names and pax records that apply to the next member."""

    def __init__(self) -> None:
        self.longname: Optional[str] = None
        self.longlink: Optional[str] = None
        self.pax: dict[str, str] = {}

    def read(self, typ: bytes, payload: bytes, where: str) -> None:
        if typ == b"L":
            self.longname = text(payload)
        elif typ == b"K":
            self.longlink = text(payload)
        elif typ == b"x":
            self.pax = parse_pax(payload, where)
        else:
            parse_pax(payload, where)                   # global pax header: checked, not used

    def name(self, fallback: str) -> str:
        return self.longname or self.pax.get("path") or fallback


def iter_tar(src: Source, start: int, end: Optional[int], label: str,
             need_eof: bool) -> Iterator[Member]:
    """Yield the Members of the tar stored in bytes [start, end) of `src`.

    Only headers are read: the caller may read a member's data (m.size bytes at m.offset) before
    asking for the next member. need_eof: the tar fills [start, end) exactly, as a whole archive
    file does: it must end with its end-of-archive blocks, followed by zeros up to `end` and
    nothing else. Without it, reading stops at the end-of-archive blocks or at `end` (a tar
    stored as a member of another). end None (with need_eof): the tar fills the rest of a stream
    whose length is known only at its end (gunzip's output): both end-of-archive blocks, then
    only zeros up to the stream's end. Raises PrepError naming the member where the archive
    breaks.
    """
    pos, prev, ext = start, None, _Extended()
    if end is None and not need_eof:
        raise ValueError("an archive of unknown length must be read to its end (need_eof)")
    while True:
        if end is not None and pos >= end and not need_eof:
            return
        after = (" (after member %s)" % shown(prev)) if prev else " (at its first member)"
        src.skip_to(pos)
        h = src.read(BLOCK)
        if len(h) < BLOCK or (end is not None and pos + BLOCK > end):
            at = src.pos if end is None else min(end, pos + len(h))
            raise PrepError("%s: truncated: the archive ends at byte %d, inside or before a tar "
                            "header%s; %s" % (label, at, after, REDO))
        if h == ZERO:
            if need_eof:
                check_tail(src, pos, end, label)
            return
        where = "%s: byte %d%s" % (label, pos, after)
        if number(h[148:156], where) != sum(h) - sum(h[148:156]) + 256:
            raise PrepError("%s: not a tar header (bad checksum); the archive is corrupt: download "
                            "it again" % where)
        typ, data = h[156:157], pos + BLOCK
        size = int(ext.pax["size"]) if "size" in ext.pax else number(h[124:136], where)
        name = text(h[0:100])
        if h[257:263] == b"ustar\0" and h[345] != 0:          # POSIX ustar name prefix
            name = text(h[345:500]) + "/" + name
        if end is not None and data + size > end:
            raise PrepError("%s: truncated inside member %s (needs bytes up to %d, the archive ends at "
                            "%d); %s" % (label, shown(ext.name(name)), data + size, end, REDO))
        nxt = data + (size + BLOCK - 1) // BLOCK * BLOCK
        if typ in (b"L", b"K", b"x", b"g"):
            if size > EXT_MAX:
                raise PrepError("%s: oversized extended header (%d bytes)" % (where, size))
            ext.read(typ, src.read(size), where)
            pos = nxt
            continue
        mtime = float(ext.pax["mtime"]) if "mtime" in ext.pax else float(number(h[136:148], where))
        m = Member(ext.name(name), typ, size, data,
                   ext.longlink or ext.pax.get("linkpath") or text(h[157:257]), pos,
                   number(h[100:108], where), mtime)
        ext = _Extended()
        yield m
        prev, pos = m.name, nxt


def read_data(src: Source, m: Member, chunk: int, label: str) -> Iterator[bytes]:
    """A member's data in pieces of at most `chunk` bytes."""
    src.skip_to(m.offset)
    left = m.size
    while left:
        buf = src.read(min(left, chunk))
        if not buf:
            raise PrepError("%s: truncated inside member %s; %s" % (label, shown(m.name), REDO))
        left -= len(buf)
        yield buf


# ----------------------------------------------------------------------------- what a file is

def sniff(path: str, size: int, head: bytes, allow_gzip: bool, what: str = "archive",
          link: bool = False) -> str:
    """'tar' or 'gz' for the file at `path` whose first bytes are `head`; else a PrepError saying
    what the file is instead (empty, a web page, compressed, ...). `what` names it in messages;
    `link`: the bytes come straight from a link (01 --stream), so the remedy is a fresh link, not
    another download."""
    redo = ("check the link in urls.sh (or get a fresh one from image-net.org) and run again" if link
            else "download it again (00_download.sh resumes and checks it)")
    if size == 0:
        raise PrepError("%s is empty; %s" % (path, redo))
    low = head[:1024].lstrip().lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in low:
        if link:
            raise PrepError("%s: the link sent a web page (HTML), not the archive: it has expired, "
                            "or it needs you to be logged in; get a fresh link from image-net.org "
                            "into urls.sh and run again" % path)
        raise PrepError("%s is an HTML page, not a tar archive (a login or error page was saved "
                        "instead of the data?); check your download link and %s" % (path, redo))
    if head[:2] == b"\x1f\x8b":
        if allow_gzip:
            return "gz"
        raise PrepError("%s is gzip-compressed, but the %s is a plain tar; is it the right file?"
                        % (path, what))
    if head[:BLOCK] == ZERO:
        raise PrepError("%s holds no members (an empty tar, or zeros); is it the right file? %s"
                        % (path, redo))
    if len(head) < BLOCK or not header_ok(head[:BLOCK]):
        raise PrepError("%s is not a tar archive (no tar header at its start); %s" % (path, redo))
    return "tar"


# ----------------------------------------------------------------------------- tarfile, strictly

def read_tarfile(path: str) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """Open a .tar or .tar.gz and list its members, checking that the archive really ends there.

    tarfile stops silently at a bad header or a truncated archive after the first member; here
    the end is checked: the rest of the (decompressed) archive must be zeros. The caller closes
    the returned TarFile.
    """
    label = str(path)
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise PrepError("%s is not a readable .tar or .tar.gz archive (%s); download it again"
                        % (label, _why(e))) from None
    try:
        members = tar.getmembers()
        tar.fileobj.seek(tar.offset)
        rest = tar.fileobj.read(TAIL_MAX + 1)
        if len(rest) < BLOCK or rest.strip(b"\0") or len(rest) > TAIL_MAX:
            where = members[-1].name if members else "its start"
            raise PrepError("%s is damaged: it stops being a tar archive at byte %s (after member %s)"
                            "; download it again" % (label, thousands(tar.offset), where))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        tar.close()
        raise PrepError("%s is damaged (%s); download it again" % (label, _why(e))) from None
    except BaseException:
        tar.close()
        raise
    return tar, members


def _why(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0].rstrip(":") or type(e).__name__
