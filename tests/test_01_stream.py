"""01_unzip.sh --stream: from a link straight into the tree, over real curl and a loopback server.

Every run ends in exactly the tree 00_download.sh + 01_unzip.sh make (same markers, same manifest)
or in a clear error with nothing marked done; no archive is ever stored under ROOT.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import minirelease
from conftest import REPO, run, small_tmpfs
from httpserver import FaultServer
from imagenet_prep.md5state import ResumableMD5
from test_01_unzip import complete_classes, expected_flat, expected_train, files

UNZIP = REPO / "01_unzip.sh"
TOKEN = "s3cr3t-T0KEN"
FAST = {"DOWNLOAD_RETRY_DELAY": "0.05", "DOWNLOAD_RETRY_DELAY_MAX": "0.2",
        "DOWNLOAD_SPEED_TIME": "2", "DOWNLOAD_SPEED_LIMIT": "1000", "DOWNLOAD_CONNECT_TIMEOUT": "3"}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def rel(tmp_path_factory) -> minirelease.Release:
    """40 classes of ~4 KiB images: a ~2 MB train archive, long enough to be cut and killed."""
    return minirelease.make_release(tmp_path_factory.mktemp("stream"), classes=40, images=(8, 16),
                                    val_per_class=3, test=20, kib=4.0, seed=11)


@pytest.fixture
def server(rel):
    srv = FaultServer(rel.out).start()
    yield srv
    srv.stop()


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOWNLOAD_", "MD5_", "SIZE_", "IMAGENET_", "SLURM_"))}
    out.update(FAST)
    out.update(extra)
    return out


def urls_file(tmp_path: Path, rel, base: str, splits=SPLITS, md5=None) -> Path:
    lines = []
    for s in splits:
        suffix = {"train": "train", "val": "val", "test": "test"}[s]
        lines.append('DOWNLOAD_URL_%s="%s/%s?token=%s"' % (suffix, base, rel.archives[s].name, TOKEN))
        lines.append("MD5_%s=%s" % (suffix, (md5 or {}).get(s, rel.md5[s])))
    p = tmp_path / "urls.sh"
    p.write_text("\n".join(lines) + "\n")
    return p


def stream(root: Path, urls: Path, *args, timeout=120, **kw) -> subprocess.CompletedProcess:
    root.mkdir(exist_ok=True)
    r = run(["bash", UNZIP, "--root", root, "--stream", "--urls", urls, *args], timeout=timeout,
            env=env(**kw))
    assert TOKEN not in r.stdout + r.stderr, "the link (with its token) was printed"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def check_tree(root: Path, rel, splits=SPLITS) -> None:
    if "train" in splits:
        assert files(root / "train") == expected_train(rel.archives["train"])
    if "val" in splits:
        assert files(root / "val") == expected_flat(rel.archives["val"])
    if "test" in splits:
        assert files(root / "test") == expected_flat(rel.archives["test"], "test/")
    for s in splits:
        check = run(["sha256sum", "-c", "--quiet", "meta/SHA256SUMS." + s], cwd=root)
        assert check.returncode == 0, check.stdout + check.stderr
        assert (root / ".01_unzip" / (s + ".done")).is_file()
    assert not (root / "downloads").exists()
    assert not list(root.rglob("*tmp-*")) and not list((root / ".01_unzip").glob("stream-*"))
    assert not (root / ".01_unzip" / "spool").exists()


def test_stream_gives_the_tree_of_download_then_unzip(tmp_path, rel, server):
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port)
    r = stream(root, urls, "train", "val", "test")
    assert r.returncode == 0, r.stderr
    check_tree(root, rel)
    assert "MD5 %s verified" % rel.md5["train"] in r.stderr
    # the same tree and markers as 00 + 01: the rest of the pipeline sees no difference
    ref = tmp_path / "ref"
    (ref / "downloads").mkdir(parents=True)
    for s in SPLITS:
        shutil.copy(rel.archives[s], ref / "downloads")
    assert run(["bash", UNZIP, "--root", ref, *SPLITS], env=env()).returncode == 0
    for s in SPLITS:
        assert files(root / s) == files(ref / s)
        assert (root / "meta" / ("SHA256SUMS." + s)).read_bytes() == \
            (ref / "meta" / ("SHA256SUMS." + s)).read_bytes()
        got = json.loads((root / ".01_unzip" / (s + ".done")).read_text())
        want = json.loads((ref / ".01_unzip" / (s + ".done")).read_text())
        assert got == want
    again = stream(root, urls, "train", "val", "test")
    assert again.returncode == 0 and again.stderr.count("already done") == 3
    plain = run(["bash", UNZIP, "--root", root, "--shard", "1/2", "train"], env=env())
    assert plain.returncode == 0 and "train: already done" in plain.stderr


def test_stream_from_a_file_link(tmp_path, rel):
    root = tmp_path / "root"
    r = stream(root, urls_file(tmp_path, rel, "file://" + str(rel.out)), "train", "test")
    assert r.returncode == 0, r.stderr
    check_tree(root, rel, ("train", "test"))


def test_stream_all_is_train_val_and_test(tmp_path, rel):
    root = tmp_path / "root"
    r = stream(root, urls_file(tmp_path, rel, "file://" + str(rel.out)), "all")
    assert r.returncode == 0, r.stderr
    check_tree(root, rel)
    assert not (root / "devkit").exists()


@pytest.mark.parametrize("faults", [
    dict(cut_after=300_000), dict(cut_after=300_000, cut_times=3, ignore_range=True),
    dict(fail_status=503, fail_count=3), dict(redirect=True), dict(no_etag=True, cut_after=500_000)])
def test_faults_still_end_in_the_exact_tree(tmp_path, rel, server, faults):
    server.set_faults(**faults)
    root = tmp_path / "root"
    r = stream(root, urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port), "train", "val")
    assert r.returncode == 0, r.stderr
    check_tree(root, rel, ("train", "val"))
    if "cut_after" in faults:
        assert "retrying" in r.stderr


@pytest.mark.parametrize("connections", [1, 4])
def test_sigkill_twenty_times_then_rerun_gives_the_exact_tree(tmp_path, rel, server, connections):
    server.set_faults(rate=300_000)               # ~9 s for train over one connection: every
    #                                               kill lands inside, each run adds a few classes
    root = tmp_path / "root"
    root.mkdir()
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train", "val"))
    rng = random.Random(connections)
    cmd = ["bash", str(UNZIP), "--root", str(root), "--stream", "--urls", str(urls),
           "--connections", str(connections), "train", "val"]
    for _ in range(20):
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.05, 0.8))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # whatever is under a final name is complete
        for d in (root / "train").iterdir() if (root / "train").is_dir() else []:
            if not d.name.startswith("."):
                want = {k: v for k, v in expected_train(rel.archives["train"]).items()
                        if k.startswith(d.name + "/")}
                assert {"%s/%s" % (d.name, p.name): p.read_bytes() for p in d.iterdir()} == want
    server.set_faults()
    r = stream(root, urls, "--connections", str(connections), "train", "val")
    assert r.returncode == 0, r.stderr
    assert "MD5 %s verified" % rel.md5["train"] in r.stderr
    check_tree(root, rel, ("train", "val"))


def test_a_flipped_byte_is_caught_and_nothing_is_marked_done(tmp_path, rel, server):
    size = rel.archives["train"].stat().st_size
    server.set_faults(flip_at=size // 2)
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    r = stream(root, urls, "train")
    assert r.returncode == 1
    assert "but MD5_train in %s says %s" % (urls, rel.md5["train"]) in r.stderr \
        or "not a tar header" in r.stderr, r.stderr
    assert not (root / ".01_unzip" / "train.done").exists()
    assert not (root / "meta" / "SHA256SUMS.train").exists()
    server.set_faults()
    r = stream(root, urls, "train")                      # a rerun reads it all again: right now
    assert r.returncode == 0, r.stderr
    check_tree(root, rel, ("train",))


def test_a_changed_file_between_runs_is_never_mixed(tmp_path, rel, server):
    """Killed halfway; the server then serves another archive under the same name: the rerun
    sees the new ETag, reads from byte 0 again and refuses the classes that differ."""
    server.set_faults(rate=1_000_000)
    root = tmp_path / "root"
    root.mkdir()
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--stream", "--urls",
                             str(urls), "train"], env=env(), stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while not (root / ".01_unzip" / "stream-train.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    other = minirelease.make_release(tmp_path / "other", classes=40, images=(8, 16), val_per_class=3,
                                     test=20, kib=4.0, seed=12)
    served = rel.out / rel.archives["train"].name
    saved = served.read_bytes()
    try:
        served.write_bytes(other.archives["train"].read_bytes())
        server.set_faults()
        r = stream(root, urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",),
                                   md5={"train": other.md5["train"]}), "train")
    finally:
        served.write_bytes(saved)
    assert r.returncode == 1
    assert "the file behind the link changed" in r.stderr or "another file" in r.stderr, r.stderr
    assert not (root / ".01_unzip" / "train.done").exists()


def test_a_login_page_or_a_missing_file_is_said(tmp_path, rel, server):
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("val",))
    server.set_faults(login="page")
    r = stream(tmp_path / "a", urls, "val")
    assert r.returncode == 1 and "answered with a web page" in r.stderr, r.stderr
    server.set_faults(status=404)
    r = stream(tmp_path / "b", urls, "val")
    assert r.returncode == 1 and "HTTP 404" in r.stderr and "get a fresh link" in r.stderr, r.stderr
    assert not (tmp_path / "b" / "val").exists()


def test_without_an_md5_library_it_says_so(tmp_path, rel):
    urls = urls_file(tmp_path, rel, "file://" + str(rel.out), ("val",))
    r = stream(tmp_path / "a", urls, "val", IMAGENET_PREP_LIBCRYPTO="/nonexistent/libcrypto.so")
    assert r.returncode == 1 and "--no-verify" in r.stderr and "libssl3" in r.stderr, r.stderr
    r = stream(tmp_path / "a", urls, "--no-verify", "val", IMAGENET_PREP_LIBCRYPTO="/nonexistent")
    assert r.returncode == 0, r.stderr
    assert files(tmp_path / "a" / "val") == expected_flat(rel.archives["val"])


@pytest.mark.parametrize("args, said", [
    (["--stream", "devkit"], "--stream is for train, val and test"),
    (["--stream", "--shard", "0/2", "train"], "--shard does not go with --stream"),
    (["--stream", "--archive", "x.tar", "train"], "--archive does not go with --stream"),
    (["--connections", "4", "train"], "--connections goes with --stream"),
    (["--stream", "--connections", "99", "train"], "--connections must be a whole number from 1 to 32"),
    (["--in-flight", "8", "train"], "--in-flight goes with --stream"),
    (["--stream", "--in-flight", "0", "train"], "--in-flight must be a whole number of MiB from 1 to 4096"),
    (["--stream", "--in-flight", "5000", "train"], "--in-flight must be a whole number of MiB"),
])
def test_stream_usage_errors(tmp_path, args, said):
    r = run(["bash", UNZIP, "--root", tmp_path, *args], env=env())
    assert r.returncode == 2 and said in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("connections", [1, 3])
def test_sigterm_while_the_link_fails_stops_at_once_without_a_retry(tmp_path, rel, server, connections):
    """Stopped while a connection is waiting out its retry pause (or reading): the stop ends curl
    and the pause at once; no attempt is reported as retried after the stop, no traceback."""
    server.set_faults(rate=200_000, cut_after=400_000)      # cut, then a long pause before retrying
    root = tmp_path / "root"
    root.mkdir()
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--stream", "--urls", str(urls),
                             "--connections", str(connections), "train"],
                            env=env(DOWNLOAD_RETRY_DELAY="60", DOWNLOAD_RETRY_DELAY_MAX="60"),
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(3.0)                                # the cut has come: a retry pause of 60 s runs
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - t0 < 5, "the stop waited for the retry pause"
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Error:" not in err, err
    stopped = err.index("stopped by SIGTERM") if "stopped by SIGTERM" in err else len(err)
    assert "retrying" not in err[stopped:], err
    assert "retrying in 60s" in err[:stopped], err                # the pause was really running
    assert not (root / ".01_unzip" / "spool").exists()
    assert not list(root.rglob("*tmp-*"))


def test_connections_with_a_server_that_ignores_ranges_falls_back_to_one(tmp_path, rel, server):
    """Asking windows of a server that always sends the whole file would read it once per
    window: the first answer tells, and the stream goes on over that one connection."""
    server.set_faults(ignore_range=True)
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.reset_log()
    r = stream(root, urls, "--connections", "4", "train")
    assert r.returncode == 0, r.stderr
    check_tree(root, rel, ("train",))
    assert "ignores byte ranges" in r.stderr and "one connection" in r.stderr, r.stderr
    size = rel.archives["train"].stat().st_size
    assert server.bytes_sent() <= size * 1.05, (server.bytes_sent(), size)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("connections", [1, 3])
def test_a_signal_to_the_whole_group_is_a_stop_not_a_failed_connection(tmp_path, rel, server, sig,
                                                                       code, connections):
    """Ctrl-C on a terminal, scancel and timeout signal the whole process group: curl dies too,
    and that is no broken connection to report as 'retrying'."""
    server.set_faults(rate=300_000)
    root = tmp_path / "root"
    root.mkdir()
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--stream", "--urls", str(urls),
                             "--connections", str(connections), "train"],
                            env=env(), stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(2.0)
        os.killpg(proc.pid, sig)
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert "retrying" not in err and "Traceback" not in err, err
    assert "stopped by" in err


def test_a_server_that_hides_the_size_needs_size_in_urls_sh(tmp_path, rel, server):
    server.set_faults(hide_length=True)                    # Content-Range: bytes a-b/*
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    r = stream(tmp_path / "a", urls, "train")
    assert r.returncode == 1
    assert "did not say how big" in r.stderr and "set SIZE_train in %s" % urls in r.stderr, r.stderr
    with urls.open("a") as f:
        f.write("SIZE_train=%d\n" % rel.archives["train"].stat().st_size)
    r = stream(tmp_path / "b", urls, "train")
    assert r.returncode == 0, r.stderr
    check_tree(tmp_path / "b", rel, ("train",))


def test_a_content_length_that_is_not_a_number_stops_the_stream(tmp_path, rel, server):
    """curl would take its leading digits and deliver that many bytes per request, for ever."""
    server.set_faults(content_length="1000+0*BASH_VERSINFO[$(touch %s)]" % (tmp_path / "pwned"))
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("val",))
    r = stream(tmp_path / "root", urls, "val", timeout=60)
    assert r.returncode == 1
    assert "sent a Content-Length that is not a number" in r.stderr, r.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("login", ["page", "disguised"])
def test_a_login_page_asks_for_a_fresh_link_named_by_file_and_host(tmp_path, rel, server, login):
    """A login page, whether the server calls it text/html or not: the advice is a fresh link (no
    download with 00 was made), and the message starts as troubleshooting.md says."""
    server.set_faults(login=login)
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("val",))
    r = stream(tmp_path / "root", urls, "val")
    assert r.returncode == 1, r.stderr
    error = [line for line in r.stderr.splitlines() if " error: " in line]
    assert len(error) == 1, r.stderr
    assert re.match(r"01_unzip\.sh [0-9:]{8} error: %s from 127\.0\.0\.1:%d: the link (answered "
                    r"with|sent) a web page" % (rel.archives["val"].name, server.port), error[0])
    assert "get a fresh link from image-net.org" in error[0] and "00_download" not in error[0]
    assert not (tmp_path / "root" / "val").exists()


# ----------------------------------------------------------------------------- re-reads (issue 18)

def start(root: Path, urls: Path, *args, **kw) -> subprocess.Popen:
    """A stream in the background (its own session, output dropped), to be killed."""
    root.mkdir(exist_ok=True)
    return subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--stream", "--urls", str(urls),
                             *args], env=env(**kw), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 30.0) -> None:
    """SIGKILL the run's whole group as soon as ready() holds (bounded wait)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before %s" % what
            assert time.monotonic() < deadline, "no %s within %g s" % (what, timeout)
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def saved(root: Path, split: str):
    """The stream's checkpoint as saved (None if there is none)."""
    try:
        return json.loads((root / ".01_unzip" / ("stream-%s.json" % split)).read_text())
    except (OSError, ValueError):
        return None


