"""Tests for 00_download.sh: real curl against a loopback server (tests/httpserver.py) and file://.

Every fault ends in a bit-identical file or a clear error, never a wrong file under the final name.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, run, small_tmpfs
from httpserver import FaultServer

# TEST_00_SCRIPT=/tmp/old_00_download.sh runs these tests against another version of the script
# (e.g. to see a new test fail on the code before a fix)
SCRIPT = Path(os.environ.get("TEST_00_SCRIPT", REPO / "00_download.sh"))
VAL = "ILSVRC2012_img_val.tar"
TRAIN = "ILSVRC2012_img_train.tar"
TOKEN = "s3cr3t-T0KEN"
FAST = {  # short pauses and stall detection so faults resolve in seconds
    "DOWNLOAD_RETRY_DELAY": "0.05", "DOWNLOAD_RETRY_DELAY_MAX": "0.2",
    "DOWNLOAD_SPEED_TIME": "2", "DOWNLOAD_SPEED_LIMIT": "1000",
    "DOWNLOAD_CONNECT_TIMEOUT": "3", "DOWNLOAD_PROGRESS_POLL": "0.2", "DOWNLOAD_MIN_SEGMENT": "65536",
}


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOWNLOAD_", "MD5_", "SIZE_", "IMAGENET_"))}
    env.update(FAST)
    env.update(extra)
    return env


def write_urls(path: Path, **vars_) -> Path:
    path.write_text("".join('%s="%s"\n' % kv for kv in vars_.items()))
    return path


def dl(root: Path, urls: Path, *args, env=None, timeout=60, script=SCRIPT):
    cmd = [script, "--root", root, "--urls", urls, *args]
    r = run(cmd, timeout=timeout, env=env or clean_env())
    assert TOKEN not in r.stdout + r.stderr, "a full URL (with its token) was printed"
    return r


@pytest.fixture
def blob(tmp_path) -> Path:
    """A 3 MB archive stand-in under the val name, random bytes."""
    src = tmp_path / "src"
    src.mkdir()
    p = src / VAL
    p.write_bytes(random.Random(1).randbytes(3_000_000))
    return p


@pytest.fixture
def server(blob):
    srv = FaultServer(blob.parent).start()
    yield srv
    srv.stop()


def val_urls(tmp_path: Path, srv: FaultServer, blob: Path, **more) -> Path:
    return write_urls(tmp_path / "urls.sh",
                      DOWNLOAD_URL_val=srv.url(blob.name) + "?token=" + TOKEN,
                      MD5_val=md5(blob), **more)


def final_ok(root: Path, blob: Path) -> bool:
    f = root / "downloads" / blob.name
    return f.is_file() and f.read_bytes() == blob.read_bytes()


def no_final(root: Path, name: str = VAL) -> bool:
    return not (root / "downloads" / name).exists()


def piece_files(dl_dir: Path, name: str = VAL) -> list[Path]:
    """The piece files NAME.part.START-END (not NAME.part.md5state, the saved MD5 state)."""
    return [f for f in dl_dir.glob(name + ".part.*")
            if re.fullmatch(r"[0-9]+-[0-9]+", f.name.rsplit(".", 1)[1])]


def bytes_on_disk(root: Path) -> int:
    """Bytes of the file already on disk: NAME.part up to the first piece (a kill during a join
    can leave a piece both appended and still there), plus the piece files."""
    dl_dir = root / "downloads"
    pieces = [(int(f.name.rsplit(".", 1)[1].split("-")[0]), f.stat().st_size)
              for f in piece_files(dl_dir)]
    part = dl_dir / (VAL + ".part")
    have = part.stat().st_size if part.exists() else 0
    if pieces:
        have = min(have, min(pieces)[0])
    return have + sum(size for _, size in pieces)


# --- usage -----------------------------------------------------------------------------------------

def test_help_lists_options_and_defaults():
    r = run([SCRIPT, "--help"])
    assert r.returncode == 0
    for s in ("--root", "--urls", "--connections", "--no-verify", "default: 1", "urls.sh.example",
              "already done", "DOWNLOAD_URL_devkit_t12", "N from 1 to 32"):
        assert s in " ".join(r.stdout.split())


@pytest.mark.parametrize("args, msg", [
    (["--bogus", "val"], "unknown option '--bogus'"),
    (["valid"], "unknown split: valid"),
    ([], "no SPLIT given"),
    (["--connections", "0", "val"], "--connections must be"),
    (["--connections", "x", "val"], "--connections must be"),
])
def test_usage_errors_exit_2(args, msg):
    r = run([SCRIPT, *args], env=clean_env())
    assert r.returncode == 2
    assert msg in r.stderr and "usage" in r.stderr.lower()


def copy_repo(dest: Path) -> Path:
    """The unit a user copies: the repository folder (the script, imagenet_prep/, the example)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, dest / SCRIPT.name)
    shutil.copytree(REPO / "imagenet_prep", dest / "imagenet_prep",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "urls.sh.example", dest / "urls.sh.example")
    return dest / SCRIPT.name


def test_copied_alone_says_the_package_is_missing(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(SCRIPT, job / SCRIPT.name)
    for args in (["val"], ["--help"]):
        r = run([job / SCRIPT.name, "--root", tmp_path / "data", *args], cwd=job, env=clean_env())
        assert r.returncode == 1
        assert ("needs the folder imagenet_prep/ beside it (%s is missing): copy or clone the whole "
                "repository folder" % (job / "imagenet_prep")) in r.stderr
    assert not (tmp_path / "data").exists()
    script = copy_repo(tmp_path / "repo")
    (tmp_path / "repo" / "imagenet_prep" / "transport.py").unlink()
    r = run([script, "val"], cwd=tmp_path, env=clean_env())
    assert r.returncode == 1
    assert "%s is missing" % (tmp_path / "repo" / "imagenet_prep" / "transport.py") in r.stderr


def test_without_python3_it_says_so(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the tools of the shell part, but no python3
    bin_dir.mkdir()
    for tool in ("curl", "md5sum", "flock", "awk", "stat", "mktemp", "rm", "mkdir", "df", "sleep"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    r = run([shutil.which("bash"), SCRIPT, "--root", tmp_path / "data", "val"],
            env=clean_env(PATH=str(bin_dir)))
    assert r.returncode == 1
    assert "need 'python3' (not found in PATH)" in r.stderr and "imagenet_prep/" in r.stderr


def test_the_package_beside_the_script_is_used_whatever_the_current_folder_holds(tmp_path, blob):
    """python3 runs isolated (-I): an imagenet_prep/ in the current folder or on PYTHONPATH (another
    copy of the repository, say) never stands in for the one beside the script."""
    rogue = tmp_path / "elsewhere" / "imagenet_prep"
    rogue.mkdir(parents=True)
    (rogue / "__init__.py").write_text("raise SystemExit('the wrong imagenet_prep was imported')\n")
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=blob.as_uri(), MD5_val=md5(blob))
    r = run([SCRIPT, "--root", tmp_path / "root", "--urls", urls, "val"], cwd=rogue.parent,
            env=clean_env(PYTHONPATH=str(rogue.parent)))
    assert r.returncode == 0, r.stderr
    assert final_ok(tmp_path / "root", blob)


def test_missing_urls_file_says_copy_the_example(tmp_path):
    job = tmp_path / "job"  # the repository folder copied into a job folder
    script = copy_repo(job)
    r = run([script, "--root", tmp_path / "data", "val"], cwd=job, env=clean_env())
    assert r.returncode == 1
    assert "no urls.sh found" in r.stderr and "cp " in r.stderr and "urls.sh.example" in r.stderr
    assert not (tmp_path / "data").exists()
    r = run([script, "--urls", tmp_path / "nope.sh", "val"], cwd=job, env=clean_env())
    assert r.returncode == 1 and "nope.sh: no such file" in r.stderr


@pytest.mark.parametrize("content", ["", 'DOWNLOAD_URL_val=""\n', "# DOWNLOAD_URL_val=x\n"])
def test_unset_or_empty_variable(tmp_path, content):
    urls = tmp_path / "urls.sh"
    urls.write_text('DOWNLOAD_URL_train="file:///x/ILSVRC2012_img_train.tar"\n' + content)
    r = dl(tmp_path / "root", urls, "train", "val")
    assert r.returncode == 1
    assert "DOWNLOAD_URL_val is not set (or empty)" in r.stderr
    assert not (tmp_path / "root" / "downloads").exists()  # checked before anything is fetched


def test_no_checksum_known_needs_no_verify(tmp_path, blob):
    other = blob.parent / "mirror_copy.tar"
    shutil.copy(blob, other)
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=other.as_uri())
    root = tmp_path / "root"
    r = dl(root, urls, "val")
    assert r.returncode == 1
    assert "no checksum known for mirror_copy.tar" in r.stderr and "--no-verify" in r.stderr
    r = dl(root, urls, "--no-verify", "val")
    assert r.returncode == 0, r.stderr
    assert (root / "downloads" / "mirror_copy.tar").read_bytes() == blob.read_bytes()
    assert "MD5 not checked" in r.stderr


# --- happy paths -----------------------------------------------------------------------------------

def test_all_splits_over_file_urls_then_rerun_is_already_done(tmp_path, release):
    a = release.archives
    urls = write_urls(tmp_path / "urls.sh",
                      DOWNLOAD_URL_train=a["train"].as_uri(), MD5_train=release.md5["train"],
                      DOWNLOAD_URL_val=a["val"].as_uri(), MD5_val=release.md5["val"],
                      DOWNLOAD_URL_test=a["test"].as_uri(), MD5_test=release.md5["test"],
                      DOWNLOAD_URL_devkit_t12=a["devkit"].as_uri(),
                      MD5_devkit_t12=release.md5["devkit"])
    root = tmp_path / "root"
    r = dl(root, urls, "all", "--connections", "4")  # file:// always uses one connection
    assert r.returncode == 0, r.stderr
    for split in ("train", "val", "test", "devkit"):
        got = root / "downloads" / a[split].name
        assert got.read_bytes() == a[split].read_bytes()
        assert (root / "downloads" / (a[split].name + ".md5")).read_text().split()[0] \
            == release.md5[split]
    assert sorted(p.name for p in (root / "downloads").iterdir() if "part" in p.name) == []
    # the rerun never reads the links: point them at nothing
    bad = write_urls(tmp_path / "gone.sh", **{k: "file:///nonexistent/" + a[s].name
                                              for k, s in [("DOWNLOAD_URL_train", "train"),
                                                           ("DOWNLOAD_URL_val", "val"),
                                                           ("DOWNLOAD_URL_test", "test"),
                                                           ("DOWNLOAD_URL_devkit_t12", "devkit")]},
                     MD5_train=release.md5["train"], MD5_val=release.md5["val"],
                     MD5_test=release.md5["test"], MD5_devkit_t12=release.md5["devkit"])
    r = dl(root, bad, "all")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already done") == 4


def test_environment_wins_over_urls_file(tmp_path, blob):
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val="file:///nonexistent/" + VAL,
                      MD5_val="0" * 32)
    env = clean_env(DOWNLOAD_URL_val=blob.as_uri(), MD5_val=md5(blob))
    root = tmp_path / "root"
    r = dl(root, urls, "val", env=env)
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_urls_found_beside_the_script_and_via_IMAGENET_URLS(tmp_path, blob):
    """"Beside the script" is the repository folder, wherever it was copied to."""
    job = tmp_path / "job"
    copy_repo(job)
    write_urls(job / "urls.sh", DOWNLOAD_URL_val=blob.as_uri(), MD5_val=md5(blob))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run([job / SCRIPT.name, "val"], cwd=elsewhere, env=clean_env(IMAGENET_ROOT=str(tmp_path / "r")))
    assert r.returncode == 0, r.stderr
    assert final_ok(tmp_path / "r", blob)
    (job / "urls.sh").rename(tmp_path / "mine.sh")
    r = run([job / SCRIPT.name, "val"], cwd=elsewhere,
            env=clean_env(IMAGENET_ROOT=str(tmp_path / "r2"), IMAGENET_URLS=str(tmp_path / "mine.sh")))
    assert r.returncode == 0, r.stderr
    assert final_ok(tmp_path / "r2", blob)


