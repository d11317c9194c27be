"""01_unzip.sh --source hf|kaggle on the miniature sources of tests/sourcerelease.py.

Every layout (the Hub's tar.gz and Parquet files, Kaggle's zip inline, nested, Zip64) must give the
tree the image-net.org route gives for the same release, byte for byte, with the same markers and
manifests; kills at any moment and reruns give the same tree; a damaged file or member, a file 00
has not verified, a name that does not fit, a label that disagrees, or counts that are not the
official revision's stop with exit 1, naming it, and leave nothing half-done under a final name.

The records of 00_download.sh --source (ROOT/downloads/SOURCE/source.json) are written here by
hand, as docs/sources.md says 00 writes them.
"""
from __future__ import annotations

import hashlib
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

import minirelease
import sourcerelease
from sourcerelease import hub_record, hub_root, kaggle_root, write_record
from conftest import REPO, assert_usage_error, run
from imagenet_prep import facts, sources
from imagenet_prep.console import PrepError
from imagenet_prep.extract import Config

UNZIP = REPO / "01_unzip.sh"
STATE = ".01_unzip"
SPLITS = ("train", "val", "test")
ZIP = sourcerelease.KAGGLE_ZIP


# ----------------------------------------------------------------------------- helpers

def env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("IMAGENET_", "SLURM_"))}


