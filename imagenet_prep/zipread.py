"""Reading a zip archive strictly: from a file on disk, or as a stream in file order.

A zip is read from its end: the end of central directory record (and, for Zip64, its locator and
record) says where the central directory is; the central directory lists every member with its
name, method, sizes, CRC-32 and where its local header starts. ZipDirectory reads and checks all
of that through one callable, read_range(start, end) -> bytes (a seek and a read on a file; one
ranged request at the end of a file that is being streamed). members() then walks the members in
file order over a Source that only moves forward (a stream from the network works), and checks
each local header against the central directory, which is always the one believed: the name,
method and flags must agree; sizes, CRC and offsets are the central directory's. Every member's
data is checked as it is read: its size, and its CRC-32, the only integrity check a zip carries.

Every number is checked before it is used: offsets and lengths inside the file, members that do
not overlap, the counts of the end records and of the directory agree, every byte of the file
belongs to a header, a member, a data descriptor or the directory (nothing hidden between
them), and the directory holds nothing but what the end record says. Refused by name: encrypted
members, methods other than stored (0) and deflated (8), absolute names or names with '..',
symbolic links and devices (from the Unix attributes), a name seen twice.

Memory: the central directory's bytes are kept (about 130 bytes per member), with three 8-byte
numbers per member for the order and the checks; a member's data passes in bounded pieces.
"""
from __future__ import annotations

import calendar
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

import numpy as np

from .console import PrepError, shown, thousands
from .tarstream import REDO, Source

SIG_LOCAL, SIG_CENTRAL, SIG_DESCRIPTOR = b"PK\x03\x04", b"PK\x01\x02", b"PK\x07\x08"
SIG_END, SIG_END64, SIG_LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
LOCAL = struct.Struct("<4sHHHHHIIIHH")                  # 30 bytes
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")          # 46 bytes
END = struct.Struct("<4sHHHHIIH")                       # 22 bytes
LOCATOR64 = struct.Struct("<4sIQI")                     # 20 bytes
END64 = struct.Struct("<4sQHHIIQQQQ")                   # 56 bytes
COMMENT_MAX = 0xFFFF
TAIL = END.size + COMMENT_MAX + LOCATOR64.size + END64.size   # read at the end to find the records
U16, U32 = 0xFFFF, 0xFFFFFFFF
ZIP64_EXTRA, UNIX_TIME_EXTRA = 0x0001, 0x5455
DESCRIPTOR_SIZES = (12, 16, 20, 24)    # crc+sizes (32 or 64 bits), with or without a signature
DEFLATE_RATIO = 1032                    # deflate gives at most ~1032 bytes per compressed byte
CHUNK = 4 << 20                         # the largest piece of member data handed out
IN_CHUNK = 1 << 18                      # compressed bytes read at a time
FLAG_ENCRYPTED, FLAG_DESCRIPTOR, FLAG_STRONG, FLAG_UTF8, FLAG_MASKED = 1, 8, 64, 2048, 8192
METHOD_NAMES = {0: "stored", 1: "shrunk", 2: "reduced", 3: "reduced", 4: "reduced", 5: "reduced",
                6: "imploded", 8: "deflated", 9: "Deflate64", 10: "PKWARE implode",
                12: "bzip2", 14: "LZMA", 18: "IBM TERSE", 19: "IBM LZ77", 20: "Zstandard (old)",
                93: "Zstandard", 94: "MP3", 95: "xz", 96: "JPEG (WinZip)", 97: "WavPack",
                98: "PPMd", 99: "AES-encrypted"}
UNIX = 3                                 # "version made by" high byte: Unix attributes
S_IFMT, S_IFREG, S_IFDIR, S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000
UNIX_KINDS = {0o120000: "symbolic link", 0o020000: "character device", 0o060000: "block device",
              0o010000: "FIFO", 0o140000: "socket"}

ReadRange = Callable[[int, int], bytes]


