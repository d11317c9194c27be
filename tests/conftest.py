"""Shared fixtures: the miniature release, the reference data, and a way to run the scripts."""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
REFERENCE = Path(os.environ.get("IMAGENET_REFERENCE", REPO.parent / "shared" / "reference"))

for p in (str(TESTS), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

import minirelease  # noqa: E402


def script(name: str) -> Path:
    """Path of one of the four numbered scripts at the top of the repository."""
    return REPO / name


def load_script(module: str):
    """Import a numbered Python script as a module (nothing runs at import time)."""
    return importlib.import_module(module)


def run(cmd: list, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run a command; capture text output; never hang a test for long. The command gets a session
    of its own, and on a timeout the whole session is killed: no child outlives the test."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def small_tmpfs(folder: Path, options: str):
    """A tmpfs mounted at `folder` (made here) with mount `options` (e.g. "size=64k" or
    "size=20m,nr_inodes=40"), for disk-full and no-inode tests; the test is skipped where mounting
    is not allowed (it needs root). Unmounted afterwards, lazily if something still holds it."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        yield folder
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> minirelease.Release:
    """The unit-test release (12 classes, uneven counts), built once per test session."""
    return minirelease.make_release(tmp_path_factory.mktemp("release"))


@pytest.fixture
def reference() -> Path:
    """../shared/reference with the real devkit metadata; the test is skipped without it."""
    if not (REFERENCE / "meta.mat").is_file():
        pytest.skip("real reference metadata not found at %s (only present in the dev workspace)"
                    % REFERENCE)
    return REFERENCE


def assert_usage_error(r: subprocess.CompletedProcess, prog: str, message: str) -> None:
    """A usage error as every script gives it: exit code 2 and, last on stderr, two log lines (no
    --help text to scroll the error away): a one-line usage, then the error, holding `message`."""
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    stamp = r"%s [0-9]{2}:[0-9]{2}:[0-9]{2} " % re.escape(prog)
    assert len(lines) >= 2 and re.fullmatch(stamp + r"usage: %s( \[options\])?( \S+)* \(--help "
                                            r"lists the options\)" % re.escape(prog), lines[-2]), r.stderr
    assert re.match(stamp + "error: ", lines[-1]) and message in lines[-1], r.stderr
    assert "options:" not in r.stderr and "Usage:" not in r.stderr, r.stderr
