"""imagenet_prep.md5state: the resumable MD5 equals hashlib's; its saved state survives a new
object, a new process and fork(); hostile state texts are refused; a missing libcrypto is explained.
"""
from __future__ import annotations

import ctypes.util
import hashlib
import mmap
import os
import random
import signal
import sys
import threading
import time
import traceback
import warnings

import pytest
from conftest import REPO, run

from imagenet_prep import md5state
from imagenet_prep.md5state import ResumableMD5, ResumableSHA256

needs_md5 = pytest.mark.skipif(not md5state.available(),
                               reason=f"resumable MD5 unavailable: {md5state.unavailable_reason()}")

SIZES = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 511, 512, 513, 4095,
         65536 + 7, (1 << 20) + 13]
EMPTY_STATE = "md5v1:0:67452301:efcdab89:98badcfe:10325476"
GOOD_WORDS = "466c11ff:537ffdd3:b8ea7da5:489bb8fe"


# ----------------------------------------------------------------------------- helpers

def random_bytes(n: int, seed: int = 0) -> bytes:
    """Reproducible random data."""
    return random.Random(seed).randbytes(n)


def random_cuts(n: int, rng: random.Random, pieces: int) -> list[int]:
    """Sorted cut points 0 = c0 <= ... <= ck = n, with some empty pieces."""
    return [0] + sorted(rng.randint(0, n) for _ in range(pieces)) + [n]


def as_type(chunk: bytes, kind: int) -> bytes | bytearray | memoryview:
    """The same bytes as one of the buffer types update() takes."""
    return [chunk, bytearray(chunk), memoryview(chunk), memoryview(bytearray(chunk))][kind % 4]


def feed(h: ResumableMD5, data: bytes, rng: random.Random, pieces: int = 7) -> None:
    """update() with ``data`` cut at random points into pieces of mixed buffer types."""
    cuts = random_cuts(len(data), rng, pieces)
    for i in range(len(cuts) - 1):
        h.update(as_type(data[cuts[i]:cuts[i + 1]], i))


def python(code: str, *args: object, env: dict | None = None) -> object:
    """Run ``code`` in a fresh interpreter that imports the package from the repository."""
    full = dict(os.environ, PYTHONPATH=str(REPO))
    full.update(env or {})
    return run([sys.executable, "-c", code, *args], cwd=REPO, env=full)


def in_fork(fn) -> str:
    """Run ``fn`` in a forked child; return what it returned, or raise with its error."""
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():      # 3.12+ warns about fork() with threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:                          # the child: never return into pytest
        out, code = "", 1
        signal.alarm(30)                  # a child stuck on a lock dies instead of hanging
        try:
            out, code = str(fn()), 0
        finally:                          # on an error, report it; leave in any case
            os.write(wfd, (out or traceback.format_exc()).encode())
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    return out


# ----------------------------------------------------------------------------- availability

def test_available_where_libcrypto_is_installed():
    if ctypes.util.find_library("crypto") is None:
        pytest.skip("no libcrypto on this system (Debian package libssl3)")
    assert md5state.available(), md5state.unavailable_reason()
    assert md5state.unavailable_reason() == ""


@pytest.mark.parametrize("library,why", [
    ("/nonexistent/libcrypto.so.3", "cannot load /nonexistent/libcrypto.so.3"),
    (ctypes.util.find_library("c") or "libc.so.6", "does not export MD5_Init, MD5_Update"),
])
def test_missing_library_is_explained(library, why):
    code = ("from imagenet_prep import md5state as m\n"
            "print(m.available()); print(m.unavailable_reason())\n"
            "try:\n"
            "    m.ResumableMD5.from_state('md5v1:1:0:0:0:0')\n"
            "except ValueError as e:\n"
            "    print('ValueError', e)\n"
            f"m.ResumableMD5.from_state({EMPTY_STATE!r})\n")
    r = python(code, env={md5state.ENV_LIBRARY: library})
    assert r.returncode == 1
    available, reason, hostile = r.stdout.splitlines()[:3]
    assert available == "False"
    assert why in reason
    assert hostile.startswith("ValueError")       # the text is checked before the library
    assert "MD5Unavailable" in r.stderr
    for hint in ("libssl3", "--no-verify", "MD5_Init", why):
        assert hint in r.stderr, hint


