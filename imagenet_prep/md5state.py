"""Resumable whole-file MD5: hash a 138 GiB stream across many kills, with the state saved as text.

Python's ``hashlib`` cannot save its state. At an offset that is a multiple of 64 bytes (one MD5
block) the whole MD5 state is four 32-bit words plus the length, so this module drives OpenSSL's
libcrypto through ``ctypes``: ``MD5_Init/MD5_Update/MD5_Final`` on the plain ``MD5_CTX`` struct,
which OpenSSL 3.0 (Debian 12, package libssl3) still exports, deprecated but present::

    typedef struct MD5state_st {        /* <openssl/md5.h>, MD5_LONG is "unsigned int" */
        MD5_LONG A, B, C, D;            /* the chaining words                           */
        MD5_LONG Nl, Nh;                /* length in bits, low and high 32 bits         */
        MD5_LONG data[16];              /* a partial block ...                          */
        unsigned int num;               /* ... of num bytes; 0 at a 64-byte boundary    */
    } MD5_CTX;                          /* 92 bytes                                     */

Use::

    h = ResumableMD5()
    h.update(chunk)                     # bytes, bytearray, memoryview, mmap: no copy
    text = h.state()                    # "md5v1:<offset>:<A>:<B>:<C>:<D>", offset % 64 == 0
    ...                                 # process killed; later, in another process:
    h = ResumableMD5.from_state(text)
    h.update(rest)
    h.hexdigest()                       # the MD5 of the whole stream

Throughput equals ``hashlib.md5`` (the same OpenSSL code). ``ctypes.CDLL`` functions release the
GIL for the length of the foreign call, so hashing runs beside other Python threads. Each
instance holds a lock, so one instance may be shared between threads; after ``fork()`` the child
has its own copy. Where no usable libcrypto is found, :func:`available` is False,
:func:`unavailable_reason` says why, and constructing raises :class:`MD5Unavailable`, which tells
the user to install libssl3 or skip the check with ``--no-verify``. There is deliberately no
pure-Python MD5 to fall back on: at ~1.4 MB/s it would take a day for the train archive.

The library is looked up on first use, never at import time: ``$IMAGENET_PREP_LIBCRYPTO`` (a
file name or path; only that one is tried), else ``ctypes.util.find_library("crypto")``, else the
sonames ``libcrypto.so.3`` and ``libcrypto.so.1.1``. A self-test then checks the struct layout
(the state words, the bit count, a save/restore round trip and a known digest) before any use.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import threading
import weakref

ENV_LIBRARY = "IMAGENET_PREP_LIBCRYPTO"    # name or path of the libcrypto to use instead
SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1")
SYMBOLS = ("MD5_Init", "MD5_Update", "MD5_Final")
STATE_VERSION = "md5v1"
BLOCK = 64                                 # MD5 block; a state can be saved at multiples of it
MAX_OFFSET = (1 << 61) - BLOCK             # the bit count (offset * 8) must fit in 64 bits
MAX_STATE_CHARS = 128                      # a valid state is at most 61 characters
DIGEST_SIZE = 16
IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)   # the MD5 words before any byte
CTX_BYTES = 256                            # the 92-byte MD5_CTX plus slack (see _Md5Ctx)
SELF_TEST_DATA = bytes(range(256))
SELF_TEST_MD5 = "e2c865db4162bed963bfaa9ef6ac18f0"      # md5(bytes(range(256)))
DEBIAN_PACKAGE = "libssl3"
COPY_PIECE = 1 << 20                       # a read-only buffer is copied in pieces without numpy

Words = tuple[int, int, int, int]

_RE_OFFSET = re.compile(r"(?:0|[1-9][0-9]{0,18})")     # canonical decimal, no sign, no padding
_RE_WORD = re.compile(r"[0-9a-f]{8}")                   # exactly 8 lowercase hex digits


class MD5Unavailable(RuntimeError):
    """No libcrypto with a usable MD5_Init/MD5_Update/MD5_Final: the MD5 cannot be resumed."""


class _Md5Ctx(ctypes.Structure):
    """OpenSSL's ``MD5_CTX``, followed by slack so that a library whose struct were larger than
    the 92 bytes of the header writes into memory we own; the self-test then refuses it."""

    _fields_ = [
        ("A", ctypes.c_uint),
        ("B", ctypes.c_uint),
        ("C", ctypes.c_uint),
        ("D", ctypes.c_uint),
        ("Nl", ctypes.c_uint),
        ("Nh", ctypes.c_uint),
        ("data", ctypes.c_uint * 16),
        ("num", ctypes.c_uint),
        ("_slack", ctypes.c_ubyte * (CTX_BYTES - 23 * 4)),
    ]


# ----------------------------------------------------------------------------- the library

_LOAD_LOCK = threading.Lock()
_LOADED: tuple[ctypes.CDLL | None, str] | None = None    # (library, reason it is missing)
_INSTANCES: weakref.WeakSet[ResumableMD5] = weakref.WeakSet()


def available() -> bool:
    """True when a libcrypto with a working resumable MD5 was found (loads it on first call)."""
    return _library()[0] is not None


def unavailable_reason() -> str:
    """Why the resumable MD5 is unavailable, or "" when it is available."""
    return _library()[1]


def _library() -> tuple[ctypes.CDLL | None, str]:
    """The loaded library and "", or None and the reason; looked up once per process."""
    global _LOADED
    if _LOADED is not None:            # after the first call: no lock (none to inherit in fork)
        return _LOADED
    with _LOAD_LOCK:
        if _LOADED is None:
            _LOADED = _find_library()
            if _LOADED[0] is not None and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
        return _LOADED


def _candidates() -> list[str]:
    """Library names to try, in order; only the override when $IMAGENET_PREP_LIBCRYPTO is set."""
    override = os.environ.get(ENV_LIBRARY, "")
    if override:
        return [override]
    found = ctypes.util.find_library("crypto")
    # macOS's unversioned /usr/lib/libcrypto.dylib aborts the process when loaded: never try it.
    if found and not (sys.platform == "darwin" and os.path.basename(found) == "libcrypto.dylib"):
        return [found] + [name for name in SONAMES if name != found]
    return list(SONAMES)


def _find_library() -> tuple[ctypes.CDLL | None, str]:
    """Try each candidate; the first that loads and passes the self-test wins."""
    if ctypes.sizeof(ctypes.c_uint) != 4:
        return None, f"unsigned int is {ctypes.sizeof(ctypes.c_uint)} bytes here, MD5_CTX needs 4"
    reasons = []
    for name in _candidates():
        lib, reason = _load(name)
        if lib is not None:
            return lib, ""
        reasons.append(reason)
    return None, "; ".join(reasons)


def _load(name: str) -> tuple[ctypes.CDLL | None, str]:
    """Load one library, declare the MD5 functions and self-test them."""
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        return None, f"cannot load {name} ({e})"
    missing = [sym for sym in SYMBOLS if not hasattr(lib, sym)]
    if missing:
        return None, f"{name} does not export {', '.join(missing)}"
    _declare(lib)
    problem = _self_test(lib)
    if problem:
        return None, f"{name} failed the MD5 self-test: {problem}"
    return lib, ""


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types, so ctypes neither truncates pointers nor sizes."""
    ctx = ctypes.POINTER(_Md5Ctx)
    lib.MD5_Init.argtypes = [ctx]
    lib.MD5_Update.argtypes = [ctx, ctypes.c_void_p, ctypes.c_size_t]
    lib.MD5_Final.argtypes = [ctypes.c_void_p, ctx]
    for sym in SYMBOLS:
        getattr(lib, sym).restype = ctypes.c_int


