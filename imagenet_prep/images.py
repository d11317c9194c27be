"""What an image file is, from its headers: JPEG (how many colour components) or PNG, and its size.

One walk over the headers (_walk) asks for the few bytes it needs, in increasing order of
offset: a PNG's IHDR, or each JPEG segment's marker and length up to the frame header (SOF),
jumping over what lies between (an ICC profile of megabytes, a thumbnail). Two ways to answer it:
- image_info(data) / image_kind(data): `data` is the whole file, or any object that slices like
  one (04 passes a view that reads the pages asked for);
- HeadScan: the file's bytes arrive in order (a member being copied out of an archive); it keeps
  no more than the bytes of one segment header, however far the frame header is.
Nothing is decoded: the width and height are the frame header's, as Pillow reports them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Optional

PNG_SIG = b"\x89PNG\r\n\x1a\n"
SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}    # start-of-frame markers
NOT_JPEG = "not a JPEG"


@dataclass(frozen=True)
class ImageInfo:
    kind: Optional[str]              # None: a plain JPEG (1 or 3 components); 'PNG', 'CMYK JPEG',
    #                                  'not a JPEG'
    width: Optional[int] = None      # None: no frame header (or IHDR) where it should be
    height: Optional[int] = None


PLAIN = ImageInfo(None)
Walk = Generator[tuple[int, int], bytes, ImageInfo]


def _walk() -> Walk:
    """Yields (offset, length) of the bytes it needs next, offsets never decreasing, and is sent
    them (fewer at the file's end); returns what the file is. Every step moves forward."""
    head = yield 0, 24
    if head[:8] == PNG_SIG:
        if len(head) >= 24 and head[12:16] == b"IHDR":
            return ImageInfo("PNG", int.from_bytes(head[16:20], "big"),
                             int.from_bytes(head[20:24], "big"))
        return ImageInfo("PNG")
    if head[:2] != b"\xff\xd8":
        return ImageInfo(NOT_JPEG)
    i = 2
    while True:
        seg = yield i, 10
        if len(seg) < 4 or seg[0] != 0xFF:
            return PLAIN                     # the end, or lost sync: leave it to the decoder
        marker = seg[1]
        if marker == 0xFF:                   # fill byte
            i += 1
        elif marker in SOF:
            if len(seg) < 10:
                return PLAIN
            return ImageInfo("CMYK JPEG" if seg[9] == 4 else None,
                             int.from_bytes(seg[7:9], "big"), int.from_bytes(seg[5:7], "big"))
        elif marker in (0xD9, 0xDA):         # the end, or the scan: no frame header before it
            return PLAIN
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2                           # markers without a length
        else:
            i += 2 + int.from_bytes(seg[2:4], "big")


def image_info(data) -> ImageInfo:
    """What the file whose bytes are `data` is (bytes, or anything sliced like them)."""
    walk = _walk()
    want = next(walk)
    try:
        while True:
            off, n = want
            want = walk.send(bytes(data[off:off + n]))
    except StopIteration as stop:
        return stop.value


def image_kind(data) -> Optional[str]:
    """None for a plain JPEG (1 or 3 components); else 'PNG', 'CMYK JPEG' or 'not a JPEG'."""
    return image_info(data).kind


class HeadScan:
    """image_info of a file whose bytes are fed in order, in pieces of any size: feed() them as
    they pass, then end(). Only the bytes of the header being waited for are kept."""

    def __init__(self) -> None:
        self._walk = _walk()
        self._want = next(self._walk)
        self._end = 0                    # bytes fed so far
        self._tail, self._tail_at = b"", 0   # the wanted bytes already fed, and their offset
        self.info: Optional[ImageInfo] = None

    def _answer(self, piece: bytes) -> None:
        try:
            self._want = self._walk.send(piece)
        except StopIteration as stop:
            self.info = stop.value

    def feed(self, data: bytes) -> None:
        if self.info is not None or not data:
            return
        if self._tail:                   # a header cut between two pieces (rare)
            buf, at = self._tail + bytes(data), self._tail_at
        else:
            buf, at = data, self._end
        self._end += len(data)
        while self.info is None:
            off, n = self._want
            if off + n > self._end:      # not all here yet: keep what is
                keep = min(max(off - at, 0), len(buf))
                self._tail, self._tail_at = bytes(buf[keep:]), at + keep
                return
            self._answer(bytes(buf[off - at:off - at + n]))
        self._tail = b""

    def end(self) -> ImageInfo:
        """What the file is, once all its bytes were fed."""
        while self.info is None:
            off, n = self._want
            start = off - self._tail_at
            self._answer(self._tail[start:start + n] if start >= 0 else b"")
        self._tail = b""
        return self.info
