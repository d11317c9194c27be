"""Resumable whole-file MD5 and SHA-256: hash a 138 GiB stream across many kills, the state saved as text.

Python's ``hashlib`` cannot save its state. At an offset that is a multiple of 64 bytes (one block
of either hash) the whole state is the chaining words plus the length, so this module drives
OpenSSL's libcrypto through ``ctypes``: ``MD5_Init/MD5_Update/MD5_Final`` on the plain ``MD5_CTX``
and ``SHA256_Init/SHA256_Update/SHA256_Final`` on the plain ``SHA256_CTX``, which OpenSSL 3.0
(Debian 12, package libssl3) still exports, deprecated but present::

    typedef struct MD5state_st {        /* <openssl/md5.h>; MD5_LONG is "unsigned int"   */
        MD5_LONG A, B, C, D;            /* the chaining words                            */
        MD5_LONG Nl, Nh;                /* length in bits, low and high 32 bits          */
        MD5_LONG data[16];              /* a partial block ...                           */
        unsigned int num;               /* ... of num bytes; 0 at a 64-byte boundary     */
    } MD5_CTX;                          /* 92 bytes                                      */

    typedef struct SHA256state_st {     /* <openssl/sha.h>; SHA_LONG is "unsigned int"   */
        SHA_LONG h[8];                  /* the chaining words                            */
        SHA_LONG Nl, Nh;                /* length in bits                                */
        SHA_LONG data[16];              /* a partial block ...                           */
        unsigned int num, md_len;       /* ... of num bytes; md_len 32 (28 for SHA-224)  */
    } SHA256_CTX;                       /* 112 bytes                                     */

Use::

    h = ResumableMD5()                  # or ResumableSHA256(), or new("sha256")
    h.update(chunk)                     # bytes, bytearray, memoryview, mmap: no copy
    text = h.state()                    # "md5v1:<offset>:<A>:<B>:<C>:<D>", offset % 64 == 0
    ...                                 # ("sha256v1:<offset>:<h0>:...:<h7>" for SHA-256)
    h = from_state(text)                # process killed; later, in another process
    h.update(rest)
    h.hexdigest()                       # the digest of the whole stream

Throughput equals ``hashlib``'s (the same OpenSSL code). ``ctypes.CDLL`` functions release the
GIL for the length of the foreign call, so hashing runs beside other Python threads. Each
instance holds a lock, so one instance may be shared between threads; after ``fork()`` the child
has its own copy. Where no usable libcrypto is found, :func:`available` is False,
:func:`unavailable_reason` says why, and constructing raises :class:`MD5Unavailable` (or
:class:`SHA256Unavailable`), which tells the user to install libssl3 or skip the check with
``--no-verify``. There is deliberately no pure-Python hash to fall back on: at ~1.4 MB/s an MD5
would take a day for the train archive.

The library is looked up on first use, never at import time: ``$IMAGENET_PREP_LIBCRYPTO`` (a
file name or path; only that one is tried), else ``ctypes.util.find_library("crypto")``, else the
sonames ``libcrypto.so.3`` and ``libcrypto.so.1.1``. A self-test of each hash then checks the
struct layout (the state words, the bit count, a save/restore round trip and a known digest)
before any use.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Optional

ENV_LIBRARY = "IMAGENET_PREP_LIBCRYPTO"    # name or path of the libcrypto to use instead
SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1")
BLOCK = 64                                 # the block of both; a state is saved at multiples of it
MAX_OFFSET = (1 << 61) - BLOCK             # the bit count (offset * 8) must fit in 64 bits
CTX_BYTES = 256                            # the largest context plus slack (see _ctx_type)
SELF_TEST_DATA = bytes(range(256))
DEBIAN_PACKAGE = "libssl3"
COPY_PIECE = 1 << 20                       # a read-only buffer is copied in pieces without numpy

_RE_OFFSET = re.compile(r"(?:0|[1-9][0-9]{0,18})")     # canonical decimal, no sign, no padding
_RE_WORD = re.compile(r"[0-9a-f]{8}")                   # exactly 8 lowercase hex digits

Words = tuple  # of ints, one per chaining word


class HashUnavailable(RuntimeError):
    """No libcrypto with usable functions for this hash: it cannot be resumed."""


class MD5Unavailable(HashUnavailable):
    """No libcrypto with a usable MD5_Init/MD5_Update/MD5_Final: the MD5 cannot be resumed."""


class SHA256Unavailable(HashUnavailable):
    """No libcrypto with a usable SHA256_Init/SHA256_Update/SHA256_Final."""


@dataclass(frozen=True)
class Algorithm:
    """What differs between the two hashes: names, context layout, initial words, self-test."""
    name: str                      # as hashlib names it
    symbol: str                    # prefix of the OpenSSL functions: MD5, SHA256
    version: str                   # first field of a state text
    words: int                     # chaining words
    iv: Words                      # the words before any byte
    digest_size: int
    self_test: str                 # hex digest of SELF_TEST_DATA
    max_state_chars: int           # a valid state text is shorter
    tail_fields: tuple             # context fields after data[16]: ("num",) or ("num", "md_len")
    exception: type

    @property
    def symbols(self) -> tuple[str, str, str]:
        return tuple(self.symbol + part for part in ("_Init", "_Update", "_Final"))


MD5 = Algorithm("md5", "MD5", "md5v1", 4, (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476), 16,
                "e2c865db4162bed963bfaa9ef6ac18f0", 128, ("num",), MD5Unavailable)
SHA256 = Algorithm("sha256", "SHA256", "sha256v1", 8,
                   (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C,
                    0x1F83D9AB, 0x5BE0CD19), 32,
                   "40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880", 192,
                   ("num", "md_len"), SHA256Unavailable)
ALGORITHMS = {a.name: a for a in (MD5, SHA256)}
BY_VERSION = {a.version: a for a in (MD5, SHA256)}

# the names of the MD5-only module this grew from
STATE_VERSION, SYMBOLS, IV, DIGEST_SIZE = MD5.version, MD5.symbols, MD5.iv, MD5.digest_size
MAX_STATE_CHARS, SELF_TEST_MD5 = MD5.max_state_chars, MD5.self_test


def _ctx_type(algo: Algorithm) -> type:
    """The context struct of `algo`, followed by slack so that a library whose struct were larger
    writes into memory we own; the self-test then refuses it."""
    fields = [("h", ctypes.c_uint * algo.words), ("Nl", ctypes.c_uint), ("Nh", ctypes.c_uint),
              ("data", ctypes.c_uint * 16)] + [(f, ctypes.c_uint) for f in algo.tail_fields]
    used = (algo.words + 2 + 16 + len(algo.tail_fields)) * 4
    fields.append(("_slack", ctypes.c_ubyte * (CTX_BYTES - used)))
    return type("_%sCtx" % algo.symbol.capitalize(), (ctypes.Structure,), {"_fields_": fields})


_CTX = {name: _ctx_type(a) for name, a in ALGORITHMS.items()}


# ----------------------------------------------------------------------------- the library

_LOAD_LOCK = threading.Lock()
_LOADED: dict[str, tuple[Optional[ctypes.CDLL], str]] = {}    # name -> (library, why it is missing)
_INSTANCES: weakref.WeakSet = weakref.WeakSet()
_FORK_HOOK: list = []


def available(name: str = "md5") -> bool:
    """True when a libcrypto with a working resumable `name` hash was found (loaded on first call)."""
    return _library(ALGORITHMS[name])[0] is not None


def unavailable_reason(name: str = "md5") -> str:
    """Why the resumable `name` hash is unavailable, or "" when it is available."""
    return _library(ALGORITHMS[name])[1]


def _library(algo: Algorithm) -> tuple[Optional[ctypes.CDLL], str]:
    """The loaded library and "", or None and the reason; looked up once per process and hash."""
    got = _LOADED.get(algo.name)
    if got is not None:                # after the first call: no lock (none to inherit in fork)
        return got
    with _LOAD_LOCK:
        if algo.name not in _LOADED:
            _LOADED[algo.name] = _find_library(algo)
            if _LOADED[algo.name][0] is not None and hasattr(os, "register_at_fork") \
                    and not _FORK_HOOK:
                os.register_at_fork(after_in_child=_after_fork_in_child)
                _FORK_HOOK.append(True)
        return _LOADED[algo.name]


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


def _find_library(algo: Algorithm) -> tuple[Optional[ctypes.CDLL], str]:
    """Try each candidate; the first that loads and passes the self-test wins."""
    if ctypes.sizeof(ctypes.c_uint) != 4:
        return None, f"unsigned int is {ctypes.sizeof(ctypes.c_uint)} bytes here, {algo.symbol}_CTX needs 4"
    reasons = []
    for name in _candidates():
        lib, reason = _load(name, algo)
        if lib is not None:
            return lib, ""
        reasons.append(reason)
    return None, "; ".join(reasons)


def _load(name: str, algo: Algorithm) -> tuple[Optional[ctypes.CDLL], str]:
    """Load one library, declare the hash's functions and self-test them."""
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        return None, f"cannot load {name} ({e})"
    missing = [sym for sym in algo.symbols if not hasattr(lib, sym)]
    if missing:
        return None, f"{name} does not export {', '.join(missing)}"
    _declare(lib, algo)
    problem = _self_test(lib, algo)
    if problem:
        return None, f"{name} failed the {algo.symbol} self-test: {problem}"
    return lib, ""


