"""Resuming inside a gzip stream: zlib's state at a deflate block boundary, as zlib's zran example keeps it.

Python's zlib module cannot stop at the end of a deflate block nor start in the middle of a
stream, so this module drives libz itself through ctypes: inflate() with Z_BLOCK stops at a block
boundary, where the whole state of the decompressor is (zlib.h, "inflatePrime", "inflateSet
Dictionary", and zlib's examples/zran.c):

    offset   compressed bytes used up to there (the last one perhaps only in part),
    bits     how many bits of that last byte are not used yet (0 to 7), and the byte itself,
    window   the last 32 KiB of output (what later back-references may copy from).

A Point adds what the gzip layer above needs at the same place: the decompressed position, the
gzip member's number and the CRC-32 and length of its output so far. PointInflater has the
interface of zlib's decompressor object (decompress(data, max_length), unconsumed_tail,
unused_data, eof), so gunzip.GunzipReader uses it as it uses zlib's, and can also take Points
as it goes and start from one (inflatePrime for the bits, inflateSetDictionary for the window).

libz is looked up on first use, never at import time (ctypes.util.find_library("z"), else
libz.so.1); a self-test (a stream inflated whole, then again from a Point in its middle) must pass
before any use. Where it does not, available() is False and unavailable_reason() says why:
resuming then falls back to reading a file from its start.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import os
import threading
import zlib
from dataclasses import dataclass
from typing import Optional

Z_NO_FLUSH, Z_BLOCK = 0, 5
Z_OK, Z_STREAM_END, Z_NEED_DICT, Z_BUF_ERROR = 0, 1, 2, -5
WINDOW = 32768
POINT_VERSION = "gzpoint1"


class _ZStream(ctypes.Structure):
    """zlib's z_stream (zlib.h); ctypes lays it out as the C compiler does."""
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint), ("total_in", ctypes.c_ulong),
                ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
                ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p), ("zalloc", ctypes.c_void_p),
                ("zfree", ctypes.c_void_p), ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int),
                ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong)]


@dataclass(frozen=True)
class Point:
    """Where a gzip stream can be entered again (see the module's docstring)."""
    offset: int          # compressed bytes before it (the partly used byte included)
    bits: int            # unused bits of that last byte (0-7)
    byte: int            # that byte's value (0 when bits is 0)
    window: bytes        # the last <= 32 KiB of output
    pos: int             # decompressed bytes before it
    member: int          # gzip members finished before it
    crc: int             # CRC-32 of its gzip member's output so far
    size: int            # that output's length

    def to_json(self) -> dict:
        return {"version": POINT_VERSION, "offset": self.offset, "bits": self.bits, "byte": self.byte,
                "window": base64.b64encode(self.window).decode(), "pos": self.pos,
                "member": self.member, "crc": self.crc, "size": self.size}

    @classmethod
    def from_json(cls, doc) -> "Point":
        """A Point from to_json()'s form, every field checked (a checkpoint is input too);
        ValueError when it is not one."""
        if not isinstance(doc, dict) or doc.get("version") != POINT_VERSION:
            raise ValueError("not a gzip resume point")
        ints = {k: doc.get(k) for k in ("offset", "bits", "byte", "pos", "member", "crc", "size")}
        if any(type(v) is not int or v < 0 for v in ints.values()):
            raise ValueError("a field of the gzip resume point is not a whole number")
        if ints["bits"] > 7 or ints["byte"] > 255 or ints["crc"] > 0xFFFFFFFF or ints["offset"] < 1 \
                or ints["size"] > ints["pos"]:
            raise ValueError("the gzip resume point's numbers are out of range")
        try:
            window = base64.b64decode(doc.get("window") or "", validate=True)
        except (ValueError, TypeError):
            raise ValueError("the gzip resume point's window is not base64") from None
        if len(window) > WINDOW or len(window) > ints["pos"]:
            raise ValueError("the gzip resume point's window is too long")
        return cls(window=window, **ints)


# ----------------------------------------------------------------------------- the library

_LIB: Optional[tuple[Optional[ctypes.CDLL], str]] = None
_LOCK = threading.Lock()


def _load() -> tuple[Optional[ctypes.CDLL], str]:
    names = [n for n in (ctypes.util.find_library("z"), "libz.so.1") if n]
    why = "no libz found (tried %s)" % ", ".join(names)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            for fn in ("inflateInit2_", "inflate", "inflateEnd", "inflatePrime", "inflateSetDictionary",
                       "inflateGetDictionary", "zlibVersion"):
                getattr(lib, fn)
        except (OSError, AttributeError) as e:
            why = "%s: %s" % (name, e)
            continue
        lib.zlibVersion.restype = ctypes.c_char_p
        p = ctypes.POINTER(_ZStream)
        lib.inflateInit2_.argtypes = [p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.inflate.argtypes = [p, ctypes.c_int]
        lib.inflateEnd.argtypes = [p]
        lib.inflatePrime.argtypes = [p, ctypes.c_int, ctypes.c_int]
        lib.inflateSetDictionary.argtypes = [p, ctypes.c_char_p, ctypes.c_uint]
        lib.inflateGetDictionary.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint)]
        try:
            _self_test(lib)
        except (AssertionError, OSError, ValueError, zlib.error) as e:
            why = "%s failed its self-test (%s)" % (name, e)
            continue
        return lib, ""
    return None, why