@dataclass(frozen=True)
class ZipEntry:
    """One member as the central directory lists it (the only description believed)."""
    name: str
    index: int            # its place in the central directory
    raw_name: bytes
    method: int
    flags: int
    crc: int
    csize: int            # compressed size
    size: int             # uncompressed size
    offset: int           # where its local header starts
    mtime: float
    mode: int             # permission bits (0o644 / 0o755 where the zip has no Unix ones)
    is_dir: bool


def file_range(f: BinaryIO) -> ReadRange:
    """read_range over an open file: bytes [start, end), fewer only at the file's end."""
    fd = f.fileno()

    def read_range(start: int, end: int) -> bytes:
        parts, pos = [], start
        while pos < end:
            part = os.pread(fd, min(end - pos, 1 << 24), pos)
            if not part:
                break
            parts.append(part)
            pos += len(part)
        return b"".join(parts)
    return read_range


def dos_time(date: int, time_: int) -> float:
    """A DOS date and time as seconds since 1970, read as UTC (a zip stores no time zone); 0 for
    a date that is not one."""
    year, month, day = 1980 + (date >> 9), (date >> 5) & 15, date & 31
    hour, minute, second = time_ >> 11, (time_ >> 5) & 63, (time_ & 31) * 2
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return 0.0
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def extra_fields(data: bytes, where: str) -> dict[int, bytes]:
    """The records (id, length, payload) of an extra field; each must fit, each moves forward."""
    out, i = {}, 0
    while i < len(data):
        if i + 4 > len(data):
            raise PrepError("%s: corrupt extra field (%d stray bytes at its end); %s"
                            % (where, len(data) - i, REDO))
        key, length = struct.unpack_from("<HH", data, i)
        if i + 4 + length > len(data):
            raise PrepError("%s: corrupt extra field (record 0x%04x claims %d bytes, %d are left); %s"
                            % (where, key, length, len(data) - i - 4, REDO))
        if key in out:
            raise PrepError("%s: corrupt extra field (record 0x%04x twice); %s" % (where, key, REDO))
        out[key] = data[i + 4:i + 4 + length]
        i += 4 + length
    return out


def zip64_values(extra: dict[int, bytes], wanted: list[str], where: str) -> dict[str, int]:
    """The 8-byte values of the Zip64 extra record for the fields whose 32-bit value is the
    escape 0xFFFFFFFF, in the order the format gives them; missing ones are an error."""
    data = extra.get(ZIP64_EXTRA)
    if not wanted:
        return {}
    if data is None or len(data) < 8 * len(wanted):
        raise PrepError("%s: the Zip64 field of its %s is missing (the header says 0xFFFFFFFF and "
                        "holds no 8-byte value); %s"
                        % (where, " and ".join(wanted), REDO))
    return {k: struct.unpack_from("<Q", data, 8 * i)[0] for i, k in enumerate(wanted)}


def check_name(name: str, where: str) -> None:
    """Refuse a name that could write outside the tree: absolute, '..', empty parts, backslashes
    or control characters."""
    body = name[:-1] if name.endswith("/") else name
    parts = body.split("/")
    bad = None
    if not body:
        bad = "an empty name"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        bad = "an absolute path"
    elif any(p in ("", ".", "..") for p in parts):
        bad = "'..', '.' or an empty part"
    elif "\\" in name:
        bad = "a backslash"
    elif not name.isprintable():
        bad = "a control character"
    if bad:
        raise PrepError("%s: refused: %s in the name (a zip made to write outside the folder it "
                        "is extracted to?); it is not the zip expected" % (where, bad))


# ----------------------------------------------------------------------------- the directory