def _declare(lib: ctypes.CDLL, algo: Algorithm) -> None:
    """Argument and result types, so ctypes neither truncates pointers nor sizes."""
    ctx = ctypes.POINTER(_CTX[algo.name])
    init, update, final = (getattr(lib, sym) for sym in algo.symbols)
    init.argtypes = [ctx]
    update.argtypes = [ctx, ctypes.c_void_p, ctypes.c_size_t]
    final.argtypes = [ctypes.c_void_p, ctx]
    for f in (init, update, final):
        f.restype = ctypes.c_int


def _self_test(lib: ctypes.CDLL, algo: Algorithm) -> str:
    """Check the struct layout on real data; "" when it holds, else what went wrong."""
    init, update, _ = _functions(lib, algo)
    ctx = _CTX[algo.name]()
    init(ctypes.byref(ctx))
    if _words(ctx) != algo.iv or ctx.Nl or ctx.Nh or ctx.num or \
            ("md_len" in algo.tail_fields and ctx.md_len != algo.digest_size):
        return f"{algo.symbol}_Init left an unexpected {algo.symbol}_CTX (the layout differs)"
    half = len(SELF_TEST_DATA) // 2
    update(ctypes.byref(ctx), SELF_TEST_DATA, half)
    if (ctx.Nl, ctx.Nh, ctx.num) != (half * 8, 0, 0):
        return f"the bit count or block fill is not where {algo.symbol}_CTX puts it"
    resumed = _CTX[algo.name]()
    init(ctypes.byref(resumed))
    _restore(resumed, algo, half, _words(ctx))
    update(ctypes.byref(resumed), SELF_TEST_DATA[half:], len(SELF_TEST_DATA) - half)
    if _final(lib, algo, resumed).hex() != algo.self_test:
        return "a restored state does not give the right digest"
    return ""