@pytest.mark.parametrize("connections", [1, 4])
def test_http_download_then_rerun_without_network(tmp_path, blob, server, connections):
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=2_500_000)
    r = dl(root, urls, "val", "--connections", str(connections))
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert server.bytes_sent() == blob.stat().st_size  # each byte fetched exactly once
    starts = sorted(g.start for g in server.get_requests())
    assert len(starts) % connections == 0  # whole rounds of pieces, one request each
    assert "127.0.0.1:%d" % server.port in r.stderr
    assert re.search(r"\(\d+%\)", r.stderr)  # progress lines
    assert "\r" not in r.stderr  # no carriage-return flood in a log
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [VAL, VAL + ".md5"]
    server.stop()
    r = dl(root, urls, "val")
    assert r.returncode == 0 and "already done" in r.stderr


# --- faults that must end in a bit-identical file --------------------------------------------------

def test_cut_connections_resume_without_refetching(tmp_path, blob, server):
    server.set_faults(cut_after=400_000, cut_times=5)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    gets = server.get_requests()
    assert [g.start for g in gets] == [i * 400_000 for i in range(6)]
    assert server.bytes_sent() == blob.stat().st_size


def test_cut_connections_segmented(tmp_path, blob, server):
    server.set_faults(cut_after=150_000, cut_times=8)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", "3")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert server.bytes_sent() == blob.stat().st_size


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_for_a_while_then_ok(tmp_path, blob, server, status):
    server.set_faults(fail_status=status, fail_count=3)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_server_errors_for_too_long_give_up_with_message(tmp_path, blob, server):
    server.set_faults(fail_status=503, fail_count=1000)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--retries", "3")
    assert r.returncode == 1
    assert "giving up" in r.stderr and "HTTP 503" in r.stderr and "Rerun" in r.stderr
    assert no_final(root)


def test_stall_is_detected_and_resumed(tmp_path, blob, server):
    server.set_faults(stall_after=1_000_000, stall_seconds=30, stall_times=1)
    root = tmp_path / "root"
    t0 = time.monotonic()
    r = dl(root, val_urls(tmp_path, server, blob), "val",
           env=clean_env(DOWNLOAD_SPEED_TIME="1"))
    assert r.returncode == 0, r.stderr
    assert "retrying" in r.stderr and "(28)" in r.stderr
    assert time.monotonic() - t0 < 25  # not waiting out the 30 s stall
    assert final_ok(root, blob)
    assert [g.start for g in server.get_requests()] == [0, 1_000_000]
    assert server.bytes_sent() == blob.stat().st_size


@pytest.mark.parametrize("connections", [1, 3])
def test_server_ignoring_range_never_duplicates_a_prefix(tmp_path, blob, server, connections):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    part = root / "downloads" / (VAL + ".part")
    part.write_bytes(blob.read_bytes()[:1_234_567])  # an earlier, interrupted run
    server.set_faults(ignore_range=True)
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", str(connections))
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert "starting over" in r.stderr or "from the start" in r.stderr


def test_complete_part_and_416_from_a_server_hiding_the_size(tmp_path, blob, server):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    shutil.copy(blob, root / "downloads" / (VAL + ".part"))  # killed just before the rename
    server.set_faults(hide_length=True)
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert server.bytes_sent() == 0
    assert [g.status for g in server.get_requests()] == [416]


def test_complete_part_with_known_size_skips_the_network(tmp_path, blob, server):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    shutil.copy(blob, root / "downloads" / (VAL + ".part"))
    urls = val_urls(tmp_path, server, blob, SIZE_val=str(blob.stat().st_size))
    server.stop()
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_resume_after_sigkill_refetches_zero_bytes(tmp_path, blob, server):
    for connections in ("1", "3"):
        root = tmp_path / ("root" + connections)
        server.set_faults(rate=1_000_000)
        server.reset_log()
        urls = val_urls(tmp_path, server, blob)
        mark = "run-%d" % random.randrange(10 ** 12)
        p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val",
                              "--connections", connections],
                             env=clean_env(TEST_RUN_MARK=mark), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while server.bytes_sent() < 800_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        # curl dies with the script (PR_SET_PDEATHSIG): nothing of the run is left
        deadline = time.monotonic() + 5
        while run_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run_processes(mark) == []
        time.sleep(0.3)  # let the server notice the closed connections
        have = bytes_on_disk(root)
        assert 0 < have < blob.stat().st_size
        assert no_final(root)
        server.set_faults()
        server.reset_log()
        r = dl(root, urls, "val", "--connections", connections)
        assert r.returncode == 0, r.stderr
        assert final_ok(root, blob)
        assert server.bytes_sent() == blob.stat().st_size - have  # 0 bytes fetched twice


def test_sigterm_stops_curl_too_and_a_rerun_continues(tmp_path, blob, server):
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=500_000)
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val", "--connections", "3"],
                         env=clean_env(TEST_RUN_MARK=mark), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while server.bytes_sent() < 500_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)  # the script alone, as a batch system would
    _, err = p.communicate(timeout=10)
    assert p.returncode == 143 and "rerun the same command to continue" in err
    assert not (root / "downloads" / (VAL + ".lock")).exists(), err  # removed, as the README says
    assert run_processes(mark) == []
    time.sleep(0.5)
    sent = server.bytes_sent()
    time.sleep(0.5)
    assert server.bytes_sent() == sent  # no curl left running
    have = bytes_on_disk(root)
    server.set_faults()
    server.reset_log()
    r = dl(root, urls, "val", "--connections", "3")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert server.bytes_sent() == blob.stat().st_size - have


def test_the_link_never_appears_on_a_command_line(tmp_path, blob, server):
    server.set_faults(rate=1_000_000)
    p = subprocess.Popen([SCRIPT, "--root", tmp_path / "root", "--urls",
                          val_urls(tmp_path, server, blob), "val", "--connections", "2"],
                         env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_curl = 0
    while p.poll() is None:
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert TOKEN.encode() not in cmd, cmd  # what `ps` shows to every user
            seen_curl += cmd.startswith(b"curl\0")
        time.sleep(0.05)
    assert p.returncode == 0 and seen_curl > 0


def test_interrupted_join_is_repaired_without_fetching_again(tmp_path, blob, server):
    data = blob.read_bytes()
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    # killed while appending the piece at 1,000,000 to NAME.part; the last piece half fetched
    (dl_dir / (VAL + ".part")).write_bytes(data[:1_300_000])
    (dl_dir / (VAL + ".part.1000000-2000000")).write_bytes(data[1_000_000:2_000_000])
    (dl_dir / (VAL + ".part.2000000-3000000")).write_bytes(data[2_000_000:2_500_000])
    r = dl(tmp_path / "root", val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(tmp_path / "root", blob)
    assert [(g.start, g.sent) for g in server.get_requests()] == [(2_500_000, 500_000)]


def test_pieces_that_do_not_fit_the_size_are_refused(tmp_path, blob, server):
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    (dl_dir / (VAL + ".part")).write_bytes(b"")
    (dl_dir / (VAL + ".part.1000000-4000000")).write_bytes(b"x" * 10)  # file was 4 MB then
    r = dl(tmp_path / "root", val_urls(tmp_path, server, blob), "val", "--connections", "2")
    assert r.returncode == 1
    assert "do not fit a file of 3000000 bytes" in r.stderr and "remove only the pieces" in r.stderr
    assert no_final(tmp_path / "root") and server.bytes_sent() == 0


def _kill_loop(tmp_path, blob, server, kills: int, rate: float, max_delay: float) -> None:
    rng = random.Random(kills)
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=rate)
    size = blob.stat().st_size
    done = 0
    for _ in range(kills):
        conns = rng.choice(["1", "2", "4"])
        p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val", "--connections", conns],
                             env=clean_env(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, max_delay))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        final = root / "downloads" / VAL
        if final.exists():  # only ever complete and verified under the final name
            assert final.read_bytes() == blob.read_bytes()
            done += 1
    server.set_faults()
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert not list((root / "downloads").glob("*.part*"))
    # bytes lost in flight at a kill are the only ones fetched twice
    assert server.bytes_sent() <= size + kills * 4 * 256 * 1024