def member_offsets(archive: Path) -> list[tuple[str, int, int]]:
    """(name, offset of its header, offset of its data) of every member of the outer tar."""
    with tarfile.open(archive) as tar:
        return [(m.name, m.offset, m.offset_data) for m in tar.getmembers()]


def byte_of_class(archive: Path, index: int) -> int:
    """The offset of the last byte of the first image of class number `index`: changing it
    changes that image and nothing else (no header, no JPEG marker that matters)."""
    with tarfile.open(archive) as outer:
        m = outer.getmembers()[index]
        with tarfile.open(fileobj=outer.extractfile(m)) as inner:
            im = inner.getmembers()[0]
            return m.offset_data + im.offset_data + im.size - 1


def byte_of_member(archive: Path, index: int) -> int:
    """The offset of the last byte of member number `index` of a flat tar (val, test)."""
    with tarfile.open(archive) as tar:
        m = [m for m in tar.getmembers() if m.isfile()][index]
        return m.offset_data + m.size - 1


@pytest.fixture
def own(tmp_path, rel):
    """A server of copies of the release's archives, which a test may change."""
    folder = tmp_path / "served"
    folder.mkdir()
    for s in SPLITS:
        shutil.copy(rel.archives[s], folder)
    srv = FaultServer(folder).start()
    yield srv, folder
    srv.stop()


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_damaged_late_part_is_rewritten_though_the_reread_was_interrupted(tmp_path, rel, server,
                                                                            split):
    """The MD5 fails at the end (a late class or image arrived damaged); the re-read from byte 0
    is killed after its first checkpoint; the next run must not keep the damaged part written
    before: what comes after the checkpoint is proven by the bytes read now, or rewritten."""
    archive = rel.archives[split]
    flip = byte_of_class(archive, 35) if split == "train" else byte_of_member(archive, 110)
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, (split,))
    server.set_faults(flip_at=flip)
    r = stream(root, urls, split)
    assert r.returncode == 1 and "but MD5_%s in %s says" % (split, urls) in r.stderr, r.stderr
    server.set_faults(rate=100_000)
    proc = start(root, urls, split)
    kill_when(proc, lambda: (saved(root, split) or {}).get("offset", 0) > 0, "first checkpoint")
    assert saved(root, split)["offset"] < flip - 100_000
    server.set_faults()
    r = stream(root, urls, split)
    assert r.returncode == 0, r.stderr
    check_tree(root, rel, (split,))
    assert "MD5 %s verified" % rel.md5[split] in r.stderr