def _functions(lib: ctypes.CDLL, algo: Algorithm) -> tuple:
    return tuple(getattr(lib, sym) for sym in algo.symbols)


def _require(algo: Algorithm) -> ctypes.CDLL:
    """The library, or MD5Unavailable / SHA256Unavailable with what is missing and what to do."""
    lib, reason = _library(algo)
    if lib is None:
        raise algo.exception(
            f"cannot verify the {algo.symbol.replace('SHA256', 'SHA-256')} across resumes: this "
            f"needs OpenSSL's libcrypto with {'/'.join(algo.symbols)} (Debian/Ubuntu package "
            f"{DEBIAN_PACKAGE}; or point ${ENV_LIBRARY} at one), but {reason}. Install it, or "
            "rerun with --no-verify to skip the check (the size is still checked).")
    return lib


def _after_fork_in_child() -> None:
    """A lock held by another thread at fork() stays held forever in the child: give each
    instance a fresh lock, and mark those caught mid-update as unusable (their ctx may be torn)."""
    for obj in list(_INSTANCES):
        obj._torn = obj._torn or obj._lock.locked()
        obj._lock = threading.Lock()


# ----------------------------------------------------------------------------- the context

def _words(ctx) -> Words:
    """The chaining words."""
    return tuple(ctx.h)


def _restore(ctx, algo: Algorithm, offset: int, words: Words) -> None:
    """Set ctx to the state after ``offset`` bytes (a multiple of 64) with chaining ``words``."""
    bits = offset * 8
    for i, w in enumerate(words):
        ctx.h[i] = w
    ctx.Nl, ctx.Nh = bits & 0xFFFFFFFF, bits >> 32
    ctypes.memset(ctypes.addressof(ctx.data), 0, ctypes.sizeof(ctx.data))
    ctx.num = 0
    if "md_len" in algo.tail_fields:
        ctx.md_len = algo.digest_size


def _final(lib: ctypes.CDLL, algo: Algorithm, ctx) -> bytes:
    """Finalize ``ctx`` (which this consumes) and return the digest."""
    out = ctypes.create_string_buffer(algo.digest_size)
    _check(_functions(lib, algo)[2](out, ctypes.byref(ctx)), algo.symbol + "_Final")
    return out.raw