def test_sigkill_twenty_times_at_random_moments(tmp_path, blob, server):
    _kill_loop(tmp_path, blob, server, kills=20, rate=250_000, max_delay=0.6)


@pytest.mark.slow
def test_sigkill_sixty_times_at_random_moments(tmp_path, blob, server):
    _kill_loop(tmp_path, blob, server, kills=60, rate=150_000, max_delay=1.0)


# --- faults that must end in a clear error, nothing under the final name ----------------------------

@pytest.mark.parametrize("status", [401, 403, 404])
def test_http_auth_and_missing_errors(tmp_path, blob, server, status):
    server.set_faults(status=status)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 1
    assert "HTTP %d" % status in r.stderr and "link may have expired" in r.stderr
    assert "DOWNLOAD_URL_val" in r.stderr and "Maximum file size" not in r.stderr
    assert no_final(root)
    r = dl(root, val_urls(tmp_path, server, blob), "val")  # at once: no helper holds the lock
    assert r.returncode == 1 and "HTTP %d" % status in r.stderr
    assert list((root / "downloads").iterdir()) == []


def test_unreachable_host(tmp_path, blob):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    urls = write_urls(tmp_path / "urls.sh",
                      DOWNLOAD_URL_val="http://127.0.0.1:%d/%s?t=%s" % (port, VAL, TOKEN),
                      MD5_val=md5(blob))
    root = tmp_path / "root"
    r = dl(root, urls, "val", "--retries", "2")
    assert r.returncode == 1
    assert "giving up" in r.stderr and "unreachable" in r.stderr
    assert no_final(root)


def test_server_lying_about_length(tmp_path, blob, server):
    server.set_faults(extra_length=1000)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 1
    assert "misreports" in r.stderr
    assert no_final(root)


def test_size_differs_from_the_official_one(tmp_path, release):
    src = release.archives["train"]  # the official name with other bytes, and no MD5 override
    srv = FaultServer(src.parent).start()
    try:
        urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_train=srv.url(TRAIN))
        root = tmp_path / "root"
        r = dl(root, urls, "train")
        assert r.returncode == 1
        assert "reports %d bytes" % release.sizes["train"] in r.stderr
        assert "147897477120" in r.stderr and "official size" in r.stderr
        assert srv.bytes_sent() == 0 and no_final(root, TRAIN)
    finally:
        srv.stop()


def test_checksum_mismatch_sets_the_file_aside(tmp_path, blob, server):
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    urls.write_text(urls.read_text().replace(md5(blob), "0123456789abcdef0123456789abcdef"))
    r = dl(root, urls, "val")
    assert r.returncode == 1
    assert "checksum mismatch" in r.stderr and "0123456789abcdef0123456789abcdef" in r.stderr
    assert md5(blob) in r.stderr and "val" in r.stderr and "Rerun" in r.stderr
    assert no_final(root)
    bad = root / "downloads" / (VAL + ".bad")
    assert bad.read_bytes() == blob.read_bytes()
    r = dl(root, val_urls(tmp_path, server, blob), "val")  # fixed checksum: downloads again
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_existing_wrong_final_file_is_left_alone(tmp_path, blob, server):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    final = root / "downloads" / VAL
    final.write_bytes(b"not the archive")
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 1
    assert "exists but its MD5 is" in r.stderr and "mv " in r.stderr
    assert final.read_bytes() == b"not the archive"
    assert server.bytes_sent() == 0


def test_not_enough_disk_space_is_refused_before_fetching(tmp_path, blob, server):
    server.set_faults(extra_length=10 ** 14)  # claims 100 TB
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 1
    assert "not enough free space in %s" % (root / "downloads") in r.stderr
    assert "TiB to write" in r.stderr
    assert server.bytes_sent() == 0 and no_final(root)


def test_disk_full_while_writing(tmp_path, blob, server):
    with small_tmpfs(tmp_path / "small", "size=1m") as mnt:
        server.set_faults(hide_length=True)  # size unknown: the preflight cannot see it coming
        r = dl(mnt, val_urls(tmp_path, server, blob), "val")
        assert r.returncode == 1
        assert "the disk is full" in r.stderr and "free some space there" in r.stderr
        assert "cannot write to %s," % (mnt / "downloads") in r.stderr
        assert no_final(mnt)