def _library() -> Optional[ctypes.CDLL]:
    global _LIB
    with _LOCK:
        if _LIB is None:
            _LIB = _load()
    return _LIB[0]


def available() -> bool:
    return _library() is not None


def unavailable_reason() -> str:
    _library()
    return _LIB[1] if _LIB else ""


def _self_test(lib: ctypes.CDLL) -> None:
    data = b"".join(b"%d ImageNet %s\n" % (i, os.urandom(i % 7)) for i in range(40000))
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = c.compress(data) + c.flush()
    whole = PointInflater(lib=lib, span=len(data) // 5)
    out = whole.decompress(raw, len(data) + 1)
    assert whole.eof and out == data and whole.found, "a whole stream"
    at, consumed, bits, byte, window = whole.found[len(whole.found) // 2]
    assert 0 < at < len(data) and window == data[max(0, at - WINDOW):at], "the window"
    again = PointInflater(lib=lib, point=Point(consumed, bits, byte, window, at, 0, 0, at))
    assert again.decompress(raw[consumed:], len(data)) == data[at:] and again.eof, "from a point"


# ----------------------------------------------------------------------------- inflating

class PointInflater:
    """A raw inflate with the interface of zlib.decompressobj(-15). With `span`, after every
    `span` bytes of output it stops at the next deflate block boundary and records it in `found`
    (the points of the last decompress() call) as (bytes of output of that call before it, bytes
    of that call's input used, bits, byte, window). With `point`, it starts there (it is given
    the compressed bytes from point.offset on)."""

    def __init__(self, point: Optional[Point] = None, span: int = 0,
                 lib: Optional[ctypes.CDLL] = None) -> None:
        self.lib = lib or _library()
        if self.lib is None:
            raise OSError("gzip resume points are not available: %s" % unavailable_reason())
        self.z = _ZStream()
        version = self.lib.zlibVersion()
        if self.lib.inflateInit2_(ctypes.byref(self.z), -15, version, ctypes.sizeof(_ZStream)) != Z_OK:
            raise MemoryError("inflateInit2 failed")
        self.unconsumed_tail = self.unused_data = b""
        self.eof = False
        self.span, self.since = span, 0         # a point after each `span` bytes of output
        self.found: list[tuple[int, int, int, int, bytes]] = []
        if point is not None:
            if point.bits and self.lib.inflatePrime(ctypes.byref(self.z), point.bits,
                                                   point.byte >> (8 - point.bits)) != Z_OK:
                raise ValueError("inflatePrime refused the point")
            if point.window and self.lib.inflateSetDictionary(ctypes.byref(self.z), point.window,
                                                             len(point.window)) != Z_OK:
                raise ValueError("inflateSetDictionary refused the point")

    def __del__(self) -> None:
        lib = getattr(self, "lib", None)
        if lib is not None and getattr(self, "z", None) is not None:
            lib.inflateEnd(ctypes.byref(self.z))
            self.z = None

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self.eof:
            raise zlib.error("decompress after the end of the stream")
        z = self.z
        inp = ctypes.create_string_buffer(data, len(data))
        out = ctypes.create_string_buffer(max_length)
        z.next_in, z.avail_in = ctypes.addressof(inp), len(data)
        z.next_out, z.avail_out = ctypes.addressof(out), max_length
        self.found = []
        start_in = z.total_in
        state = None
        while z.avail_out:
            before = (z.avail_in, z.avail_out, z.data_type)
            ret = self.lib.inflate(ctypes.byref(z), Z_BLOCK if self.span else Z_NO_FLUSH)
            produced = max_length - z.avail_out
            self.since += before[1] - z.avail_out
            if ret == Z_STREAM_END:
                self.eof = True
                break
            if ret == Z_BUF_ERROR:
                break                                   # no progress possible: more input needed
            if ret != Z_OK:
                raise zlib.error("Error %d while decompressing data: %s" % (
                    ret, (z.msg or b"").decode("ascii", "replace") or "incorrect data"))
            if self.span and self.since >= self.span and z.data_type & 128 and not z.data_type & 64:
                self._point(inp, produced, z.total_in - start_in)
            now = (z.avail_in, z.avail_out, z.data_type)
            if now == before and now == state:
                break                                   # (zlib promises progress with Z_OK)
            state = now
        rest = data[len(data) - z.avail_in:]
        self.unused_data, self.unconsumed_tail = (rest, b"") if self.eof else (b"", rest)
        return ctypes.string_at(out, max_length - z.avail_out)

    def _point(self, inp, produced: int, consumed: int) -> None:
        """A block boundary after `consumed` bytes of this call's input: record it."""
        size = ctypes.c_uint(WINDOW)
        window = ctypes.create_string_buffer(WINDOW)
        if self.lib.inflateGetDictionary(ctypes.byref(self.z), window, ctypes.byref(size)) != Z_OK:
            return
        bits = self.z.data_type & 7
        if bits and not consumed:
            return                                      # the partial byte came in an earlier call
        byte = ctypes.string_at(ctypes.addressof(inp) + consumed - 1, 1)[0] if bits else 0
        self.found.append((produced, consumed, bits, byte, window.raw[:size.value]))
        self.since = 0