def unzip(root: Path, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return run(["bash", UNZIP, "--root", root, *args], timeout=timeout, env=env())


def tree(root: Path, parts=SPLITS + ("meta",)) -> dict[str, bytes]:
    """Every file of the split folders (and meta/) under ROOT, by path relative to ROOT."""
    out = {}
    for part in parts:
        for p in sorted((root / part).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary names and source state that a finished run must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".tmp-" in p.name or p.name.startswith("source-") and not p.name.endswith(".lock"))


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def assert_nothing_placed(root: Path, splits=SPLITS) -> None:
    for s in splits:
        assert not (root / s).exists() or not any((root / s).iterdir()), s
        assert not (root / STATE / (s + ".done")).exists(), s


@pytest.fixture(scope="module")
def images(release) -> dict[str, bytes]:
    return sourcerelease.release_images(release)


@pytest.fixture(scope="module")
def imagenet_tree(release, tmp_path_factory) -> dict[str, bytes]:
    """What the image-net.org route makes of the same release: the tree every source must give."""
    root = tmp_path_factory.mktemp("imagenet")
    (root / "downloads").mkdir()
    for s in SPLITS:
        shutil.copy(release.archives[s], root / "downloads")
    r = unzip(root, "train", "val", "test")
    assert r.returncode == 0, r.stderr
    return tree(root)


@pytest.fixture(scope="module")
def hub_targz(release, images, tmp_path_factory) -> sourcerelease.HubLayout:
    return sourcerelease.make_hf_targz(release, tmp_path_factory.mktemp("targz"), prefix="split",
                                       images=images)


@pytest.fixture(scope="module")
def kaggle_inline(release, images, tmp_path_factory) -> sourcerelease.KaggleZip:
    return sourcerelease.make_kaggle_zip(release, tmp_path_factory.mktemp("kaggle"), images=images)


# ----------------------------------------------------------------------------- every layout, end to end

STAGES = {n: REPO / n for n in ("02_convert_meta_clsloc.py", "03_build_val_class_folders.py",
                                "04_verify.py", "05_pack_squashfs.py")}
SQUASHFS = bool(shutil.which("sqfstar") and shutil.which("unsquashfs"))


def stage(name: str, root: Path, *args) -> subprocess.CompletedProcess:
    return run([sys.executable, STAGES[name], "--root", root, *args], env=env())


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A miniature of 12 real classes (02 checks a source's class list against the real 1,000),
    every layout of both sources made from it, and the tree the image-net.org route gives it
    after 01, 02 (from its devkit) and 03."""
    base = tmp_path_factory.mktemp("real")
    rel = minirelease.make_release(base / "release", real_classes=True)
    imgs = sourcerelease.release_images(rel)
    layouts = {"hf tar.gz": sourcerelease.make_hf_targz(rel, base / "targz", prefix="split",
                                                        images=imgs),
               "hf parquet": sourcerelease.make_hf_parquet(rel, base / "parquet", images=imgs)}
    for shape, zip64 in (("inline", False), ("nested", False), ("inline", True)):
        layouts["kaggle %s%s" % (shape, " zip64" if zip64 else "")] = \
            sourcerelease.make_kaggle_zip(rel, base / shape / str(zip64), shape, zip64, images=imgs)
    ref = base / "imagenet"
    (ref / "downloads").mkdir(parents=True)
    for s in SPLITS + ("devkit",):
        shutil.copy(rel.archives[s], ref / "downloads")
    assert unzip(ref, "all").returncode == 0
    after01 = tree(ref)
    assert stage("02_convert_meta_clsloc.py", ref, "--expect-classes", 12).returncode == 0
    assert stage("03_build_val_class_folders.py", ref).returncode == 0
    return rel, layouts, after01, sorted_tree(ref)


def sorted_tree(root: Path) -> dict[str, bytes]:
    """The images after 03 (val in class folders), the manifests and 03's val_labels.csv: what
    every route must give alike (02's synsets.csv takes the train counts from a devkit, or from
    the package's table without one)."""
    return {p: v for p, v in tree(root).items()
            if not p.startswith("meta/") or p.startswith("meta/SHA256SUMS.") or p == "meta/val_labels.csv"}


@pytest.mark.parametrize("layout", ["hf tar.gz", "hf parquet", "kaggle inline", "kaggle nested",
                                    "kaggle inline zip64"])
def test_every_layout_gives_the_image_net_tree_and_02_to_05_run_on_it(tmp_path, real, layout):
    rel, layouts, after01, after03 = real
    source = layout.split()[0]
    made = layouts[layout]
    root = hub_root(tmp_path, made) if source == "hf" else kaggle_root(tmp_path, made)
    r = unzip(root, "--source", source, "all")
    assert r.returncode == 0, r.stderr
    assert tree(root) == after01
    assert leftovers(root) == []
    if source == "hf":
        assert (root / "hf" / "classes.py").read_bytes() == made.classes_py.read_bytes()
        labels = (root / "hf" / "val_labels.csv").read_text().splitlines()
        assert labels == ["ImageId,PredictionString"] + \
            ["%s,%s" % (n[:-5], w) for n, w in sorted(rel.val.items())]
    else:
        assert sorted(p.name for p in (root / "kaggle").iterdir()) == sorted(sources.KAGGLE_FILES)
        assert (root / "kaggle" / "LOC_val_solution.csv").read_text() == \
            minirelease.kaggle_val_solution(rel)
        assert "Kaggle publishes no checksum for it: the CRC-32 of every member" in r.stderr
    again = unzip(root, "--source", source, "all")
    assert again.returncode == 0 and again.stderr.count("already done") == 3, again.stderr

    two = stage("02_convert_meta_clsloc.py", root, "--expect-classes", 12)
    assert two.returncode == 0, two.stderr
    assert "no devkit: the classes are those of" in two.stderr
    three = stage("03_build_val_class_folders.py", root)
    assert three.returncode == 0, three.stderr
    assert sorted_tree(root) == after03
    four = stage("04_verify.py", root, "--full", "all")
    # 02 without a devkit takes each class's train count from the package's table (the real
    # counts, 732 to 1,300), which a miniature is not: 01 marked train as not from the official
    # release, and 04 says that it does not compare the counts; every other check holds
    assert four.returncode == 0, four.stderr
    assert "the number of images per class is not compared" in four.stderr
    assert "checked: structure, SHA-256 against meta/SHA256SUMS.train (54 files listed)" in four.stderr
    assert "result: train ok, val ok, test ok" in four.stderr
    if SQUASHFS:
        five = stage("05_pack_squashfs.py", root, "--from-tree", "val")
        assert five.returncode == 0, five.stderr
        assert "36 files read back equal the source" in five.stderr


# ----------------------------------------------------------------------------- kills and reruns

@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """50 classes of ~4 KiB images, as a Hub tar.gz layout and a Kaggle zip, and the image-net.org
    route's tree of them: long enough (~1 s) to be killed mid-way."""
    base = tmp_path_factory.mktemp("medium")
    rel = minirelease.make_release(base / "release", classes=50, images=(15, 30), val_per_class=4,
                                   test=20, kib=4.0, seed=5)
    imgs = sourcerelease.release_images(rel)
    ref = base / "imagenet"
    (ref / "downloads").mkdir(parents=True)
    for s in SPLITS:
        shutil.copy(rel.archives[s], ref / "downloads")
    assert unzip(ref, "train", "val", "test").returncode == 0
    return (sourcerelease.make_hf_targz(rel, base / "targz", train_files=4, images=imgs),
            sourcerelease.make_kaggle_zip(rel, base / "kaggle", images=imgs), tree(ref))


def complete_or_absent(root: Path, expect: dict[str, bytes]) -> None:
    """Whatever is under a final name is complete: a class folder, val/, test/."""
    for split in SPLITS:
        top = root / split
        if not top.is_dir():
            continue
        folders = [d for d in top.iterdir()] if split == "train" else [top]
        for d in folders:
            got = {str(p.relative_to(root)): p.read_bytes() for p in d.iterdir()}
            want = {k: v for k, v in expect.items() if k.startswith(str(d.relative_to(root)) + "/")}
            assert got == want, "%s under its final name is not complete" % d


def proven(root: Path, source: str) -> bool:
    """A checkpoint of the split being read counts some proven bytes of the journal."""
    for split in SPLITS:
        try:
            doc = json.loads((root / STATE / ("source-%s-%s.json" % (source, split))).read_text())
        except (OSError, ValueError):
            continue
        if doc.get("journal"):
            return True
    return False


@pytest.mark.parametrize("source", ["hf", "kaggle"])
def test_sigkill_at_random_moments_then_rerun_gives_the_same_tree(tmp_path, medium, source):
    """Half the kills at a random moment, half once a checkpoint counts something proven (then the
    rerun must keep it); after every third, a rerun must finish with the same tree."""
    targz, z, expect = medium
    root = hub_root(tmp_path, targz) if source == "hf" else kaggle_root(tmp_path, z)
    args = ["--source", source, "--jobs", "2" if source == "hf" else "1", "all"]
    cmd = ["bash", str(UNZIP), "--root", str(root)] + args
    t0 = time.monotonic()
    probe = unzip(root, *args)
    window = time.monotonic() - t0
    assert probe.returncode == 0, probe.stderr
    rng = random.Random(3)
    kills = attempts = resumed = 0
    while kills < 8 and attempts < 40:
        for part in SPLITS + ("meta", STATE, "hf", "kaggle"):
            shutil.rmtree(root / part, ignore_errors=True)
        while attempts < 40:
            attempts += 1
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, env=env())
            if attempts % 2:
                time.sleep(rng.uniform(0.3, 0.95) * window)
            else:
                deadline = time.monotonic() + 30
                while proc.poll() is None and not proven(root, source) and time.monotonic() < deadline:
                    time.sleep(0.005)
            if proc.poll() is not None:
                break                             # it finished first: start again from nothing
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            kills += 1
            time.sleep(0.05)
            complete_or_absent(root, expect)
            if kills % 3 == 0:
                break
        r = unzip(root, *args)
        assert r.returncode == 0, r.stderr
        resumed += "proven by an earlier run are kept" in r.stderr
        assert tree(root) == expect               # 0 lost, 0 partial, 0 extra
        assert leftovers(root) == []
    assert kills >= 6, "only %d of %d runs were killed mid-way" % (kills, attempts)
    assert resumed, "no rerun resumed from what a killed run had proven"


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_and_sigterm_keep_what_is_proven(tmp_path, medium, sig, code, said):
    """Stopped in the middle, the run syncs and checkpoints what it proved, which the rerun keeps
    (zip members proven since the last periodic checkpoint included)."""
    _, z, expect = medium
    root = kaggle_root(tmp_path, z)
    args = ["--source", "kaggle", "--jobs", "1", "all"]
    proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root)] + args, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=env())
    deadline = time.monotonic() + 60
    while proc.poll() is None and not proven(root, "kaggle") and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    err = proc.communicate(timeout=60)[1]
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be stopped")
    assert proc.returncode == code and said in err and "Traceback" not in err, err[-2000:]
    kept = sum(len(Path(j).read_bytes().splitlines()) for j in (root / STATE).glob("*.journal"))
    r = unzip(root, *args)
    assert r.returncode == 0, r.stderr
    assert sum(int(line.split("resuming: ")[1].split()[0].replace(",", ""))
               for line in r.stderr.splitlines() if "resuming: " in line) == kept > 0
    assert tree(root) == expect


