"""06_pack_webdataset.py: shards that the webdataset library reads back to the release's images,
labels and sizes; timm's _info.json; the same bytes for a seed from the archives, the tree or the
Hugging Face and Kaggle files (--source); killed and rerun; hostile archives, a changed tree,
damaged or unverified source files, a missing class list; image sizes from headers."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

import minirelease
import sourcerelease
from conftest import assert_usage_error, run, script
from sourcerelease import hub_root, kaggle_root

wds = pytest.importorskip("webdataset")

WDS = script("06_pack_webdataset.py")
UNZIP = script("01_unzip.sh")
META = script("02_convert_meta_clsloc.py")
SORT = script("03_build_val_class_folders.py")
OUT = "webdataset"
TRAIN_NAMES = "imagenet1k-train-%02d.tar"
VAL_NAMES = "imagenet1k-validation-%02d.tar"


# ----------------------------------------------------------------------------- helpers

def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "IMAGENET_ROOT"}
    env.update(extra)
    return env


def pack(root: Path, *args, timeout=120) -> subprocess.CompletedProcess:
    return run([sys.executable, WDS, "--root", root, *args], timeout=timeout, env=clean_env())


def make_root(tmp_path: Path, rel: minirelease.Release, splits=("train", "val"),
              name: str = "root", meta: bool = True) -> Path:
    """ROOT/downloads with the archives; with meta, the devkit (01) and synsets.csv (02) too."""
    root = tmp_path / name
    (root / "downloads").mkdir(parents=True)
    for s in list(splits) + ["devkit"]:
        shutil.copy(rel.archives[s], root / "downloads" / rel.archives[s].name)
    if meta:
        r = run(["bash", UNZIP, "--root", root, "devkit"], env=clean_env())
        assert r.returncode == 0, r.stderr
        r = run([sys.executable, META, "--root", root, "--expect-classes", len(rel.classes)],
                env=clean_env())
        assert r.returncode == 0, r.stderr
    return root


def images(rel: minirelease.Release, split: str) -> dict[str, bytes]:
    """WNID/NAME -> bytes, straight from the generated archives."""
    out = {}
    with tarfile.open(rel.archives[split]) as tar:
        for m in tar:
            if split == "train":
                with tarfile.open(fileobj=tar.extractfile(m)) as inner:
                    for im in inner:
                        out["%s/%s" % (m.name[:-4], im.name)] = inner.extractfile(im).read()
            else:
                out["%s/%s" % (rel.val[m.name], m.name)] = tar.extractfile(m).read()
    return out


def shards(root: Path, pattern: str) -> list[Path]:
    return sorted((root / OUT).glob(pattern))


def contents(root: Path) -> dict[str, bytes]:
    """Every shard's bytes and _info.json, by name."""
    return {p.name: p.read_bytes() for p in sorted((root / OUT).glob("*")) if not p.name.startswith(".")}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / OUT).glob("*") if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def built(tmp_path_factory, release) -> Path:
    """The unit release's train (4 shards) and val (3 shards), written once from the archives."""
    root = make_root(tmp_path_factory.mktemp("built"), release)
    r = pack(root, "--shards", "4", "train")
    assert r.returncode == 0, r.stderr
    r = pack(root, "--shards", "3", "val")
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> minirelease.Release:
    """~60 MB of train images: long enough (~1 s) to be killed mid-way."""
    return minirelease.make_release(tmp_path_factory.mktemp("big"), classes=24, images=(10, 16),
                                    val_per_class=1, test=2, kib=200.0, seed=6)


@pytest.fixture(scope="module")
def big_ref(tmp_path_factory, big) -> Path:
    """ROOT with big's train written uninterrupted into 12 shards: the bytes every run must give."""
    ref = make_root(tmp_path_factory.mktemp("bigref"), big, ["train"], "ref")
    r = pack(ref, "--shards", "12", "--jobs", "2", "train")
    assert r.returncode == 0, r.stderr
    return ref


# ----------------------------------------------------------------------------- command line

def test_help_lists_options_and_defaults():
    r = run([sys.executable, WDS, "--help"])
    assert r.returncode == 0
    for text in ("--root DIR", "--from-tree", "--shards N", "--seed S", "--jobs N",
                 "IMAGENET_ROOT", "imagenet1k-train-{0000..1023}.tar", "wds/imagenet-1k",
                 "--source hf|kaggle", "ROOT/downloads/hf/", "read\n                 twice"):
        assert text in r.stdout, text