def test_lock_stops_a_second_downloader(tmp_path, blob, server):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    with open(root / "downloads" / (VAL + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 1
    assert "already downloading" in r.stderr
    assert server.bytes_sent() == 0 and no_final(root)


# --- hardening (issue 10): never trust a number, a page or a line from outside -----------------------

# bash runs the $( ) when it evaluates this in (( )) (an array that always exists, so that set -u
# does not stop it first)
HOSTILE = "1000+0*BASH_VERSINFO[$(touch %s)]"


def run_states(mark: str) -> dict:
    """{pid: (state, program)} of the live processes (not zombies) of a run started with
    TEST_RUN_MARK=mark in its environment: the script, its subshells, curl and helpers, even once
    orphaned."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            environ = (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            program = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile
        if ("TEST_RUN_MARK=%s" % mark).encode() in environ.split(b"\0") and state != "Z":
            found[int(d.name)] = (state, program)
    return found


def run_processes(mark: str) -> list:
    return sorted(run_states(mark))


def kill_run(mark: str) -> None:
    """Clean-up for a test that fails: stop what is left of a marked run (by pid)."""
    for pid in run_processes(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("faults", [{}, {"redirect": True}, {"head_status": 405}],
                         ids=["direct", "after-redirect", "ranged-get"])
def test_hostile_content_length_runs_nothing(tmp_path, blob, server, faults):
    """Item 1: a Content-Length that bash would evaluate as code is refused, never evaluated."""
    marker = tmp_path / "pwned"
    server.set_faults(content_length=HOSTILE % marker, **faults)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert not marker.exists(), "a header from the server ran a command"
    assert r.returncode == 1
    assert "sent a Content-Length that is not a number" in r.stderr
    assert "$(" not in r.stderr and "touch" not in r.stderr  # the value is not echoed either
    assert no_final(root) and not (root / "downloads" / (VAL + ".part")).exists()
    if faults.get("redirect"):
        assert any(q.name == "r/" + VAL for q in server.requests)  # curl -L did follow it


@pytest.mark.parametrize("var, args", [
    ("DOWNLOAD_PROGRESS_STEP", []),
    ("DOWNLOAD_MIN_SEGMENT", ["--connections", "2"]),
    ("DOWNLOAD_SPEED_LIMIT", []),
    ("DOWNLOAD_RETRY_DELAY", []),
])
def test_hostile_numbers_in_the_environment_run_nothing(tmp_path, blob, server, var, args):
    """Item 1: tuning knobs are checked before any arithmetic, and named when wrong."""
    marker = tmp_path / "pwned"
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", *args,
           env=clean_env(**{var: HOSTILE % marker}))
    time.sleep(0.3)  # a background helper of the old code needed a moment
    assert not marker.exists(), "a value from the environment ran a command"
    assert r.returncode == 1
    assert "%s in the environment must be" % var in r.stderr
    assert server.bytes_sent() == 0 and no_final(root)


@pytest.mark.parametrize("value, ok", [
    ("3,000,000", True), ("3_000_000", True), ("0003000000", True),
    ("2.9MB", False), ("abc", False), ("3,00,000", False), ("-3000000", False),
    ("1" * 19, "more than 1 PiB"), (HOSTILE, False),
])
def test_size_setting_is_checked(tmp_path, blob, server, value, ok):
    """Item 3: SIZE_<split> is digits (grouped by , or _ if you like); anything else is named."""
    marker = tmp_path / "pwned"
    urls = tmp_path / "urls.sh"
    urls.write_text("DOWNLOAD_URL_val='%s'\nMD5_val='%s'\nSIZE_val='%s'\n"
                    % (server.url(VAL) + "?token=" + TOKEN, md5(blob),
                       value % marker if "%s" in value else value))
    root = tmp_path / "root"
    r = dl(root, urls, "val")
    assert not marker.exists()
    if ok is True:
        assert r.returncode == 0, r.stderr
        assert final_ok(root, blob)
    else:
        assert r.returncode == 1
        said = ok or "is not a size in bytes"       # a number too large is said as such
        assert "SIZE_val in %s " % urls in r.stderr and said in r.stderr, r.stderr
        assert server.bytes_sent() == 0 and not (root / "downloads").exists()


def test_md5_setting_that_is_not_an_md5_is_named_not_shown(tmp_path, blob, server):
    """Item 3: a link pasted into MD5_val by mistake is refused without printing it."""
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=server.url(VAL),
                      MD5_val=server.url(VAL) + "?token=" + TOKEN)
    r = dl(tmp_path / "root", urls, "val")  # dl() checks that the token is not printed
    assert r.returncode == 1
    assert "MD5_val in %s is not an MD5 (32 hex digits" % urls in r.stderr


@pytest.mark.parametrize("verify", [True, False], ids=["md5", "no-verify"])
def test_head_saying_zero_bytes_does_not_fool_it(tmp_path, blob, server, verify):
    """Item 2: "Content-Length: 0" to a HEAD: the size is asked with a GET; the file arrives."""
    server.set_faults(head_length=0)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", *([] if verify else ["--no-verify"]))
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


@pytest.mark.parametrize("verify", [True, False], ids=["md5", "no-verify"])
def test_an_empty_file_is_an_error_not_done(tmp_path, blob, server, verify):
    """Item 2: 0 bytes is never "done", and no .bad is announced for a file that never existed."""
    (blob.parent / "empty.tar").write_bytes(b"")
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=server.url("empty.tar"),
                      MD5_val=hashlib.md5(b"").hexdigest())
    root = tmp_path / "root"
    r = dl(root, urls, "val", *([] if verify else ["--no-verify"]))
    assert r.returncode == 1
    assert "sent no bytes for empty.tar" in r.stderr and "done:" not in r.stderr
    assert ".bad" not in r.stderr
    assert sorted(p.name for p in (root / "downloads").iterdir()) == []


@pytest.mark.parametrize("login", ["page", "redirect", "disguised"])
@pytest.mark.parametrize("verify", [True, False], ids=["md5", "no-verify"])
def test_a_login_page_is_not_taken_for_the_archive(tmp_path, blob, server, login, verify):
    """Item 4: HTML (by its type or its first bytes) is "the link answered with a web page"."""
    server.set_faults(login=login)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", *([] if verify else ["--no-verify"]))
    assert r.returncode == 1
    assert "the link answered with a web page (HTML)" in r.stderr
    assert "expired" in r.stderr and "log in" in r.stderr
    assert "checksum" not in r.stderr and "MD5_val=" not in r.stderr
    left = sorted(p.name for p in (root / "downloads").iterdir())
    assert left in ([], [VAL + ".html"])  # nothing under the archive's name, nor a .part to resume
    if left:
        assert b"<html>" in (root / "downloads" / left[0]).read_bytes()


def write_01_marker(root: Path, split: str, archive: str) -> None:
    """ROOT/.01_unzip/<split>.done as 01_unzip.sh writes it (json.dump, indent=1, sort_keys)."""
    state = root / ".01_unzip"
    state.mkdir(parents=True, exist_ok=True)
    doc = {"archive": archive, "archive_size": 3_000_000, "bytes": 2_900_000, "images": 50_000}
    (state / (split + ".done")).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def test_archive_removed_after_01_extracted_it_is_already_done(tmp_path, blob, server):
    """Item 5: after 01_unzip.sh --remove-archive, a rerun does not fetch 147 GB again."""
    root = tmp_path / "root"
    (root / "val").mkdir(parents=True)
    write_01_marker(root, "val", VAL)
    urls = val_urls(tmp_path, server, blob)
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert ("val: already done (extracted into %s by 01_unzip.sh; the archive is not kept)"
            % (root / "val")) in r.stderr
    assert server.requests == [] and no_final(root)
    # the marker names another archive, or the folder is gone: it does not count
    write_01_marker(root, "val", "ILSVRC2012_img_val_other.tar")
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob) and "extracted into" not in r.stderr
    other = tmp_path / "other"
    write_01_marker(other, "val", VAL)
    r = dl(other, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(other, blob) and "extracted into" not in r.stderr


def test_server_ignoring_range_again_and_again_starts_over_each_time(tmp_path, blob, server):
    """Item 6: every "ignored the range, starting over" is followed, not only the first."""
    server.set_faults(ignore_range=True, cut_after=1_000_000, cut_times=4)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert r.stderr.count("starting over") == 2


def test_server_ignoring_range_forever_gives_up_after_retries(tmp_path, blob, server):
    """Item 6: --retries is honoured there too, and the run ends with an error line."""
    server.set_faults(ignore_range=True, cut_after=1_000_000)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--retries", "2")
    assert r.returncode == 1
    assert "error: val: 127.0.0.1:%d cannot resume (it ignores byte ranges)" % server.port in r.stderr
    assert "Giving up" in r.stderr and "--retries" in r.stderr
    # three tries from byte 0, each with one refused resume; before each of the two start-overs one
    # small GET looks at what a fresh start brings (C1: never discard the bytes for a web page)
    assert len(server.get_requests()) <= 8
    assert no_final(root)


def test_pieces_stop_at_their_end_when_the_server_sends_more(tmp_path, blob, server):
    """Item 7: a server that honours a range's start but not its end cannot grow a piece."""
    server.set_faults(range_no_end=True, rate=4_000_000)
    root = tmp_path / "root"
    dl_dir = root / "downloads"
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", val_urls(tmp_path, server, blob),
                          "val", "--connections", "3"],
                         env=clean_env(DOWNLOAD_MIN_SEGMENT="500000"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    over = 0
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        for f in piece_files(dl_dir):
            b, e = (int(x) for x in f.name.rsplit(".", 1)[1].split("-"))
            try:
                over = max(over, f.stat().st_size - (e - b))
            except FileNotFoundError:
                pass
        time.sleep(0.005)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert over <= 0, "a piece grew %d bytes past its end" % over
    assert final_ok(root, blob)
    assert any(q.range_header and not q.range_header.endswith("-") for q in server.get_requests())
    assert server.bytes_sent() < 2 * blob.stat().st_size  # the extra bytes were not taken


def test_pieces_are_used_when_the_link_changes_to_a_local_file(tmp_path, blob):
    """Item 8: an interrupted --connections run, then a file:// link: its pieces are used, and
    no piece file survives the success."""
    data = blob.read_bytes()
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    (dl_dir / (VAL + ".part")).write_bytes(data[:1_300_000])  # killed while joining
    (dl_dir / (VAL + ".part.1000000-2000000")).write_bytes(data[1_000_000:2_000_000])
    (dl_dir / (VAL + ".part.2000000-3000000")).write_bytes(data[2_000_000:2_500_000])
    # the local copy has zeros where the pieces already are: only a run that uses them succeeds
    local = tmp_path / "local" / VAL
    local.parent.mkdir()
    local.write_bytes(bytes(2_500_000) + data[2_500_000:])
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=local.as_uri(), MD5_val=md5(blob))
    r = dl(tmp_path / "root", urls, "val", "--connections", "4")
    assert r.returncode == 0, r.stderr
    assert final_ok(tmp_path / "root", blob)
    assert sorted(p.name for p in dl_dir.iterdir()) == [VAL, VAL + ".md5"]
    # a stray piece beside a finished file goes too
    (dl_dir / (VAL + ".part.2000000-3000000")).write_bytes(b"x")
    r = dl(tmp_path / "root", urls, "val")
    assert r.returncode == 0 and "already done" in r.stderr
    assert sorted(p.name for p in dl_dir.iterdir()) == [VAL, VAL + ".md5"]


def test_windows_line_endings_are_read_and_said(tmp_path, blob, server):
    """Item 9: urls.sh saved with CR LF works, is reported, and no raw CR is printed."""
    urls = tmp_path / "urls.sh"
    urls.write_bytes(('# my links\r\nDOWNLOAD_URL_val="%s?token=%s"\r\nMD5_val="%s"\r\n'
                      % (server.url(VAL), TOKEN, md5(blob))).encode())
    root = tmp_path / "root"
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert "Windows line endings" in r.stderr and "\r" not in r.stderr
    assert final_ok(root, blob)


@pytest.mark.parametrize("line, says", [
    ('DOWNLOAD_URL_val= "{url}"', "line 2: a space after DOWNLOAD_URL_val="),
    ("DOWNLOAD_URL_val={url}&sig=1", "line 2: DOWNLOAD_URL_val has an & outside quotes: a link "
                                     "with & in it must be quoted"),
    ('DOWNLOAD_URL_val = "{url}"', "line 2: spaces around the = after DOWNLOAD_URL_val"),
    ('"{url}"', "line 2: a link that is not assigned to a variable"),
    ("{url}", "line 2: a link that is not assigned to a variable"),
    ('echo "{url}"', "line 2: a link that is not assigned to a variable"),
    ("source ./more_links.sh", "line 2: not a NAME=\"value\" line"),
    ('DOWNLOAD_URL_val="{url}', "line 2: the \" after DOWNLOAD_URL_val= is not closed"),
    ("DOWNLOAD_URL_val='{url}", "line 2: the ' after DOWNLOAD_URL_val= is not closed"),
    ('DOWNLOAD_URL_val="{url}" x', "line 2: something after the value of DOWNLOAD_URL_val"),
    ('DOWNLOAD_URL_val="$(echo {url})"', "line 2: DOWNLOAD_URL_val has a $ or ` inside double"),
    ('DOWNLOAD_URL_val="{url}"\rx', "line 2: a control character"),
    ("DOWNLOAD_URL_val=\u201c{url}\u201d", "line 2: DOWNLOAD_URL_val starts with a typographic quote"),
])
def test_a_mistake_in_urls_sh_never_prints_the_link(tmp_path, blob, server, line, says):
    """Items 9 and 10: urls.sh is read, not run; a mistake names its line and variable only."""
    marker = tmp_path / "ran"
    urls = tmp_path / "urls.sh"
    link = server.url(VAL) + "?token=" + TOKEN
    urls.write_text("MD5_val=%s\n%s\ntouch %s\n" % (md5(blob), line.format(url=link), marker))
    root = tmp_path / "root"
    r = dl(root, urls, "val")  # dl() checks that the token is not printed
    assert r.returncode == 1
    assert "%s, %s" % (urls, says) in r.stderr
    assert not marker.exists() and server.requests == []
    assert not (root / "downloads").exists()


def test_urls_sh_forms_that_work(tmp_path, blob, server, release):
    """Item 10: the plain assignment forms a user may write, and the example file's own form."""
    urls = tmp_path / "urls.sh"
    urls.write_text("#!/bin/bash\n\n  # comment\nexport DOWNLOAD_URL_val='%s?token=%s'  # mine\n"
                    "export MD5_val\nMD5_val=%s\nSIZE_test=\"\"\nOTHER=1\n"
                    % (server.url(VAL), TOKEN, md5(blob)))
    root = tmp_path / "root"
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert "line 8: OTHER is not a setting of 00_download.sh (ignored)" in r.stderr
    example = (REPO / "urls.sh.example").read_text()
    assert 'DOWNLOAD_URL_val="https://.../ILSVRC2012_img_val.tar"' in example
    mine = example.replace('# DOWNLOAD_URL_val="https://.../ILSVRC2012_img_val.tar"',
                           'DOWNLOAD_URL_val="%s?token=%s"' % (server.url(VAL), TOKEN))
    assert '# MD5_val="<32 hex digits>"' in example
    mine = mine.replace('# MD5_val="<32 hex digits>"', 'MD5_val="%s"' % md5(blob))
    urls.write_text(mine)
    root = tmp_path / "root2"
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob) and "warning" not in r.stderr