def test_classes_of_an_unfinished_stream_are_proven_by_01_from_the_archive(tmp_path, rel, server):
    """A --stream that wrote a damaged class and stopped (here at the MD5, so no checkpoint is
    left), then 00 + 01 from the verified archive: 01 must not take the stream's classes as done
    on their records' word; it writes them again and keeps only what is the same."""
    archive = rel.archives["train"]
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(flip_at=byte_of_class(archive, 35))
    r = stream(root, urls, "train")
    assert r.returncode == 1 and "but MD5_train in %s says" % urls in r.stderr, r.stderr
    copy = tmp_path / archive.name                  # as 00_download.sh leaves it (verified)
    shutil.copy(archive, copy)
    r = run(["bash", UNZIP, "--root", root, "--archive", copy, "train"], env=env())
    assert r.returncode == 0, r.stderr
    assert "were written by a 01_unzip.sh --stream that did not finish" in r.stderr, r.stderr
    check_tree(root, rel, ("train",))
    r = run(["bash", UNZIP, "--root", root, "--archive", copy, "train"], env=env())
    assert r.returncode == 0 and "already done" in r.stderr, r.stderr


def test_a_changed_file_then_an_interrupted_reread_keeps_no_class_of_the_old_file(tmp_path, rel,
                                                                                   own):
    """Killed after a late class was written from file A; the link then serves B (that class
    differs); the re-read from byte 0 is killed after its first checkpoint; the next run must
    end in B's tree, not keep A's class."""
    srv, folder = own
    archive = rel.archives["train"]
    late = byte_of_class(archive, 35)
    wnid = member_offsets(archive)[35][0][:-4]
    b = bytearray(archive.read_bytes())
    b[late] ^= 0xFF
    md5_b = hashlib.md5(b).hexdigest()
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % srv.port, ("train",),
                     md5={"train": md5_b})
    srv.set_faults(rate=1_000_000)
    proc = start(root, urls, "train")
    kill_when(proc, lambda: (root / "train" / wnid).is_dir(), "class %s written" % wnid)
    first = saved(root, "train")
    assert first is not None
    (folder / archive.name).write_bytes(b)                   # a new ETag
    srv.set_faults(rate=300_000)
    proc = start(root, urls, "train")
    kill_when(proc, lambda: (saved(root, "train") or first)["etag"] != first["etag"],
              "a checkpoint of the new file")
    srv.set_faults()
    r = stream(root, urls, "train")
    assert r.returncode == 0, r.stderr
    want = expected_train(folder / archive.name)
    assert files(root / "train") == want
    assert "MD5 %s verified" % md5_b in r.stderr