class ZipDirectory:
    """The end records and the central directory of a zip of `size` bytes, read and checked.

    len() is the number of members; members() walks them in file order. `label` names the zip
    in messages."""

    def __init__(self, size: int, read_range: ReadRange, label: str) -> None:
        self.size, self.label = size, label
        if size < END.size:
            raise PrepError("%s is %d bytes: too small to be a zip; %s" % (label, size, REDO))
        tail_start = max(0, size - TAIL)
        tail = self._range(read_range, tail_start, size, "its end")
        at = self._find_end(tail, tail_start)
        self.end_at = at
        count, cd_size, cd_offset, cd_end = self._end_records(read_range, tail, tail_start, at)
        self.tail = tail[cd_end - tail_start:] if cd_end >= tail_start else \
            self._range(read_range, cd_end, size, "its end records")
        if cd_offset >= tail_start:
            cd = tail[cd_offset - tail_start:cd_end - tail_start]
        else:
            cd = self._range(read_range, cd_offset, cd_end, "its central directory")
        self.cd, self.cd_offset, self.cd_end = cd, cd_offset, cd_end
        self._read_directory(count)

    def _range(self, read_range: ReadRange, start: int, end: int, what: str) -> bytes:
        data = read_range(start, end)
        if len(data) != end - start:
            raise PrepError("%s: reading %s (bytes %s to %s) gave %s bytes: the file is shorter "
                            "than %s bytes; %s" % (self.label, what, thousands(start), thousands(end),
                                                   thousands(len(data)), thousands(self.size), REDO))
        return data

    def _find_end(self, tail: bytes, tail_start: int) -> int:
        """Where the end of central directory record starts: the last one whose comment ends
        exactly at the end of the file."""
        i = len(tail)
        while True:
            i = tail.rfind(SIG_END, 0, i)
            if i < 0:
                break
            if i + END.size <= len(tail):
                comment = struct.unpack_from("<H", tail, i + 20)[0]
                if i + END.size + comment == len(tail):
                    return tail_start + i
        head = tail[:4] if tail_start == 0 else b""
        low = tail[:1024].lstrip().lower()
        if tail_start == 0 and (low.startswith((b"<!doctype", b"<html")) or b"<html" in low):
            why = "it is an HTML page (a login or error page saved instead of the data?)"
        elif head == SIG_LOCAL or SIG_LOCAL in tail:
            why = "it has zip members but no end of central directory record: it is truncated"
        else:
            why = "no end of central directory record in its last %s bytes" % thousands(len(tail))
        raise PrepError("%s is not a complete zip archive: %s; %s" % (self.label, why, REDO))

    def _end_records(self, read_range: ReadRange, tail: bytes, tail_start: int,
                     at: int) -> tuple[int, int, int, int]:
        """(members, directory size, directory offset, where the directory must end)."""
        _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _ = END.unpack_from(tail, at - tail_start)
        where = "%s: end of central directory record (byte %s)" % (self.label, thousands(at))
        loc = at - LOCATOR64.size
        has64 = loc >= tail_start and tail[loc - tail_start:loc - tail_start + 4] == SIG_LOCATOR64
        escaped = [name for name, v, top in (("disk", disk, U16), ("directory disk", cd_disk, U16),
                                             ("count on this disk", n_disk, U16),
                                             ("count", n_total, U16), ("size", cd_size, U32),
                                             ("offset", cd_offset, U32)) if v == top]
        if escaped and not has64:
            raise PrepError("%s: its %s say 0xFFFF(FFFF), the Zip64 escape, but there is no Zip64 "
                            "end record locator before it; %s"
                            % (where, ", ".join(escaped), REDO))
        cd_end = at
        if has64:
            _, disk64_at, off64, disks = LOCATOR64.unpack_from(tail, loc - tail_start)
            where64 = "%s: Zip64 end record locator (byte %s)" % (self.label, thousands(loc))
            if disk64_at != 0 or disks != 1:
                raise PrepError("%s: the zip spans %d disks: split or spanned zips are not read; "
                                "join the parts into one zip first" % (where64, disks))
            if off64 + END64.size > loc:
                raise PrepError("%s: it puts the Zip64 end record at byte %s, which does not fit "
                                "before the locator; %s"
                                % (where64, thousands(off64), REDO))
            rec = tail[off64 - tail_start:loc - tail_start] if off64 >= tail_start else \
                self._range(read_range, off64, loc, "its Zip64 end record")
            sig, rest, _, _, disk64, cd_disk64, n_disk64, n_total64, cd_size64, cd_offset64 = \
                END64.unpack_from(rec, 0)
            where64 = "%s: Zip64 end record (byte %s)" % (self.label, thousands(off64))
            if sig != SIG_END64 or off64 + 12 + rest != loc:
                raise PrepError("%s: %s; %s" % (
                    where64, "no Zip64 end record signature there" if sig != SIG_END64 else
                    "its size (%s bytes) does not end where the locator starts" % thousands(rest),
                    REDO))
            for name, v16, v64 in (("disk", disk, disk64), ("directory disk", cd_disk, cd_disk64),
                                   ("count on this disk", n_disk, n_disk64), ("count", n_total, n_total64),
                                   ("size", cd_size, cd_size64), ("offset", cd_offset, cd_offset64)):
                top = U32 if name in ("size", "offset") else U16
                if v16 != v64 and v16 != top:            # the escape, or the same value
                    raise PrepError("%s: its %s (%s) disagrees with the end record's (%s); %s"
                                    % (where64, name, thousands(v64), thousands(v16), REDO))
            disk, cd_disk, n_disk, n_total, cd_size, cd_offset = \
                disk64, cd_disk64, n_disk64, n_total64, cd_size64, cd_offset64
            cd_end = off64
        if disk != 0 or cd_disk != 0 or n_disk != n_total:
            raise PrepError("%s: the zip spans several disks (disk %d, %s of %s members here): "
                            "split or spanned zips are not read; join the parts into one zip first"
                            % (where, disk, thousands(n_disk), thousands(n_total)))
        if cd_offset + cd_size != cd_end:
            raise PrepError("%s: the central directory (%s bytes at byte %s) does not end where the "
                            "end records start (byte %s): bytes prepended, hidden or missing; %s"
                            % (where, thousands(cd_size), thousands(cd_offset), thousands(cd_end), REDO))
        if n_total * CENTRAL.size > cd_size:
            raise PrepError("%s: %s members cannot fit in a central directory of %s bytes; %s"
                            % (where, thousands(n_total), thousands(cd_size), REDO))
        if n_total == 0 and cd_offset != 0:
            raise PrepError("%s: no members, yet %s bytes before the directory; %s"
                            % (where, thousands(cd_offset), REDO))
        return n_total, cd_size, cd_offset, cd_end

    # -- the central directory ------------------------------------------------------------------
    def _read_directory(self, count: int) -> None:
        """Parse every entry (each checked), then check them together: no name twice, members in
        file order one after another from byte 0, none overlapping another or the directory."""
        self.count = count
        pos = np.zeros(count, dtype=np.uint64)       # where its entry is in self.cd
        off = np.zeros(count, dtype=np.uint64)       # where its local header starts
        least = np.zeros(count, dtype=np.uint64)     # its smallest possible end (no local extra)
        names = np.zeros(count, dtype=np.int64)      # hash of its name, to find twice-seen names
        p = 0
        for i in range(count):
            e, nxt = self._entry(i, p)
            pos[i], off[i], names[i] = p, e.offset, hash(e.raw_name)
            least[i] = e.offset + LOCAL.size + len(e.raw_name) + e.csize
            p = nxt
        if p != len(self.cd):
            raise PrepError("%s: the central directory holds %s bytes after its %s entries (the end "
                            "record's count is wrong, or something is hidden there); %s"
                            % (self.label, thousands(len(self.cd) - p), thousands(count), REDO))
        self._pos = pos
        self._twice(names)
        order = np.argsort(off, kind="stable")
        self._order = order
        self._starts = off[order]
        if count:
            first = int(order[0])
            if int(off[first]) != 0:
                raise PrepError("%s: its first member %s starts at byte %s, not 0: bytes before it "
                                "are not part of any member (another file joined in front?); %s"
                                % (self.label, shown(self.entry(first).name), thousands(int(off[first])),
                                   REDO))
            s_off, s_least = self._starts, least[order]
            bounds = np.append(s_off[1:], np.uint64(self.cd_offset))
            bad = np.nonzero(s_least > bounds)[0]
            if len(bad):
                k = int(bad[0])
                a = self.entry(int(order[k]))
                b = self.entry(int(order[k + 1])).name if k + 1 < count else "the central directory"
                raise PrepError("%s: member %s (%s bytes at byte %s) overlaps %s at byte %s; the zip "
                                "is damaged or was made to mislead; %s"
                                % (self.label, shown(a.name), thousands(a.csize), thousands(a.offset),
                                   shown(b), thousands(int(bounds[k])), REDO))
            gap = bounds - s_least
            loose = np.nonzero(gap > COMMENT_MAX + DESCRIPTOR_SIZES[-1])[0]
            if len(loose):
                k = int(loose[0])
                a = self.entry(int(order[k]))
                raise PrepError("%s: %s bytes after member %s belong to no member (more than a "
                                "local header's extra field and a data descriptor can be); %s"
                                % (self.label, thousands(int(gap[k])), shown(a.name), REDO))

    def _twice(self, names: np.ndarray) -> None:
        order = np.argsort(names, kind="stable")
        same = np.nonzero(names[order][1:] == names[order][:-1])[0]
        for k in same:
            a, b = self.entry(int(order[k])), self.entry(int(order[k + 1]))
            if a.raw_name == b.raw_name:
                raise PrepError("%s: member %s appears twice in the central directory (entries %d "
                                "and %d); refused" % (self.label, shown(a.name), a.index, b.index))

    def _entry(self, i: int, p: int) -> tuple[ZipEntry, int]:
        """Entry i of the central directory at byte p of it: checked, and where the next starts."""
        cd = self.cd
        where = "%s: central directory entry %d (byte %s)" % (self.label, i, thousands(self.cd_offset + p))
        if p + CENTRAL.size > len(cd):
            raise PrepError("%s: the directory ends inside it (the end record says %s entries); %s"
                            % (where, thousands(self.count), REDO))
        (sig, made_by, _, flags, method, time_, date, crc, csize, size, n_name, n_extra, n_comment,
         disk, _, attrs, offset) = CENTRAL.unpack_from(cd, p)
        if sig != SIG_CENTRAL:
            raise PrepError("%s: no central directory signature there; %s"
                            % (where, REDO))
        nxt = p + CENTRAL.size + n_name + n_extra + n_comment
        if nxt > len(cd):
            raise PrepError("%s: its name and extra fields run past the end of the directory; %s"
                            % (where, REDO))
        raw = cd[p + CENTRAL.size:p + CENTRAL.size + n_name]
        try:
            name = raw.decode("utf-8" if flags & FLAG_UTF8 else "cp437")
        except UnicodeDecodeError:
            raise PrepError("%s: its name %r is not UTF-8, as its flags say; %s" % (where, raw, REDO)) \
                from None
        where = "%s: member %s" % (self.label, shown(name))
        extra = extra_fields(cd[p + CENTRAL.size + n_name:p + CENTRAL.size + n_name + n_extra], where)
        wanted = [k for k, v in (("size", size), ("compressed size", csize), ("offset", offset))
                  if v == U32] + (["disk"] if disk == U16 else [])
        z = zip64_values(extra, wanted, where)
        size, csize = z.get("size", size), z.get("compressed size", csize)
        offset, disk = z.get("offset", offset), z.get("disk", disk)
        if flags & (FLAG_ENCRYPTED | FLAG_STRONG | FLAG_MASKED) or method == 99:
            raise PrepError("%s is encrypted; refused (the zip is not the one expected)" % where)
        if method not in (0, 8):
            raise PrepError("%s is compressed with method %d (%s), which is not read here (only "
                            "stored and deflated); the zip is not the one expected"
                            % (where, method, METHOD_NAMES.get(method, "unknown")))
        check_name(name, where)
        kind = (attrs >> 16) & S_IFMT if made_by >> 8 == UNIX else 0
        if kind in UNIX_KINDS:
            raise PrepError("%s is a %s; refused (only files and folders belong here)"
                            % (where, UNIX_KINDS[kind]))
        is_dir = name.endswith("/")
        if kind and is_dir != (kind == S_IFDIR):
            raise PrepError("%s: its name %s a folder's, its attributes say it is %s; refused"
                            % (where, "is" if is_dir else "is not", "a folder" if kind == S_IFDIR
                               else "a file"))
        if disk != 0:
            raise PrepError("%s is on disk %d: split or spanned zips are not read" % (where, disk))
        if is_dir and size:
            raise PrepError("%s is a folder of %s bytes; %s"
                            % (where, thousands(size), REDO))
        if method == 0 and csize != size:
            raise PrepError("%s is stored, yet its sizes differ (%s and %s compressed); %s"
                            % (where, thousands(size), thousands(csize), REDO))
        if method == 8 and size > csize * DEFLATE_RATIO + 64:
            raise PrepError("%s claims %s bytes from %s compressed, more than deflate can give: a "
                            "zip bomb, or a damaged directory; refused"
                            % (where, thousands(size), thousands(csize)))
        if offset + LOCAL.size + n_name + csize > self.cd_offset:
            raise PrepError("%s: its data (%s bytes at byte %s) runs into the central directory at "
                            "byte %s; %s"
                            % (where, thousands(csize), thousands(offset), thousands(self.cd_offset),
                               REDO))
        mtime = dos_time(date, time_)
        ut = extra.get(UNIX_TIME_EXTRA)
        if ut and len(ut) >= 5 and ut[0] & 1:
            mtime = float(struct.unpack_from("<i", ut, 1)[0])
        mode = (attrs >> 16) & 0o7777 if kind else (0o755 if is_dir else 0o644)
        return ZipEntry(name, i, raw, method, flags, crc, csize, size, offset, mtime, mode,
                        is_dir), nxt

    # -- what callers use -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.count

    def entry(self, i: int) -> ZipEntry:
        """Entry i of the central directory (as checked when the directory was read)."""
        return self._entry(i, int(self._pos[i]))[0]

    def in_file_order(self, first: int = 0) -> Iterator[ZipEntry]:
        for k in range(first, self.count):
            yield self.entry(int(self._order[k]))

    def members(self, src: Source, first: int = 0, check_end: bool = True) -> Iterator["ZipMember"]:
        """The members in file order, from the `first`-th (0: all; a resumed stream gives the
        number of members done, and `src` must be at that member's local header).

        The caller may read a member's data (ZipMember.chunks) before asking for the next; data
        not read is skipped unchecked. check_end: after the last member, read the rest of the
        stream and check it is the central directory and end records read first (a file that
        changed between the two reads is an error)."""
        prev: Optional[tuple[ZipEntry, int]] = None       # a member and where its data ends
        for k in range(first, self.count):
            e = self.entry(int(self._order[k]))
            if prev is not None:
                self._between(src, prev[0], prev[1], e.offset)
            src.skip_to(e.offset)
            if src.pos != e.offset:
                raise PrepError("%s: the stream is at byte %s, member %s starts at byte %s"
                                % (self.label, thousands(src.pos), shown(e.name), thousands(e.offset)))
            data = self._local(src, e, self.start_of(k + 1))
            yield ZipMember(e, data, src, self.label)
            prev = (e, data + e.csize)
        if prev is not None:
            self._between(src, prev[0], prev[1], self.cd_offset)
        if check_end:
            self._check_end(src)

    def start_of(self, k: int) -> int:
        """Where the k-th member in file order starts (its local header); the central
        directory's offset for k == len(self): where a stream resumes after k members."""
        return int(self._starts[k]) if k < self.count else self.cd_offset

    def _local(self, src: Source, e: ZipEntry, limit: int) -> int:
        """Read and check e's local header (what follows starts at `limit`); where its data
        starts."""
        where = "%s: member %s (local header at byte %s)" % (self.label, shown(e.name), thousands(e.offset))
        h = src.read(LOCAL.size)
        if len(h) < LOCAL.size:
            raise PrepError("%s: truncated there; %s" % (where, REDO))
        sig, _, flags, method, _, _, crc, csize, size, n_name, n_extra = LOCAL.unpack(h)
        if sig != SIG_LOCAL:
            raise PrepError("%s: no local header signature where the central directory puts it; "
                            "%s" % (where, REDO))
        body = src.read(n_name + n_extra)
        if len(body) < n_name + n_extra:
            raise PrepError("%s: truncated there; %s" % (where, REDO))
        if body[:n_name] != e.raw_name:
            raise PrepError("%s: the local header names it %s; the central directory and the local "
                            "header disagree, so the zip is damaged or was made to mislead; %s"
                            % (where, shown(body[:n_name].decode("cp437")), REDO))
        if method != e.method or flags != e.flags:
            raise PrepError("%s: the local header says method %d, flags 0x%04x; the central "
                            "directory says method %d, flags 0x%04x: the zip is damaged or was made "
                            "to mislead; %s" % (where, method, flags, e.method, e.flags, REDO))
        extra = extra_fields(body[n_name:], where)
        if U32 in (size, csize):
            z = zip64_values(extra, ["size", "compressed size"], where)
            size, csize = z["size"], z["compressed size"]
        told = (crc, csize, size)
        if told != (e.crc, e.csize, e.size) and not (flags & FLAG_DESCRIPTOR and told == (0, 0, 0)):
            raise PrepError("%s: the local header says CRC %08x, %s bytes (%s compressed); the "
                            "central directory says CRC %08x, %s bytes (%s compressed): the zip is "
                            "damaged or was made to mislead; %s"
                            % (where, crc, thousands(size), thousands(csize), e.crc, thousands(e.size),
                               thousands(e.csize), REDO))
        data = e.offset + LOCAL.size + n_name + n_extra
        if data + e.csize > limit:
            raise PrepError("%s: its data (%s bytes from byte %s) overlaps what follows at byte %s; "
                            "the zip is damaged or was made to mislead; %s"
                            % (where, thousands(e.csize), thousands(data), thousands(limit), REDO))
        return data

    def _between(self, src: Source, e: ZipEntry, end: int, nxt: int) -> None:
        """The bytes after member e's data (ending at `end`) up to `nxt`: none, or its data
        descriptor (when its flags announce one) agreeing with the central directory."""
        gap = nxt - end
        if gap == 0 and not e.flags & FLAG_DESCRIPTOR:
            return
        where = "%s: after member %s (byte %s)" % (self.label, shown(e.name), thousands(end))
        if not e.flags & FLAG_DESCRIPTOR or gap not in DESCRIPTOR_SIZES:
            raise PrepError("%s: %s bytes belong to no member%s; the zip is damaged or was made to "
                            "mislead; %s" % (where, thousands(gap), "" if e.flags & FLAG_DESCRIPTOR
                                             else " (it has no data descriptor)", REDO))
        src.skip_to(end)
        d = src.read(gap)
        if len(d) < gap:
            raise PrepError("%s: truncated in its data descriptor; %s" % (where, REDO))
        if gap in (16, 24):                 # with a signature (12 or 20 bytes without)
            if d[:4] != SIG_DESCRIPTOR:
                raise PrepError("%s: a data descriptor of %d bytes without its signature; %s"
                                % (where, gap, REDO))
            d = d[4:]
        fmt = "<IQQ" if len(d) == 20 else "<III"
        if struct.unpack(fmt, d) != (e.crc, e.csize, e.size):
            raise PrepError("%s: its data descriptor says CRC %08x, %s bytes (%s compressed), the "
                            "central directory CRC %08x, %s bytes (%s compressed): the zip is "
                            "damaged or was made to mislead; %s"
                            % tuple([where] + _said(struct.unpack(fmt, d)) + _said((e.crc, e.csize, e.size))
                                    + [REDO]))

    def _check_end(self, src: Source) -> None:
        src.skip_to(self.cd_offset)
        want = [self.cd, self.tail]
        for part in want:
            i = 0
            while i < len(part):
                got = src.read(min(len(part) - i, 1 << 20))
                if not got:
                    raise PrepError("%s: the stream ends at byte %s, in the central directory (the "
                                    "file has %s bytes); %s"
                                    % (self.label, thousands(src.pos), thousands(self.size), REDO))
                if got != part[i:i + len(got)]:
                    raise PrepError("%s: the central directory read at the end differs from the one "
                                    "read first (near byte %s): the file changed meanwhile; start "
                                    "again" % (self.label, thousands(src.pos)))
                i += len(got)
        if src.read(1):
            raise PrepError("%s: the stream goes on after byte %s, the end of the zip; %s"
                            % (self.label, thousands(self.size), REDO))