@pytest.mark.parametrize("connections", ["1", "3"])
def test_sigkill_of_the_main_process_stops_curl_and_a_rerun_goes_on(tmp_path, blob, server,
                                                                    connections):
    """Item 11: kill -9 of the script alone (not its group) leaves no curl running and no lock
    that blocks an immediate rerun."""
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=300_000)
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val",
                          "--connections", connections], env=clean_env(TEST_RUN_MARK=mark),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while server.bytes_sent() < 300_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "curl" in {program for _, program in run_states(mark).values()}
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=5)
        server.set_faults()
        r = dl(root, urls, "val", "--connections", connections)  # at once
        assert r.returncode == 0, r.stderr
        assert final_ok(root, blob)
        assert sorted(f.name for f in (root / "downloads").iterdir()) == [VAL, VAL + ".md5"]
        deadline = time.monotonic() + 5
        while run_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_processes(mark) == [], "processes of the killed run are still there"
    finally:
        kill_run(mark)


def test_ctrl_z_pauses_the_whole_download_and_fg_resumes_it(tmp_path, blob, server):
    """The download's own process group (item 11) keeps job control working: TSTP to the script's
    group (Ctrl-Z in a terminal) stops every process of the run; CONT (fg) resumes it."""
    root = tmp_path / "root"
    server.set_faults(rate=400_000)
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", val_urls(tmp_path, server, blob),
                          "val", "--connections", "2"], env=clean_env(TEST_RUN_MARK=mark),
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while server.bytes_sent() < 300_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGTSTP)  # what the terminal sends to its foreground group
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = {state for state, _ in run_states(mark).values()}
            if states == {"T"}:
                break
            time.sleep(0.05)
        assert states == {"T"}, states  # every process of the run is stopped
        have = bytes_on_disk(root)
        time.sleep(0.5)
        assert bytes_on_disk(root) == have
        server.set_faults()
        os.killpg(p.pid, signal.SIGCONT)  # fg
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert final_ok(root, blob)
    finally:
        kill_run(mark)


# --- one codebase (issue 11): release facts, links and curl policy from imagenet_prep/ ----------------

def test_release_facts_live_in_release_tsv_only():
    """The official MD5s and sizes are in imagenet_prep/release.tsv, which 00 reads; the train MD5
    is in no other file of the repository outside tests/ and docs/."""
    from test_repo import repo_files
    rows = [line.split("\t") for line in (REPO / "imagenet_prep" / "release.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    script = SCRIPT.read_text()
    for row in rows:
        assert row[4] == "-" or row[4] not in script, row[2]
        assert row[3] == "-" or row[3] not in script, row[2]
    train_md5 = next(row[4] for row in rows if row[0] == "train")
    holders = [name for name in repo_files() if not name.startswith(("tests/", "docs/"))
               and train_md5 in (REPO / name).read_text(errors="replace")]
    assert holders == ["imagenet_prep/release.tsv"]
    r = run([SCRIPT, "--help"])
    for row in rows:  # the help's table of archives comes from there too
        if row[0] != "test" or row[2].endswith("v10102019.tar"):
            assert ("DOWNLOAD_URL_" + row[1]) in r.stdout


def test_the_script_is_a_thin_entry_and_curl_is_started_in_one_module():
    """00_download.sh only finds the package and hands over to imagenet_prep/download.py; the one
    fetch engine (transport.py) is the only module that starts curl or builds its arguments."""
    script = SCRIPT.read_text()
    assert len(script.splitlines()) <= 40
    assert "imagenet_prep.download" in script and "exec python3" in script
    assert not re.search(r"^\s*curl\b|\|\s*curl\b", script, re.M)
    starts = [f.name for f in (REPO / "imagenet_prep").glob("*.py")
              if re.search(r"""["']curl["']""", f.read_text())]
    assert starts == ["transport.py"]


def test_retries_option_reaches_the_policy(tmp_path, blob, server):
    """--retries N wins over $DOWNLOAD_RETRIES, which the shared policy reads (and checks)."""
    server.set_faults(fail_status=503, fail_count=1000)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--retries", "2",
           env=clean_env(DOWNLOAD_RETRIES="50"))
    assert r.returncode == 1 and "after 2 attempts in a row" in r.stderr
    assert len(server.get_requests()) == 2
    r = dl(root, val_urls(tmp_path, server, blob), "val", env=clean_env(DOWNLOAD_RETRIES="2"))
    assert r.returncode == 1 and "after 2 attempts in a row" in r.stderr
    r = dl(root, val_urls(tmp_path, server, blob), "val", env=clean_env(DOWNLOAD_RETRIES="2x"))
    assert r.returncode == 1 and "DOWNLOAD_RETRIES in the environment must be" in r.stderr


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_exit_code_after_ctrl_c_and_sigterm(tmp_path, blob, server, signame, code):
    root = tmp_path / "root"
    server.set_faults(rate=300_000)
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", val_urls(tmp_path, server, blob), "val"],
                         env=clean_env(TEST_RUN_MARK=mark), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while server.bytes_sent() < 200_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        p.send_signal(getattr(signal, signame))
        _, err = p.communicate(timeout=15)
        assert p.returncode == code, err
        assert "rerun the same command to continue" in err
        assert run_processes(mark) == []
    finally:
        kill_run(mark)


# --- the MD5 while downloading (issues 14, 19: hashed as written, no second read) --------------------

STATE = VAL + ".part.md5state"
FOLLOWED = re.compile(r"val: MD5 verified ([0-9.]+) s after the last byte \(hashed as it was written; "
                      r"([0-9.]+ [KMG]?i?B) left to hash at the end\)")


def needs_md5state():
    from imagenet_prep import md5state
    if not md5state.available():
        pytest.skip("no usable libcrypto here: the MD5 cannot be saved (tested below)")


def wait_for_state(root: Path, p: subprocess.Popen, timeout: float = 30) -> Path:
    """The saved MD5 state, once it exists (it is saved with every write to NAME.part)."""
    state = root / "downloads" / STATE
    deadline = time.monotonic() + timeout
    while not state.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.exists(), "no MD5 state was saved while downloading"
    return state


def kill_group_and_wait(p: subprocess.Popen, mark: str) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    deadline = time.monotonic() + 5
    while run_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run_processes(mark) == []


@pytest.mark.parametrize("connections", [1, 3])
def test_md5_is_followed_while_downloading(tmp_path, blob, server, connections):
    """The MD5 is ready right after the last byte: NAME.part was hashed as it was written (as one
    connection brought it, or as the windows were appended); its state file does not survive the
    success."""
    needs_md5state()
    root = tmp_path / "root"
    server.set_faults(rate=1_500_000)
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", str(connections))
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    m = FOLLOWED.search(r.stderr)
    assert m, r.stderr
    assert float(m.group(1)) < 10  # generous: the machine may be busy; typically 0.1-0.3 s
    assert "read in full" not in r.stderr and "md5sum" not in r.stderr
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [VAL, VAL + ".md5"]


def test_sigkill_then_rerun_continues_the_md5_from_its_saved_state(tmp_path, blob, server):
    needs_md5state()
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=250_000)  # 12 s for the whole file: the state is saved after 5 s
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val"],
                         env=clean_env(TEST_RUN_MARK=mark), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = wait_for_state(root, p)
        kill_group_and_wait(p, mark)  # SIGKILL to every process: no last save
    finally:
        kill_run(mark)
    assert state.exists()
    offset = json.loads(state.read_text())["offset"]
    assert 0 < offset < blob.stat().st_size
    server.set_faults(rate=1_000_000)  # a second or two
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert "the MD5 continues from %s" % STATE in r.stderr
    assert FOLLOWED.search(r.stderr), r.stderr
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [VAL, VAL + ".md5"]


