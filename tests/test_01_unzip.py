"""01_unzip.sh: exact trees, reruns, SIGKILL at random moments, shards, hostile and broken archives."""
from __future__ import annotations

import contextlib
import fcntl
import gzip
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

import minirelease
from minirelease import raw_end, raw_header, raw_member
from conftest import assert_usage_error, run, script, small_tmpfs

UNZIP = script("01_unzip.sh")
TRAIN, VAL, TEST, DEVKIT = (minirelease.TRAIN_TAR, minirelease.VAL_TAR, minirelease.TEST_TAR,
                            minirelease.DEVKIT_2012)
STATE = ".01_unzip"


# ----------------------------------------------------------------------------- helpers

def make_root(tmp_path: Path, rel: minirelease.Release, splits=("train", "val", "test", "devkit")) -> Path:
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    for s in splits:
        shutil.copy(rel.archives[s], root / "downloads" / rel.archives[s].name)
    return root


def unzip(root: Path, *args, env=None, timeout=120) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    for k in list(full):
        if k.startswith("SLURM_"):
            del full[k]
    full.pop("IMAGENET_ROOT", None)
    full.update(env or {})
    return run(["bash", UNZIP, "--root", root, *args], timeout=timeout, env=full)


def files(folder: Path) -> dict:
    """Every file under folder (hidden ones too) -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def all_entries(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def expected_train(archive: Path) -> dict:
    out = {}
    with tarfile.open(archive) as outer:
        for m in outer:
            wnid = m.name[:-4]
            with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                for im in inner:
                    out["%s/%s" % (wnid, im.name)] = inner.extractfile(im).read()
    return out


def expected_flat(archive: Path, strip: str = "") -> dict:
    with tarfile.open(archive) as tar:
        return {m.name[len(strip):] if m.name.startswith(strip) else m.name: tar.extractfile(m).read()
                for m in tar if m.isfile()}


def expected_devkit(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def complete_classes(train: Path, expect: dict) -> set:
    """Class folders under their final name; assert each holds exactly the archive's files."""
    done = set()
    if not train.is_dir():
        return done
    for d in train.iterdir():
        if d.name.startswith("."):
            continue
        got = {"%s/%s" % (d.name, p.name): p.read_bytes() for p in d.iterdir()}
        want = {k: v for k, v in expect.items() if k.startswith(d.name + "/")}
        assert got == want, "class %s under its final name is not exactly complete" % d.name
        done.add(d.name)
    return done


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> minirelease.Release:
    """60 classes of 20-40 images of ~4 KiB: long enough (~0.5 s) to be killed mid-way."""
    return minirelease.make_release(tmp_path_factory.mktemp("medium"), classes=60, images=(20, 40),
                                    val_per_class=4, test=20, kib=4.0, seed=3)


# ----------------------------------------------------------------------------- command line

def test_help_lists_options_and_defaults():
    r = run(["bash", UNZIP, "--help"])
    assert r.returncode == 0
    for text in ("--root DIR", "--archive PATH", "--jobs N", "--shard K/N", "--remove-archive",
                 "IMAGENET_ROOT", "SLURM_ARRAY_TASK_ID", "train val test devkit all",
                 "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_TASK_COUNT",
                 "N connections (1 to 32)"):
        assert text in " ".join(r.stdout.split()), text
    usage = r.stdout.split("\n\n")[0]
    assert usage.rstrip().endswith(" SPLIT [SPLIT ...]"), usage       # required, not [SPLIT ...]


