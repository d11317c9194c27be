"""01_unzip.sh --stream: from a link straight into the tree, over real curl and a loopback server.

Every run ends in exactly the tree 00_download.sh + 01_unzip.sh make (same markers, same manifest)
or in a clear error with nothing marked done; no archive is ever stored under ROOT.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import minirelease
from conftest import REPO, run
from httpserver import FaultServer
from test_01_unzip import expected_flat, expected_train, files

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