@pytest.mark.parametrize("where", ["before the saved offset", "far before it", "after it"])
def test_a_byte_changed_after_a_kill_is_caught(tmp_path, blob, server, where):
    """A state that no longer fits NAME.part never makes it pass: a byte flipped where the saved
    state's fingerprint covers it (the last bytes it hashed), or where it had not hashed yet, is a
    checksum mismatch: NAME.bad, nothing under the final name, no state left."""
    needs_md5state()
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=250_000)
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val"],
                         env=clean_env(TEST_RUN_MARK=mark), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = wait_for_state(root, p)
        kill_group_and_wait(p, mark)
    finally:
        kill_run(mark)
    offset = json.loads(state.read_text())["offset"]
    part = root / "downloads" / (VAL + ".part")
    at = {"before the saved offset": offset - 100, "far before it": 10}.get(where,
                                                                         part.stat().st_size - 1)
    assert at > 0
    with open(part, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    server.set_faults()
    r = dl(root, urls, "val")
    assert r.returncode == 1
    assert "checksum mismatch for %s" % VAL in r.stderr and md5(blob) in r.stderr
    assert no_final(root)
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [VAL + ".bad"]
    r = dl(root, urls, "val")  # a rerun downloads it again
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_a_state_file_of_another_file_is_not_used(tmp_path, blob, server):
    """A complete NAME.part with a state saved for another file (another inode) beside it: the state
    is not used, NAME.part is read in full, and a byte damaged in it is caught."""
    needs_md5state()
    data = bytearray(blob.read_bytes())
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    other = tmp_path / "other.part"  # the right bytes, in another file
    other.write_bytes(bytes(data))
    assert md5_state_of(other, dl_dir / STATE)
    assert json.loads((dl_dir / STATE).read_text())["offset"] == len(data) - len(data) % 64
    data[10] ^= 0xFF
    (dl_dir / (VAL + ".part")).write_bytes(bytes(data))
    urls = val_urls(tmp_path, server, blob, SIZE_val=str(len(data)))
    server.stop()  # complete with a known size: checked without the network
    r = dl(tmp_path / "root", urls, "val")
    assert r.returncode == 1
    assert "checksum mismatch for %s" % VAL in r.stderr
    assert sorted(p.name for p in dl_dir.iterdir()) == [VAL + ".bad"]


def test_without_libcrypto_the_md5_is_still_computed_as_written(tmp_path, blob, server):
    """No resumable MD5 here: hashlib's MD5 is computed as the bytes are written (no state is saved,
    and the note says that a rerun reads NAME.part again); a damaged byte is still caught.
    DOWNLOAD_MD5_FOLLOW, a setting of the follower of earlier versions, is only noted."""
    env = clean_env(IMAGENET_PREP_LIBCRYPTO="/nonexistent/libcrypto.so.3", DOWNLOAD_MD5_FOLLOW="0")
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    r = dl(root, urls, "val", env=env)
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert FOLLOWED.search(r.stderr), r.stderr
    assert "note: the MD5 is computed as the bytes arrive, but cannot be saved" in r.stderr
    assert "cannot load /nonexistent/libcrypto.so.3" in r.stderr
    assert "DOWNLOAD_MD5_FOLLOW is not read any more" in r.stderr
    assert sorted(p.name for p in (root / "downloads").iterdir()) == [VAL, VAL + ".md5"]
    # a resumed NAME.part with a damaged byte: read again in full, and caught
    root2 = tmp_path / "root2"
    (root2 / "downloads").mkdir(parents=True)
    damaged = bytearray(blob.read_bytes()[:1_000_000])
    damaged[5] ^= 1
    (root2 / "downloads" / (VAL + ".part")).write_bytes(bytes(damaged))
    r = dl(root2, urls, "val", env=env)
    assert r.returncode == 1 and "checksum mismatch for %s" % VAL in r.stderr, r.stderr
    assert sorted(p.name for p in (root2 / "downloads").iterdir()) == [VAL + ".bad"]


# --- hostile review 2: never throw the bytes away, never grow past the size, stop when told ---------

def md5_state_of(part: Path, state: Path, words: str = "") -> bool:
    """Save in `state` the MD5 state of `part` as it is, in the form 00 saves it with every write
    (False: no libcrypto here). `words`: other chaining words, to make a damaged state."""
    from imagenet_prep import md5state
    if not md5state.available():
        return False
    data = part.read_bytes()
    aligned = len(data) - len(data) % 64
    text = md5state.ResumableMD5(data[:aligned]).state()
    if words:
        text = ":".join(text.split(":")[:2]) + ":" + words
    st = part.stat()
    state.write_text(json.dumps({"version": 2, "algorithm": "md5", "state": text, "offset": aligned,
                                 "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
                                 "device": st.st_dev}))
    return True


def earlier_run(root: Path, blob: Path, pieces: bool) -> dict:
    """What an interrupted run left: NAME.part (1,000,000 bytes), with `pieces` two half-fetched
    piece files, and the MD5 state of NAME.part. {path: bytes} of every file, to compare."""
    data = blob.read_bytes()
    dl_dir = root / "downloads"
    dl_dir.mkdir(parents=True)
    part = dl_dir / (VAL + ".part")
    part.write_bytes(data[:1_000_000])
    if pieces:
        (dl_dir / (VAL + ".part.1000000-2000000")).write_bytes(data[1_000_000:1_300_000])
        (dl_dir / (VAL + ".part.2000000-3000000")).write_bytes(data[2_000_000:2_500_000])
    md5_state_of(part, dl_dir / STATE)
    return {p: p.read_bytes() for p in dl_dir.iterdir()}


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("answer", ["page", "padded-page", "other"])
def test_a_200_to_a_resume_that_is_not_the_file_keeps_every_byte(tmp_path, blob, server, answer,
                                                                connections):
    """C1: the link expired between two runs (or between the HEAD and the GET): a resume is answered
    200 with a login page, with a page of exactly the file's size (caught by its first bytes), or
    with another file. The run stops with a message; NAME.part, its pieces and the MD5 state are
    kept byte for byte: starting over happens only for the whole file again."""
    root = tmp_path / "root"
    before = earlier_run(root, blob, pieces=connections > 1)
    server.set_faults(get_200=answer)
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", str(connections))
    after = {p: p.read_bytes() for p in (root / "downloads").iterdir()}
    for p, content in before.items():
        assert after.get(p) == content, "%s changed or went: %s" % (p.name, r.stderr)
    assert sorted(after) == sorted(before)  # nothing new (no NAME.html)
    assert r.returncode == 1, r.stderr
    if answer == "other":
        assert ("ignored the byte range of a resume and sent a whole file (HTTP 200) of 1500000 "
                "bytes, but %s has 3000000 bytes" % VAL) in r.stderr
    else:
        assert r.stderr.count("the link answered with a web page (HTML)") == 1, r.stderr
        assert "expired" in r.stderr and "log in" in r.stderr
    assert "are kept as they are (nothing was discarded)" in r.stderr
    assert "starting over" not in r.stderr and "discarding" not in r.stderr


@pytest.mark.parametrize("connections", [1, 3])
def test_a_server_reporting_a_smaller_size_never_shrinks_the_part(tmp_path, blob, server,
                                                                 connections):
    """C2: no size pinned (MD5_val only), a NAME.part longer than what the server now reports: the
    run stops before fetching anything and NAME.part keeps all its bytes."""
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    part = root / "downloads" / (VAL + ".part")
    content = blob.read_bytes() + random.Random(2).randbytes(500_000)
    part.write_bytes(content)
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", str(connections))
    assert r.returncode == 1, r.stderr
    assert ("now reports 3000000 bytes for %s, a smaller size than the 3500000 bytes already "
            "downloaded into %s.part" % (VAL, VAL)) in r.stderr
    assert "kept as it is" in r.stderr
    assert part.read_bytes() == content
    assert server.get_requests() == [] and no_final(root)


def test_timeout_term_then_cont_stops_the_run(tmp_path, blob, server):
    """M1: GNU timeout sends TERM and then CONT. The TERM must not be lost (bash runs only the CONT
    trap when both arrive together): the run stops within seconds, no curl is left, no lock."""
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=200_000)  # 15 s for the whole file
    for _ in range(3):  # the lost TERM was a race: try it more than once
        mark = "run-%d" % random.randrange(10 ** 12)
        t0 = time.monotonic()
        try:
            r = run([shutil.which("timeout"), "1.5", SCRIPT, "--root", root, "--urls", urls, "val"],
                    timeout=8, env=clean_env(TEST_RUN_MARK=mark))
            assert r.returncode in (124, 143), r.stderr
            assert time.monotonic() - t0 < 7
            assert "rerun the same command to continue" in r.stderr
            assert not (root / "downloads" / (VAL + ".lock")).exists()
            deadline = time.monotonic() + 3
            while run_processes(mark) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert run_processes(mark) == [], "processes of the stopped run are left"
        finally:
            kill_run(mark)
    assert no_final(root) and (root / "downloads" / (VAL + ".part")).exists()


def test_one_connection_never_writes_past_the_size(tmp_path, blob, server):
    """Minor: one connection, the size known (here from the HEAD): a server that sends more than
    that never grows NAME.part past it; the run stops and says so."""
    server.set_faults(overrun=100_000)
    root = tmp_path / "root"
    part = root / "downloads" / (VAL + ".part")
    urls = val_urls(tmp_path, server, blob)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val"], env=clean_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    biggest = 0
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            biggest = max(biggest, part.stat().st_size)
        time.sleep(0.002)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 1, err
    assert "sent more than the 3000000 bytes of %s" % VAL in err and "nothing past them" in err
    assert biggest <= 3_000_000 and part.read_bytes() == blob.read_bytes()
    assert no_final(root)
    server.set_faults()
    r = dl(root, urls, "val")  # what is there is the file: the rerun checks it and is done
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_the_fetched_count_is_never_negative(tmp_path, blob, server):
    """Minor: a NAME.part longer than the pinned size is not cut back (it used to be, and the log
    said "fetched -1000 bytes"); after a start-over the count is what was fetched."""
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    part = root / "downloads" / (VAL + ".part")
    content = blob.read_bytes() + bytes(1000)
    part.write_bytes(content)
    urls = val_urls(tmp_path, server, blob, SIZE_val=str(blob.stat().st_size))
    r = dl(root, urls, "val")
    assert r.returncode == 1
    assert "fetched -" not in r.stderr
    assert "holds 3001000 bytes, more than the 3000000 bytes of %s" % VAL in r.stderr
    assert part.read_bytes() == content and server.requests == []
    part.write_bytes(blob.read_bytes()[:1_234_567])
    server.set_faults(ignore_range=True)
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert "fetched 3000000 bytes (%s was started over from byte 0)" % VAL in r.stderr