def _self_test(lib: ctypes.CDLL) -> str:
    """Check the struct layout on real data; "" when it holds, else what went wrong."""
    ctx = _Md5Ctx()
    lib.MD5_Init(ctypes.byref(ctx))
    if _words(ctx) != IV or ctx.Nl or ctx.Nh or ctx.num:
        return "MD5_Init left an unexpected MD5_CTX (layout differs from the 92-byte struct)"
    half = len(SELF_TEST_DATA) // 2
    lib.MD5_Update(ctypes.byref(ctx), SELF_TEST_DATA, half)
    if (ctx.Nl, ctx.Nh, ctx.num) != (half * 8, 0, 0):
        return "the bit count or block fill is not where MD5_CTX puts it"
    resumed = _Md5Ctx()
    lib.MD5_Init(ctypes.byref(resumed))
    _restore(resumed, half, _words(ctx))
    lib.MD5_Update(ctypes.byref(resumed), SELF_TEST_DATA[half:], len(SELF_TEST_DATA) - half)
    if _final(lib, resumed).hex() != SELF_TEST_MD5:
        return "a restored state does not give the right digest"
    return ""


def _require() -> ctypes.CDLL:
    """The library, or MD5Unavailable with what is missing and what to do."""
    lib, reason = _library()
    if lib is None:
        raise MD5Unavailable(
            "cannot verify the MD5 across resumes: this needs OpenSSL's libcrypto with "
            f"MD5_Init/MD5_Update/MD5_Final (Debian/Ubuntu package {DEBIAN_PACKAGE}; or point "
            f"${ENV_LIBRARY} at one), but {reason}. Install it, or rerun with --no-verify to "
            "skip the MD5 check (the size is still checked).")
    return lib


def _after_fork_in_child() -> None:
    """A lock held by another thread at fork() stays held forever in the child: give each
    instance a fresh lock, and mark those caught mid-update as unusable (their ctx may be torn)."""
    for obj in list(_INSTANCES):
        obj._torn = obj._torn or obj._lock.locked()
        obj._lock = threading.Lock()


