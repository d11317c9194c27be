"""Tests for 00_download.sh --source hf|kaggle: real curl against the loopback fakes of the Hub
(tests/fakehub.py) and of Kaggle (tests/fakekaggle.py), both redirecting to a storage that refuses
(and counts) any Authorization header (tests/fakestorage.py).

What 01_unzip.sh --source reads is asserted here: the files under the source's paths, source.json
with its fields, "verified" only for files checked in full.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

import sourcerelease
from conftest import REPO, run, small_tmpfs
from fakehub import GOOD_TOKEN, NO_ACCESS_TOKEN, PARQUET_REVISION, REPO as HF_REPO, TARGZ_REVISION, FakeHub
from fakekaggle import KEY, RULES, TOKEN as KAGGLE_TOKEN, USER, ZIP_NAME, FakeKaggle
from fakestorage import Storage

SCRIPT = REPO / "00_download.sh"
FAST = {"DOWNLOAD_RETRY_DELAY": "0.05", "DOWNLOAD_RETRY_DELAY_MAX": "0.2", "DOWNLOAD_SPEED_TIME": "2",
        "DOWNLOAD_SPEED_LIMIT": "1000", "DOWNLOAD_CONNECT_TIMEOUT": "3", "DOWNLOAD_PROGRESS_POLL": "0.2",
        "DOWNLOAD_MIN_SEGMENT": "65536"}
SECRETS = (GOOD_TOKEN, NO_ACCESS_TOKEN, KEY, KAGGLE_TOKEN,
           base64.b64encode(("%s:%s" % (USER, KEY)).encode()).decode())
BIG = 3_000_000                              # the files that runs are killed in the middle of


def env_for(tmp_path: Path, **extra) -> dict:
    """An environment without the user's own tokens, settings or home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOWNLOAD_", "IMAGENET_", "HF_", "KAGGLE_", "HUGGING"))}
    env.update(FAST, HOME=str(tmp_path / "home"))
    env.update(extra)
    return env