# ----------------------------------------------------------------------------- digests

@needs_md5
@pytest.mark.parametrize("size", SIZES)
def test_digest_equals_hashlib(size):
    data = random_bytes(size, seed=size)
    rng = random.Random(size)
    for _ in range(5):
        h = ResumableMD5()
        feed(h, data, rng)
        assert h.hexdigest() == hashlib.md5(data).hexdigest()
        assert h.digest() == hashlib.md5(data).digest()
        assert h.offset == size


@needs_md5
def test_constructor_takes_data_like_hashlib():
    data = random_bytes(1000)
    assert ResumableMD5(data).hexdigest() == hashlib.md5(data).hexdigest()
    assert ResumableMD5().hexdigest() == hashlib.md5().hexdigest()


@needs_md5
def test_hexdigest_is_not_destructive():
    data = random_bytes(3000)
    h = ResumableMD5(data[:1000])
    first = h.hexdigest()
    assert h.hexdigest() == first == hashlib.md5(data[:1000]).hexdigest()
    h.update(data[1000:])
    assert h.hexdigest() == hashlib.md5(data).hexdigest()
    assert h.offset == 3000


@needs_md5
def test_copy_is_independent():
    data = random_bytes(700)
    h = ResumableMD5(data[:300])
    c = h.copy()
    h.update(data[300:])
    assert c.hexdigest() == hashlib.md5(data[:300]).hexdigest() and c.offset == 300
    c.update(b"x")
    assert h.hexdigest() == hashlib.md5(data).hexdigest()


@needs_md5
def test_other_buffers_without_leaving_exports(tmp_path):
    data = random_bytes(200_003)
    words = memoryview(bytearray(data[:200_000])).cast("I")        # 4-byte items
    assert ResumableMD5(words).hexdigest() == hashlib.md5(data[:200_000]).hexdigest()
    assert ResumableMD5(memoryview(data)[5:]).hexdigest() == hashlib.md5(data[5:]).hexdigest()
    buf = bytearray(data)
    ResumableMD5(buf)
    buf.extend(b"more")                   # would raise BufferError if an export were left
    path = tmp_path / "blob"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert ResumableMD5(mm).hexdigest() == hashlib.md5(data).hexdigest()
        with memoryview(mm) as view:
            assert ResumableMD5(view[7:]).hexdigest() == hashlib.md5(data[7:]).hexdigest()
    # leaving the with-block closed the mmap: it would raise BufferError on a leftover export


@needs_md5
def test_read_only_buffers_without_numpy():
    # Without numpy a read-only slice is hashed from bounded copies: same digest.
    code = ("import hashlib, sys\n"
            "sys.modules['numpy'] = None\n"
            "from imagenet_prep.md5state import ResumableMD5\n"
            "data = bytes(range(256)) * 12289\n"
            "h = ResumableMD5(memoryview(data)[1:])\n"
            "print(h.hexdigest() == hashlib.md5(data[1:]).hexdigest(),\n"
            "      sys.modules['numpy'] is None)\n")
    r = python(code)
    assert (r.returncode, r.stdout.split()) == (0, ["True", "True"]), r.stderr


@needs_md5
def test_refuses_what_hashlib_refuses():
    h = ResumableMD5()
    with pytest.raises(TypeError, match="encoded"):
        h.update("text")
    with pytest.raises(TypeError):
        h.update(42)
    with pytest.raises(BufferError, match="contiguous"):
        h.update(memoryview(b"abcdef")[::2])
    assert h.offset == 0 and h.hexdigest() == hashlib.md5().hexdigest()


# ----------------------------------------------------------------------------- saved states

@needs_md5
@pytest.mark.parametrize("cut", [0, 64, 512, 4096, 65536, 1 << 20])
def test_state_restored_in_a_new_object(cut):
    data = random_bytes((1 << 20) + 777, seed=cut)
    rng = random.Random(cut)
    h = ResumableMD5()
    feed(h, data[:cut], rng)
    text = h.state()
    assert text.startswith(f"md5v1:{cut}:")
    resumed = ResumableMD5.from_state(text)
    assert resumed.offset == cut
    assert resumed.state() == text
    feed(resumed, data[cut:], rng)
    assert resumed.hexdigest() == hashlib.md5(data).hexdigest()