# ----------------------------------------------------------------------------- the context

def _words(ctx: _Md5Ctx) -> Words:
    """The four chaining words A, B, C, D."""
    return (ctx.A, ctx.B, ctx.C, ctx.D)


def _restore(ctx: _Md5Ctx, offset: int, words: Words) -> None:
    """Set ctx to the state after ``offset`` bytes (a multiple of 64) with chaining ``words``."""
    bits = offset * 8
    ctx.A, ctx.B, ctx.C, ctx.D = words
    ctx.Nl, ctx.Nh = bits & 0xFFFFFFFF, bits >> 32
    ctypes.memset(ctypes.addressof(ctx.data), 0, ctypes.sizeof(ctx.data))
    ctx.num = 0


def _final(lib: ctypes.CDLL, ctx: _Md5Ctx) -> bytes:
    """Finalize ``ctx`` (which this consumes) and return the 16-byte digest."""
    out = ctypes.create_string_buffer(DIGEST_SIZE)
    _check(lib.MD5_Final(out, ctypes.byref(ctx)), "MD5_Final")
    return out.raw


def _check(result: int, what: str) -> None:
    """OpenSSL returns 1 on success."""
    if result != 1:
        raise RuntimeError(f"{what} failed (returned {result})")


def _feed(lib: ctypes.CDLL, ctx: _Md5Ctx, data: bytes | bytearray | memoryview) -> int:
    """MD5_Update with the bytes of ``data``, passed by address (no copy); returns their count."""
    if isinstance(data, bytes):
        n = len(data)
        if n:
            _check(lib.MD5_Update(ctypes.byref(ctx), data, n), "MD5_Update")
        return n
    if isinstance(data, str):
        raise TypeError("Strings must be encoded before hashing")
    with memoryview(data) as view:
        if not view.c_contiguous:
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
        with view.cast("B") as flat:
            n = flat.nbytes
            if n:
                _feed_view(lib, ctx, flat)
    return n


def _feed_view(lib: ctypes.CDLL, ctx: _Md5Ctx, flat: memoryview) -> None:
    """MD5_Update over the bytes of ``flat`` by address; only a read-only buffer without numpy
    to take its address is copied, in pieces of COPY_PIECE bytes."""
    address = _address(flat)
    if address is not None:
        _check(lib.MD5_Update(ctypes.byref(ctx), address, flat.nbytes), "MD5_Update")
        return
    for start in range(0, flat.nbytes, COPY_PIECE):
        piece = flat[start:start + COPY_PIECE].tobytes()
        _check(lib.MD5_Update(ctypes.byref(ctx), piece, len(piece)), "MD5_Update")


def _address(flat: memoryview) -> object | None:
    """Something ctypes passes as ``const void *`` to the first byte of ``flat``, without a copy,
    which keeps the buffer exported (so it cannot be resized or freed) while it lives; None for
    a read-only buffer (a slice, an mmap) when numpy, which can take its address, is missing."""
    if not flat.readonly:
        return (ctypes.c_char * flat.nbytes).from_buffer(flat)
    if isinstance(flat.obj, bytes) and len(flat.obj) == flat.nbytes:
        return flat.obj
    try:
        import numpy
    except ImportError:
        return None
    return numpy.frombuffer(flat, dtype=numpy.uint8).ctypes.data_as(ctypes.c_void_p)


# ----------------------------------------------------------------------------- the state text

def _parse_state(text: str) -> tuple[int, Words]:
    """Offset and words from ``md5v1:<offset>:<A>:<B>:<C>:<D>``; ValueError for anything else."""
    if not isinstance(text, str):
        raise TypeError(f"an MD5 state is a str, not {type(text).__name__}")
    if len(text) > MAX_STATE_CHARS:
        raise ValueError(f"not an MD5 state: {len(text)} characters long "
                         f"(at most {MAX_STATE_CHARS})")
    fields = text.split(":")
    if fields[0] != STATE_VERSION:
        raise ValueError(f"not an MD5 state of version {STATE_VERSION}: {text!r}")
    if len(fields) != 6:
        raise ValueError(f"MD5 state {text!r} has {len(fields)} fields, expected 6: "
                         f"{STATE_VERSION}:<offset>:<A>:<B>:<C>:<D>")
    return _parse_offset(fields[1], text), _parse_words(fields[2:], text)