@pytest.mark.parametrize("args", [
    ["{link}"], ["val", "{link}"], ["--urls", "{link}", "val"], ["--root={link}", "val"],
    ["val", "127.0.0.1/%s?token=%s" % (VAL, TOKEN)],
])
def test_a_link_given_as_an_argument_is_never_echoed(tmp_path, args):
    """Minor: a link pasted on the command line is refused (exit 2) without being printed, and the
    message says where links belong."""
    link = "https://127.0.0.1:9/%s?token=%s" % (VAL, TOKEN)
    r = run([SCRIPT, *[a.format(link=link) for a in args]], env=clean_env(), cwd=tmp_path)
    assert TOKEN not in r.stdout + r.stderr
    assert r.returncode == 2
    assert "looks like a link" in r.stderr and "urls.sh" in r.stderr
    assert "DOWNLOAD_URL_<split>" in r.stderr
    assert not (tmp_path / "downloads").exists()


def test_a_urls_sh_with_a_byte_order_mark_is_read(tmp_path, blob):
    """Minor: a urls.sh saved by an editor that puts a UTF-8 BOM first works."""
    urls = tmp_path / "urls.sh"
    urls.write_bytes(("\ufeffDOWNLOAD_URL_val=\"%s\"\nMD5_val=\"%s\"\n"
                      % (blob.as_uri(), md5(blob))).encode("utf-8"))
    root = tmp_path / "root"
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


def test_a_file_link_with_a_space_says_write_it_as_percent_20(tmp_path, blob):
    """Minor: file:///my copy/... is refused with how to write it (%20), which then works."""
    local = tmp_path / "my copy" / VAL
    local.parent.mkdir()
    shutil.copy(blob, local)
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val="file://%s" % local, MD5_val=md5(blob))
    root = tmp_path / "root"
    r = dl(root, urls, "val")
    assert r.returncode == 1
    assert "DOWNLOAD_URL_val in %s is a file:// link with a space" % urls in r.stderr
    assert "write each space as %20" in r.stderr and str(local.parent) not in r.stderr
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=local.as_uri(), MD5_val=md5(blob))
    assert "%20" in urls.read_text()
    r = dl(root, urls, "val")
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)


# --- second hostile review -------------------------------------------------------------------------

def test_empty_pieces_planned_for_another_size_never_block_a_rerun(tmp_path, blob, server):
    """Piece files are made only after the free-space check; empty ones of an earlier plan for
    another size are removed; pieces with bytes that do not fit are named, and NAME.part is not."""
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(content_length="5000000000000")           # 4.5 TiB: the preflight refuses
    r = dl(root, urls, "val", "--connections", "4")
    assert r.returncode == 1 and "not enough free space" in r.stderr, r.stderr
    assert piece_files(root / "downloads") == []
    # an earlier version left empty pieces for that size: they go, the download goes on
    for b, e in ((0, 10**12), (10**12, 5 * 10**12)):
        (root / "downloads" / ("%s.part.%d-%d" % (VAL, b, e))).touch()
    server.set_faults()
    r = dl(root, urls, "val", "--connections", "4")
    assert r.returncode == 0, r.stderr
    assert "removing the empty piece files of an earlier run" in r.stderr
    assert final_ok(root, blob)
    # pieces with bytes that do not fit: said, and only the pieces are named for removal
    root2 = tmp_path / "root2"
    (root2 / "downloads").mkdir(parents=True)
    (root2 / "downloads" / (VAL + ".part")).write_bytes(blob.read_bytes()[:1000])
    odd = root2 / "downloads" / ("%s.part.2000-9000000" % VAL)
    odd.write_bytes(b"x" * 10)
    r = dl(root2, urls, "val", "--connections", "4")
    assert r.returncode == 1
    assert "do not fit a file of 3000000 bytes" in r.stderr
    assert "remove only the pieces (rm %s.[0-9]*-[0-9]*)" % (root2 / "downloads" / (VAL + ".part")) \
        in r.stderr
    assert odd.read_bytes() == b"x" * 10


def test_a_size_beyond_one_pebibyte_is_refused(tmp_path, blob, server):
    """18 digits pass the number check, but pieces of such a size would overflow bash: refused."""
    root = tmp_path / "root"
    server.set_faults(content_length="999999999999999999")
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", "32")
    assert r.returncode == 1
    assert "more than 1 PiB" in r.stderr, r.stderr
    assert not (root / "downloads").exists() or piece_files(root / "downloads") == []


def test_a_mirror_without_a_size_serving_another_file_keeps_the_part(tmp_path, blob, server):
    """MD5_val only (a mirror): the size to check a 200 against is what the server says now. Another
    file of that size under the same name is seen in its first bytes; NAME.part is kept."""
    root = tmp_path / "root"
    before = earlier_run(root, blob, pieces=False)
    other = random.Random(9).randbytes(1_500_000)
    saved = blob.read_bytes()
    blob.write_bytes(other)
    try:
        server.set_faults(ignore_range=True)
        r = dl(root, write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=server.url(VAL) + "?token=" +
                                TOKEN, MD5_val=hashlib.md5(saved).hexdigest()), "val")
    finally:
        blob.write_bytes(saved)
    assert r.returncode == 1, r.stderr
    assert "does not begin with the bytes" in r.stderr
    for p, content in before.items():
        assert p.read_bytes() == content, p


def test_stty_tostop_on_the_terminal_does_not_stop_the_download(tmp_path, blob, server):
    """The split runs in a background group of the terminal: with `stty tostop`, its first line
    written there would stop it (SIGTTOU) and the run would wait forever."""
    script_cmd = shutil.which("script")
    if script_cmd is None:
        pytest.skip("no script(1) here to give the run a terminal")
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    inner = "stty tostop; %s --root %s --urls %s val" % (SCRIPT, root, urls)
    r = run([script_cmd, "-qec", inner, "/dev/null"], timeout=40, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert final_ok(root, blob)


@pytest.mark.parametrize("var", ["IMAGENET_ROOT", "IMAGENET_URLS"])
def test_a_link_in_the_root_or_urls_variable_is_never_printed(tmp_path, var):
    link = "https://image-net.org/data?token=%s" % TOKEN
    r = run([SCRIPT, "val"], env=clean_env(**{var: link}), cwd=tmp_path)
    assert r.returncode == 2
    assert TOKEN not in r.stdout + r.stderr and "looks like a link" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_size_of_zero_in_urls_sh_is_refused(tmp_path, blob):
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=blob.as_uri(), MD5_val=md5(blob),
                      SIZE_val="0")
    r = dl(tmp_path / "root", urls, "val")
    assert r.returncode != 0
    assert "SIZE_val in %s is 0" % urls in r.stderr, r.stderr