def test_a_repacked_file_of_the_same_size_without_etag_is_read_again(tmp_path, rel, own):
    """The link's file is replaced by the same classes in another order (same size, and the
    server sends no ETag): the checkpoint's offset no longer holds the header it expects. The
    rerun says so and reads from byte 0, instead of failing inside a member on every rerun."""
    srv, folder = own
    archive = rel.archives["train"]
    b = folder / archive.name
    with tarfile.open(archive) as outer:
        members = [(m, outer.extractfile(m).read()) for m in outer.getmembers()]
    with tarfile.open(b, "w", format=tarfile.GNU_FORMAT) as out:
        for m, data in reversed(members):
            out.addfile(m, io.BytesIO(data))
    assert b.stat().st_size == archive.stat().st_size
    md5_b = hashlib.md5(b.read_bytes()).hexdigest()
    shutil.copy(archive, b.with_suffix(".a"))
    os.replace(b, b.with_suffix(".b"))
    os.replace(b.with_suffix(".a"), b)
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % srv.port, ("train",),
                     md5={"train": md5_b})
    srv.set_faults(rate=300_000, no_etag=True)
    proc = start(root, urls, "train")
    kill_when(proc, lambda: (saved(root, "train") or {}).get("offset", 0) > 0, "first checkpoint")
    offset = saved(root, "train")["offset"]
    os.replace(b.with_suffix(".b"), b)
    assert b.read_bytes()[offset:offset + 512] != archive.read_bytes()[offset:offset + 512]
    srv.set_faults(no_etag=True)
    r = stream(root, urls, "train")
    assert r.returncode == 0, r.stderr
    assert "the file behind the link changed" in r.stderr, r.stderr
    assert files(root / "train") == expected_train(archive)
    assert "MD5 %s verified" % md5_b in r.stderr


