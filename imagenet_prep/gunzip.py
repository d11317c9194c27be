"""Streaming gunzip: a gzip file read as its decompressed bytes, checked to its last byte.

GunzipReader wraps any reader of the compressed bytes (a file, a network stream, a member of a
zip) and is itself a reader: read(n) gives exactly n decompressed bytes, fewer only at the end.
Memory stays bounded (the compressed bytes are read in pieces of IN_CHUNK, the output is made no
larger than what was asked). Everything RFC 1952 lets a gzip file say is checked: the header
(magic, method, reserved flags, the lengths of its optional fields, its CRC-16 when present),
and at the end of each member its CRC-32 and ISIZE (the length modulo 2**32) against the bytes
that came out. A gzip file may hold several members one after another (gzip -c a b, pigz,
bgzip): they are read as one stream. Anything else after the last member (zeros included) is an
error, and so is a stream that ends before its last trailer.

Resuming inside the stream (gzpoints): with `span`, the reader keeps a few resume points (one
after every `span` bytes of output, at a deflate block boundary; point_before(pos) gives the last
one at or before a position); a reader made with `point` starts there, fed with the compressed
bytes from point.offset on (or from `skip` bytes before it: they are dropped), and checks the
member's CRC-32 and length at its end as if it had read it all.
"""
from __future__ import annotations

import collections
import struct
import zlib
from typing import BinaryIO, Optional

from .console import PrepError, thousands
from .gzpoints import Point, PointInflater
from .tarstream import REDO

MAGIC = b"\x1f\x8b"
DEFLATE = 8
FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT = 1, 2, 4, 8, 16
RESERVED = 0xE0
TEXT_MAX = 1 << 16                   # the longest file name or comment read from a header
IN_CHUNK = 1 << 18                   # compressed bytes read at a time
POINTS_KEPT = 8                      # resume points kept (32 KiB each)