def _parse_offset(field: str, text: str) -> int:
    """The byte offset: canonical decimal, a multiple of 64, within MD5's 2**64-bit length."""
    if not _RE_OFFSET.fullmatch(field):
        raise ValueError(f"MD5 state {text!r}: the offset must be a decimal number of bytes "
                         f"without sign or leading zeros, not {field!r}")
    offset = int(field)
    if offset > MAX_OFFSET:
        raise ValueError(f"MD5 state {text!r}: offset {offset} is beyond the largest MD5 "
                         f"length ({MAX_OFFSET})")
    if offset % BLOCK:
        raise ValueError(f"MD5 state {text!r}: offset {offset} is not a multiple of "
                         f"{BLOCK} bytes")
    return offset


def _parse_words(fields: list[str], text: str) -> Words:
    """The four chaining words; each exactly 8 lowercase hex digits."""
    for name, field in zip("ABCD", fields):
        if not _RE_WORD.fullmatch(field):
            raise ValueError(f"MD5 state {text!r}: word {name} must be 8 lowercase hex "
                             f"digits, not {field!r}")
    a, b, c, d = (int(field, 16) for field in fields)
    return a, b, c, d


def _format_state(offset: int, words: Words) -> str:
    """The canonical text of a state: one text per state, so texts can be compared."""
    a, b, c, d = words
    return f"{STATE_VERSION}:{offset}:{a:08x}:{b:08x}:{c:08x}:{d:08x}"


# ----------------------------------------------------------------------------- the class

class ResumableMD5:
    """An MD5 like ``hashlib.md5`` whose state can be saved as text and restored elsewhere.

    ``update`` runs without the GIL and without copying the data; ``digest``/``hexdigest``
    finalize a copy, so hashing can go on. Raises :class:`MD5Unavailable` when no usable
    libcrypto is found (see :func:`unavailable_reason`).
    """

    name = "md5"
    digest_size = DIGEST_SIZE
    block_size = BLOCK

    def __init__(self, data: bytes | bytearray | memoryview | None = None) -> None:
        self._lib = _require()
        self._ctx = _Md5Ctx()
        _check(self._lib.MD5_Init(ctypes.byref(self._ctx)), "MD5_Init")
        self._offset = 0
        self._lock = threading.Lock()
        self._torn = False
        _INSTANCES.add(self)
        if data is not None:
            self.update(data)

    @classmethod
    def from_state(cls, text: str) -> ResumableMD5:
        """An instance that continues from a text made by :meth:`state`.

        Every field is checked (version, decimal offset, alignment, range, 8-hex-digit words):
        ValueError names what is wrong. The text is validated before the library is needed.
        """
        offset, words = _parse_state(text)
        if offset == 0 and words != IV:
            raise ValueError(f"MD5 state {text!r}: at offset 0 the words must be the MD5 "
                             f"initial values, as in {_format_state(0, IV)}")
        obj = cls()
        _restore(obj._ctx, offset, words)
        obj._offset = offset
        return obj

    @property
    def offset(self) -> int:
        """The number of bytes hashed so far."""
        return self._offset

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash more bytes: bytes, bytearray, memoryview, mmap or any C-contiguous buffer."""
        with self._lock:
            self._check_usable()
            self._offset += _feed(self._lib, self._ctx, data)

    def state(self) -> str:
        """The state as ``md5v1:<offset>:<A>:<B>:<C>:<D>`` (offset in decimal bytes, words as
        8 hex digits). Only at an offset that is a multiple of 64 bytes: ValueError otherwise."""
        with self._lock:
            self._check_usable()
            offset, words, num = self._offset, _words(self._ctx), self._ctx.num
        if offset % BLOCK:
            raise ValueError(f"the MD5 state can be saved only at a multiple of {BLOCK} "
                             f"bytes; offset {offset} is {offset % BLOCK} bytes past one")
        if num:
            raise RuntimeError(f"MD5_CTX holds {num} bytes at aligned offset {offset}")
        return _format_state(offset, words)

    def digest(self) -> bytes:
        """The 16-byte MD5 of the bytes so far; the instance can go on hashing."""
        with self._lock:
            self._check_usable()
            ctx = _Md5Ctx.from_buffer_copy(self._ctx)
        return _final(self._lib, ctx)

    def hexdigest(self) -> str:
        """The MD5 of the bytes so far, as 32 lowercase hex digits; non-destructive."""
        return self.digest().hex()

    def copy(self) -> ResumableMD5:
        """An independent instance in the same state."""
        with self._lock:
            self._check_usable()
            ctx, offset = _Md5Ctx.from_buffer_copy(self._ctx), self._offset
        obj = type(self)()
        obj._ctx, obj._offset = ctx, offset
        return obj

    def __repr__(self) -> str:
        """Show the offset, never the state (a repr may end up in a log)."""
        return f"<ResumableMD5 offset={self._offset}>"

    def _check_usable(self) -> None:
        """Refuse a copy inherited through fork() while another thread was updating it."""
        if self._torn:
            raise RuntimeError("this MD5 was being updated by another thread when the process "
                               "forked; its copy in the child is unusable: restore it from a "
                               "saved state instead")