def test_a_checkpoint_edited_by_hand_is_said_and_the_stream_read_again(tmp_path, rel, server):
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(rate=300_000)
    proc = start(root, urls, "train")
    kill_when(proc, lambda: (saved(root, "train") or {}).get("offset", 0) > 0, "first checkpoint")
    doc = saved(root, "train")
    moved = doc["offset"] + 512                              # the first image's header, not a class's
    doc["offset"] = moved
    doc["md5"] = doc["md5"].replace(":%d:" % (moved - 512), ":%d:" % moved)
    path = root / ".01_unzip" / "stream-train.json"
    path.write_text(json.dumps(doc))
    server.set_faults()
    r = stream(root, urls, "train")
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stderr, r.stderr
    check_tree(root, rel, ("train",))


def test_a_class_deleted_while_the_stream_was_interrupted_is_fetched_again(tmp_path, rel, server):
    """A complete class and its record deleted between runs: the resumed stream must not verify
    the MD5 and exit 0 without train.done; it fetches that class again (its bytes proven by the
    MD5 states around it) and finishes the split."""
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(rate=300_000)
    proc = start(root, urls, "train")
    kill_when(proc, lambda: (saved(root, "train") or {}).get("offset", 0) > 0, "first checkpoint")
    wnid = member_offsets(rel.archives["train"])[0][0][:-4]
    shutil.rmtree(root / "train" / wnid)
    os.remove(root / ".01_unzip" / "train" / (wnid + ".json"))
    server.set_faults()
    r = stream(root, urls, "train")
    assert r.returncode == 0, r.stderr
    assert "not there yet" not in r.stderr
    check_tree(root, rel, ("train",))
    assert wnid in r.stderr


