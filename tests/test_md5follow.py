"""imagenet_prep.md5follow: the MD5 of a growing file, kept by a follower process, always right."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from imagenet_prep import md5state

needs_libcrypto = pytest.mark.skipif(not md5state.available(), reason="no usable libcrypto here")
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def cmd(*args) -> list[str]:
    return [sys.executable, "-m", "imagenet_prep.md5follow", *map(str, args)]


def finish_read(path: Path, state: Path) -> tuple[str, int]:
    """finish: (the MD5 it prints, the bytes it says it had to read)."""
    r = subprocess.run(cmd("finish", path, state), env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    digest, read = r.stdout.split("\n")[:2]
    return digest, int(read)


def finish(path: Path, state: Path) -> str:
    return finish_read(path, state)[0]


def grow(path: Path, data: bytes, pieces: int = 20, pause: float = 0.02) -> None:
    with open(path, "ab") as f:
        step = len(data) // pieces + 1
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


@needs_libcrypto
def test_following_a_growing_file_leaves_little_or_nothing_to_hash(tmp_path):
    data = random.Random(1).randbytes(12_000_001)
    part, state = tmp_path / "a.part", tmp_path / "a.part.md5state"
    part.write_bytes(b"")
    follower = subprocess.Popen(cmd("follow", part, state), env=ENV)
    try:
        grow(part, data)
        time.sleep(0.6)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert state.exists()
    offset = int(state.read_text().split('"offset": ')[1].split(",")[0])
    assert offset == len(data) - len(data) % 64                  # everything aligned was hashed
    assert finish_read(part, state) == (hashlib.md5(data).hexdigest(), len(data) % 64)


@needs_libcrypto
def test_the_follower_ends_with_its_parent_and_saves_its_state(tmp_path):
    part, state = tmp_path / "a.part", tmp_path / "s"
    part.write_bytes(random.Random(2).randbytes(3_000_000))
    parent = subprocess.Popen(["bash", "-c", " ".join(cmd("follow", part, state)) + " & sleep 1"],
                              env=ENV)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.exists(), "the follower did not save its state when its parent ended"
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()


@needs_libcrypto
def test_a_state_that_no_longer_fits_the_file_is_never_used(tmp_path):
    rng = random.Random(3)
    part, state = tmp_path / "a.part", tmp_path / "s"
    part.write_bytes(rng.randbytes(2_000_000))
    follower = subprocess.Popen(cmd("follow", part, state), env=ENV)
    time.sleep(0.8)
    follower.terminate()
    follower.wait(timeout=10)
    assert state.exists()
    # started over with other bytes (a server that ignored a range, another file): same inode
    with open(part, "r+b") as f:
        f.truncate(0)
        f.write(rng.randbytes(2_500_000))
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()
    # cut back below the saved offset
    with open(part, "r+b") as f:
        f.truncate(1000)
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()
    # another file under the name (another inode), and a damaged state file
    other = tmp_path / "b"
    other.write_bytes(rng.randbytes(2_000_000))
    os.replace(other, part)
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()
    state.write_text('{"offset": 64, "md5": "md5v1:64:junk", "inode": 1}')
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()


@needs_libcrypto
def test_a_rewrite_while_following_is_noticed(tmp_path):
    rng = random.Random(4)
    part, state = tmp_path / "a.part", tmp_path / "s"
    part.write_bytes(rng.randbytes(1_000_000))
    follower = subprocess.Popen(cmd("follow", part, state), env=ENV)
    try:
        time.sleep(0.6)
        with open(part, "r+b") as f:                  # rewritten in place, then grown further
            f.write(rng.randbytes(1_000_000))
        grow(part, rng.randbytes(1_000_000), pieces=5)
        time.sleep(0.6)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()


@needs_libcrypto
def test_a_new_file_under_the_name_is_hashed_from_its_start(tmp_path):
    """00_download.sh starts over with a new, empty NAME.part (a new inode); the follower waits while
    there is no file, and never mixes the bytes of the old file into the MD5 of the new one."""
    rng = random.Random(5)
    part, state = tmp_path / "a.part", tmp_path / "s"
    follower = subprocess.Popen(cmd("follow", part, state), env=ENV)     # no file yet: it waits
    try:
        time.sleep(0.5)
        assert follower.poll() is None
        old = rng.randbytes(1_000_000)
        grow(part, old, pieces=4)
        time.sleep(0.6)
        part.unlink()
        part.write_bytes(b"")
        new = old[:500_000] + rng.randbytes(1_500_000)             # same start, other bytes after it
        grow(part, new, pieces=4, pause=0.01)
        time.sleep(0.6)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert finish(part, state) == hashlib.md5(new).hexdigest()


@needs_libcrypto
def test_the_saved_fingerprint_is_of_the_bytes_hashed(tmp_path):
    """The state vouches for the bytes it hashed: its fingerprint is of those bytes, so a state saved
    after the file was rewritten there does not fit the new bytes."""
    from imagenet_prep import md5follow
    rng = random.Random(6)
    part = tmp_path / "a.part"
    data = rng.randbytes(300_000)
    part.write_bytes(data)
    fw = md5follow.Follow()
    assert md5follow.step(str(part), fw)
    with open(part, "r+b") as f:                  # rewritten just before the offset, after hashing
        f.seek(fw.offset - 10)
        f.write(b"x" * 10)
    state = tmp_path / "s"
    md5follow.save(str(state), fw)
    got, had = md5follow.load(str(part), str(state))
    assert had and got.offset == 0
    assert finish(part, state) == hashlib.md5(part.read_bytes()).hexdigest()


def test_without_libcrypto_it_exits_3_and_says_why(tmp_path):
    part = tmp_path / "a.part"
    part.write_bytes(b"abc")
    env = dict(ENV, IMAGENET_PREP_LIBCRYPTO="/nonexistent/libcrypto.so.3")
    r = subprocess.run(cmd("finish", part, tmp_path / "s"), env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3 and "error: cannot load /nonexistent/libcrypto.so.3" in r.stderr
    r = subprocess.run(cmd("--log-as", "00_download.sh", "follow", part, tmp_path / "s"), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert r.stderr.startswith("00_download.sh ") and "note: the MD5 cannot be kept" in r.stderr


@needs_libcrypto
def test_sigterm_while_hashing_never_saves_a_torn_state(tmp_path):
    """SIGTERM lands while the follower hashes a big piece just appended (with several connections
    the pieces come in big steps): the state it saves on the way out still describes the file (an
    MD5 update is never cut between the library call and its byte count), so finish gives the
    file's MD5."""
    part, state = tmp_path / "a.part", tmp_path / "s"
    block = random.Random(7).randbytes(1 << 20)
    data = b"".join(bytes([i]) + block[1:] for i in range(96))
    want = hashlib.md5(data).hexdigest()
    for delay in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
        state.unlink(missing_ok=True)
        part.write_bytes(data[:4 << 20])
        follower = subprocess.Popen(cmd("follow", part, state), env=ENV)
        time.sleep(1.0)                              # started, and the first 4 MiB hashed
        with open(part, "ab") as f:
            f.write(data[4 << 20:])                  # a big piece joined at once
        time.sleep(delay)
        follower.terminate()
        follower.wait(timeout=20)
        assert finish(part, state) == want, "a state saved at a SIGTERM %.2f s in is torn" % delay