def test_ctrl_z_then_kill_9_of_the_main_process_leaves_no_lock(tmp_path, blob, server):
    """Ctrl-Z, then `kill -9 %1`: the run saved its MD5 state and gave up its lock when it was
    stopped; curl dies with it (PR_SET_PDEATHSIG). Nothing is left running, no lock is left."""
    server.set_faults(rate=200_000)
    root = tmp_path / "root"
    dl_dir = root / "downloads"
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", val_urls(tmp_path, server, blob), "val"],
                         env=clean_env(TEST_RUN_MARK=mark), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not (dl_dir / (VAL + ".part")).exists() or (dl_dir / (VAL + ".part")).stat().st_size \
                < 200_000:
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGTSTP)
        time.sleep(1.0)
        os.kill(p.pid, signal.SIGKILL)
        err = p.communicate(timeout=10)[1]
        deadline = time.monotonic() + 8
        while (run_processes(mark) or (dl_dir / (VAL + ".lock")).exists()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run_processes(mark) == [], "processes of the killed run are left"
        assert not (dl_dir / (VAL + ".lock")).exists(), err
        assert (dl_dir / (VAL + ".part.md5state")).exists()
    finally:
        kill_run(mark)
    server.set_faults()
    r = dl(root, val_urls(tmp_path, server, blob), "val")
    assert r.returncode == 0 and final_ok(root, blob), r.stderr


# --- one engine (issue 19), the user and hostile reviews (issue 18), a loaded machine (issue 24) ----

def old_follower_state(part: Path, state: Path) -> None:
    """NAME.part.md5state as the MD5 follower of the bash 00 saved it: inode, offset, MD5 state
    and the SHA-1 of the 4 KiB before the offset."""
    from imagenet_prep import md5state
    data = part.read_bytes()
    offset = len(data) - len(data) % 64
    state.write_text(json.dumps({"inode": part.stat().st_ino, "offset": offset,
                                 "md5": md5state.ResumableMD5(data[:offset]).state(),
                                 "print": hashlib.sha1(data[max(0, offset - 4096):offset]).hexdigest()},
                                indent=1, sort_keys=True) + "\n")


def test_a_download_begun_by_the_bash_00_is_continued_not_mixed(tmp_path, blob, server):
    """What the bash 00 left when it was killed with --connections 3: NAME.part, piece files that
    tile the rest (made all at once, filled in part), its follower's MD5 state. The pieces are
    continued (no byte fetched twice); the state, of a form this 00 does not take, is said not to
    fit and the MD5 is computed from the first byte."""
    needs_md5state()
    data = blob.read_bytes()
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    part = dl_dir / (VAL + ".part")
    part.write_bytes(data[:1_000_000])
    (dl_dir / (VAL + ".part.1000000-2000000")).write_bytes(data[1_000_000:1_300_000])
    (dl_dir / (VAL + ".part.2000000-3000000")).write_bytes(data[2_000_000:2_500_000])
    old_follower_state(part, dl_dir / STATE)
    r = dl(tmp_path / "root", val_urls(tmp_path, server, blob), "val", "--connections", "3")
    assert r.returncode == 0, r.stderr
    assert final_ok(tmp_path / "root", blob)
    assert "was saved by the MD5 follower of an earlier 00_download.sh" in r.stderr
    assert "its MD5 starts from the beginning" in r.stderr
    assert server.bytes_sent() == 3_000_000 - 1_800_000
    assert sorted(p.name for p in dl_dir.iterdir()) == [VAL, VAL + ".md5"]


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "huge sparse file"])
def test_a_state_file_that_is_not_a_small_regular_file_is_not_read(tmp_path, blob, server, kind):
    """NAME.part.md5state is input like any other: a FIFO there would hang the run, a link to
    /dev/zero or a huge file would be read into memory. It is refused by name; nothing changes."""
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    part = dl_dir / (VAL + ".part")
    part.write_bytes(blob.read_bytes()[:1_000_000])
    state = dl_dir / STATE
    if kind == "fifo":
        os.mkfifo(state)
    elif kind == "link to /dev/zero":
        state.symlink_to("/dev/zero")
    else:
        with open(state, "wb") as f:
            f.truncate(1 << 30)
    r = dl(tmp_path / "root", val_urls(tmp_path, server, blob), "val", timeout=30)
    assert r.returncode == 1
    assert str(state) in r.stderr and "remove it and rerun" in r.stderr, r.stderr
    assert ("is not a regular file" if kind != "huge sparse file" else "more than the 64.0 KiB") \
        in r.stderr
    assert part.read_bytes() == blob.read_bytes()[:1_000_000]
    assert server.bytes_sent() == 0


def test_a_server_that_sends_a_little_and_stalls_on_every_attempt_is_given_up_on(tmp_path, blob,
                                                                                  server):
    """100 bytes, then a stall, on every attempt: a few bytes are no progress (at least a stall's
    worth, DOWNLOAD_SPEED_LIMIT x DOWNLOAD_SPEED_TIME, must come), so --retries N still ends it."""
    server.set_faults(stall_after=100, stall_seconds=30)
    root = tmp_path / "root"
    t0 = time.monotonic()
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--retries", "3", timeout=40,
           env=clean_env(DOWNLOAD_SPEED_TIME="1"))
    assert r.returncode == 1, r.stderr
    assert "giving up" in r.stderr and "after 3 attempts in a row without progress" in r.stderr
    assert time.monotonic() - t0 < 30
    assert len(server.get_requests()) == 3
    assert no_final(root)


def test_a_damaged_state_file_never_costs_a_correct_part(tmp_path, blob, server):
    """A saved MD5 state that fits NAME.part (size, time, inode) but whose words are wrong makes the
    MD5 come out wrong: before 138 GB are set aside, NAME.part is read again in full, and passes."""
    needs_md5state()
    dl_dir = tmp_path / "root" / "downloads"
    dl_dir.mkdir(parents=True)
    part = dl_dir / (VAL + ".part")
    part.write_bytes(blob.read_bytes())
    assert md5_state_of(part, dl_dir / STATE, words="01234567:89abcdef:01234567:89abcdef")
    urls = val_urls(tmp_path, server, blob, SIZE_val=str(blob.stat().st_size))
    server.stop()
    r = dl(tmp_path / "root", urls, "val")
    assert r.returncode == 0, r.stderr
    assert "the MD5 continues from %s" % STATE in r.stderr
    assert "read again in full to be sure the saved state %s was not at fault" % STATE in r.stderr
    assert final_ok(tmp_path / "root", blob)
    assert sorted(p.name for p in dl_dir.iterdir()) == [VAL, VAL + ".md5"]


def test_ctrl_c_at_the_very_start_never_prints_a_traceback(tmp_path, blob):
    """A Ctrl-C in the first tens of milliseconds, while Python starts and imports: no traceback,
    only a quiet stop (130) or, before Python listens, nothing (the run goes on)."""
    urls = write_urls(tmp_path / "urls.sh", DOWNLOAD_URL_val=blob.as_uri(), MD5_val=md5(blob))
    for i, delay in enumerate([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15]):
        p = subprocess.Popen([SCRIPT, "--root", tmp_path / ("r%d" % i), "--urls", urls, "val"],
                             env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=30)[1]
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
        assert p.returncode in (0, 130, -signal.SIGINT), (delay, p.returncode, err)


def test_another_run_that_took_the_file_during_a_ctrl_z_wins(tmp_path, blob, server):
    """Ctrl-Z gives up NAME.lock (a kill -9 of the stopped run then leaves none); a second run may
    take the file meanwhile and finish it. The first, continued, sees that and stops without
    writing another byte."""
    root = tmp_path / "root"
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(rate=300_000)
    mark = "run-%d" % random.randrange(10 ** 12)
    p = subprocess.Popen([SCRIPT, "--root", root, "--urls", urls, "val", "--connections", "2"],
                         env=clean_env(TEST_RUN_MARK=mark), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while server.bytes_sent() < 300_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGTSTP)
        deadline = time.monotonic() + 10
        while (root / "downloads" / (VAL + ".lock")).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (root / "downloads" / (VAL + ".lock")).exists()
        server.set_faults()
        r = dl(root, urls, "val")
        assert r.returncode == 0, r.stderr
        assert final_ok(root, blob)
        os.killpg(p.pid, signal.SIGCONT)
        err = p.communicate(timeout=30)[1]
        assert p.returncode == 1, err
        assert "while this run was stopped (Ctrl-Z)" in err, err
        assert final_ok(root, blob)
        assert sorted(f.name for f in (root / "downloads").iterdir()) == [VAL, VAL + ".md5"]
    finally:
        kill_run(mark)


@contextlib.contextmanager
def machine_loaded(folder: Path, seconds: float = 120):
    """CPU and disk burners (two spinning processes, one writing and syncing a file), stopped on
    the way out and in any case after `seconds`."""
    spin = "import time; t = time.monotonic() + %g\nwhile time.monotonic() < t: pass" % seconds
    disk = ("import os, time; t = time.monotonic() + %g\nb = os.urandom(1 << 20)\n"
            "while time.monotonic() < t:\n    f = open(%r, 'wb')\n    [f.write(b) for _ in range(64)]\n"
            "    f.flush(); os.fsync(f.fileno()); f.close()\n" % (seconds, str(folder / "burn")))
    procs = [subprocess.Popen([shutil.which("python3"), "-c", code]) for code in (spin, spin, disk)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def test_pieces_stop_at_their_end_with_8_connections_on_a_loaded_machine(tmp_path, blob, server):
    """Issue 24: 8 connections, pieces of 375,000 bytes, a server that sends to the end of the file
    whatever the range asks, while the machine is busy: never a false 'disk full', 10 of 10 runs
    end with the right file."""
    urls = val_urls(tmp_path, server, blob)
    server.set_faults(range_no_end=True, rate=1_000_000)
    with machine_loaded(tmp_path):
        for i in range(10):
            root = tmp_path / ("root%d" % i)
            r = dl(root, urls, "val", "--connections", "8",
                   env=clean_env(DOWNLOAD_MIN_SEGMENT="375000"))
            assert r.returncode == 0, (i, r.stderr)
            assert final_ok(root, blob)
            assert "disk" not in r.stderr.lower()


@pytest.mark.parametrize("connections", [1, 4])
def test_answers_closed_at_random_points_still_end_in_the_file(tmp_path, blob, server, connections):
    """Issue 24: a server that closes its side at a random point of every answer, answers longer
    than the range asked for: every window is retried from where it stopped, none grows past its
    end, and the file is right."""
    server.set_faults(range_no_end=True, close_random=connections, rate=4_000_000)
    root = tmp_path / "root"
    r = dl(root, val_urls(tmp_path, server, blob), "val", "--connections", str(connections),
           env=clean_env(DOWNLOAD_MIN_SEGMENT="200000", DOWNLOAD_RETRIES="30"))
    assert r.returncode == 0, r.stderr
    assert final_ok(root, blob)
    assert "retrying" in r.stderr


@pytest.mark.parametrize("tail", ["%3Ftoken%3D" + TOKEN, ";jsessionid=" + TOKEN, "+" + TOKEN])
def test_a_token_in_the_last_part_of_the_path_is_never_shown(tmp_path, blob, server, tail):
    """A link whose token sits in its last path segment (an encoded ?, a ;jsessionid=) is not a
    file name: it is refused without being printed, in no message and as no file name."""
    urls = tmp_path / "urls.sh"
    urls.write_text('DOWNLOAD_URL_val="%s%s"\nMD5_val=%s\n' % (server.url(VAL), tail, md5(blob)))
    root = tmp_path / "root"
    r = dl(root, urls, "val")  # dl() checks that the token is not printed
    assert r.returncode == 1, r.stderr
    assert "is not a plain file name" in r.stderr and "DOWNLOAD_URL_val" in r.stderr, r.stderr
    assert server.requests == []
    assert not (root / "downloads").exists() or not any((root / "downloads").iterdir())