def test_a_class_deleted_while_the_stream_runs_is_fetched_again_at_its_end(tmp_path, rel, server):
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    wnid = member_offsets(rel.archives["train"])[1][0][:-4]
    server.set_faults(rate=1_000_000)
    root.mkdir()
    proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--stream", "--urls", str(urls),
                             "train"], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (root / ".01_unzip" / "train" / (wnid + ".json")).exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.01)
        shutil.rmtree(root / "train" / wnid)
        os.remove(root / ".01_unzip" / "train" / (wnid + ".json"))
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "%s fetched again" % wnid in err, err
    check_tree(root, rel, ("train",))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_a_checkpoint_that_is_not_a_small_regular_file_is_refused(tmp_path, rel, kind):
    root = tmp_path / "root"
    (root / ".01_unzip").mkdir(parents=True)
    path = root / ".01_unzip" / "stream-val.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as f:
            f.truncate(1 << 30)                              # sparse: no disk used
    urls = urls_file(tmp_path, rel, "file://" + str(rel.out), ("val",))
    r = stream(root, urls, "val", timeout=60)
    assert r.returncode == 1, r.stderr
    assert str(path) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert {"fifo": "(a FIFO)", "dev-zero": "a symbolic link to /dev/zero",
            "huge": "more than the"}[kind] in r.stderr, r.stderr
    assert "delete it" in r.stderr, r.stderr
    assert not (root / "val").exists()