@needs_md5
def test_many_resumes_in_a_row():
    data = random_bytes(300_000, seed=7)
    rng = random.Random(7)
    h, start = ResumableMD5(), 0
    for cut in sorted(rng.sample(range(0, len(data), 512), 40)):
        h.update(data[start:cut])
        h, start = ResumableMD5.from_state(h.state()), cut
    h.update(data[start:])
    assert h.hexdigest() == hashlib.md5(data).hexdigest()


@needs_md5
def test_state_is_canonical_and_versioned():
    data = random_bytes(4096)
    a, b = ResumableMD5(), ResumableMD5()
    feed(a, data, random.Random(1))
    feed(b, data, random.Random(2))
    assert a.state() == b.state()
    assert ResumableMD5().state() == EMPTY_STATE
    text = a.state()
    version, offset, *words = text.split(":")
    assert (version, offset) == ("md5v1", "4096")
    assert [len(w) for w in words] == [8, 8, 8, 8] and text == text.lower()


@needs_md5
def test_state_across_the_32_bit_bit_count():
    # Past 512 MiB the bit count no longer fits in Nl: Nh must be saved and restored too.
    zeros = bytes(4 << 20)
    total = (512 << 20) + (8 << 20)
    h, ref = ResumableMD5(), hashlib.md5()
    for _ in range(total // len(zeros)):
        h.update(zeros)
        ref.update(zeros)
    resumed = ResumableMD5.from_state(h.state())
    tail = random_bytes(1000)
    resumed.update(tail)
    ref.update(tail)
    assert resumed.offset == total + 1000
    assert resumed.hexdigest() == ref.hexdigest()


@needs_md5
def test_state_restored_in_fresh_processes(tmp_path):
    data = random_bytes(199_999, seed=3)
    path = tmp_path / "stream"
    path.write_bytes(data)
    step = ("import sys\n"
            "from imagenet_prep.md5state import ResumableMD5\n"
            "h = ResumableMD5.from_state(sys.argv[1])\n"
            "with open(sys.argv[2], 'rb') as f:\n"
            "    f.seek(h.offset)\n"
            "    h.update(f.read(int(sys.argv[3]) - h.offset))\n"
            "print(h.state() if h.offset % 64 == 0 else '-', h.hexdigest())\n")
    text = EMPTY_STATE
    for end in (512, 64 * 1000, 100_032, 199_999):     # one process each, like killed runs
        r = python(step, text, path, end)
        assert r.returncode == 0, r.stderr
        text, digest = r.stdout.split()
        assert digest == hashlib.md5(data[:end]).hexdigest()
    assert text == "-"                    # 199_999 is not aligned: no state to save there


@needs_md5
def test_state_refused_at_an_unaligned_offset():
    h = ResumableMD5(bytes(100))
    with pytest.raises(ValueError, match="multiple of 64 bytes; offset 100 is 36 bytes past"):
        h.state()
    h.update(bytes(28))
    assert h.state().startswith("md5v1:128:")


@pytest.mark.parametrize("text,match", [
    ("", "not an MD5 state of version md5v1"),
    ("md5v2:0:67452301:efcdab89:98badcfe:10325476", "version md5v1"),
    ("MD5V1:0:67452301:efcdab89:98badcfe:10325476", "version md5v1"),
    (" md5v1:0:67452301:efcdab89:98badcfe:10325476", "version md5v1"),
    ("md5v1:0:67452301:efcdab89:98badcfe", "has 5 fields, expected 6"),
    ("md5v1:0:67452301:efcdab89:98badcfe:10325476:00000000", "has 7 fields"),
    ("md5v1:64:" + GOOD_WORDS + "\n", "word D must be 8 lowercase hex digits"),
    ("md5v1:64:" + GOOD_WORDS + " ", "word D"),
    ("md5v1:-64:" + GOOD_WORDS, "without sign or leading zeros, not '-64'"),
    ("md5v1:+64:" + GOOD_WORDS, "without sign"),
    ("md5v1:064:" + GOOD_WORDS, "leading zeros"),
    ("md5v1::" + GOOD_WORDS, "decimal number of bytes"),
    ("md5v1:0x40:" + GOOD_WORDS, "decimal number of bytes"),
    ("md5v1:6_4:" + GOOD_WORDS, "decimal number of bytes"),
    ("md5v1:\u0666\u0664:" + GOOD_WORDS, "decimal number of bytes"),      # Arabic-Indic "64"
    ("md5v1:" + "9" * 40 + ":" + GOOD_WORDS, "decimal number of bytes"),
    (f"md5v1:{1 << 61}:{GOOD_WORDS}", "beyond the largest MD5 length"),
    ("md5v1:100:" + GOOD_WORDS, "offset 100 is not a multiple of 64 bytes"),
    ("md5v1:32:" + GOOD_WORDS, "not a multiple of 64"),
    ("md5v1:64:466C11FF:537ffdd3:b8ea7da5:489bb8fe", "word A must be 8 lowercase hex"),
    ("md5v1:64:466c11f:537ffdd3:b8ea7da5:489bb8fe", "word A"),
    ("md5v1:64:466c11ff0:537ffdd3:b8ea7da5:489bb8fe", "word A"),
    ("md5v1:64:466c11ff:537ffdzz:b8ea7da5:489bb8fe", "word B"),
    ("md5v1:64:466c11ff:537ffdd3:-8ea7da5:489bb8fe", "word C"),
    ("md5v1:64:466c11ff:537ffdd3:b8ea7da5:", "word D"),
    ("md5v1:0:" + GOOD_WORDS, "at offset 0 the words must be the MD5 initial values"),
    ("md5v1:64:" + GOOD_WORDS + ":" * 200, "characters long"),
])
def test_hostile_state_refused(text, match):
    with pytest.raises(ValueError, match=match):
        ResumableMD5.from_state(text)


def test_state_must_be_text():
    with pytest.raises(TypeError, match="str, not bytes"):
        ResumableMD5.from_state(EMPTY_STATE.encode())


# ----------------------------------------------------------------------------- threads, fork

@needs_md5
def test_update_releases_the_gil():
    buf = bytes(128 << 20)                # ~0.2 s of hashing in one foreign call
    ticks: list[float] = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)

    t = threading.Thread(target=tick)
    t.start()
    try:
        time.sleep(0.02)
        h = ResumableMD5()
        start = time.perf_counter()
        h.update(buf)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    margin = (end - start) / 10
    during = [x for x in ticks if start + margin < x < end - margin]
    assert during, "no Python thread ran during update(): the GIL was held"