def dl(root: Path, *args, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    r = run([SCRIPT, "--root", root, *args], timeout=timeout, env=env)
    for secret in SECRETS:
        assert secret not in r.stdout + r.stderr, "a credential was printed"
    return r


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(root: Path, source: str) -> dict:
    return json.loads((root / "downloads" / source / "source.json").read_text())


def big_layout(folder: Path, classes_py: Path,
               name: str = "data/val_images.tar.gz") -> sourcerelease.HubLayout:
    """A Hub revision with one large file of random bytes (00 does not read what it fetches)."""
    local = folder / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(random.Random(7).randbytes(BIG))
    return sourcerelease.HubLayout("tar.gz", folder, [sourcerelease.SourceFile(
        name, local, BIG, sha256(local), "val")], classes_py)


def bytes_on_disk(part: Path) -> int:
    """Bytes of a file on disk: NAME.part up to its first piece (a kill while a piece is appended
    leaves it both there and in the piece), and the pieces NAME.part.START-END."""
    pieces = [(int(q.name.rsplit(".", 1)[1].split("-")[0]), q.stat().st_size)
              for q in part.parent.glob(part.name + ".*") if q.name.rsplit(".", 1)[1][:1].isdigit()]
    have = part.stat().st_size if part.exists() else 0
    if pieces:
        have = min(have, min(pieces)[0])
    return have + sum(size for _, size in pieces)


def cmdlines() -> list[bytes]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append((d / "cmdline").read_bytes())
            except OSError:
                pass
    return out


def kill_when(p: subprocess.Popen, sent, at_least: int, timeout: float = 30, scan: bool = False) -> int:
    """Wait until sent() >= at_least (scanning every command line for the secrets meanwhile), then
    kill the run's whole session; the curl processes seen."""
    deadline, curls = time.monotonic() + timeout, 0
    while sent() < at_least and time.monotonic() < deadline and p.poll() is None:
        if scan:
            for cmd in cmdlines():
                for secret in SECRETS:
                    assert secret.encode() not in cmd, cmd     # what `ps` shows to every user
                curls += cmd.startswith(b"curl\0")
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    time.sleep(0.3)                           # the server sees the connections close
    return curls


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def layouts(release, tmp_path_factory):
    """The sources' files made from the miniature release: the Hub's two layouts, a Hub revision
    of one big file, the Kaggle zip."""
    out = tmp_path_factory.mktemp("sources")
    images = sourcerelease.release_images(release)
    targz = sourcerelease.make_hf_targz(release, out / "targz", images=images)
    return {"targz": targz,
            "parquet": sourcerelease.make_hf_parquet(release, out / "parquet", images=images),
            "big": big_layout(out / "big", targz.classes_py),
            "zip": sourcerelease.make_kaggle_zip(release, out / "kaggle", images=images)}


@pytest.fixture
def hub(layouts, tmp_path):
    """The fake Hub: the package's tar.gz revision hash serving the miniature's files (not the
    package's), the miniature tar.gz under branch 'mini', Parquet on 'main', one big file on 'big'."""
    with Storage(tmp_path / "storage") as storage, FakeHub(storage) as hub:
        hub.add_revision(layouts["targz"], TARGZ_REVISION)
        hub.commit = hub.add_revision(layouts["targz"], "c0ffee" * 6 + "c0ff", ("mini",))
        hub.add_revision(layouts["parquet"], PARQUET_REVISION, ("main",))
        hub.add_revision(layouts["big"], branches=("big",))
        yield hub


def hf_env(tmp_path: Path, hub: FakeHub, token=GOOD_TOKEN, **extra) -> dict:
    extra.setdefault("HF_ENDPOINT", hub.endpoint)
    if token is not None:
        extra["HF_TOKEN"] = token
    return env_for(tmp_path, **extra)


@pytest.fixture
def kaggle_zip(layouts):
    return layouts["zip"]


@pytest.fixture
def kaggle(layouts, tmp_path):
    """The fake Kaggle API serving the miniature zip; its storage refuses credentials."""
    storage = Storage(tmp_path / "storage").start()
    api = FakeKaggle(storage).start()
    api.set_zip(layouts["zip"].file.local)
    try:
        yield api
    finally:
        api.stop()
        storage.stop()


def kaggle_env(tmp_path: Path, api: FakeKaggle, **extra) -> dict:
    extra.setdefault("KAGGLE_API_ENDPOINT", api.endpoint)
    if not any(k in extra for k in ("KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR")):
        extra.setdefault("KAGGLE_USERNAME", USER)
        extra.setdefault("KAGGLE_KEY", KEY)
    return env_for(tmp_path, **extra)


# ----------------------------------------------------------------------------- the command line

def test_help_lists_the_sources():
    r = run([SCRIPT, "--help"])
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for s in ("--source {hf,kaggle}", "--hf-revision REV", "ILSVRC/imagenet-1k", "HF_TOKEN",
              "imagenet-object-localization-challenge/rules", "KAGGLE_USERNAME", "no checksum",
              "NAME.part.sha256state"):
        assert s in text, s


@pytest.mark.parametrize("args, msg", [
    (["--source", "hf", "devkit"], "there is no devkit with --source hf: 02_convert_meta_clsloc.py takes "
                                   "the classes from its classes.py"),
    (["--source", "kaggle", "all", "devkit"], "there is no devkit with --source kaggle"),
    (["--source", "hf"], "no SPLIT given"),
    (["--source", "hf", "vall"], "unknown split: vall"),
    (["--hf-revision", "main", "val"], "--hf-revision goes with --source hf"),
    (["--source", "kaggle", "--hf-revision", "main"], "--hf-revision goes with --source hf"),
    (["--source", "hf", "--hf-revision", "a b", "val"], "--hf-revision takes a commit hash, a branch"),
    (["--source", "hf", "--hf-revision", "../x", "val"], "--hf-revision takes a commit hash"),
    (["--source", "hf", "--urls", "u.sh", "val"], "--urls is for your image-net.org links"),
    (["--source", "kaggle", "--no-verify"], "--no-verify is for image-net.org links"),
    (["--source", "s3", "val"], "invalid choice: 's3'"),
])
def test_usage_errors(tmp_path, args, msg):
    r = run([SCRIPT, "--root", tmp_path, *args], env=env_for(tmp_path))
    assert r.returncode == 2 and msg in r.stderr, r.stderr
    assert not (tmp_path / "downloads").exists()


# ----------------------------------------------------------------------------- Hugging Face

def test_hf_tar_layout_of_a_branch_then_rerun_without_storage(tmp_path, hub, layouts):
    """A branch is pinned to the commit the Hub names; the sizes and SHA-256 of the tree API are
    checked; the token never reaches the storage; a rerun is 'already done'."""
    root = tmp_path / "root"
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "all", "--connections", "2",
           env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    assert "revision 'mini' of ILSVRC/imagenet-1k is commit %s" % hub.commit in r.stderr
    assert "sizes and SHA-256 from the Hub's API (the tree's lfs.oid), not from the package" in r.stderr
    hf = root / "downloads" / "hf"
    for f in layouts["targz"].files:
        assert (hf / f.path).read_bytes() == f.local.read_bytes()
        assert (hf / (f.path + ".sha256")).read_text() == "%s  %s\n" % (f.sha256, f.path.split("/")[1])
    assert (hf / "classes.py").read_bytes() == layouts["targz"].classes_py.read_bytes()
    doc = record(root, "hf")
    assert {k: v for k, v in doc.items() if k != "files"} == {
        "source": "hf", "repo": HF_REPO, "revision": hub.commit, "asked": "mini", "layout": "tar",
        "hashes_from": "the Hub's API"}
    assert doc["files"] == [{"path": f.path, "split": f.split, "size": f.size, "sha256": f.sha256,
                             "verified": True} for f in sorted(layouts["targz"].files, key=lambda f: f.path)]
    assert sorted(p.name for p in (hf / "data").iterdir() if not p.name.endswith(".sha256")) == \
        sorted(f.path.split("/")[1] for f in layouts["targz"].files)   # no .part, .lock, state left
    storage = hub.storage
    assert storage.auth_refused == 0 and all(c.auth == "none" for c in storage.get_calls())
    hub_calls = hub.get_calls()
    assert hub_calls and all(c.auth == "bearer" for c in hub_calls)
    assert all(hub.commit in c.path for c in hub_calls if "/revision/" not in c.path)  # pinned
    n = len(storage.get_calls())
    r = dl(root, "--source", "hf", "--hf-revision", hub.commit, "train", "val", "test",
           env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already done") == len(layouts["targz"].files)
    assert len(storage.get_calls()) == n
    calls = len(hub.get_calls())
    r = dl(root, "--source", "hf", "--hf-revision", hub.commit, "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 0 and "already done" in r.stderr, r.stderr
    assert len(hub.get_calls()) == calls + 2          # the revision and its listing: no file


def test_hf_parquet_layout_and_the_token_from_hf_home(tmp_path, hub, layouts):
    home = tmp_path / "hfhome"
    home.mkdir()
    (home / "token").write_text(GOOD_TOKEN + "\n")
    (home / "token").chmod(0o600)
    root = tmp_path / "root"
    r = dl(root, "--source", "hf", "--hf-revision", "main", "val",
           env=hf_env(tmp_path, hub, token=None, HF_HOME=str(home)))
    assert r.returncode == 0, r.stderr
    doc = record(root, "hf")
    assert (doc["layout"], doc["revision"], doc["hashes_from"]) == ("parquet", PARQUET_REVISION,
                                                                     "the Hub's API")
    val = [f for f in layouts["parquet"].files if f.split == "val"]
    assert [e["path"] for e in doc["files"]] == sorted(f.path for f in val) and len(val) == 2
    for f in val:
        assert (root / "downloads" / "hf" / f.path).read_bytes() == f.local.read_bytes()
    assert hub.storage.auth_refused == 0


def test_hf_default_revision_with_other_files_fails_clearly(tmp_path, hub):
    """The default revision is checked against the package's facts: the fake serves the real
    revision's hash with the miniature's files, which must not pass."""
    root = tmp_path / "root"
    r = dl(root, "--source", "hf", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 1
    assert ("val: asking the Hub for data/val_images.tar.gz at 1500f8c5: the Hub says "
            "data/val_images.tar.gz is") in r.stderr
    assert ("(X-Linked-Size), but it should be 6,667,094,731 bytes (the package's facts of revision "
            "1500f8c5 (imagenet_prep/hf_release.tsv))") in r.stderr
    assert "Nothing was fetched" in r.stderr and "failed: val" in r.stderr
    assert hub.storage.get_calls() == []
    doc = record(root, "hf")
    assert (doc["revision"], doc["hashes_from"], doc["layout"]) == (TARGZ_REVISION, "package", "tar")
    assert [(e["path"], e["size"], e["verified"]) for e in doc["files"]] == [
        ("data/val_images.tar.gz", 6667094731, False)]
    assert not (root / "downloads" / "hf" / "data" / "val_images.tar.gz").exists()


def test_hf_kill_during_a_file_then_the_rerun_resumes_it_and_its_sha256(tmp_path, hub, layouts):
    """SIGKILL in the middle of a file (the token scanned for on every command line meanwhile);
    the rerun fetches only the missing bytes and continues the SHA-256 from its saved state."""
    big = layouts["big"].files[0]
    for connections in ("1", "3"):
        root = tmp_path / ("root" + connections)
        hub.storage.set_faults(rate=600_000)
        hub.storage.reset_log()
        p = subprocess.Popen([SCRIPT, "--root", root, "--source", "hf", "--hf-revision", "big", "val",
                              "--connections", connections], env=hf_env(tmp_path, hub),
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        curls = kill_when(p, hub.storage.bytes_sent, 1_000_000, scan=connections == "1")
        assert curls > 0 or connections != "1"
        data = root / "downloads" / "hf" / "data"
        part = data / "val_images.tar.gz.part"
        have = bytes_on_disk(part)
        assert 0 < have < BIG and not (data / "val_images.tar.gz").exists()
        assert (data / "val_images.tar.gz.part.sha256state").exists() or connections != "1"
        assert record(root, "hf")["files"][0]["verified"] is False
        hub.storage.set_faults()
        hub.storage.reset_log()
        r = dl(root, "--source", "hf", "--hf-revision", "big", "val", "--connections", connections,
               env=hf_env(tmp_path, hub))
        assert r.returncode == 0, r.stderr
        assert (data / "val_images.tar.gz").read_bytes() == big.local.read_bytes()
        if part.exists() or connections == "1":
            assert "the SHA-256 continues from val_images.tar.gz.part.sha256state" in r.stderr
        assert hub.storage.bytes_sent() == BIG - have               # no byte fetched twice
        assert record(root, "hf")["files"][0]["verified"] is True
        assert hub.storage.auth_refused == 0


def test_hf_a_flipped_byte_is_named_nothing_verified_and_a_rerun_fetches_again(tmp_path, hub, layouts):
    root = tmp_path / "root"
    hub.storage.set_faults(flip_at=1000)
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 1
    val = next(f for f in layouts["targz"].files if f.split == "val")
    assert "val: checksum mismatch for data/val_images.tar.gz: expected SHA-256 %s (the Hub's tree API " \
           "for revision %s (lfs.oid)), got " % (val.sha256, hub.commit[:8]) in r.stderr
    data = root / "downloads" / "hf" / "data"
    assert not (data / "val_images.tar.gz").exists() and (data / "val_images.tar.gz.bad").exists()
    assert record(root, "hf")["files"][0]["verified"] is False
    hub.storage.set_faults()
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    assert (data / "val_images.tar.gz").read_bytes() == val.local.read_bytes()
    assert record(root, "hf")["files"][0]["verified"] is True


def test_hf_a_file_of_another_revision_is_left_alone_and_named(tmp_path, hub, layouts):
    root = tmp_path / "root"
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    val = root / "downloads" / "hf" / "data" / "val_images.tar.gz"
    before, n = val.read_bytes(), len(hub.storage.get_calls())
    r = dl(root, "--source", "hf", "--hf-revision", "big", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 1
    assert "val: %s is there already, but it is not this revision's file (%s bytes, SHA-256 %s as " \
           "checked; this one is 3,000,000 bytes" % (val, "{:,}".format(len(before)),
                                                    hashlib.sha256(before).hexdigest()) in r.stderr
    assert val.read_bytes() == before and len(hub.storage.get_calls()) == n
    assert record(root, "hf")["files"][0]["verified"] is False


def test_hf_the_token_is_on_no_command_line(tmp_path, hub, monkeypatch):
    """Every command line of the machine is read while the Hub answers slowly (so that each curl
    that carries the token lives long enough to be seen): the token is in none of them."""
    import fakehub
    inflight = []
    route = fakehub.HubHandler._route

    def slow_route(handler):
        inflight.append(1)
        try:
            time.sleep(0.3)
            route(handler)
        finally:
            inflight.pop()
    monkeypatch.setattr(fakehub.HubHandler, "_route", slow_route)
    p = subprocess.Popen([SCRIPT, "--root", tmp_path / "root", "--source", "hf", "--hf-revision", "mini",
                          "val"], env=hf_env(tmp_path, hub), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    seen, deadline = 0, time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        busy = bool(inflight)
        for cmd in cmdlines():
            assert GOOD_TOKEN.encode() not in cmd, cmd          # what `ps` shows to every user
            seen += busy and cmd.startswith(b"curl\0")
        time.sleep(0.02)
    assert p.wait(timeout=30) == 0
    assert seen > 0 and len(hub.get_calls()) >= 4


@pytest.mark.parametrize("case", ["no-token", "no-access", "unknown-token", "unknown-revision"])
def test_hf_refusals_say_what_to_do(tmp_path, hub, case):
    token = {"no-token": None, "no-access": NO_ACCESS_TOKEN, "unknown-token": "hf_unknownToken12345"}
    rev = "v9.9" if case == "unknown-revision" else "mini"
    r = dl(tmp_path / "root", "--source", "hf", "--hf-revision", rev, "val",
           env=hf_env(tmp_path, hub, token=token.get(case, GOOD_TOKEN)))
    assert r.returncode == 1
    err = " ".join(r.stderr.split())
    want = {"no-token": ["no Hugging Face token found (looked at HF_TOKEN,", "accept its terms on "
                         "https://huggingface.co/datasets/ILSVRC/imagenet-1k", "set HF_TOKEN",
                         "hf auth login"],
            "no-access": ["the token from HF_TOKEN has no access to ILSVRC/imagenet-1k (HTTP 403, "
                          "GatedRepo)", "https://huggingface.co/datasets/ILSVRC/imagenet-1k",
                          "accept its terms"],
            "unknown-token": ["the Hub does not accept the token from HF_TOKEN (HTTP 401)",
                              "huggingface.co/settings/tokens"],
            "unknown-revision": ["ILSVRC/imagenet-1k has no such revision (HTTP 404, RevisionNotFound)",
                                 "give --hf-revision a commit hash, a branch or a tag"]}[case]
    for s in want:
        assert s in err, (s, r.stderr)
    assert hub.storage.get_calls() == []
    if case == "no-token":
        assert hub.get_calls() == [] and not (tmp_path / "root" / "downloads" / "hf" / "source.json").exists()


def test_hf_rate_limited_then_served(tmp_path, hub, layouts):
    hub.rate_limit = 3
    root = tmp_path / "root"
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("HTTP 429; retrying in 1s") == 3          # Retry-After, not 0.05 s
    assert record(root, "hf")["files"][0]["verified"] is True


def test_hf_split_extracted_by_01_is_already_done(tmp_path, hub, layouts):
    """A split 01_unzip.sh --source hf extracted from this very commit (the files removed)."""
    root = tmp_path / "root"
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    val = next(f for f in layouts["targz"].files if f.split == "val")
    (root / "downloads" / "hf" / val.path).unlink()
    (root / "val").mkdir()
    (root / ".01_unzip").mkdir()
    marker = {"archive": "hf:%s@%s" % (HF_REPO, hub.commit), "archive_size": val.size, "bytes": 1,
              "images": 1}
    (root / ".01_unzip" / "val.done").write_text(json.dumps(marker))
    n = len(hub.storage.get_calls())
    r = dl(root, "--source", "hf", "--hf-revision", "mini", "val", env=hf_env(tmp_path, hub))
    assert r.returncode == 0, r.stderr
    assert "val: already done (extracted into %s by 01_unzip.sh from revision %s" % (
        root / "val", hub.commit[:8]) in r.stderr
    assert len(hub.storage.get_calls()) == n and not (root / "downloads" / "hf" / val.path).exists()
    assert not (root / "downloads" / "hf" / (val.path + ".sha256")).exists()     # tidied
    assert record(root, "hf")["files"][0]["verified"] is True


def test_hf_runs_for_two_splits_at_once_share_one_record(tmp_path, hub, layouts):
    """As two SLURM array tasks would: each adds its files to source.json (under a lock)."""
    root = tmp_path / "root"
    procs = [subprocess.Popen([SCRIPT, "--root", root, "--source", "hf", "--hf-revision", "mini", split],
                              env=hf_env(tmp_path, hub), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for split in ("train", "val")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    doc = record(root, "hf")
    want = sorted(f.path for f in layouts["targz"].files if f.split in ("train", "val"))
    assert [e["path"] for e in doc["files"]] == want and all(e["verified"] for e in doc["files"])


def test_hf_not_enough_space_for_the_split_is_said_before_any_byte(tmp_path, hub):
    with small_tmpfs(tmp_path / "small", "size=2m") as small:
        r = dl(small / "root", "--source", "hf", "--hf-revision", "big", "val", env=hf_env(tmp_path, hub))
        assert r.returncode == 1
        assert "val: 1 file(s) of ILSVRC/imagenet-1k (2.9 MiB left to fetch): not enough free space" \
            in r.stderr
        assert not list((small / "root" / "downloads" / "hf" / "data").iterdir())
    assert hub.storage.get_calls() == []


# ----------------------------------------------------------------------------- Kaggle

@pytest.mark.parametrize("how", ["basic-env", "kaggle.json", "bearer"])
def test_kaggle_zip_with_each_kind_of_credentials(tmp_path, kaggle, kaggle_zip, how):
    extra = {}
    if how == "kaggle.json":
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "kaggle.json").write_text(json.dumps({"username": USER, "key": KEY}))
        (conf / "kaggle.json").chmod(0o600)
        extra["KAGGLE_CONFIG_DIR"] = str(conf)
    elif how == "bearer":
        extra["KAGGLE_API_TOKEN"] = KAGGLE_TOKEN
    root = tmp_path / "root"
    r = dl(root, "--source", "kaggle", env=kaggle_env(tmp_path, kaggle, **extra))
    assert r.returncode == 0, r.stderr
    assert "Kaggle publishes no checksum of the zip" in r.stderr and "CRC-32 of every member" in r.stderr
    assert (root / "downloads" / "kaggle" / ZIP_NAME).read_bytes() == kaggle_zip.file.local.read_bytes()
    assert record(root, "kaggle") == {"source": "kaggle", "competition": "imagenet-object-localization-"
                                      "challenge", "files": [{"path": ZIP_NAME, "split": "all", "size":
                                                              kaggle_zip.file.size, "sha256": None,
                                                              "verified": True}]}
    assert [c.auth for c in kaggle.get_calls()] == ["bearer" if how == "bearer" else "basic"]
    assert kaggle.storage.auth_refused == 0
    r = dl(root, "--source", "kaggle", "val", env=kaggle_env(tmp_path, kaggle, **extra))
    assert r.returncode == 0 and "already done" in r.stderr and len(kaggle.get_calls()) == 1


def test_kaggle_splits_extracted_by_01_need_no_zip(tmp_path, kaggle, kaggle_zip):
    root = tmp_path / "root"
    (root / ".01_unzip").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        marker = {"archive": "kaggle:" + ZIP_NAME, "archive_size": 1, "bytes": 1, "images": 1}
        if split == "train":
            marker.update(classes=["n01440764"], special={})
        (root / ".01_unzip" / (split + ".done")).write_text(json.dumps(marker))
    r = dl(root, "--source", "kaggle", "val", "train", env=kaggle_env(tmp_path, kaggle))
    assert r.returncode == 0, r.stderr
    assert "val train: already done (extracted by 01_unzip.sh from %s" % ZIP_NAME in r.stderr
    assert kaggle.get_calls() == []
    r = dl(root, "--source", "kaggle", env=kaggle_env(tmp_path, kaggle))      # all: test is not
    assert r.returncode == 0, r.stderr
    assert (root / "downloads" / "kaggle" / ZIP_NAME).stat().st_size == kaggle_zip.file.size


def test_kaggle_refusals(tmp_path, kaggle):
    root = tmp_path / "root"
    r = dl(root, "--source", "kaggle", env=kaggle_env(tmp_path, kaggle, KAGGLE_KEY="f" * 32))
    assert r.returncode == 1
    err = " ".join(r.stderr.split())
    assert ("Kaggle does not accept the Basic credentials from KAGGLE_USERNAME + KAGGLE_KEY (HTTP 401)"
            in err)
    assert "Tried, in this order: KAGGLE_API_TOKEN, %s, KAGGLE_USERNAME + KAGGLE_KEY, %s (the first " \
           "one found is used)" % (tmp_path / "home" / ".kaggle" / "access_token",
                                   tmp_path / "home" / ".kaggle" / "kaggle.json") in err
    assert "kaggle.com/settings" in err
    r = dl(root, "--source", "kaggle", env=kaggle_env(tmp_path, kaggle, KAGGLE_USERNAME="no-rules"))
    assert r.returncode == 1
    assert "Kaggle refuses the download (HTTP 403)" in r.stderr and RULES in r.stderr
    r = dl(root, "--source", "kaggle", env=env_for(tmp_path, KAGGLE_API_ENDPOINT=kaggle.endpoint))
    assert r.returncode == 1 and "no Kaggle credentials found (looked at KAGGLE_API_TOKEN" in r.stderr
    assert kaggle.storage.get_calls() == [] and not (root / "downloads" / "kaggle" / ZIP_NAME).exists()


def test_kaggle_quota_honours_retry_after(tmp_path, kaggle, kaggle_zip):
    kaggle.quota, kaggle.retry_after = 2, 1
    root = tmp_path / "root"
    t0 = time.monotonic()
    r = dl(root, "--source", "kaggle", env=kaggle_env(tmp_path, kaggle))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("HTTP 429; retrying in 1s") == 2
    assert time.monotonic() - t0 >= 2                      # waited as asked, not 0.05 s
    assert [c.status for c in kaggle.get_calls()] == [429, 429, 302]


def test_kaggle_kill_then_a_fresh_link_and_resume(tmp_path, kaggle):
    """Killed in the middle; the link of that run has expired by the rerun, which asks for a fresh
    one and fetches only the missing bytes; a link that expires during a run is renewed too."""
    big = tmp_path / "big.zip"
    big.write_bytes(random.Random(3).randbytes(BIG))
    kaggle.set_zip(big)
    kaggle.link_uses = 2                            # the probe and one GET per link
    kaggle.storage.set_faults(rate=600_000)
    root = tmp_path / "root"
    p = subprocess.Popen([SCRIPT, "--root", root, "--source", "kaggle"], env=kaggle_env(tmp_path, kaggle),
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(p, kaggle.storage.bytes_sent, 1_000_000)
    part = root / "downloads" / "kaggle" / (ZIP_NAME + ".part")
    have = part.stat().st_size
    assert 0 < have < BIG and not (root / "downloads" / "kaggle" / "source.json").exists()
    kaggle.storage.set_faults(cut_after=400_000, cut_times=1)   # the rerun's GET is cut once: its
    kaggle.storage.reset_log()                                   # link is used up, a fresh one asked
    calls = len(kaggle.get_calls())
    r = dl(root, "--source", "kaggle", "train", env=kaggle_env(tmp_path, kaggle))
    assert r.returncode == 0, r.stderr
    assert (root / "downloads" / "kaggle" / ZIP_NAME).read_bytes() == big.read_bytes()
    assert kaggle.storage.bytes_sent() == BIG - have
    assert len(kaggle.get_calls()) - calls == 2
    assert [c.status for c in kaggle.storage.get_calls()].count(403) == 1
    assert kaggle.storage.auth_refused == 0
    assert record(root, "kaggle")["files"][0]["size"] == BIG


def test_kaggle_a_stop_ends_the_wait_for_a_fresh_link_at_once(tmp_path, kaggle):
    """The link expires in the middle, and Kaggle answers the request for a fresh one with 429 and a
    long Retry-After: that wait (in a fetch-engine thread) ends at SIGTERM, which stops the run."""
    big = tmp_path / "big.zip"
    big.write_bytes(random.Random(4).randbytes(BIG))
    kaggle.set_zip(big)
    kaggle.link_uses = 2                            # the probe and one GET per link
    kaggle.storage.set_faults(rate=400_000, cut_after=500_000, cut_times=1)
    root = tmp_path / "root"
    p = subprocess.Popen([SCRIPT, "--root", root, "--source", "kaggle"], env=kaggle_env(tmp_path, kaggle),
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while kaggle.storage.bytes_sent() < 100_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        kaggle.quota, kaggle.retry_after = 5, 300
        while 429 not in [c.status for c in kaggle.get_calls()] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 143, err
    assert time.monotonic() - t0 < 10, err
    assert "HTTP 429; retrying in 300s" in err
    assert 0 < bytes_on_disk(root / "downloads" / "kaggle" / (ZIP_NAME + ".part")) < BIG