def test_a_full_disk_while_streaming_names_the_folder_being_written(tmp_path):
    """Tiny images pass the preflight but take a 4 KiB page each on tmpfs: the disk fills up.
    The message names ROOT/train and its free space, not the current folder."""
    small_rel = minirelease.make_release(tmp_path / "rel", classes=40, images=(20, 30),
                                         val_per_class=1, test=2, kib=0.1, seed=5)
    urls = urls_file(tmp_path, small_rel, "file://" + str(small_rel.out), ("train",))
    with small_tmpfs(tmp_path / "small", "size=2m") as small:
        r = run(["bash", UNZIP, "--root", small, "--stream", "--urls", urls, "train"],
                env=env(), cwd=tmp_path, timeout=120)
        assert r.returncode == 1
        assert "the disk is full (or the quota is used up): cannot write to %s" % (small / "train") \
            in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("the disk is full") == 1, r.stderr
        assert not [p for p in (small / "train").iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- parallel writers (issue 23)

@pytest.fixture(scope="module")
def busy(tmp_path_factory) -> minirelease.Release:
    """Many small files (~6,000 of 1 KiB): read from a local file, the writers are the limit."""
    return minirelease.make_release(tmp_path_factory.mktemp("busy"), classes=60, images=(40, 80),
                                    val_per_class=40, test=20, kib=1.0, seed=7)


def check_checkpoint(root: Path, rel, split: str) -> None:
    """The checkpoint left by a kill counts only what is complete: its offset is a member's
    header, its MD5 state and header hash are those of the archive there, and every class (or
    file) it lists is on disk as the archive has it."""
    doc = saved(root, split)
    if doc is None:
        return
    data = rel.archives[split].read_bytes()
    offset = doc["offset"]
    assert doc["md5"] == ResumableMD5(data[:offset]).state()
    assert doc["head"] == hashlib.sha256(data[offset:offset + 512]).hexdigest()
    with tarfile.open(rel.archives[split]) as tar:
        members = tar.getmembers()
    headers = {m.offset for m in members}
    end = members[-1].offset_data + (members[-1].size + 511) // 512 * 512
    assert offset in headers or offset == end, offset
    if split == "train":
        want = expected_train(rel.archives[split])
        for wnid, start, state in doc["extra"]["classes"]:
            assert start in headers and start < offset
            assert state == ResumableMD5(data[:start]).state()
            got = {"%s/%s" % (wnid, p.name): p.read_bytes() for p in (root / "train" / wnid).iterdir()}
            assert got == {k: v for k, v in want.items() if k.startswith(wnid + "/")}
    else:
        partial = root / (".%s.tmp-stream" % split)
        want = expected_flat(rel.archives[split])
        where = {m.name.rsplit("/", 1)[-1]: m.offset for m in members}
        for name, sha in doc["extra"]["files"]:
            assert where[name] < offset, (name, offset)
            assert hashlib.sha256((partial / name).read_bytes()).hexdigest() == sha
            assert (partial / name).read_bytes() == want[name]
        assert doc["extra"]["bytes"] == sum(len(want[n]) for n, _ in doc["extra"]["files"])


def kills_while_writing(tmp_path: Path, rel, split: str, kills: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    urls = urls_file(tmp_path, rel, "file://" + str(rel.out), (split,))
    rng = random.Random(kills)
    expect = expected_train(rel.archives["train"]) if split == "train" else None
    folder = root / "train" if split == "train" else root / (".%s.tmp-stream" % split)
    total = len(rel.classes) if split == "train" else len(expected_flat(rel.archives[split]))

    def written() -> int:
        try:
            return sum(1 for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            return 0

    target = 0
    for i in range(kills):                   # each run is killed once it has written a few more
        target += rng.randint(1, total // (kills + 1))
        proc = start(root, urls, "--in-flight", "1" if i % 2 else "64", split)
        kill_when(proc, lambda goal=target: written() >= goal, "%d written" % target)
        if expect is not None:
            complete_classes(root / "train", expect)
        check_checkpoint(root, rel, split)
    r = stream(root, urls, split)
    assert r.returncode == 0, r.stderr
    assert "MD5 %s verified" % rel.md5[split] in r.stderr
    check_tree(root, rel, (split,))


@pytest.mark.parametrize("split", ["train", "val"])
def test_kills_while_the_writers_are_busy_leave_sound_checkpoints(tmp_path, busy, split):
    kills_while_writing(tmp_path, busy, split, 5)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "val"])
def test_fifteen_kills_while_the_writers_are_busy(tmp_path, busy, split):
    kills_while_writing(tmp_path, busy, split, 15)


def test_a_small_in_flight_bound_and_one_writer_give_the_same_tree(tmp_path, rel):
    root = tmp_path / "root"
    r = stream(root, urls_file(tmp_path, rel, "file://" + str(rel.out)), "--in-flight", "1",
               "--jobs", "1", "train", "val", "test")
    assert r.returncode == 0, r.stderr
    check_tree(root, rel)


# ----------------------------------------------------------------------------- review 2

def test_without_a_manifest_a_damaged_class_is_compared_by_its_bytes(tmp_path, rel, server):
    """--no-manifest: the records hold no SHA-256. After a wrong MD5 the re-read must still
    prove each class on disk by its bytes: a late image damaged in transit (same size) was
    kept as 'the same' by its names and sizes, and train marked done with it."""
    archive = rel.archives["train"]
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(flip_at=byte_of_class(archive, 35))
    r = stream(root, urls, "--no-manifest", "train")
    assert r.returncode == 1 and "but MD5_train in %s says" % urls in r.stderr, r.stderr
    server.set_faults()
    r = stream(root, urls, "--no-manifest", "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expected_train(archive)
    assert "40 classes written before were compared with the bytes read now: 39 the same (kept), " \
        "1 different (replaced)" in r.stderr, r.stderr


def test_a_checkpoint_nested_too_deep_is_ignored_with_a_note(tmp_path, rel):
    root = tmp_path / "root"
    (root / ".01_unzip").mkdir(parents=True)
    (root / ".01_unzip" / "stream-val.json").write_text("[" * 100_000)
    r = stream(root, urls_file(tmp_path, rel, "file://" + str(rel.out), ("val",)), "val")
    assert r.returncode == 0, r.stderr
    assert "ignoring %s" % (root / ".01_unzip" / "stream-val.json") in r.stderr, r.stderr
    check_tree(root, rel, ("val",))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_local_link_to_something_else_than_a_file_is_said_so(tmp_path, rel, kind):
    served = tmp_path / "served"
    served.mkdir()
    path = served / rel.archives["val"].name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    root = tmp_path / "root"
    r = stream(root, urls_file(tmp_path, rel, "file://" + str(served), ("val",)), "val", timeout=60)
    assert r.returncode == 1, r.stderr
    assert "is not a regular file (%s)" % ("a FIFO" if kind == "fifo" else "a character device") \
        in r.stderr, r.stderr
    assert "does not exist" not in r.stderr


@pytest.mark.parametrize("split", ["train", "val"])
def test_the_spool_counted_by_the_preflight_is_at_most_what_is_left(tmp_path, rel, server, split):
    """--connections N: the spool holds at most 2N windows of what is left to fetch, never more
    than that; a small archive on a small disk was refused for N x 128 MiB it would never use."""
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, (split,))
    with small_tmpfs(tmp_path / "small", "size=24m") as small:
        r = stream(small, urls, "--connections", "4", split)
        assert r.returncode == 0, r.stderr
        check_tree(small, rel, (split,))


def test_the_preflight_of_val_counts_the_spool_too(tmp_path, rel, server):
    """val and test over --connections N need room for the spool as train does: a disk with room
    for the tree alone is refused before anything is written, not filled halfway."""
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("val",))
    with small_tmpfs(tmp_path / "small", "size=1m") as small:
        r = stream(small, urls, "--connections", "4", "val")
        assert r.returncode == 1
        assert "val: not enough free space in %s" % small in r.stderr, r.stderr
        assert not (small / ".val.tmp-stream").exists() or not list((small / ".val.tmp-stream").iterdir())


def test_classes_written_without_a_manifest_are_proven_by_content_by_a_run_with_one(tmp_path, rel,
                                                                                    server):
    """A stream stopped with --no-manifest, resumed without it: the classes on disk after the
    checkpoint hold no hashes in their records; they are compared by their files' contents
    (the same: kept), not replaced as 'different' for want of a hash."""
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(rate=300_000)
    proc = start(root, urls, "--no-manifest", "train")
    kill_when(proc, lambda: (saved(root, "train") or {}).get("offset", 0) > 0
              and sum(1 for p in (root / "train").iterdir() if not p.name.startswith(".")) >
              len(saved(root, "train")["extra"]["classes"]) + 1, "classes past the checkpoint")
    server.set_faults()
    r = stream(root, urls, "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expected_train(rel.archives["train"])
    assert re.search(r"(\d+) classes written before were compared with the bytes read now: \1 the "
                     r"same \(kept\), 0 different", r.stderr), r.stderr


def test_a_reread_from_byte_0_needs_room_for_a_few_classes_not_the_whole_archive(tmp_path, rel,
                                                                                server):
    """After a wrong MD5 the tree is on disk and the re-read writes each class again beside it,
    then keeps one copy: it needs room for the classes in the writers' hands, not for the whole
    archive again (the preflight refused it on a disk the tree fills, forever)."""
    archive = rel.archives["train"]
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    with small_tmpfs(tmp_path / "small", "size=5500k") as small:
        server.set_faults(flip_at=byte_of_class(archive, 35))
        r = stream(small, urls, "--in-flight", "1", "train")
        assert r.returncode == 1 and "but MD5_train in %s says" % urls in r.stderr, r.stderr
        assert shutil.disk_usage(small).free < archive.stat().st_size
        server.set_faults()
        r = stream(small, urls, "--in-flight", "1", "train")
        assert r.returncode == 0, r.stderr
        check_tree(small, rel, ("train",))
        assert "39 the same (kept), 1 different (replaced)" in r.stderr, r.stderr


def test_a_checkpoint_of_a_stream_without_verify_is_said_so_by_one_with_it(tmp_path, rel, server):
    root = tmp_path / "root"
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(rate=300_000)
    proc = start(root, urls, "--no-verify", "train")
    kill_when(proc, lambda: (saved(root, "train") or {}).get("offset", 0) > 0, "first checkpoint")
    server.set_faults()
    r = stream(root, urls, "train")
    assert r.returncode == 0, r.stderr
    assert "(it was saved by a stream with --no-verify, without the MD5 state this one needs); " \
        "reading the archive from its start" in r.stderr, r.stderr
    check_tree(root, rel, ("train",))
    assert "MD5 %s verified" % rel.md5["train"] in r.stderr


def test_sighup_stops_the_stream_with_129_and_nohup_keeps_it_going(tmp_path, rel, server):
    """The terminal closes (SIGHUP): the stream stops as for SIGTERM, exit 129, and a rerun goes
    on; under nohup (SIGHUP ignored) it is not stopped."""
    urls = urls_file(tmp_path, rel, "http://127.0.0.1:%d" % server.port, ("train",))
    server.set_faults(rate=200_000)
    root = tmp_path / "a"
    proc = start(root, urls, "train")
    try:
        deadline = time.monotonic() + 30
        while (saved(root, "train") or {}).get("offset", 0) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGHUP)
        assert proc.wait(timeout=30) == 129
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    server.set_faults()
    r = stream(root, urls, "train")
    assert r.returncode == 0 and "resuming the stream" in r.stderr, r.stderr
    server.set_faults(rate=500_000)
    (tmp_path / "b").mkdir()
    hup = run(["nohup", "bash", "-c", '(sleep 1; kill -HUP $$) & exec bash "$0" "$@"', UNZIP,
               "--root", tmp_path / "b", "--stream", "--urls", urls, "train"], env=env(),
              cwd=tmp_path)
    assert hup.returncode == 0, hup.stderr
    assert (tmp_path / "b" / ".01_unzip" / "train.done").is_file()