@needs_md5
def test_one_instance_shared_by_threads():
    chunk = random_bytes((64 << 10) + 1)  # odd size: concurrent calls would tear partial blocks
    h = ResumableMD5()
    start = threading.Barrier(4)

    def work():
        start.wait()
        for _ in range(64):
            h.update(chunk)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.offset == 256 * len(chunk)
    assert h.hexdigest() == hashlib.md5(chunk * 256).hexdigest()


@needs_md5
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_works_in_forked_children():
    data = random_bytes(100_000, seed=5)
    h = ResumableMD5(data[:5120])

    def child() -> str:
        h.update(data[5120:])
        fresh = ResumableMD5.from_state(ResumableMD5(data[:512]).state())
        fresh.update(data[512:])
        return h.hexdigest() + " " + fresh.hexdigest()

    expected = hashlib.md5(data).hexdigest()
    assert in_fork(child) == expected + " " + expected
    assert h.offset == 5120                # the parent's copy did not move
    h.update(data[5120:])
    assert h.hexdigest() == expected


@needs_md5
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_fork_during_an_update_marks_the_childs_copy_unusable():
    h = ResumableMD5()
    worker = threading.Thread(target=h.update, args=(bytes(256 << 20),))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not h._lock.locked() and time.monotonic() < deadline:
            time.sleep(0.0005)
        if not h._lock.locked():
            pytest.skip("could not catch update() in flight")

        def child() -> str:
            try:
                h.update(b"x")
            except RuntimeError as e:
                return f"refused: {e} / fresh: {ResumableMD5(b'abc').hexdigest()}"
            return "accepted"

        out = in_fork(child)
    finally:
        worker.join()
    assert out.startswith("refused: this MD5 was being updated by another thread when the "
                          "process forked")
    assert out.endswith(hashlib.md5(b"abc").hexdigest())