@pytest.mark.parametrize("args, message", [
    ([], "name at least one SPLIT (train val)"),
    (["test"], "unknown split 'test' (one of: train val)"),
    (["--shards", "0", "train"], "--shards wants a whole number from 1 to 100000 (got '0')"),
    (["--shards", "1e3", "train"], "--shards wants a whole number"),
    (["--seed", "-1", "train"], "--seed wants a whole number"),
    (["--jobs", "0", "train"], "--jobs wants a number from 1 to 1024"),
    (["--source", "s3", "train"], "argument --source: invalid choice: 's3'"),
    (["--source", "hf", "--from-tree", "train"], "--source and --from-tree do not go together"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    assert_usage_error(pack(tmp_path, *args), "06_pack_webdataset.py", message)


# ----------------------------------------------------------------------------- the shards

@pytest.mark.parametrize("split, pattern, n", [("train", "imagenet1k-train-*.tar", 4),
                                               ("val", "imagenet1k-validation-*.tar", 3)])
def test_every_image_once_with_its_bytes_label_and_size(built, release, split, pattern, n):
    """Read back with the webdataset library, shard by shard: every image exactly once, its
    bytes as the archive holds them, the sorted-WNID label, the json's fields and Pillow's size."""
    want = images(release, split)
    urls = [str(p) for p in shards(built, pattern)]
    assert [Path(u).name for u in urls] == [(TRAIN_NAMES if split == "train" else VAL_NAMES) % k
                                            for k in range(n)]
    seen, lengths = {}, []
    for url in urls:
        samples = list(wds.WebDataset(url, shardshuffle=False))
        lengths.append(len(samples))
        for s in samples:
            doc = json.loads(s["json"])
            path = doc["filename"]
            assert path not in seen
            seen[path] = s["jpg"]
            wnid, name = path.split("/")
            assert s["__key__"] == name[:-len(".JPEG")]
            assert {k for k in s if not k.startswith("__")} == {"cls", "jpg", "json"}
            assert int(s["cls"]) == doc["label"] == release.class_index(wnid)
            assert s["cls"] == str(release.class_index(wnid)).encode()
            assert doc["wnid"] == wnid and list(doc) == ["filename", "label", "wnid", "width",
                                                         "height"]
            with Image.open(io.BytesIO(s["jpg"])) as im:
                assert (doc["width"], doc["height"]) == im.size
    assert seen == want                                  # bytes equal, none missing, none extra
    assert max(lengths) - min(lengths) <= 1 and sum(lengths) == len(want)
    info = json.loads((built / OUT / "_info.json").read_text())
    entry = info["splits"]["train" if split == "train" else "validation"]
    assert info["name"] == "imagenet-1k"
    assert entry == {"name": "train" if split == "train" else "validation",
                     "num_samples": len(want), "filenames": [Path(u).name for u in urls],
                     "shard_lengths": lengths}


def test_members_have_fixed_metadata_and_samples_are_shuffled(built, release):
    with tarfile.open(built / OUT / (TRAIN_NAMES % 0)) as tar:
        members = tar.getmembers()
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mode, m.mtime) == (0, 0, "", "", 0o644, 0), m
        assert m.isfile()
    exts = [m.name.split(".", 1)[1] for m in members]
    assert exts == ["cls", "jpg", "json"] * (len(members) // 3)
    keys = [m.name.split(".", 1)[0] for m in members[::3]]
    assert keys != sorted(keys)                          # not in archive order: shuffled
    assert len({k.split("_")[0] for k in keys}) > 3      # classes mixed within a shard
    assert (built / OUT / (TRAIN_NAMES % 0)).stat().st_size % 10240 == 0


def test_rerun_is_already_done_and_changes_nothing(built):
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (built / OUT).iterdir()}
    r = pack(built, "--shards", "4", "train")
    assert r.returncode == 0, r.stderr
    assert "train: already done (4 shards, " in r.stderr and "nothing to do" in r.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (built / OUT).iterdir()} \
        == before


def test_same_seed_same_bytes_other_seed_other_order_from_archive_or_tree(tmp_path, built,
                                                                         release):
    """Another ROOT, the same seed: byte-identical shards, from the archives and from the tree
    (val flat, then sorted by 03); another seed or shard count: the old shards go, new ones come."""
    ref = contents(built)
    root = make_root(tmp_path, release)
    r = run(["bash", UNZIP, "--root", root, "train", "val"], env=clean_env())
    assert r.returncode == 0, r.stderr
    r = pack(root, "--from-tree", "--shards", "4", "train")
    assert r.returncode == 0, r.stderr
    r = pack(root, "--from-tree", "--shards", "3", "val")      # val still flat: placed by labels
    assert r.returncode == 0, r.stderr
    assert contents(root) == ref
    for p in shards(root, "imagenet1k-validation-*"):
        p.unlink()
    (root / OUT / ".imagenet1k-validation.json").unlink()
    r = run([sys.executable, SORT, "--root", root], env=clean_env())
    assert r.returncode == 0, r.stderr
    r = pack(root, "--from-tree", "--shards", "3", "val")      # sorted by 03: the same bytes
    assert r.returncode == 0, r.stderr
    assert contents(root) == ref
    r = pack(root, "--seed", "7", "--shards", "2", "train")
    assert r.returncode == 0, r.stderr
    assert "written for another plan (seed 0, 4 shards, or other images or labels): removing 4" in r.stderr
    now = contents(root)
    assert sorted(n for n in now if n.startswith("imagenet1k-train")) == \
        [TRAIN_NAMES % k for k in range(2)]
    info = json.loads(now["_info.json"])
    assert info["splits"]["train"]["shard_lengths"] == [27, 27]
    assert info["splits"]["validation"] == json.loads(ref["_info.json"])["splits"]["validation"]
    order = [m.name for p in shards(root, "imagenet1k-train-*") for m in tarfile.open(p)]
    old = [m.name for p in shards(built, "imagenet1k-train-*") for m in tarfile.open(p)]
    assert sorted(order) == sorted(old) and order != old


def recorded(root: Path) -> int:
    """The shards the state file records as written (0 while there is none)."""
    try:
        return len(json.loads((root / OUT / ".imagenet1k-train.json").read_text())["written"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_at_random_moments_then_rerun_gives_the_same_bytes(tmp_path, big, big_ref):
    """Killed anywhere (the whole job, or the main process alone: while indexing, in the middle
    of a shard, between two), a rerun writes only what is missing and the shards are
    byte-identical to an uninterrupted run; _info.json lists the split only once every shard is
    complete."""
    want = contents(big_ref)
    root = make_root(tmp_path, big, ["train"])
    rng, kills, kept = random.Random(4), 0, 0
    for attempt in range(10):
        target = recorded(root) + rng.randint(0, 2)      # then a random moment in what follows
        proc = subprocess.Popen([sys.executable, str(WDS), "--root", str(root), "--shards", "12",
                                 "--jobs", "2", "train"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and recorded(root) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.08))
        if proc.poll() is None:
            if attempt % 2:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)         # its workers see their pipe close
            kills += 1
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
        done = [n for n in contents(root) if n.startswith("imagenet1k-")]
        for n in done:                                   # a shard under its name is complete
            assert (root / OUT / n).read_bytes() == want[n], n
        info = root / OUT / "_info.json"
        if info.exists() and "train" in json.loads(info.read_text())["splits"]:
            assert len(done) == 12                       # killed after its last step
        kept = max(kept, len(done))
    assert kills >= 4, "only %d runs were killed mid-way" % kills
    assert kept > 0, "no run was killed after writing a shard"
    r = pack(root, "--shards", "12", "--jobs", "2", "train")
    assert r.returncode == 0, r.stderr
    assert contents(root) == want
    assert leftovers(root) == []


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_and_sigterm_keep_complete_shards_and_leave_no_half_one(tmp_path, big, sig, code,
                                                                      said):
    root = make_root(tmp_path, big, ["train"])
    proc = subprocess.Popen([sys.executable, str(WDS), "--root", str(root), "--shards", "12",
                             "--jobs", "2", "train"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=clean_env(),
                            start_new_session=True)
    state, deadline = root / OUT / ".imagenet1k-train.json", time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:   # until a shard is recorded
        try:
            if json.loads(state.read_text())["written"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code and said in err, err
    assert "complete shards are kept" in err and "Traceback" not in err
    assert leftovers(root) == []
    info = root / OUT / "_info.json"
    assert not info.exists() or "train" not in json.loads(info.read_text())["splits"]
    r = pack(root, "--shards", "12", "--jobs", "2", "train")
    assert r.returncode == 0, r.stderr
    assert "already written" in r.stderr and " 0 already written" not in r.stderr, r.stderr


# ----------------------------------------------------------------------------- refused

def refused(root: Path, r: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 1, the words said, no traceback, no shard, no _info.json entry, no temporary file."""
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    out = root / OUT
    if out.exists():
        assert not list(out.glob("imagenet1k-*.tar")) and leftovers(root) == []
        assert not (out / "_info.json").exists()


@pytest.mark.parametrize("kind", ["outer-dotdot", "inner-symlink", "inner-badname", "truncated",
                                  "not-a-tar", "val-symlink"])
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, release, kind):
    root = make_root(tmp_path, release, ["train"])
    split = "val" if kind.startswith("val-") else "train"
    target = root / "downloads" / (minirelease.VAL_TAR if split == "val" else minirelease.TRAIN_TAR)
    shutil.copy(minirelease.make_hostile(tmp_path / "hostile", kind), target)
    r = pack(root, "--shards", "2", split)
    refused(root, r, minirelease.HOSTILE_MESSAGES[kind])


def test_a_damaged_archive_is_named_and_the_next_run_after_the_fix_works(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    archive = root / "downloads" / minirelease.TRAIN_TAR
    data = bytearray(archive.read_bytes())
    data[512 + 40] ^= 0x01                             # a byte of the first image's header
    archive.write_bytes(bytes(data))
    r = pack(root, "--shards", "2", "train")
    refused(root, r, "not a tar header (bad checksum)")
    shutil.copy(release.archives["train"], archive)
    assert pack(root, "--shards", "2", "train").returncode == 0


def test_the_official_archive_must_hold_the_official_counts(tmp_path, release):
    """A file of the official train size holding one class of one image (sparse: no disk used):
    the official counts are errors, before any shard is written."""
    root = make_root(tmp_path, release, [])
    size = 147897477120
    jpeg = minirelease.fake_jpeg(random.Random(1), 600)
    inner = size - 512 - 1024
    def header(name: str, n: int) -> bytes:          # a size too big for octal: base-256
        return minirelease.raw_header(name, 0, raw_size=b"\x80" + n.to_bytes(11, "big"))

    with open(root / "downloads" / minirelease.TRAIN_TAR, "wb") as f:
        f.write(header("n01000001.tar", inner) + header("n01000001_1.JPEG", inner - 2048) + jpeg)
        f.truncate(size)
    r = pack(root, "train")
    refused(root, r, "the official archive holds 1,281,167 images in 1,000 classes, this one 1 "
                     "in 1 classes: it is damaged")


def test_missing_class_list_says_what_to_run(tmp_path, release):
    root = make_root(tmp_path, release, ["train"], meta=False)
    r = pack(root, "train")
    refused(root, r, "meta/synsets.csv not found: run 02_convert_meta_clsloc.py first")


def test_a_tree_file_changed_against_its_manifest_is_refused_while_read(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    assert run(["bash", UNZIP, "--root", root, "train"], env=clean_env()).returncode == 0
    wnid = release.wnids_sorted[3]
    rel = "train/%s/%s" % (wnid, release.train[wnid][0])
    data = bytearray((root / rel).read_bytes())
    data[len(data) // 2] ^= 0x01                       # same size: only the hash can see it
    (root / rel).write_bytes(bytes(data))
    r = pack(root, "--from-tree", "--shards", "1", "train")
    refused(root, r, rel, "SHA256SUMS.train", "the shard holding it was not written",
            "04_verify.py --full train")
    (root / "train" / wnid / "notes.txt").write_text("hi")    # 04's structure, before reading
    r = pack(root, "--from-tree", "--shards", "1", "train")
    refused(root, r, "notes.txt", "move them out")


def test_shards_not_written_here_and_too_many_shards_are_refused(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    r = pack(root, "--shards", "55", "train")
    refused(root, r, "55 shards asked for, but the split has 54 images")
    (root / OUT).mkdir(exist_ok=True)
    stranger = root / OUT / (TRAIN_NAMES % 1)
    stranger.write_bytes(b"mine")
    r = pack(root, "--shards", "2", "train")
    assert r.returncode == 1 and "were not written by 06_pack_webdataset.py" in r.stderr, r.stderr
    assert stranger.read_bytes() == b"mine" and not (root / OUT / (TRAIN_NAMES % 0)).exists()


def test_an_output_folder_that_is_a_file_or_a_broken_link_is_named(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    out = root / OUT
    out.write_text("mine\n")
    r = pack(root, "--shards", "2", "train")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "%s is not a folder: the shards go into a folder of that name; move it away" % out \
        in r.stderr, r.stderr
    assert out.read_text() == "mine\n"
    out.unlink()
    out.symlink_to(tmp_path / "gone")
    r = pack(root, "--shards", "2", "train")
    assert r.returncode == 1, r.stderr
    assert "%s is a symbolic link to %s, which is not a folder (or is not there)" \
        % (out, tmp_path / "gone") in r.stderr, r.stderr
    assert not (tmp_path / "gone").exists()


def test_shards_of_another_class_list_are_not_already_done(tmp_path, release):
    """The label is a class's place in the class list: complete shards written with one list are
    not 'already done' for another (--meta with more classes shifts the indexes), and a rerun
    that names the same labels otherwise (--labels given as a path) keeps the shards as they are."""
    root = make_root(tmp_path, release, ["train", "val"])
    assert pack(root, "--shards", "2", "train", "val").returncode == 0
    rows = list(csv.DictReader(io.StringIO((root / "meta" / "synsets.csv").read_text())))
    rows += [dict(rows[0], wnid="n0000000%d" % k, ilsvrc_id=str(len(rows) + k + 1)) for k in range(3)]
    order = sorted(r["wnid"] for r in rows)
    for r in rows:
        r["class_index"] = str(order.index(r["wnid"]))     # three classes sort before every other
    more = tmp_path / "synsets-more.csv"
    with open(more, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = pack(root, "--shards", "2", "--meta", more, "train")
    assert r.returncode == 0 and "already done" not in r.stderr, r.stderr
    labels = {doc["wnid"]: doc["label"] for p in shards(root, "imagenet1k-train-*")
              for doc in (json.loads(s["json"]) for s in wds.WebDataset(str(p), shardshuffle=False))}
    assert labels == {w: release.class_index(w) + 3 for w in labels}
    assert "already done" in pack(root, "--shards", "2", "--meta", more, "train").stderr
    before = {p.name: p.stat().st_ino for p in shards(root, "imagenet1k-validation-*")}
    truth = next((root / "devkit").rglob("ILSVRC2012_validation_ground_truth.txt"))
    r = pack(root, "--shards", "2", "--labels", truth, "val")
    assert r.returncode == 0 and "2 already written, 0 to write" in r.stderr, r.stderr
    assert {p.name: p.stat().st_ino for p in shards(root, "imagenet1k-validation-*")} == before


def test_a_damaged_record_in_the_state_is_refused_not_counted(tmp_path, release):
    """The state's numbers are checked before they are summed into _info.json: a record that is
    not [bytes, samples] as whole numbers (edited, damaged) is refused, and one whose sample
    count is not the deal's is written again, never listed as it stands."""
    root = make_root(tmp_path, release, ["train"])
    assert pack(root, "--shards", "2", "train").returncode == 0
    state = root / OUT / ".imagenet1k-train.json"
    good, info = state.read_text(), (root / OUT / "_info.json").read_text()
    for bad in ("a", -5, True, 1.5, None, 99999):
        doc = json.loads(good)
        doc["written"] = {n: [v[0], bad] for n, v in doc["written"].items()}
        state.write_text(json.dumps(doc))
        r = pack(root, "--shards", "2", "train")
        assert "Traceback" not in r.stderr, (bad, r.stderr)
        if bad == 99999:                           # well formed, but not what the deal gave
            assert r.returncode == 0 and "0 already written, 2 to write" in r.stderr, r.stderr
        else:
            assert r.returncode == 1, (bad, r.stderr)
            assert "%s is damaged or not 06_pack_webdataset.py's" % state in r.stderr, r.stderr
        assert (root / OUT / "_info.json").read_text() == info, bad
        state.write_text(good)


@contextlib.contextmanager
def read_only(folder: Path, mount: Path):
    """`folder` seen read-only at `mount` (a read-only bind mount: root ignores chmod);
    the test is skipped where mounting is not allowed."""
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root and mount rights)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)],
                          capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_complete_shards_on_a_read_only_disk_are_already_done(tmp_path, release):
    """A complete split needs nothing written: 'already done' on a read-only copy (no lock file
    made); a split still to write says the folder cannot be written, not an errno."""
    root = make_root(tmp_path, release, ["train", "val"])
    assert pack(root, "--shards", "2", "train").returncode == 0
    with read_only(root, tmp_path / "ro") as ro:
        r = pack(ro, "--shards", "2", "train", "val")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "train: already done (2 shards, 54 samples" in r.stderr, r.stderr
        assert "val: cannot write in %s (Read-only file system): make it writable, or pass " \
               "--root DIR" % (ro / OUT) in r.stderr, r.stderr


# ----------------------------------------------------------------------------- sizes from headers

def encoded(mode: str, size: tuple[int, int], fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt, kw", [
    ("RGB", "JPEG", {}), ("L", "JPEG", {}), ("CMYK", "JPEG", {}),
    ("RGB", "JPEG", {"progressive": True, "icc_profile": bytes(300 << 10)}),
    ("RGB", "PNG", {}), ("RGBA", "PNG", {}),
])
def test_image_size_from_headers_equals_pillows_in_any_pieces(mode, fmt, kw):
    """Width and height from the frame header (or IHDR), not decoded, as Pillow gives them; the
    same when the bytes arrive in pieces of any size (as a member is copied)."""
    from imagenet_prep.images import HeadScan, image_info
    data = encoded(mode, (37, 23), fmt, **kw)
    info = image_info(data)
    with Image.open(io.BytesIO(data)) as im:
        assert (info.width, info.height) == im.size == (37, 23)
    assert info.kind == {"PNG": "PNG", "CMYK": "CMYK JPEG"}.get(fmt if fmt == "PNG" else mode)
    for step in (1, 5, 4096, 1 << 20):
        scan = HeadScan()
        for at in range(0, len(data), step):
            scan.feed(data[at:at + step])
        assert scan.end() == info


# ----------------------------------------------------------------------------- other sources

PART = ".imagenet1k-train-%02d.tar.part"


@pytest.fixture(scope="module")
def layouts(release, tmp_path_factory) -> dict:
    """Every layout of the Hugging Face and Kaggle sources, made from the unit release's very
    image bytes (tests/sourcerelease.py)."""
    base = tmp_path_factory.mktemp("sources")
    imgs = sourcerelease.release_images(release)
    return {"kaggle inline": sourcerelease.make_kaggle_zip(release, base / "k", images=imgs),
            "kaggle inline zip64": sourcerelease.make_kaggle_zip(release, base / "k64",
                                                                 force_zip64=True, stored_every=3,
                                                                 images=imgs),
            "kaggle nested": sourcerelease.make_kaggle_zip(release, base / "kn", "nested",
                                                           images=imgs),
            "hf parquet": sourcerelease.make_hf_parquet(release, base / "p", images=imgs),
            "hf tar.gz": sourcerelease.make_hf_targz(release, base / "t", prefix="split",
                                                     images=imgs)}


def source_root(tmp_path: Path, meta_from: Path, made, name: str = "root", **kw) -> Path:
    """ROOT as 00_download.sh --source leaves it (the files, source.json), with 02's class list
    copied from `meta_from`; no devkit: the val labels are the source's own."""
    hub = isinstance(made, sourcerelease.HubLayout)
    root = (hub_root if hub else kaggle_root)(tmp_path, made, name, **kw)
    (root / "meta").mkdir()
    shutil.copy(meta_from / "meta" / "synsets.csv", root / "meta")
    return root


def parts(root: Path) -> list[str]:
    return sorted(p.name for p in (root / OUT).glob(".*.part")) if (root / OUT).exists() else []


@pytest.mark.parametrize("layout", ["kaggle inline", "kaggle inline zip64", "kaggle nested",
                                    "hf parquet", "hf tar.gz"])
def test_every_source_gives_the_bytes_of_the_archives(tmp_path, built, layouts, layout):
    """The Kaggle zip inline (stored and deflated members, read where they lie; Zip64 records
    forced), the older zip's nested tar.gz, the Hub's Parquet and tar.gz files (read twice from
    their start): the very shards and _info.json the image-net.org archives give (and so
    --from-tree: test_same_seed_same_bytes_...), without a devkit: the val labels are
    Kaggle's LOC_val_solution.csv (kept in ROOT/kaggle/ for 03, as 01 keeps it), or the classes
    the Hub's names carry."""
    source = layout.split()[0]
    made = layouts[layout]
    root = source_root(tmp_path, built, made)
    for split, n in (("train", "4"), ("val", "3")):
        r = pack(root, "--source", source, "--shards", n, split)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    assert contents(root) == contents(built)
    assert parts(root) == [] and leftovers(root) == []
    if source == "hf":
        assert (root / "hf" / "classes.py").read_bytes() == made.classes_py.read_bytes()
        assert "val: no validation labels in %s (no devkit): the classes the source's names " \
               "carry are taken" % root in r.stderr, r.stderr
        assert "each reading its files from their start again" in r.stderr
    else:
        assert sorted(p.name for p in (root / "kaggle").iterdir()) == [
            "LOC_sample_submission.csv", "LOC_synset_mapping.txt", "LOC_train_solution.csv",
            "LOC_val_solution.csv"]
        assert "Kaggle publishes no checksum for it" in r.stderr
    assert "official counts not checked" in r.stderr      # a miniature: not the official copy
    r = pack(root, "--source", source, "--shards", "4", "train")
    assert r.returncode == 0 and "train: already done (4 shards" in r.stderr, r.stderr


def test_without_a_class_list_the_sources_own_is_kept_for_02(tmp_path, layouts, release):
    """The Kaggle zip holds the class list 02 needs: a first run keeps it (as 01 does) and says
    so when meta/synsets.csv is missing."""
    root = kaggle_root(tmp_path, layouts["kaggle inline"])
    r = pack(root, "--source", "kaggle", "--shards", "2", "train")
    kept = root / "kaggle" / "LOC_synset_mapping.txt"
    refused(root, r, "meta/synsets.csv not found: run 02_convert_meta_clsloc.py first (or pass "
                     "--meta CSV): 02 finds the source's class list in %s, kept there by this run"
                     % kept)
    assert kept.read_text() == minirelease.kaggle_synset_mapping(release)


def test_the_hub_val_names_must_agree_with_the_labels(tmp_path, built, layouts, release):
    """The class a Hub val name carries is checked against the labels 03 would read (here
    --labels, one WNID per line): one that differs is named, nothing is written."""
    root = source_root(tmp_path, built, layouts["hf parquet"])
    names = sorted(release.val)
    wnids = [release.val[n] for n in names]
    other = next(w for w in release.wnids_sorted if w != wnids[0])
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(w + "\n" for w in [other] + wnids[1:]))
    r = pack(root, "--source", "hf", "--shards", "3", "--labels", labels, "val")
    refused(root, r, "val: 1 images are given another class by the labels than their names in the "
                     "source carry (%s: %s, %s)" % (names[0], other, wnids[0]), "--labels FILE")