def test_a_rerun_reads_only_the_hub_files_not_proven(tmp_path, hub_targz, imagenet_tree):
    """A Hub file read and checked is not read again."""
    root = hub_root(tmp_path, hub_targz)
    bad = root / "downloads" / "hf" / "data" / "train_images_2.tar.gz"
    flip(bad, bad.stat().st_size // 2)
    r = unzip(root, "--source", "hf", "--jobs", "1", "train")
    assert r.returncode == 1
    shutil.copyfile(hub_targz.by_path()["data/train_images_2.tar.gz"].local, bad)
    r = unzip(root, "--source", "hf", "train")
    assert r.returncode == 0, r.stderr
    assert "train: 1 of 3 file(s) to read" in r.stderr
    assert "resuming: 36 files proven by an earlier run are kept" in r.stderr
    assert tree(root, ["train"]) == {k: v for k, v in imagenet_tree.items() if k.startswith("train/")}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_rerun_keeps_the_zip_members_proven(tmp_path, kaggle_inline, imagenet_tree, jobs):
    """Every member written before a damaged one is proven by its CRC-32 and kept, in this
    process or in a worker."""
    root = kaggle_root(tmp_path, kaggle_inline)
    zip_path = root / "downloads" / "kaggle" / ZIP
    member = last_image_member(zip_path)
    flip(zip_path, member.offset + 30 + len(member.raw_name) + 20)
    r = unzip(root, "--source", "kaggle", "--jobs", jobs, "all")
    assert r.returncode == 1
    assert "CRC-32 mismatch" in r.stderr and member.name in r.stderr
    shutil.copyfile(kaggle_inline.file.local, zip_path)
    r = unzip(root, "--source", "kaggle", "--jobs", jobs, "all")
    assert r.returncode == 0, r.stderr
    before = [n for n in kaggle_inline.names if "/val/" in n and n.endswith(".JPEG")]
    assert "train: resuming: 54 files proven by an earlier run are kept" in r.stderr
    assert "test: resuming: 10 files proven by an earlier run are kept" in r.stderr
    assert "val: resuming: %d files proven" % before.index(member.name) in r.stderr
    assert tree(root) == imagenet_tree


def last_image_member(path: Path):
    from imagenet_prep.zipread import ZipDirectory, file_range
    with open(path, "rb") as f:
        d = ZipDirectory(path.stat().st_size, file_range(f), path.name)
        return [e for e in d.in_file_order() if e.name.endswith(".JPEG") and e.method == 0][-1]


# ----------------------------------------------------------------------------- damaged files

def test_a_flipped_byte_in_a_hub_tar_gz(tmp_path, hub_targz, imagenet_tree):
    root = hub_root(tmp_path, hub_targz)
    val = root / "downloads" / "hf" / "data" / "val_images.tar.gz"
    flip(val, val.stat().st_size // 2)
    r = unzip(root, "--source", "hf", "val")
    assert r.returncode == 1
    assert "data/val_images.tar.gz: SHA-256 mismatch (the file gives " in r.stderr
    assert "the file is damaged (reading it stopped at: " in r.stderr
    assert "delete it (rm %s) and run 00_download.sh --source hf val" % val in r.stderr
    assert_nothing_placed(root, ["val"])
    assert not any((root / ".val.tmp-hf").iterdir())          # what it wrote is removed
    r = unzip(root, "--source", "hf", "val")                   # known: said at once
    assert r.returncode == 1 and "found by an earlier run; the file has not changed since" in r.stderr
    shutil.copyfile(hub_targz.by_path()["data/val_images.tar.gz"].local, val)   # downloaded again
    r = unzip(root, "--source", "hf", "val")
    assert r.returncode == 0, r.stderr
    assert tree(root, ["val"]) == {k: v for k, v in imagenet_tree.items() if k.startswith("val/")}


def test_a_flipped_byte_in_a_zip_member_names_it(tmp_path, kaggle_inline):
    root = kaggle_root(tmp_path, kaggle_inline)
    zip_path = root / "downloads" / "kaggle" / ZIP
    e = last_image_member(zip_path)
    flip(zip_path, e.offset + 30 + len(e.raw_name) + 40)
    r = unzip(root, "--source", "kaggle", "--jobs", "2", "all")
    assert r.returncode == 1
    assert "%s: member %s: CRC-32 mismatch" % (ZIP, e.name) in r.stderr
    assert "delete %s and run 00_download.sh --source kaggle train val test;" % zip_path in r.stderr
    assert "the members extracted and checked so far are kept" in r.stderr
    assert_nothing_placed(root)
    split, name = e.name.split("/")[-2:] if "/val/" in e.name or "/test/" in e.name else \
        ("train", "/".join(e.name.split("/")[-2:]))
    assert not (root / (".%s.tmp-kaggle" % split) / name).exists()


# ----------------------------------------------------------------------------- what 00 left

@pytest.mark.parametrize("damage, message", [
    (lambda f: f.__setitem__("verified", False), "data/val_images.tar.gz is not verified yet"),
    (lambda f: f.__setitem__("size", f["size"] + 1), "bytes, source.json says"),
    ("missing", "is missing"),
])
def test_a_file_00_has_not_verified_is_refused(tmp_path, hub_targz, damage, message):
    root = hub_root(tmp_path, hub_targz)
    rec = json.loads((root / "downloads" / "hf" / "source.json").read_text())
    target = next(f for f in rec["files"] if f["path"] == "data/val_images.tar.gz")
    if damage == "missing":
        (root / "downloads" / "hf" / "data" / "val_images.tar.gz").unlink()
    else:
        damage(target)
    write_record(root, "hf", rec)
    r = unzip(root, "--source", "hf", "val")
    assert r.returncode == 1
    assert message in r.stderr and "run 00_download.sh --source hf val (it downloads and checks " \
        "them), then run this again" in r.stderr, r.stderr
    assert not (root / "val").exists() and not (root / ".val.tmp-hf").exists()


def test_a_kaggle_zip_00_has_not_verified_is_refused(tmp_path, kaggle_inline):
    root = kaggle_root(tmp_path, kaggle_inline, verified=False)
    r = unzip(root, "--source", "kaggle", "train", "val")
    assert r.returncode == 1
    assert "%s is not verified yet" % ZIP in r.stderr
    assert "run 00_download.sh --source kaggle train val" in r.stderr
    assert_nothing_placed(root)


def test_no_record_says_to_download_first(tmp_path):
    (tmp_path / "downloads").mkdir()
    r = unzip(tmp_path, "--source", "hf", "train")
    assert r.returncode == 1
    assert "downloads/hf/source.json not found" in r.stderr
    assert "run 00_download.sh --source hf SPLIT" in r.stderr


RECORD_EDITS = {
    "another field": (lambda d: d.update(url="http://x"), "its fields must be exactly"),
    "not hex": (lambda d: d.update(revision="main"), "revision is not a commit hash"),
    "sha256": (lambda d: d["files"][0].update(sha256="ABC"), "sha256 is not 64 lowercase hex"),
    "split": (lambda d: d["files"][0].update(split="val"), "but the path is of split train"),
    "layout": (lambda d: d.update(layout="parquet"), "layout tar.gz"),
    "path": (lambda d: d["files"][0].update(path="data/../../etc/passwd"), "neither a file of"),
    "size": (lambda d: d["files"][0].update(size=True), "size is not a whole number"),
    "twice": (lambda d: d["files"].append(dict(d["files"][0])), "listed twice"),
}


@pytest.mark.parametrize("edit", sorted(RECORD_EDITS))
def test_the_record_is_read_strictly(tmp_path, hub_targz, edit):
    root = hub_root(tmp_path, hub_targz)
    doc = hub_record(hub_targz)
    change, message = RECORD_EDITS[edit]
    change(doc)
    write_record(root, "hf", doc)
    with pytest.raises(PrepError, match="source.json is not a record this script can use") as e:
        sources.load_record(str(root), "hf")
    assert message in str(e.value) and "to write it again" in str(e.value)


def test_a_record_with_a_key_twice_or_not_a_file_is_refused(tmp_path, hub_targz):
    root = hub_root(tmp_path, hub_targz)
    path = root / "downloads" / "hf" / "source.json"
    path.write_text('{"source": "hf", "source": "hf"}')
    with pytest.raises(PrepError, match="a key appears twice: source"):
        sources.load_record(str(root), "hf")
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(PrepError, match="is not a regular file .a FIFO., so it was not read"):
        sources.load_record(str(root), "hf")


def test_folders_not_made_here_are_refused_before_anything_is_read(tmp_path, hub_targz, release):
    root = hub_root(tmp_path, hub_targz)
    wnid = release.wnids_sorted[0]
    (root / "train" / wnid).mkdir(parents=True)
    (root / "train" / wnid / "mine.JPEG").write_bytes(b"x")
    (root / "val").mkdir()
    (root / "val" / "x.JPEG").write_bytes(b"x")
    r = unzip(root, "--source", "hf", "all")
    assert r.returncode == 1
    assert "train: 1 class folder(s) in %s are not as 01_unzip.sh left them: %s (1 files, not " \
        "written by 01_unzip.sh)" % (root / "train", wnid) in r.stderr
    assert "%s exists but was not completed by 01_unzip.sh" % (root / "val") in r.stderr
    assert not (root / ".train.tmp-hf").exists() and not (root / ".val.tmp-hf").exists()
    assert (root / "train" / wnid / "mine.JPEG").read_bytes() == b"x"


# ----------------------------------------------------------------------------- names, labels, counts

def bad_targz(path: Path, names: list[str], data: bytes) -> tuple[int, str]:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for n in names:
            minirelease.add_bytes(tar, n, data)
    raw = path.read_bytes()
    return len(raw), hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("name, message", [
    ("n01000001_5_n01000002.JPEG", "train names must be WNID_<number>_WNID.JPEG with the same WNID twice"),
    ("ILSVRC2012_val_00000001_n01000001.JPEG", "this looks like a val image"),
    ("../n01000001_5_n01000001.JPEG", "with at most one folder in front"),
])
def test_a_name_that_does_not_fit_is_refused_by_name(tmp_path, hub_targz, release, images, name, message):
    root = hub_root(tmp_path, hub_targz)
    rec = json.loads((root / "downloads" / "hf" / "source.json").read_text())
    f = next(f for f in rec["files"] if f["path"] == "data/train_images_1.tar.gz")
    one = next(iter(images.values()))
    good = ["n01000001_%d_n01000001.JPEG" % i for i in (1, 2)]
    f["size"], f["sha256"] = bad_targz(root / "downloads" / "hf" / f["path"], good + [name], one)
    write_record(root, "hf", rec)
    r = unzip(root, "--source", "hf", "--jobs", "1", "train")
    assert r.returncode == 1
    assert "data/train_images_1.tar.gz: member %s refused: " % name in r.stderr and message in r.stderr
    assert "SHA-256 mismatch" not in r.stderr             # the file is as 00 verified: its content is refused
    assert_nothing_placed(root, ["train"])
    assert not list((root / ".train.tmp-hf").glob("n01000001/*"))   # what that file wrote is removed


def test_a_kaggle_name_that_does_not_fit_is_refused_before_anything_is_written(tmp_path, release, images):
    items = [sourcerelease.ZipItem(n, d) for n, d in sourcerelease.kaggle_files(release, images)]
    items += [sourcerelease.ZipItem("ILSVRC/Data/CLS-LOC/train/n01000001/n01000001_1.JPEG", b"x"),
              sourcerelease.ZipItem("ILSVRC/Data/CLS-LOC/train/n01000001/run.sh", b"#!/bin/sh\n")]
    zdir = tmp_path / "zip"
    zdir.mkdir()
    (zdir / ZIP).write_bytes(sourcerelease.write_zip(items).data)
    z = sourcerelease.KaggleZip(sourcerelease._described(ZIP, zdir / ZIP, "all"), "inline", [], [])
    root = kaggle_root(tmp_path, z)
    r = unzip(root, "--source", "kaggle", "train")
    assert r.returncode == 1
    assert "member ILSVRC/Data/CLS-LOC/train/n01000001/run.sh refused: train images must be" in r.stderr
    assert_nothing_placed(root)
    assert not list(root.rglob("*.JPEG"))


def test_a_parquet_label_that_disagrees_with_its_name(tmp_path, release, images):
    import pyarrow.parquet as pq
    layout = sourcerelease.make_hf_parquet(release, tmp_path / "pq", images=images)
    f = next(f for f in layout.files if f.path == "data/validation-00001-of-00002.parquet")
    table = pq.read_table(f.local)
    rows = table.to_pylist()
    rows[3]["label"] = (rows[3]["label"] + 1) % len(release.classes)
    pq.write_table(table.from_pylist(rows, schema=table.schema), f.local, row_group_size=4)
    f.size, f.sha256 = f.local.stat().st_size, hashlib.sha256(f.local.read_bytes()).hexdigest()
    root = hub_root(tmp_path, layout)
    r = unzip(root, "--source", "hf", "--jobs", "1", "val")
    assert r.returncode == 1
    wnid = release.wnids_sorted[rows[3]["label"]]
    assert "data/validation-00001-of-00002.parquet: row 3 (%s): its label %d is class %s, its name " \
        "says %s; refused" % (rows[3]["image"]["path"], rows[3]["label"], wnid,
                              release.val[rows[3]["image"]["path"][:23] + ".JPEG"]) in r.stderr
    assert_nothing_placed(root, ["val"])
    kept = {p.name for p in (root / ".val.tmp-hf").iterdir()}
    other = next(g for g in layout.files if g.path == "data/validation-00000-of-00002.parquet")
    assert kept == {n[:23] + ".JPEG" for n in layout.members[other.path]}   # the good file's, only


def test_the_default_revision_must_hold_the_official_counts(tmp_path, hub_targz):
    """A listing that claims to be the package's tar.gz revision, with other files."""
    revision = facts.hf_release()[0]
    root = hub_root(tmp_path, hub_targz, revision=revision, asked=revision, hashes_from="package")
    r = unzip(root, "--source", "hf", "train", "val")
    assert r.returncode == 1
    assert "train: the Hub's tar.gz revision %s... holds 1,281,167 images in 1,000 classes, these " \
        "files 54 in 12 classes: they are not that revision's files: run 00_download.sh --source " \
        "hf SPLIT" % revision[:8] in r.stderr
    assert "val: the Hub's tar.gz revision %s... holds 50,000 images, these files 36" % revision[:8] \
        in r.stderr
    assert_nothing_placed(root, ["train", "val"])
    assert not (root / "train").exists() or not list((root / "train").iterdir())


def test_official_counts_of_a_copy(tmp_path):
    official = sources.kaggle_copy(facts.KAGGLE_REAL_MIN + 1, nested=False)
    assert official.official and "exact size is not published" in official.name
    with pytest.raises(PrepError, match="test: the competition's zip .* holds 100,000 images, these "
                                        "files 99,999: the zip is not the competition's"):
        sources.official_counts("test", 1, None, 99999, official)
    sources.official_counts("test", 1, None, 100000, official)
    small = sources.kaggle_copy(1 << 20, nested=True)
    assert not small.official and "those of its own nested tar.gz" in small.name


# ----------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("args, message", [
    (["--source", "hf", "devkit"], "there is no devkit in the hf source: 02_convert_meta_clsloc.py "
                                   "takes the classes from the source's own list (ROOT/hf/classes.py"),
    (["--source", "kaggle", "train", "devkit"], "ROOT/kaggle/LOC_synset_mapping.txt"),
    (["--source", "s3", "train"], "--source is imagenet, hf or kaggle, not 's3'"),
    (["--source", "hf", "--archive", "x.tar", "train"], "--archive does not go with --source hf"),
    (["--source", "kaggle", "--shard", "0/2", "train"], "--shard does not go with --source kaggle"),
    (["--source", "hf", "--stream", "train"], "--stream does not go with --source hf"),
])
def test_usage_errors(tmp_path, args, message):
    assert_usage_error(unzip(tmp_path, *args), "01_unzip.sh", message)
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_sources():
    r = run(["bash", UNZIP, "--help"])
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "--source NAME" in text and "ROOT/downloads/kaggle/" in text


