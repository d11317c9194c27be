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

pytestmark = pytest.mark.skipif(not md5state.available(), reason="no usable libcrypto here")
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def cmd(*args) -> list[str]:
    return [sys.executable, "-m", "imagenet_prep.md5follow", *map(str, args)]


def finish(path: Path, state: Path) -> str:
    r = subprocess.run(cmd("finish", path, state), env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def grow(path: Path, data: bytes, pieces: int = 20, pause: float = 0.02) -> None:
    with open(path, "ab") as f:
        step = len(data) // pieces + 1
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


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
    assert finish(part, state) == hashlib.md5(data).hexdigest()


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