def _check(result: int, what: str) -> None:
    """OpenSSL returns 1 on success."""
    if result != 1:
        raise RuntimeError(f"{what} failed (returned {result})")


def _feed(update, ctx, data) -> int:
    """The Update function with the bytes of ``data``, passed by address (no copy); their count."""
    if isinstance(data, bytes):
        n = len(data)
        if n:
            _check(update(ctypes.byref(ctx), data, n), "Update")
        return n
    if isinstance(data, str):
        raise TypeError("Strings must be encoded before hashing")
    with memoryview(data) as view:
        if not view.c_contiguous:
            raise BufferError("memoryview: underlying buffer is not C-contiguous")
        with view.cast("B") as flat:
            n = flat.nbytes
            if n:
                _feed_view(update, ctx, flat)
    return n


def _feed_view(update, ctx, flat: memoryview) -> None:
    """Update over the bytes of ``flat`` by address; only a read-only buffer without numpy to
    take its address is copied, in pieces of COPY_PIECE bytes."""
    address = _address(flat)
    if address is not None:
        _check(update(ctypes.byref(ctx), address, flat.nbytes), "Update")
        return
    for start in range(0, flat.nbytes, COPY_PIECE):
        piece = flat[start:start + COPY_PIECE].tobytes()
        _check(update(ctypes.byref(ctx), piece, len(piece)), "Update")


def _address(flat: memoryview) -> Optional[object]:
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

def _parse_state(text: str, algo: Optional[Algorithm] = None) -> tuple[Algorithm, int, Words]:
    """Hash, offset and words from ``VERSION:<offset>:<word>:...``; ValueError for anything else.
    `algo`: the hash the text must be of (None: whichever its version names)."""
    if not isinstance(text, str):
        raise TypeError(f"a hash state is a str, not {type(text).__name__}")
    expect = algo or MD5
    limit = algo.max_state_chars if algo else max(a.max_state_chars for a in ALGORITHMS.values())
    if len(text) > limit:
        raise ValueError(f"not an {expect.symbol} state: {len(text)} characters long "
                         f"(at most {limit})")
    fields = text.split(":")
    found = BY_VERSION.get(fields[0])
    if found is None and algo is None:
        raise ValueError(f"not a hash state of version {' or '.join(BY_VERSION)}: {text!r}")
    if found is None or (algo is not None and found is not algo):
        raise ValueError(f"not an {expect.symbol} state of version {expect.version}: {text!r}")
    if len(fields) != found.words + 2:
        names = ":".join("<%s>" % n for n in _word_names(found))
        raise ValueError(f"{found.symbol} state {text!r} has {len(fields)} fields, expected "
                         f"{found.words + 2}: {found.version}:<offset>:{names}")
    return found, _parse_offset(fields[1], text, found), _parse_words(fields[2:], text, found)


def _word_names(algo: Algorithm) -> list[str]:
    return list("ABCD") if algo is MD5 else ["h%d" % i for i in range(algo.words)]


def _parse_offset(field: str, text: str, algo: Algorithm) -> int:
    """The byte offset: canonical decimal, a multiple of 64, within the 2**64-bit length."""
    if not _RE_OFFSET.fullmatch(field):
        raise ValueError(f"{algo.symbol} state {text!r}: the offset must be a decimal number of "
                         f"bytes without sign or leading zeros, not {field!r}")
    offset = int(field)
    if offset > MAX_OFFSET:
        raise ValueError(f"{algo.symbol} state {text!r}: offset {offset} is beyond the largest "
                         f"{algo.symbol} length ({MAX_OFFSET})")
    if offset % BLOCK:
        raise ValueError(f"{algo.symbol} state {text!r}: offset {offset} is not a multiple of "
                         f"{BLOCK} bytes")
    return offset


def _parse_words(fields: list[str], text: str, algo: Algorithm) -> Words:
    """The chaining words; each exactly 8 lowercase hex digits."""
    for name, field in zip(_word_names(algo), fields):
        if not _RE_WORD.fullmatch(field):
            raise ValueError(f"{algo.symbol} state {text!r}: word {name} must be 8 lowercase hex "
                             f"digits, not {field!r}")
    return tuple(int(field, 16) for field in fields)


def _format_state(algo: Algorithm, offset: int, words: Words) -> str:
    """The canonical text of a state: one text per state, so texts can be compared."""
    return ":".join([algo.version, str(offset)] + ["%08x" % w for w in words])


# ----------------------------------------------------------------------------- the classes