def test_remove_archive_removes_the_sources_files_once_done(tmp_path, hub_targz, kaggle_inline):
    root = hub_root(tmp_path, hub_targz)
    r = unzip(root, "--source", "hf", "--remove-archive", "train", "val")
    assert r.returncode == 0, r.stderr
    hf = root / "downloads" / "hf"
    assert sorted(str(p.relative_to(hf)) for p in hf.rglob("*") if p.is_file()) == \
        ["classes.py", "data/test_images.tar.gz", "source.json"]
    assert "train: removed 3 file(s)" in r.stderr and "as asked (--remove-archive)" in r.stderr

    root = kaggle_root(tmp_path, kaggle_inline, "kroot")
    r = unzip(root, "--source", "kaggle", "--remove-archive", "val")
    assert r.returncode == 0, r.stderr
    assert not (root / "downloads" / "kaggle" / ZIP).exists()
    assert "it also held train and test: extracting that now needs the zip downloaded again" in r.stderr


# ----------------------------------------------------------------------------- the journal

def test_a_stage_resumes_from_its_checkpoint_only(tmp_path):
    """What the checkpoint does not cover is cut from the journal, and files no proven line names
    are removed from the staging folder."""
    cfg = Config(str(tmp_path))
    os.makedirs(cfg.state)
    ident = {"files": 1}
    w = [sources.Written("val/ILSVRC2012_val_%08d.JPEG" % i, 3, None, None, None) for i in (1, 2, 3)]
    stage = sources.Stage(cfg, "val", "hf", ident)
    stage.open()
    for x in w:
        (Path(stage.dir) / x.path[4:]).write_bytes(b"abc")
    stage.record("data/a", w[:2])
    stage.checkpoint(force=True)
    stage.record("data/b", w[2:])                 # not synced: a kill now loses it
    stage.jf.flush()
    (Path(stage.dir) / "stray.JPEG").write_bytes(b"x")
    stage.release()
    again = sources.Stage(cfg, "val", "hf", ident)
    again.open()
    assert sorted(again.entries) == [x.path for x in w[:2]] and again.done == {"data/a"}
    assert sorted(os.listdir(again.dir)) == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    again.release()
    other = sources.Stage(cfg, "val", "hf", {"files": 2})     # other files: start over
    other.open()
    assert other.entries == {} and os.listdir(other.dir) == []
    other.forget()
    assert not os.path.exists(other.dir) and not os.path.exists(other.journal)