def deflated_member(z: sourcerelease.KaggleZip) -> tuple[str, int]:
    """A deflated train image of the zip and a byte of its compressed data that, flipped, still
    inflates, to other bytes: only the CRC-32 can tell."""
    import zipfile
    import zlib
    with zipfile.ZipFile(z.file.local) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_DEFLATED or \
                    not info.filename.startswith("ILSVRC/Data/CLS-LOC/train/"):
                continue
            raw = z.file.local.read_bytes()
            start = info.header_offset + 30 + len(info.filename.encode()) + \
                int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
            data = raw[start:start + info.compress_size]
            for at in range(len(data) // 2, len(data)):
                bad = bytearray(data)
                bad[at] ^= 0x01
                try:
                    out = zlib.decompress(bytes(bad), -15)
                except zlib.error:
                    continue
                if len(out) == info.file_size and zlib.crc32(out) != info.CRC:
                    return info.filename, start + at
    raise AssertionError("no deflated member with such a byte")


def test_a_flipped_byte_in_a_deflated_member_is_named_by_its_crc(tmp_path, built, layouts):
    z = layouts["kaggle inline"]
    name, at = deflated_member(z)
    root = source_root(tmp_path, built, z)
    zip_path = root / "downloads" / "kaggle" / sourcerelease.KAGGLE_ZIP
    data = bytearray(zip_path.read_bytes())
    data[at] ^= 0x01
    zip_path.write_bytes(bytes(data))
    r = pack(root, "--source", "kaggle", "--shards", "1", "train")
    refused(root, r, "imagenet1k-train-00.tar: imagenet-object-localization-challenge.zip: member "
                     "%s: CRC-32 mismatch (" % name,
            "the download is incomplete or damaged: download it again (delete %s and run "
            "00_download.sh --source kaggle train: it downloads the zip again)" % zip_path)
    assert zip_path.read_bytes() == bytes(data)


@pytest.mark.parametrize("how", ["kaggle unverified", "hf unverified", "hf short"])
def test_a_file_00_has_not_verified_is_refused(tmp_path, built, layouts, how):
    if how == "kaggle unverified":
        root = source_root(tmp_path, built, layouts["kaggle inline"], verified=False)
        words = ["imagenet-object-localization-challenge.zip is not verified yet (00_download.sh "
                 "has not finished it); run 00_download.sh --source kaggle train"]
    elif how == "hf unverified":
        root = source_root(tmp_path, built, layouts["hf tar.gz"],
                           verified=lambda f: f.path != "data/train_images_1.tar.gz")
        words = ["train: data/train_images_1.tar.gz is not verified yet (00_download.sh has not "
                 "finished it); run 00_download.sh --source hf train"]
    else:
        root = source_root(tmp_path, built, layouts["hf parquet"])
        f = root / "downloads" / "hf" / "data" / "train-00001-of-00003.parquet"
        size = f.stat().st_size
        os.truncate(f, size - 1)
        words = ["%s is %s bytes, source.json says %s" % (f, format(size - 1, ","),
                                                           format(size, ","))]
    r = pack(root, "--source", how.split()[0], "--shards", "2", "train")
    refused(root, r, *words)


def test_a_damaged_hub_file_is_named_before_any_shard_is_written(tmp_path, built, layouts):
    root = source_root(tmp_path, built, layouts["hf tar.gz"])
    f = root / "downloads" / "hf" / "data" / "train_images_1.tar.gz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    r = pack(root, "--source", "hf", "--shards", "2", "train")
    refused(root, r, "data/train_images_1.tar.gz: SHA-256 mismatch", "the file is damaged",
            "delete it (rm %s) and run 00_download.sh --source hf train: it downloads the file "
            "again; no shard was written" % f)


def test_killed_while_the_files_are_read_again_a_rerun_goes_on_with_the_same_bytes(tmp_path, big,
                                                                                  big_ref):
    """The Hub's files are read twice: killed (SIGKILL) once some of them have been written into
    the shards' part files, a rerun reads only the others and the shards are those of the
    archive; until then no shard is under its name."""
    ref = big_ref
    made = sourcerelease.make_hf_parquet(big, tmp_path / "pq", {"train": 6, "validation": 1,
                                                               "test": 1}, row_group=8)
    root = source_root(tmp_path, ref, made)
    state, done = root / OUT / ".imagenet1k-train.json", []
    proc = subprocess.Popen([sys.executable, str(WDS), "--root", str(root), "--source", "hf",
                             "--shards", "12", "--jobs", "1", "train"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not done and time.monotonic() < deadline:
        try:
            done = json.loads(state.read_text())["streams"]["done"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed")
    done = json.loads(state.read_text())["streams"]["done"]     # as the kill left it
    assert 0 < len(done) < 6, done
    assert parts(root) == [PART % k for k in range(12)]
    assert not [n for n in contents(root) if n.startswith("imagenet1k-")]
    r = pack(root, "--source", "hf", "--shards", "12", "--jobs", "2", "train")
    assert r.returncode == 0, r.stderr
    assert "train: resuming: %d of 6 files were written into the shards by an earlier run" \
        % len(done) in r.stderr, r.stderr
    assert contents(root) == contents(ref)
    assert parts(root) == [] and leftovers(root) == []