# ----------------------------------------------------------------------------- SHA-256 (issue 20)

needs_sha256 = pytest.mark.skipif(not md5state.available("sha256"),
                                  reason=f"resumable SHA-256 unavailable: "
                                         f"{md5state.unavailable_reason('sha256')}")
EMPTY_SHA256 = ("sha256v1:0:6a09e667:bb67ae85:3c6ef372:a54ff53a:510e527f:9b05688c:1f83d9ab:"
                "5be0cd19")


@needs_sha256
@pytest.mark.parametrize("size", SIZES)
def test_sha256_digest_equals_hashlib(size):
    data = random_bytes(size, seed=size)
    rng = random.Random(size)
    h = ResumableSHA256()
    feed(h, data, rng)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest() and h.offset == size
    assert h.name == "sha256" and h.digest_size == 32


@needs_sha256
@pytest.mark.parametrize("cut", [0, 64, 4096, 1 << 20])
def test_sha256_state_restored_in_a_new_object(cut):
    data = random_bytes((1 << 20) + 777, seed=cut)
    h = ResumableSHA256(data[:cut])
    text = h.state()
    assert text.startswith(f"sha256v1:{cut}:") and len(text.split(":")) == 10
    resumed = md5state.from_state(text)             # the version picks the hash
    assert isinstance(resumed, ResumableSHA256) and resumed.state() == text
    resumed.update(data[cut:])
    assert resumed.hexdigest() == hashlib.sha256(data).hexdigest()
    assert ResumableSHA256().state() == EMPTY_SHA256


@needs_sha256
def test_sha256_state_across_the_32_bit_bit_count_and_fresh_processes(tmp_path):
    zeros = bytes(4 << 20)
    h, ref = ResumableSHA256(), hashlib.sha256()
    for _ in range(130):                    # 520 MiB: the bit count needs its high word
        h.update(zeros)
        ref.update(zeros)
    code = ("import sys\nfrom imagenet_prep import md5state\n"
            "h = md5state.from_state(sys.argv[1]); h.update(b'tail'); print(h.hexdigest())\n")
    r = python(code, h.state())
    ref.update(b"tail")
    assert r.returncode == 0 and r.stdout.strip() == ref.hexdigest(), r.stderr


@pytest.mark.parametrize("text,match", [
    (EMPTY_SHA256.replace("sha256v1", "sha256v2"), "not an SHA256 state of version sha256v1"),
    (EMPTY_SHA256.rsplit(":", 1)[0], "has 9 fields, expected 10"),
    ("sha256v1:64:" + ":".join(["0" * 8] * 7) + ":XYZ", "word h7 must be 8 lowercase hex"),
    ("sha256v1:100:" + ":".join(["0" * 8] * 8), "not a multiple of 64"),
    ("sha256v1:0:" + ":".join(["0" * 8] * 8), "the SHA256 initial values"),
    (EMPTY_STATE, "not an SHA256 state"),            # an MD5 state is not a SHA-256 one
])
def test_sha256_hostile_state_refused(text, match):
    with pytest.raises(ValueError, match=match):
        ResumableSHA256.from_state(text)


def test_a_state_of_either_hash_is_taken_by_from_state_only_for_what_it_says():
    with pytest.raises(ValueError, match="not an MD5 state"):
        ResumableMD5.from_state(EMPTY_SHA256)
    with pytest.raises(ValueError, match="not a hash state of version md5v1 or sha256v1"):
        md5state.from_state("crc32v1:0:00000000")


def test_missing_library_is_explained_for_sha256():
    code = ("from imagenet_prep import md5state as m\n"
            "print(m.available('sha256')); print(m.unavailable_reason('sha256'))\n"
            "m.ResumableSHA256()\n")
    r = python(code, env={md5state.ENV_LIBRARY: ctypes.util.find_library("c") or "libc.so.6"})
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "False"
    assert "does not export SHA256_Init" in r.stdout
    assert "SHA256Unavailable" in r.stderr and "libssl3" in r.stderr and "--no-verify" in r.stderr