@pytest.mark.parametrize("path", ["train/../n01440764_1.JPEG", "train/n01440764/../x.JPEG",
                                  "train/n01440764/n01440765_1.JPEG", "val/ILSVRC2012_val_00000001.JPEG"])
def test_a_journal_line_that_names_no_image_of_the_split_is_not_used(tmp_path, path):
    """The journal is input too: a name that is not a canonical image name of the split (here
    while train's classes are being placed, when a file's absence is no reason to start over) is
    never used as a path; the split starts over."""
    cfg = Config(str(tmp_path))
    os.makedirs(cfg.state)
    stage = sources.Stage(cfg, "train", "kaggle", {"zip": 1})
    line = "F\t-\t3\t-\t-\t-\t%s\n" % path
    Path(stage.journal).write_text(line)
    Path(stage.cp).write_text(json.dumps({"version": 1, "source": "kaggle", "split": "train",
                                          "identity": {"zip": 1}, "journal": len(line),
                                          "phase": "placing", "bad": {}}))
    stage.open()
    assert stage.entries == {} and stage.phase == "reading"
    assert Path(stage.journal).read_bytes() == b""
    stage.release()


def test_a_journal_that_is_not_a_regular_file_is_not_read(tmp_path):
    """A FIFO put where the journal goes would keep a reader waiting forever: the split starts
    over instead, with a journal of its own."""
    cfg = Config(str(tmp_path))
    os.makedirs(cfg.state)
    stage = sources.Stage(cfg, "val", "hf", {"files": 1})
    os.mkfifo(stage.journal)
    stage.open()
    assert Path(stage.journal).is_file() and stage.entries == {}
    stage.release()