class GunzipReader:
    """The decompressed bytes of the gzip stream `raw`. `label` names it in messages.

    pos: decompressed bytes handed out; raw_pos: compressed bytes used so far (the header,
    deflate data and trailers read); members: gzip members finished. span, point, skip: resume
    points (see the module's docstring)."""

    def __init__(self, raw: BinaryIO, label: str, span: int = 0, point: Optional[Point] = None,
                 skip: int = 0) -> None:
        self.raw, self.label, self.span = raw, label, span
        self.pos = self.raw_pos = self.members = 0
        self.buf = b""                   # compressed bytes read but not used yet
        self.inflate = None              # zlib's decompressor, or a PointInflater
        self.crc = self.isize = 0
        self.started = self.done = False
        self.points: collections.deque = collections.deque(maxlen=POINTS_KEPT)
        if point is not None:
            while skip > 0:
                dropped = len(self.raw.read(min(skip, IN_CHUNK)))
                if not dropped:
                    raise self._truncated("the bytes before the resume point")
                skip -= dropped
            self.started = True
            self.inflate = PointInflater(point=point, span=span)
            self.pos, self.raw_pos, self.members = point.pos, point.offset, point.member
            self.crc, self.isize = point.crc, point.size
            self.points.append(point)

    def point_before(self, pos: int) -> Optional[Point]:
        """The last resume point kept at or before decompressed position `pos`."""
        return next((p for p in reversed(self.points) if p.pos <= pos), None)

    # -- the compressed side --------------------------------------------------------------------
    def _fill(self) -> bool:
        """More compressed bytes into self.buf; False at the end of `raw`."""
        data = self.raw.read(IN_CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    def _take(self, n: int, what: str) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise self._truncated(what)
        out, self.buf = self.buf[:n], self.buf[n:]
        self.raw_pos += n
        return out

    def _take_text(self, what: str) -> bytes:
        """A zero-terminated header field (the file name, the comment), with its zero."""
        while True:
            end = self.buf.find(b"\0", 0, TEXT_MAX)
            if end >= 0:
                return self._take(end + 1, what)
            if len(self.buf) >= TEXT_MAX:
                raise PrepError("%s: the gzip header's %s is longer than %s bytes; the file is damaged "
                                "or not a gzip file: %s" % (self.label, what, thousands(TEXT_MAX), REDO))
            if not self._fill():
                raise self._truncated("the gzip header's " + what)

    def _truncated(self, what: str) -> PrepError:
        return PrepError("%s: truncated: the compressed stream ends at byte %s, in %s; %s"
                         % (self.label, thousands(self.raw_pos + len(self.buf)), what, REDO))

    def _header(self) -> None:
        at = self.raw_pos
        head = self._take(10, "a gzip header")
        if head[:2] != MAGIC:
            if self.members == 0 and at == 0:
                low = head.lstrip().lower()
                kind = "an HTML page (a login or error page saved instead of the data?)" \
                    if low.startswith((b"<!doc", b"<html", b"<?xml", b"<head")) else \
                    "not a gzip file (it starts with %r)" % head[:4]
                raise PrepError("%s is %s; %s" % (self.label, kind, REDO))
            raise PrepError("%s: %s bytes after the end of the gzip data (byte %s) that are not "
                            "another gzip member: the file is damaged or two files were joined; %s"
                            % (self.label, "more" if len(self.buf) else "some", thousands(at), REDO))
        method, flags = head[2], head[3]
        where = "%s: gzip header at byte %s" % (self.label, thousands(at))
        if method != DEFLATE or flags & RESERVED:
            raise PrepError("%s: %s; the file is not gzip as RFC 1952 writes it, or %s"
                            % (where, "method %d, not deflate" % method if method != DEFLATE else
                               "reserved flag bits set (0x%02x)" % flags, REDO))
        header = head
        if flags & FEXTRA:
            size = self._take(2, "the gzip header's extra field")
            header += size + self._take(struct.unpack("<H", size)[0], "the gzip header's extra field")
        if flags & FNAME:
            header += self._take_text("file name")
        if flags & FCOMMENT:
            header += self._take_text("comment")
        if flags & FHCRC:
            want = struct.unpack("<H", self._take(2, "the gzip header's CRC"))[0]
            if zlib.crc32(header) & 0xFFFF != want:
                raise PrepError("%s: its CRC-16 does not match; %s" % (where, REDO))
        self.inflate = PointInflater(span=self.span) if self.span else zlib.decompressobj(-15)
        self.crc = self.isize = 0

    def _trailer(self) -> None:
        crc, isize = struct.unpack("<II", self._take(8, "a gzip trailer (CRC-32 and size)"))
        if crc != self.crc:
            raise PrepError("%s: CRC-32 mismatch at the end of gzip member %d (the data gives %08x, "
                            "the file says %08x): %s"
                            % (self.label, self.members + 1, self.crc, crc, REDO))
        if isize != self.isize & 0xFFFFFFFF:
            raise PrepError("%s: gzip member %d decompressed to %s bytes, its trailer says %s "
                            "(modulo 4 GiB): %s"
                            % (self.label, self.members + 1, thousands(self.isize), thousands(isize),
                               REDO))
        self.members += 1
        self.inflate = None

    def _end_or_next(self) -> bool:
        """After a member's trailer: True at the end of the stream, False when another member
        follows (its header read)."""
        if not self.buf and not self._fill():
            return True
        self._header()
        return False

    # -- the decompressed side ------------------------------------------------------------------
    def _some(self, n: int) -> bytes:
        """Up to n decompressed bytes (at least one unless at the end)."""
        while not self.done:
            if self.inflate is None:
                if not self.started:
                    self.started = True
                    self._header()
                elif self._end_or_next():
                    self.done = True
                continue
            d = self.inflate
            if d.unconsumed_tail:
                data = d.unconsumed_tail
            else:
                if not self.buf and not self._fill():
                    raise self._truncated("the deflate data of gzip member %d" % (self.members + 1))
                data, self.buf = self.buf, b""
            try:
                out = d.decompress(data, n)
            except zlib.error as e:
                raise PrepError("%s: the compressed data is corrupt near byte %s (%s); %s"
                                % (self.label, thousands(self.raw_pos), e, REDO)) from None
            if self.span:
                self._keep_points(d.found, out)
            # (at the end, unconsumed_tail may still hold what unused_data holds: not counted twice)
            self.raw_pos += len(data) - len(d.unused_data if d.eof else d.unconsumed_tail)
            if out:
                self.crc = zlib.crc32(out, self.crc)
                self.isize += len(out)
                self.pos += len(out)
            if d.eof:
                self.buf = d.unused_data + self.buf
                self._trailer()
            if out:
                return out
        return b""

    def _keep_points(self, found: list, out: bytes) -> None:
        """The block boundaries the last decompress() call passed, as resume points."""
        for produced, consumed, bits, byte, window in found:
            self.points.append(Point(self.raw_pos + consumed, bits, byte, window, self.pos + produced,
                                     self.members, zlib.crc32(out[:produced], self.crc),
                                     self.isize + produced))

    def read(self, n: int = -1) -> bytes:
        """Exactly n decompressed bytes (n < 0: all of them), fewer only at the end."""
        if n < 0:
            parts = []
            while True:
                part = self._some(1 << 20)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        parts, have = [], 0
        while have < n:
            part = self._some(n - have)
            if not part:
                break
            parts.append(part)
            have += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)