@pytest.mark.parametrize("args, message", [
    ([], "name at least one SPLIT (train val test devkit all)"),
    (["trian"], "unknown split 'trian'"),
    (["--frobnicate", "train"], "unknown option '--frobnicate'"),
    (["--jobs", "99999", "train"], "--jobs wants a number from 1 to 1024"),
    (["--shard", "3/3", "train"], "0 <= K < N"),
    (["--shard", "x", "train"], "--shard wants K/N"),
    (["--jobs", "0", "train"], "--jobs wants a number"),
    (["--archive", "a.tar", "train", "val"], "exactly one SPLIT"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    r = unzip(tmp_path, *args)
    assert_usage_error(r, "01_unzip.sh", message)
    assert list(tmp_path.iterdir()) == []


def test_missing_archive_names_file_and_folder(tmp_path):
    r = unzip(tmp_path, "val")
    assert r.returncode == 1
    assert "ILSVRC2012_img_val.tar in %s" % (tmp_path / "downloads") in r.stderr
    assert "--archive" in r.stderr
    r = unzip(tmp_path, "test")
    assert "ILSVRC2012_img_test_v10102019.tar or ILSVRC2012_img_test.tar" in r.stderr
    assert not (tmp_path / "val").exists() and not (tmp_path / "test").exists()


def test_copied_alone_says_the_package_is_missing(tmp_path, release):
    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(UNZIP, job / "01_unzip.sh")
    root = make_root(tmp_path, release, ["val"])
    r = run(["bash", "01_unzip.sh", "val"], cwd=job, env=dict(os.environ, IMAGENET_ROOT=str(root)))
    assert r.returncode == 1
    assert "needs the folder imagenet_prep/ beside it" in r.stderr
    assert "copy or clone the whole repository folder" in r.stderr
    assert not (root / "val").exists()
    assert sorted(p.name for p in job.iterdir()) == ["01_unzip.sh"]


def test_a_package_of_the_same_name_elsewhere_does_not_stand_in(tmp_path, release):
    fake = tmp_path / "cwd" / "imagenet_prep"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('the wrong imagenet_prep was imported')\n")
    root = make_root(tmp_path, release, ["val"])
    r = run(["bash", UNZIP, "--root", root, "val"], cwd=fake.parent,
            env=dict(os.environ, PYTHONPATH=str(fake.parent)))
    assert r.returncode == 0, r.stderr
    assert files(root / "val") == expected_flat(release.archives["val"])


def test_root_must_exist(tmp_path):
    r = unzip(tmp_path / "nope", "val")
    assert r.returncode == 1
    assert "is not a folder" in r.stderr
    assert "mkdir -p %s" % (tmp_path / "nope") in r.stderr and "holding downloads/" in r.stderr
    r = unzip(tmp_path / "nope", "--stream", "val")       # no downloads/ with --stream
    assert r.returncode == 1 and "(where the tree goes)" in r.stderr, r.stderr
    (tmp_path / "afile").write_text("x")
    r = unzip(tmp_path / "afile", "--stream", "val")
    assert r.returncode == 1 and "is not a folder (a file or a link to one?)" in r.stderr, r.stderr
    assert "mkdir" not in r.stderr and (tmp_path / "afile").read_text() == "x"


# ----------------------------------------------------------------------------- exact trees

def test_all_splits_give_exact_trees_and_rerun_is_noop(tmp_path, release):
    root = make_root(tmp_path, release)
    r = unzip(root, "all")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expected_train(release.archives["train"])
    assert files(root / "val") == expected_flat(release.archives["val"])
    assert files(root / "test") == expected_flat(release.archives["test"], "test/")
    assert files(root / "devkit") == expected_devkit(release.archives["devkit"])
    # nothing else in ROOT but the archives, the manifests and the bookkeeping; no leftovers
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [".01_unzip", "devkit", "downloads", "meta", "test", "train", "val"])
    assert sorted(p.name for p in (root / "meta").iterdir()) == [
        "SHA256SUMS.test", "SHA256SUMS.train", "SHA256SUMS.val"]
    assert not [p for p in root.rglob("*tmp-*")]
    for split in ("train", "val", "test"):               # the manifests check with sha256sum
        listed = (root / "meta" / ("SHA256SUMS." + split)).read_text().splitlines()
        assert len(listed) == len(files(root / split))
        assert listed == sorted(listed, key=lambda line: line[66:])
        check = run(["sha256sum", "-c", "--quiet", "meta/SHA256SUMS." + split], cwd=root)
        assert check.returncode == 0 and check.stdout == "", check.stdout + check.stderr
    n_train = sum(len(v) for v in release.train.values())
    assert "train: checked %d classes, %d images" % (len(release.train), n_train) in r.stderr
    assert "val: verified %d images" % len(release.val) in r.stderr
    # the PNG and the CMYK JPEGs are reported by name
    for name, kind in release.special.items():
        wnid = name.split("_")[0]
        assert "%s/%s: %s" % (wnid, name, "PNG" if kind == "png" else "CMYK JPEG") in r.stderr
    assert "%d files are not plain" % len(release.special) in r.stderr

    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*.JPEG")}
    r2 = unzip(root, "all")
    assert r2.returncode == 0, r2.stderr
    for split in ("train", "val", "test", "devkit"):
        assert "%s: already done" % split in r2.stderr
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*.JPEG")} == before
    assert "archive not found" not in r2.stderr


def test_val_still_done_after_03_moved_it_into_class_folders(tmp_path, release):
    root = make_root(tmp_path, release, ["val"])
    assert unzip(root, "val").returncode == 0
    for name, wnid in release.val.items():          # what 03_build_val_class_folders.py does
        (root / "val" / wnid).mkdir(exist_ok=True)
        os.rename(root / "val" / name, root / "val" / wnid / name)
    r = unzip(root, "val")
    assert r.returncode == 0
    assert "val: already done" in r.stderr
    assert not list((root / "val").glob("*.JPEG"))


def test_test_archive_without_folder_prefix(tmp_path):
    rel = minirelease.make_release(tmp_path / "rel", classes=3, test=7, test_prefix="")
    root = make_root(tmp_path, rel, ["test"])
    r = unzip(root, "test")
    assert r.returncode == 0, r.stderr
    assert files(root / "test") == expected_flat(rel.archives["test"])
    assert len(files(root / "test")) == 7


def test_devkit_saved_without_gzip_and_2017_devkit(tmp_path, release):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    plain = root / "downloads" / "ILSVRC2012_devkit_t12.tar"   # a browser un-gzipped it
    plain.write_bytes(gzip.decompress(release.archives["devkit"].read_bytes()))
    r = unzip(root, "devkit")
    assert r.returncode == 0, r.stderr
    assert "plain tar" in r.stderr
    assert files(root / "devkit") == expected_devkit(release.archives["devkit"])

    root2 = tmp_path / "root2"
    root2.mkdir()
    r = unzip(root2, "--archive", release.archives["devkit2017"], "devkit")
    assert r.returncode == 0, r.stderr
    assert files(root2 / "devkit") == expected_devkit(release.archives["devkit2017"])
    assert (root2 / "devkit" / "ILSVRC" / "devkit" / "data" / "meta_clsloc.mat").is_file()


def test_synsets_csv_differences_are_reported(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    (root / "meta").mkdir()
    rows = ["ilsvrc_id,class_index,wnid,words,description,num_train_images"]
    odd = release.classes[4]
    for s in release.classes:
        n = s.num_train_images + (1 if s is odd else 0)
        rows.append('%d,%d,%s,"%s",x,%d' % (s.ilsvrc_id, release.class_index(s.wnid), s.wnid, s.words, n))
    (root / "meta" / "synsets.csv").write_text("\n".join(rows) + "\n")
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert "1 classes differ from meta/synsets.csv: %s: %d images, meta/synsets.csv says %d" % (
        odd.wnid, odd.num_train_images, odd.num_train_images + 1) in r.stderr


# ----------------------------------------------------------------------------- resume and kill

def test_leftovers_are_cleared_and_missing_class_redone(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    wnid = release.wnids_sorted[3]
    stale = root / "train" / (".%s.tmp-otherhost.999" % wnid)
    stale.mkdir(parents=True)
    (stale / (wnid + "_1.JPEG")).write_bytes(b"half")
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    expect = expected_train(release.archives["train"])
    assert files(root / "train") == expect
    shutil.rmtree(root / "train" / wnid)             # a user deletes a class: the rerun notices
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert "1 classes recorded as done are missing" in r.stderr
    assert files(root / "train") == expect


def test_verification_notices_a_class_changed_before_the_split_was_done(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    wnids = release.wnids_sorted
    assert unzip(root, "--shard", "0/2", "train").returncode == 0
    victim = root / "train" / wnids[0]
    next(victim.iterdir()).unlink()                  # a file lost between the two shards
    r = unzip(root, "--shard", "1/2", "train")
    assert r.returncode == 1
    assert "%s holds %d files, but 01_unzip.sh wrote %d into it" % (victim, len(release.train[wnids[0]]) - 1,
                                                        len(release.train[wnids[0]])) in r.stderr
    assert not (root / STATE / "train.done").exists()
    shutil.rmtree(victim)
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expected_train(release.archives["train"])


def test_sigkill_at_random_moments_then_rerun_gives_exact_tree(tmp_path, medium):
    root = make_root(tmp_path, medium, ["train", "val"])
    expect_train = expected_train(medium.archives["train"])
    expect_val = expected_flat(medium.archives["val"])
    # how long does one full run take here? kill within that window
    probe = tmp_path / "probe"
    shutil.copytree(root / "downloads", probe / "downloads")
    t0 = time.monotonic()
    assert unzip(probe, "train", "val").returncode == 0
    window = time.monotonic() - t0
    shutil.rmtree(probe)
    rng = random.Random(7)
    kills = attempts = 0
    while kills < 24 and attempts < 100:          # groups of 6 kills, each from an empty ROOT
        for path in (root / "train", root / "val", root / STATE):
            shutil.rmtree(path, ignore_errors=True)
        group = 0
        while group < 6 and attempts < 100:
            attempts += 1
            proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "train", "val"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            time.sleep(rng.uniform(0.02, 0.4) * window)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
                group += 1
            proc.wait(timeout=60)
            time.sleep(0.05)                      # let the killed workers disappear
            complete_classes(root / "train", expect_train)    # 0 partial under a final name
            if (root / "val").exists():
                assert files(root / "val") == expect_val
            if proc.returncode == 0:              # it finished first: start again from empty
                break
        r = unzip(root, "train", "val")
        assert r.returncode == 0, r.stderr
        assert files(root / "train") == expect_train      # 0 lost, 0 partial, 0 extra
        assert files(root / "val") == expect_val
        assert not [p for p in root.rglob("*tmp-*")]
    assert kills >= 20, "only %d of %d runs were killed mid-way" % (kills, attempts)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_and_sigterm_stop_cleanly_and_rerun_finishes(tmp_path, medium, sig, code, said):
    root = make_root(tmp_path, medium, ["train"])
    for _ in range(10):
        proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "train"], text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 30          # signal once extraction is under way
        while time.monotonic() < deadline and not list((root / "train").glob(".*.tmp-*")) \
                and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        err = proc.communicate(timeout=60)[1]
        if proc.returncode != 0:
            break
        shutil.rmtree(root / "train")
        shutil.rmtree(root / STATE)
    assert said in err, err[-2000:]
    assert "Traceback" not in err
    assert proc.returncode in (code, -sig, 128 + sig)
    complete_classes(root / "train", expected_train(medium.archives["train"]))
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expected_train(medium.archives["train"])


def test_a_killed_worker_fails_its_class_only_and_a_rerun_finishes(tmp_path, medium):
    """The out-of-memory killer (here: SIGKILL) takes one worker: no hang, the class is named,
    the other classes complete, and a rerun gives the exact tree."""
    root = make_root(tmp_path, medium, ["train"])
    for _ in range(10):
        proc = subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--jobs", "2", "train"],
                                text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        killed = None
        deadline = time.monotonic() + 30
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            workers = run(["pgrep", "-P", proc.pid]).stdout.split()   # 01_unzip.sh execs python
            if workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(workers[0]), signal.SIGKILL)
                    killed = workers[0]
        err = proc.communicate(timeout=60)[1]
        if killed and proc.returncode != 0:
            break
        shutil.rmtree(root / "train", ignore_errors=True)
        shutil.rmtree(root / STATE, ignore_errors=True)
    assert proc.returncode == 1, err[-2000:]
    assert "the worker extracting it died (exit code -9" in err, err[-2000:]
    assert "Traceback" not in err
    expect = expected_train(medium.archives["train"])
    complete_classes(root / "train", expect)
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expect


# ----------------------------------------------------------------------------- shards

def test_shards_run_concurrently_give_exact_tree(tmp_path, medium):
    root = make_root(tmp_path, medium, ["train"])
    n = 3
    procs = [subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--shard", "%d/%d" % (k, n),
                               "--jobs", "1", "train"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [o[1] for o in outs]
    assert files(root / "train") == expected_train(medium.archives["train"])
    logs = "".join(o[1] for o in outs)
    assert logs.count("train: complete:") == 1       # exactly one shard verified the whole split
    wnids = medium.wnids_sorted
    for k in range(n):
        assert "shard %d/%d: %d classes" % (k, n, len(wnids[k::n])) in outs[k][1]
    r = unzip(root, "--shard", "1/3", "train")
    assert r.returncode == 0 and "train: already done" in r.stderr


def test_overlapping_runs_never_leave_a_partial_class(tmp_path, medium):
    """Misuse: runs with different shard counts at once. Errors are allowed, a partial class is not."""
    root = make_root(tmp_path, medium, ["train"])
    expect = expected_train(medium.archives["train"])
    for _ in range(2):
        procs = [subprocess.Popen(["bash", str(UNZIP), "--root", str(root), "--shard", s, "--jobs", "1",
                                   "train"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for s in ("0/1", "0/2", "1/2", "2/3", "0/1")]
        for p in procs:
            p.wait(timeout=120)
        complete_classes(root / "train", expect)
        shutil.rmtree(root / "train")
        shutil.rmtree(root / STATE)
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expect


def test_a_leftover_held_by_a_live_run_is_left_alone(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    wnid = release.wnids_sorted[0]
    live = root / "train" / (".%s.tmp-otherhost.1" % wnid)
    live.mkdir(parents=True)
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = unzip(root, "train")
        assert "is being written by another run; leaving it alone" in r.stderr
        assert live.is_dir()
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expected_train(release.archives["train"])


def test_a_rerun_of_a_done_split_clears_what_dead_runs_left(tmp_path, release):
    """docs/state.md: a rerun removes the temporary files and folders of dead runs, and 04 tells
    the user to rerun for them. That holds once the split is done too, when the rerun only says
    "already done"; what a live run holds is left alone."""
    root = make_root(tmp_path, release, ["train", "val", "devkit"])
    assert unzip(root, "train", "val", "devkit").returncode == 0
    first, second = release.wnids_sorted[:2]
    folders = [root / "train" / (".%s.tmp-otherhost.999" % first), root / ".val.tmp-otherhost.999",
               root / ".devkit.tmp-otherhost.999"]
    for folder in folders:
        folder.mkdir()
        (folder / "half.JPEG").write_bytes(b"half")
    leftovers = [root / STATE / ".val.done.tmp-otherhost.999",
                 root / STATE / "train" / (".%s.json.tmp-otherhost.999" % first),
                 root / "meta" / ".SHA256SUMS.train.tmp-otherhost.999"]
    for f in leftovers:
        f.write_text("half")
    verify = [sys.executable, script("04_verify.py"), "--root", root, "train"]
    r = run(verify)
    assert r.returncode == 1 and "temporary files of a stopped run (rerun the stage that made " \
        "them: it clears them) (1): train/.%s.tmp-otherhost.999/" % first in r.stderr, r.stderr
    live = root / "train" / (".%s.tmp-otherhost.1" % second)
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = unzip(root, "train", "val", "devkit")
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    for split in ("train", "val", "devkit"):
        assert "%s: already done" % split in r.stderr
    assert [p for p in folders + leftovers if os.path.lexists(p)] == []
    assert live.is_dir() and "%s is being written by another run; leaving it alone" % live in r.stderr
    live.rmdir()
    r = run(verify)
    assert r.returncode == 0 and "temporary" not in r.stderr, r.stderr
    assert files(root / "train") == expected_train(release.archives["train"])


def test_slurm_array_variables_pick_the_shard(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    wnids = release.wnids_sorted
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "2"}
    r = unzip(root, "train", env=env)
    assert r.returncode == 0, r.stderr
    assert "SLURM array task 5: shard 1/2" in r.stderr
    assert sorted(p.name for p in (root / "train").iterdir()) == wnids[1::2]
    assert "classes of other shards are not there yet" in r.stderr
    r = unzip(root, "train", env=dict(env, SLURM_ARRAY_TASK_ID="4"))
    assert r.returncode == 0, r.stderr
    assert "train: complete:" in r.stderr
    assert files(root / "train") == expected_train(release.archives["train"])
    r = unzip(root, "train", env={"SLURM_ARRAY_TASK_ID": "$(touch x)", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert r.returncode == 1 and "must be numbers" in r.stderr


def test_busy_shard_lock_is_reported(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    (root / STATE).mkdir()
    with open(root / STATE / "train.shard-0-of-1.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        r = unzip(root, "train")
    assert r.returncode == 1
    assert "another 01_unzip.sh is extracting train shard 0/1" in r.stderr
    assert not (root / "train").exists() or not any(
        p for p in (root / "train").iterdir() if not p.name.startswith("."))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("split", ["train", "val"])
def test_a_member_seen_twice_is_refused_with_what_to_do(tmp_path, split):
    """The same image twice: refused, the archive named as damaged, to be downloaded again."""
    rng = random.Random(4)
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    image = minirelease.fake_jpeg(rng, 600)
    if split == "val":
        name, path = "ILSVRC2012_val_00000001.JPEG", root / "downloads" / minirelease.VAL_TAR
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for _ in range(2):
                minirelease.add_bytes(tar, name, image)
    else:
        name, path, inner = "n01000001_1.JPEG", root / "downloads" / minirelease.TRAIN_TAR, io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for _ in range(2):
                minirelease.add_bytes(tar, name, image)
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            minirelease.add_bytes(tar, "n01000001.tar", inner.getvalue())
    r = unzip(root, split)
    assert r.returncode == 1, r.stderr
    assert "member %s appears twice; refused" % name in r.stderr and "download it again" in r.stderr, \
        r.stderr
    assert not (root / split).exists() or not any((root / split).iterdir())


@pytest.mark.parametrize("kind", minirelease.HOSTILE_KINDS)
def test_hostile_archives_write_nothing_outside_root(tmp_path, kind):
    src = minirelease.make_hostile(tmp_path / "src", kind)
    outside = tmp_path / "outside"
    root = outside / "a" / "b" / "root"                # '..' from ROOT/train/x would land in outside
    (root / "downloads").mkdir(parents=True)
    shutil.copy(src, root / "downloads" / src.name)
    split = "val" if kind.startswith("val-") else "train"
    before_outside = all_entries(outside)
    tmp_before = set(os.listdir("/tmp"))
    r = unzip(root, split)
    assert r.returncode == 1, r.stderr
    assert minirelease.HOSTILE_MESSAGES[kind] in r.stderr, r.stderr
    new_outside = {e for e in all_entries(outside) - before_outside
                   if not e.startswith("a/b/root/")}
    assert new_outside == set()
    assert not {"escaped.JPEG", "n01000002.tar"} & (set(os.listdir("/tmp")) - tmp_before)
    assert not [p for p in root.rglob("*") if p.is_symlink() or p.name == "escaped.JPEG"]
    assert not [p for p in root.rglob("*tmp-*")]
    assert not (root / STATE / ("%s.done" % split)).exists()
    if split == "val":
        assert not (root / "val").exists()
    elif kind != "not-a-tar":
        classes = sorted(p.name for p in (root / "train").iterdir())
        if kind != "truncated":                        # the good class complete, the hostile one absent
            assert classes == ["n01000001"]
        assert sorted(p.name for p in (root / "train" / "n01000001").iterdir()) == [
            "n01000001_1.JPEG", "n01000001_5.JPEG", "n01000001_9.JPEG"]
    if kind == "truncated":                            # complete classes stay, the broken one is absent
        assert sorted(p.name for p in (root / "train").iterdir()) == ["n01000001", "n01000002"]
    if kind == "not-a-tar":
        assert "download it again" in r.stderr
        assert not (root / "train").exists()


def test_gzipped_train_archive_is_refused(tmp_path, release):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / TRAIN).write_bytes(gzip.compress(release.archives["train"].read_bytes()))
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "is gzip-compressed, but the train archive is a plain tar" in r.stderr


def test_truncated_val_names_member_and_leaves_nothing(tmp_path, release):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    data = release.archives["val"].read_bytes()
    (root / "downloads" / VAL).write_bytes(data[: len(data) // 2 + 100])
    r = unzip(root, "val")
    assert r.returncode == 1
    assert "truncated" in r.stderr and "ILSVRC2012_val_000000" in r.stderr
    assert "download it again" in r.stderr
    assert sorted(p.name for p in root.iterdir()) == [".01_unzip", "downloads"]


def test_foreign_val_folder_is_left_alone(tmp_path, release):
    root = make_root(tmp_path, release, ["val"])
    (root / "val").mkdir()
    (root / "val" / "mine.txt").write_text("user data")
    r = unzip(root, "val")
    assert r.returncode == 1
    assert "was not completed by 01_unzip.sh" in r.stderr and "move it away" in r.stderr
    assert (root / "val" / "mine.txt").read_text() == "user data"
    assert sorted(p.name for p in (root / "val").iterdir()) == ["mine.txt"]


def test_empty_tar_is_refused(tmp_path):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    with tarfile.open(root / "downloads" / TRAIN, "w"):
        pass
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "holds no members (an empty tar" in r.stderr
    assert not (root / STATE / "train.done").exists()


def test_disk_preflight_refuses_when_space_is_short(tmp_path, release):
    with small_tmpfs(tmp_path / "small", "size=64k") as small:
        r = unzip(small, "--archive", release.archives["train"], "train")
        assert r.returncode == 1
        assert "train: not enough free space in %s" % small in r.stderr
        assert "to write" in r.stderr and "free" in r.stderr
        assert not [p for p in (small / "train").iterdir()]


# ----------------------------------------------------------------------------- --remove-archive

def test_remove_archive_only_after_complete_split(tmp_path, release):
    root = make_root(tmp_path, release, ["train", "val"])
    r = unzip(root, "--remove-archive", "--shard", "0/2", "train")
    assert r.returncode == 0, r.stderr
    assert (root / "downloads" / TRAIN).exists()          # the split is not complete yet
    r = unzip(root, "--remove-archive", "--shard", "1/2", "train", "val")
    assert r.returncode == 0, r.stderr
    assert not (root / "downloads" / TRAIN).exists()
    assert not (root / "downloads" / VAL).exists()
    assert "removed %s" % (root / "downloads" / VAL) in r.stderr
    assert files(root / "train") == expected_train(release.archives["train"])
    assert files(root / "val") == expected_flat(release.archives["val"])
    r = unzip(root, "train", "val")                         # archives gone: still already done
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("already done") == 2


def test_remove_archive_keeps_a_broken_archive(tmp_path):
    src = minirelease.make_hostile(tmp_path / "src", "truncated")
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    shutil.copy(src, root / "downloads" / TRAIN)
    r = unzip(root, "--remove-archive", "train")
    assert r.returncode == 1
    assert (root / "downloads" / TRAIN).exists()


# ----------------------------------------------------------------------------- hostile input (issue 10)

OFFICIAL_TRAIN_SIZE = 147_897_477_120
OFFICIAL_VAL_SIZE = 6_744_924_160


PAX_ZERO_LENGTH = b"0 \n" + b"20 path=whatever.tar\n"
PAX_BAD_SIZE = b"12 size=abc\n"


def pax_then(records: bytes, name: str, data: bytes) -> bytes:
    return raw_member("PaxHeaders/x", records, b"x") + raw_member(name, data)


def class_tar(wnid: str, n: int = 2, extra: bytes = b"") -> bytes:
    body = b"".join(raw_member("%s_%d.JPEG" % (wnid, i), b"\xff\xd8" + bytes(300)) for i in range(n))
    return raw_end(body + extra)


@pytest.mark.parametrize("split, size", [("train", OFFICIAL_TRAIN_SIZE), ("val", OFFICIAL_VAL_SIZE)])
def test_official_size_archive_with_a_zero_tail_is_an_unfinished_download(tmp_path, release, split,
                                                                          size):
    """A preallocated download of the official size, filled in only at its start: never done,
    never removed (the official-size file is sparse here, so this costs no disk)."""
    root = make_root(tmp_path, release, [split])
    archive = root / "downloads" / release.archives[split].name
    os.truncate(archive, size)
    r = unzip(root, "--remove-archive", split, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "an unfinished download (a preallocated file not filled in yet?)" in r.stderr
    assert archive.exists() and archive.stat().st_size == size
    assert not (root / STATE / (split + ".done")).exists()
    assert "complete:" not in r.stderr and "removed" not in r.stderr


def test_zeros_or_data_after_the_end_of_an_archive_are_refused(tmp_path, release):
    root = make_root(tmp_path, release, ["val"])
    archive = root / "downloads" / VAL
    good = archive.read_bytes()
    archive.write_bytes(good + bytes(5 << 20))
    r = unzip(root, "val")
    assert r.returncode == 1 and "but the file goes on for 5.0 MiB more" in r.stderr, r.stderr
    archive.write_bytes(good + b"more data")
    r = unzip(root, "val")
    assert r.returncode == 1 and "data after the end-of-archive marker" in r.stderr, r.stderr
    assert not (root / "val").exists()
    archive.write_bytes(good)
    assert unzip(root, "val").returncode == 0


def test_official_counts_are_errors_for_an_archive_of_the_official_size():
    from imagenet_prep.console import PrepError
    from imagenet_prep.extract import official_counts
    with pytest.raises(PrepError, match="holds 1,281,167 images in 1,000 classes, this one 12"):
        official_counts("train", OFFICIAL_TRAIN_SIZE, 3, 12)
    with pytest.raises(PrepError, match="holds 50,000 images, this one 49,999"):
        official_counts("val", OFFICIAL_VAL_SIZE, None, 49_999)
    official_counts("train", OFFICIAL_TRAIN_SIZE, 1000, 1_281_167)
    official_counts("train", 12345, 3, 12)          # not the official archive: no check


def test_class_folders_not_written_by_01_are_refused(tmp_path, release):
    """A class folder made by another tool (here: tar) or cut short, and an empty one."""
    root = make_root(tmp_path, release, ["train"])
    wnids = release.wnids_sorted
    foreign, half, empty = (root / "train" / w for w in wnids[:3])
    for d in (foreign, half, empty):
        d.mkdir(parents=True)
    expect = expected_train(release.archives["train"])
    for name, data in expect.items():
        w, f = name.split("/")
        if w == wnids[0] or (w == wnids[1] and not (half / "x").exists()):
            (root / "train" / name).write_bytes(data)
            if w == wnids[1]:
                (half / "x").write_bytes(b"")
    before = files(root / "train")
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "2 class folder(s) in %s are not as 01_unzip.sh left them" % (root / "train") in r.stderr
    assert "%s (%d files, not written by 01_unzip.sh)" % (wnids[0], len(release.train[wnids[0]])) \
        in r.stderr
    assert "%s (2 files, not written by 01_unzip.sh)" % wnids[1] in r.stderr
    assert "Move them out of" in r.stderr
    assert "%s was an empty folder; removed it" % empty in r.stderr
    assert files(root / "train") == before                    # no file touched
    assert not (root / STATE / "train.done").exists()
    shutil.rmtree(foreign)
    shutil.rmtree(half)
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert files(root / "train") == expect


def test_a_file_added_to_a_class_is_noticed_before_done(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    wnids = release.wnids_sorted
    assert unzip(root, "--shard", "0/2", "train").returncode == 0
    (root / "train" / wnids[0] / "stray.JPEG").write_bytes(b"x")
    r = unzip(root, "--shard", "1/2", "train")
    assert r.returncode == 1
    assert "but 01_unzip.sh wrote %d into it" % len(release.train[wnids[0]]) in r.stderr
    assert not (root / STATE / "train.done").exists()


@pytest.mark.parametrize("where", ["outer", "class", "val"])
@pytest.mark.parametrize("records, said", [(PAX_ZERO_LENGTH, "corrupt pax header (record at offset 0"),
                                           (PAX_BAD_SIZE, "corrupt pax header (size='abc'")])
def test_corrupt_pax_headers_are_errors_not_hangs(tmp_path, where, records, said):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    if where == "val":
        body = raw_member("ILSVRC2012_val_00000001.JPEG", b"\xff\xd8" + bytes(100))
        body += pax_then(records, "ILSVRC2012_val_00000002.JPEG", b"\xff\xd8" + bytes(100))
        (root / "downloads" / VAL).write_bytes(raw_end(body))
        label = VAL
    elif where == "outer":
        body = raw_member("n01000001.tar", class_tar("n01000001"))
        body += pax_then(records, "n01000002.tar", class_tar("n01000002"))
        (root / "downloads" / TRAIN).write_bytes(raw_end(body))
        label = TRAIN
    else:
        inner = pax_then(records, "n01000002_9.JPEG", b"\xff\xd8" + bytes(100))
        body = raw_member("n01000001.tar", class_tar("n01000001"))
        body += raw_member("n01000002.tar", class_tar("n01000002", extra=inner))
        (root / "downloads" / TRAIN).write_bytes(raw_end(body))
        label = TRAIN + ": n01000002.tar"
    r = unzip(root, "val" if where == "val" else "train", timeout=30)
    assert r.returncode == 1, r.stderr
    assert label in r.stderr and said in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "worker extracting it died" not in r.stderr
    assert not (root / STATE / "train.done").exists() and not (root / "val").exists()


@pytest.mark.parametrize("raw, said", [(b"1e9", "bad number b'1e9'"), (b"1_0", "bad number b'1_0'"),
                                       (b"\xff" + bytes(11), "negative base-256 number")])
def test_bad_numbers_in_a_header_are_errors(tmp_path, raw, said):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    body = raw_header("ILSVRC2012_val_00000001.JPEG", 0, raw_size=raw) + bytes(512)
    (root / "downloads" / VAL).write_bytes(raw_end(body))
    r = unzip(root, "val", timeout=30)
    assert r.returncode == 1 and said in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_full_disk_while_extracting_the_devkit_says_disk_full(tmp_path):
    """The devkit passes the preflight (it compresses 1000:1 here) and fills the disk."""
    src = tmp_path / DEVKIT
    with tarfile.open(src, "w:gz") as tar:
        for name, data in (("ILSVRC2012_devkit_t12/data/meta.mat", b"m" * 100),
                           ("ILSVRC2012_devkit_t12/data/zeros.bin", bytes(3 << 20))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    with small_tmpfs(tmp_path / "small", "size=2m") as small:
        (small / "downloads").mkdir()
        shutil.copy(src, small / "downloads" / DEVKIT)
        r = unzip(small, "devkit")
        assert r.returncode == 1
        assert "not enough free space in %s" % small in r.stderr     # the preflight knows now
        assert "damaged" not in r.stderr
        assert sorted(p.name for p in small.iterdir()) == [".01_unzip", "downloads"]


def test_a_full_disk_while_extracting_train_is_said_once(tmp_path):
    """Tiny images pass the preflight but take a 4 KiB page each on tmpfs: the disk fills up.
    One disk-full message and a count, not one line per remaining class."""
    rel = minirelease.make_release(tmp_path / "rel", classes=40, images=(20, 30), val_per_class=1,
                                   test=2, kib=0.1, seed=5)
    with small_tmpfs(tmp_path / "small", "size=2m") as small:
        r = unzip(small, "--jobs", "2", "--archive", rel.archives["train"], "train")
        assert r.returncode == 1
        assert "the disk is full (or the quota is used up): cannot write to %s" % (small / "train") \
            in r.stderr, r.stderr
        assert r.stderr.count("the disk is full") == 1, r.stderr
        assert "the disk filled up:" in r.stderr and "not started" in r.stderr
        assert len(r.stderr.splitlines()) < 25, r.stderr
        assert not [p for p in (small / "train").iterdir() if p.name.startswith(".")]


def test_val_as_a_link_to_a_folder_on_another_disk(tmp_path, release):
    root = make_root(tmp_path, release, ["val", "test"])
    elsewhere = tmp_path / "disk2" / "imagenet_val"
    elsewhere.mkdir(parents=True)
    (root / "val").symlink_to(elsewhere)
    (root / "test").symlink_to(tmp_path / "disk2" / "missing")
    r = unzip(root, "val", "test")
    assert r.returncode == 1
    assert "test: %s is a symbolic link to %s, which is not a folder: create that folder" \
        % (root / "test", tmp_path / "disk2" / "missing") in r.stderr
    assert "Errno" not in r.stderr
    assert (root / "val").is_symlink()
    assert files(elsewhere) == expected_flat(release.archives["val"])
    assert sorted(p.name for p in (tmp_path / "disk2").iterdir()) == ["imagenet_val"]
    r = unzip(root, "val")
    assert r.returncode == 0 and "val: already done" in r.stderr


def test_the_val_archive_given_as_train_is_summarised(tmp_path):
    rel = minirelease.make_release(tmp_path / "rel", classes=20, images=(2, 3), val_per_class=10,
                                   test=2, kib=0.1, seed=6)
    r = unzip(tmp_path, "--archive", rel.archives["val"], "train")
    assert r.returncode == 1
    assert "200 member(s) refused, only WNID.tar files (e.g. n01440764.tar) belong here (this looks " \
        "like the val or test archive, not the train archive): ILSVRC2012_val_00000001.JPEG" in r.stderr
    assert "... and 195 more" in r.stderr
    assert len(r.stderr.splitlines()) < 10, r.stderr
    r = unzip(tmp_path, "--archive", rel.archives["train"], "val")
    assert r.returncode == 1 and "(this looks like the train archive)" in r.stderr
    assert len(r.stderr.splitlines()) < 10, r.stderr


@pytest.mark.parametrize("shard", ["0/18446744073709551617", "0/100001", "99999/100000"])
def test_huge_shard_numbers_are_usage_errors(tmp_path, release, shard):
    root = make_root(tmp_path, release, ["train"])
    r = unzip(root, "--shard", shard, "train")
    assert r.returncode == 2 and "0 <= K < N <= 10000" in r.stderr
    assert not (root / "train").exists()


def test_huge_slurm_array_numbers_are_refused(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    r = unzip(root, "train", env={"SLURM_ARRAY_TASK_ID": "0",
                                  "SLURM_ARRAY_TASK_COUNT": "18446744073709551617"})
    assert r.returncode == 1 and "at most 7 digits" in r.stderr
    assert not (root / "train").exists()


def test_files_keep_the_archive_times_and_safe_modes(tmp_path, release):
    root = make_root(tmp_path, release)
    assert unzip(root, "all").returncode == 0
    for split in ("train", "val", "test", "devkit"):
        for p in (root / split).rglob("*"):
            if p.is_file():
                assert p.stat().st_mtime == minirelease.MTIME, p
                assert p.stat().st_mode & 0o7777 == 0o644, p
    for p in (root / "train").iterdir():
        assert p.stat().st_mtime == minirelease.MTIME, p
    # a member with set-user-ID and world-writable bits: none of that reaches the disk
    src = tmp_path / VAL
    src.write_bytes(raw_end(raw_member("ILSVRC2012_val_00000001.JPEG", b"\xff\xd8" + bytes(10),
                                       mode=0o4777)))
    other = tmp_path / "other"
    other.mkdir()
    assert unzip(other, "--archive", src, "val").returncode == 0
    mode = (other / "val" / "ILSVRC2012_val_00000001.JPEG").stat().st_mode & 0o7777
    assert mode == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- review findings

def test_a_link_to_a_missing_train_folder_is_said(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    (root / "train").symlink_to(tmp_path / "gone")
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "train: %s is a symbolic link to %s, which is not a folder: create that folder" \
        % (root / "train", tmp_path / "gone") in r.stderr
    assert "Errno" not in r.stderr


@pytest.mark.parametrize("split, edit, said", [
    ("train", lambda d: d.pop("classes"), "classes is not a list"),
    ("train", lambda d: d.update(classes=[None]), "classes holds other things than WNIDs"),
    ("val", lambda d: d.pop("images"), "images is not a whole number"),
    ("val", lambda d: d.update(bytes=None), "bytes is not a whole number"),
    ("val", lambda d: d.update(images="many"), "images is not a whole number"),
])
def test_a_marker_edited_by_hand_is_an_error_not_a_traceback(tmp_path, release, split, edit, said):
    root = make_root(tmp_path, release, [split])
    assert unzip(root, split).returncode == 0
    marker = root / STATE / (split + ".done")
    doc = json.loads(marker.read_text())
    edit(doc)
    marker.write_text(json.dumps(doc))
    before = files(root / split)
    r = unzip(root, split)
    assert r.returncode == 1, r.stderr
    assert "%s is damaged or not 01_unzip.sh's (%s); delete it" % (marker, said) in r.stderr
    assert "Traceback" not in r.stderr
    assert files(root / split) == before


def test_a_truncated_file_in_a_class_is_noticed_before_done(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    wnids = release.wnids_sorted
    assert unzip(root, "--shard", "0/2", "train").returncode == 0
    victim = next((root / "train" / wnids[0]).iterdir())
    victim.write_bytes(victim.read_bytes()[:10])
    r = unzip(root, "--shard", "1/2", "train")
    assert r.returncode == 1
    assert "1 file(s) of another size than 01_unzip.sh wrote (%s)" % victim.name in r.stderr
    assert not (root / STATE / "train.done").exists()


def test_names_with_other_digits_or_control_characters_are_refused_and_shown_escaped(tmp_path):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    body = raw_member("n01000001.tar", class_tar("n01000001"))
    body += raw_member("n0100000\uff13.tar", class_tar("n01000002"))        # a full-width 3
    body += raw_member("n01000004.tar\n\x1b[31mforged line", class_tar("n01000004"))
    (root / "downloads" / TRAIN).write_bytes(raw_end(body))
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "2 member(s) refused" in r.stderr
    assert "n0100000\uff13.tar" in r.stderr and "n01000004.tar\\n\\x1b[31mforged line" in r.stderr
    assert "\x1b" not in r.stderr and "\nforged" not in r.stderr
    assert sorted(p.name for p in (root / "train").iterdir()) == ["n01000001"]
    assert "Traceback" not in r.stderr


def test_a_link_given_as_a_split_is_never_printed(tmp_path):
    r = unzip(tmp_path, "https://image-net.org/x/ILSVRC2012_img_val.tar?token=S3CRET")
    assert r.returncode == 2
    assert "S3CRET" not in r.stderr and "<link>" in r.stderr
    assert "a link belongs in urls.sh" in r.stderr


def test_no_free_inodes_is_said_as_such(tmp_path, release):
    with small_tmpfs(tmp_path / "small", "size=20m,nr_inodes=40") as small:
        r = unzip(small, "--jobs", "1", "--archive", release.archives["train"], "train")
        assert r.returncode == 1
        assert "has almost no free inodes left" in r.stderr, r.stderr


def test_a_train_marker_listing_no_class_is_not_taken_for_done(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    assert unzip(root, "train").returncode == 0
    marker = root / STATE / "train.done"
    doc = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(doc, classes=[])))
    r = unzip(root, "train")
    assert r.returncode == 1 and "(it lists no class)" in r.stderr, r.stderr


def test_a_train_link_to_a_file_is_said_without_impossible_advice(tmp_path, release):
    root = make_root(tmp_path, release, ["train"])
    (tmp_path / "afile").write_text("x")
    (root / "train").symlink_to(tmp_path / "afile")
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "which is not a folder (or leads back to itself): remove the link" in r.stderr, r.stderr
    assert "mkdir" not in r.stderr


def test_classes_01_wrote_from_another_archive_are_named_as_such(tmp_path, release):
    """An earlier run wrote classes of another archive under the same name (a link that served
    another file): the classes are 01's own, and the message says so and how to clear them."""
    other = minirelease.make_release(tmp_path / "other", classes=3, images=(2, 3), seed=99)
    assert not set(other.wnids_sorted) & set(release.wnids_sorted)
    root = make_root(tmp_path, release, ["train"])
    assert unzip(root, "--archive", other.archives["train"], "train").returncode == 0
    (root / STATE / "train.done").unlink()
    r = unzip(root, "train")
    assert r.returncode == 1
    w = other.wnids_sorted[0]
    assert "3 class folder(s) that 01_unzip.sh wrote from another archive" in r.stderr, r.stderr
    assert "rm -r %s %s" % (root / "train" / w, root / STATE / "train" / (w + ".json")) in r.stderr


def test_a_member_number_too_long_for_a_file_name_is_refused_plainly(tmp_path):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:   # a GNU long name
        data = b"\xff\xd8\xff" + bytes(100)
        info = tarfile.TarInfo("n01000001_%s.JPEG" % ("9" * 300))
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    inner = buf.getvalue()
    (root / "downloads" / TRAIN).write_bytes(raw_end(raw_member("n01000001.tar", inner)))
    r = unzip(root, "train")
    assert r.returncode == 1
    assert "names in this class must look like n01000001_<number>.JPEG" in r.stderr, r.stderr
    assert "Errno" not in r.stderr and "Traceback" not in r.stderr


def test_a_marker_or_record_that_is_a_fifo_is_refused_not_waited_on(tmp_path, release):
    root = make_root(tmp_path, release, ["train", "val"])
    assert unzip(root, "train", "val").returncode == 0
    marker = root / STATE / "val.done"
    marker.unlink()
    os.mkfifo(marker)
    r = unzip(root, "val", timeout=30)
    assert r.returncode == 1 and "%s is not a regular file (a FIFO)" % marker in r.stderr, r.stderr
    (root / STATE / "train.done").unlink()
    record = next((root / STATE / "train").glob("*.json"))
    record.unlink()
    os.mkfifo(record)
    r = unzip(root, "train", timeout=30)
    assert r.returncode == 1 and "%s is not a regular file (a FIFO)" % record in r.stderr, r.stderr


def test_a_cmyk_jpeg_whose_frame_header_lies_beyond_256_kib_is_reported(tmp_path):
    """Issue 18 item 10: a large ICC profile (here: comment segments, 300 KiB) before the frame
    header; 01 walked only the first 256 KiB and called the file a plain JPEG. It walks the
    segments as far as they go, keeping none of the bytes between them."""
    rng = random.Random(10)
    far = minirelease.fake_jpeg(rng, 300 << 10, components=4)
    assert far.rindex(b"\xff\xc0") > 256 << 10          # the frame header (random bytes before)
    names = {"n01000001_1.JPEG": far, "n01000001_2.JPEG": minirelease.fake_jpeg(rng, 300 << 10)}
    inner = raw_end(b"".join(raw_member(n, d) for n, d in names.items()))
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / TRAIN).write_bytes(raw_end(raw_member("n01000001.tar", inner)))
    r = unzip(root, "train")
    assert r.returncode == 0, r.stderr
    assert "n01000001/n01000001_1.JPEG: CMYK JPEG" in r.stderr, r.stderr
    assert "1 files are not plain" in r.stderr
    special = json.loads((root / STATE / "train.done").read_text())["special"]
    assert special == {"n01000001/n01000001_1.JPEG": "CMYK JPEG"}


@pytest.mark.parametrize("what", ["marker", "record"])
def test_a_marker_or_record_nested_too_deeply_is_said_not_a_traceback(tmp_path, release, what):
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    shutil.copy(release.archives["train"], root / "downloads")
    assert unzip(root, "train").returncode == 0
    wnid = sorted(release.train)[0]
    path = root / ".01_unzip" / ("train.done" if what == "marker" else "train/%s.json" % wnid)
    path.write_text("[" * 100_000)
    if what == "record":
        (root / ".01_unzip" / "train.done").unlink()       # the classes are checked again
    r = unzip(root, "train")
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr, r.stderr
    if what == "marker":
        assert r.returncode == 1 and "is damaged or not 01_unzip.sh's (not JSON)" in r.stderr, r.stderr
    else:
        assert r.returncode == 1 and "not as 01_unzip.sh left them" in r.stderr, r.stderr