def _said(values: tuple) -> list:
    crc, csize, size = values
    return [crc, thousands(size), thousands(csize)]


def member_error(label: str, name: str, what: str) -> PrepError:
    """What is wrong with a member's data, naming the zip and the member."""
    return PrepError("%s: member %s: %s; %s" % (label, shown(name), what, REDO))


def member_data(src: Source, method: int, csize: int, size: int, want_crc: int,
                fail: Callable[[str], PrepError], chunk: int = CHUNK) -> Iterator[bytes]:
    """The data of a member stored (method 0) or deflated (8) in `csize` bytes, from `src` at its
    first byte (a stream in file order, or a file at the offset a plan recorded), uncompressed,
    in pieces of at most `chunk` bytes; after the last one its `size` and CRC-32 are checked
    against the central directory's. `fail(what)` makes the error that names the member."""
    left, crc, out_total = csize, 0, 0
    inflate = zlib.decompressobj(-15) if method == 8 else None
    while True:
        if inflate is not None and inflate.unconsumed_tail:
            buf = inflate.unconsumed_tail
        elif left:
            buf = src.read(min(left, IN_CHUNK if inflate is not None else chunk))
            if not buf:
                raise fail("truncated at byte %s, %s bytes before its end"
                           % (thousands(src.pos), thousands(left)))
            left -= len(buf)
        else:
            buf = b""
        if inflate is None:
            out = buf
        else:
            try:
                out = inflate.decompress(buf, chunk)
            except zlib.error as ex:
                raise fail("its deflate data is corrupt (%s)" % ex) from None
        if out:
            out_total += len(out)
            if out_total > size:
                raise fail("it inflates to more than the %s bytes the central directory says (a "
                           "zip bomb, or damage); refused" % thousands(size))
            crc = zlib.crc32(out, crc)
            yield out
        if inflate is None:
            if not left:
                break
        elif inflate.eof:
            if left or inflate.unused_data:
                raise fail("its deflate data ends %s bytes before its compressed size"
                           % thousands(left + len(inflate.unused_data)))
            break
        elif not buf and not out:
            raise fail("its deflate data stops before its end (after %s of %s bytes)"
                       % (thousands(out_total), thousands(size)))
    if out_total != size:
        raise fail("%s bytes, the central directory says %s" % (thousands(out_total), thousands(size)))
    if crc != want_crc:
        raise fail("CRC-32 mismatch (%08x, the central directory says %08x)" % (crc, want_crc))


class ZipMember:
    """A member being read from a stream: the entry, and its data (read once, checked)."""

    def __init__(self, entry: ZipEntry, data_offset: int, src: Source, label: str) -> None:
        self.entry, self.data_offset, self.src, self.label = entry, data_offset, src, label

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def size(self) -> int:
        return self.entry.size

    def _fail(self, what: str) -> PrepError:
        return member_error(self.label, self.entry.name, what)

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """Its uncompressed data in pieces of at most `chunk` bytes; after the last one, its size
        and CRC-32 are checked (a PrepError naming the member when they are wrong)."""
        e = self.entry
        self.src.skip_to(self.data_offset)
        yield from member_data(self.src, e.method, e.csize, e.size, e.crc, self._fail, chunk)

    def read_all(self, limit: int) -> bytes:
        """Its whole data (checked), for a small member of at most `limit` bytes."""
        if self.entry.size > limit:
            raise self._fail("%s bytes, more than the %s it may have" % (thousands(self.entry.size),
                                                                          thousands(limit)))
        return b"".join(self.chunks())