class ResumableHash:
    """A hash like ``hashlib``'s whose state can be saved as text and restored elsewhere.

    ``update`` runs without the GIL and without copying the data; ``digest``/``hexdigest``
    finalize a copy, so hashing can go on. Raises :class:`HashUnavailable` (MD5Unavailable,
    SHA256Unavailable) when no usable libcrypto is found (see :func:`unavailable_reason`).
    """

    algorithm: Algorithm = MD5
    block_size = BLOCK

    def __init__(self, data=None) -> None:
        algo = self.algorithm
        self._lib = _require(algo)
        self._init, self._update, _ = _functions(self._lib, algo)
        self._ctx = _CTX[algo.name]()
        _check(self._init(ctypes.byref(self._ctx)), algo.symbol + "_Init")
        self._offset = 0
        self._lock = threading.Lock()
        self._torn = False
        _INSTANCES.add(self)
        if data is not None:
            self.update(data)

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def digest_size(self) -> int:
        return self.algorithm.digest_size

    @classmethod
    def from_state(cls, text: str) -> ResumableHash:
        """An instance that continues from a text made by :meth:`state`.

        Every field is checked (version, decimal offset, alignment, range, 8-hex-digit words):
        ValueError names what is wrong. The text is validated before the library is needed.
        On this class itself, the version of the text chooses the hash.
        """
        algo, offset, words = _parse_state(text, None if cls is ResumableHash else cls.algorithm)
        if offset == 0 and words != algo.iv:
            raise ValueError(f"{algo.symbol} state {text!r}: at offset 0 the words must be the "
                             f"{algo.symbol} initial values, as in {_format_state(algo, 0, algo.iv)}")
        obj = CLASSES[algo.name]()
        _restore(obj._ctx, algo, offset, words)
        obj._offset = offset
        return obj

    @property
    def offset(self) -> int:
        """The number of bytes hashed so far."""
        return self._offset

    def update(self, data) -> None:
        """Hash more bytes: bytes, bytearray, memoryview, mmap or any C-contiguous buffer."""
        with self._lock:
            self._check_usable()
            self._offset += _feed(self._update, self._ctx, data)

    def state(self) -> str:
        """The state as ``VERSION:<offset>:<word>:...`` (offset in decimal bytes, words as 8 hex
        digits). Only at an offset that is a multiple of 64 bytes: ValueError otherwise."""
        with self._lock:
            self._check_usable()
            offset, words, num = self._offset, _words(self._ctx), self._ctx.num
        if offset % BLOCK:
            raise ValueError(f"the {self.algorithm.symbol} state can be saved only at a multiple of "
                             f"{BLOCK} bytes; offset {offset} is {offset % BLOCK} bytes past one")
        if num:
            raise RuntimeError(f"the context holds {num} bytes at aligned offset {offset}")
        return _format_state(self.algorithm, offset, words)

    def digest(self) -> bytes:
        """The digest of the bytes so far; the instance can go on hashing."""
        with self._lock:
            self._check_usable()
            ctx = type(self._ctx).from_buffer_copy(self._ctx)
        return _final(self._lib, self.algorithm, ctx)

    def hexdigest(self) -> str:
        """The digest of the bytes so far, as lowercase hex digits; non-destructive."""
        return self.digest().hex()

    def copy(self) -> ResumableHash:
        """An independent instance in the same state."""
        with self._lock:
            self._check_usable()
            ctx, offset = type(self._ctx).from_buffer_copy(self._ctx), self._offset
        obj = type(self)()
        obj._ctx, obj._offset = ctx, offset
        return obj

    def __repr__(self) -> str:
        """Show the offset, never the state (a repr may end up in a log)."""
        return f"<{type(self).__name__} offset={self._offset}>"

    def _check_usable(self) -> None:
        """Refuse a copy inherited through fork() while another thread was updating it."""
        if self._torn:
            raise RuntimeError(f"this {self.algorithm.symbol} was being updated by another thread "
                               "when the process forked; its copy in the child is unusable: "
                               "restore it from a saved state instead")


class ResumableMD5(ResumableHash):
    """The resumable MD5 (state text ``md5v1:...``)."""
    algorithm = MD5


class ResumableSHA256(ResumableHash):
    """The resumable SHA-256 (state text ``sha256v1:...``)."""
    algorithm = SHA256


CLASSES = {"md5": ResumableMD5, "sha256": ResumableSHA256}


def new(name: str) -> ResumableHash:
    """A fresh resumable hash by its hashlib name: "md5" or "sha256"."""
    return CLASSES[name]()


def from_state(text: str) -> ResumableHash:
    """The hash a state text was saved from, whichever it is (its version says)."""
    return ResumableHash.from_state(text)
