"""Tests of 04_verify.py: trees made by the real pipeline (01, 02, 03 as processes) and by the
common tar recipe, damaged in every way the issue names; the exit code and the message are
checked, and that the tree was left as it was."""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import minirelease
from conftest import assert_usage_error, load_script, run, script
from imagenet_prep import verify
from imagenet_prep.console import human

VERIFY = script("04_verify.py")
VAL = "ILSVRC2012_val_%08d.JPEG"


# ----------------------------------------------------------------------------- trees

def pipeline_tree(rel: minirelease.Release, root: Path) -> Path:
    """ROOT as the pipeline makes it: 01_unzip.sh all, 02 (miniature class count), 03."""
    (root / "downloads").mkdir(parents=True)
    for split in ("train", "val", "test", "devkit"):
        shutil.copy(rel.archives[split], root / "downloads")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for cmd in (["bash", script("01_unzip.sh"), "--root", root, "all"],
                [sys.executable, script("02_convert_meta_clsloc.py"), "--root", root,
                 "--expect-classes", len(rel.classes)],
                [sys.executable, script("03_build_val_class_folders.py"), "--root", root]):
        r = run(cmd, env=env)
        assert r.returncode == 0, r.stderr
    shutil.rmtree(root / "downloads")
    return root


RECIPE = r"""
set -euo pipefail
cd "$1"
mkdir train && tar -xf "$2" -C train
for f in train/*.tar; do d=${f%.tar}; mkdir "$d"; tar -xf "$f" -C "$d"; rm "$f"; done
tar -xf "$4"                                    # test/ILSVRC2012_test_*.JPEG
mkdir devkit && tar -xzf "$5" -C devkit
mkdir val && tar -xf "$3" -C val && cd val
i=0
while read -r id; do                            # valprep.sh: line i of the ground truth
  i=$((i + 1)); name=$(printf 'ILSVRC2012_val_%08d.JPEG' "$i")
  wnid=$(sed -n "${id}p" ../wnids.txt)          # devkit ID -> WNID
  mkdir -p "$wnid"; mv "$name" "$wnid/"
done < ../devkit/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt
rm ../wnids.txt
"""


def recipe_tree(rel: minirelease.Release, root: Path) -> Path:
    """ROOT as the common recipe makes it: tar, a loop of inner tars, a valprep-style loop; the
    devkit extracted; no 02, no markers, no manifest."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(c.wnid + "\n" for c in rel.classes))
    r = run(["bash", "-c", RECIPE, "recipe", root, rel.archives["train"], rel.archives["val"],
             rel.archives["test"], rel.archives["devkit"]])
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="module")
def made(release, tmp_path_factory) -> Path:
    return pipeline_tree(release, tmp_path_factory.mktemp("pipeline") / "root")


@pytest.fixture
def tree(made, tmp_path) -> Path:
    """A fresh copy of the pipeline-made tree, to damage."""
    root = tmp_path / "root"
    shutil.copytree(made, root, symlinks=True)
    return root


def run04(root: Path, *args, env=None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "IMAGENET_ROOT"}
    full.update(env or {})
    return run([sys.executable, VERIFY, "--root", root, *args], env=full, timeout=timeout, **kw)


def snapshot(root: Path) -> dict:
    """relative path -> (mtime, MD5 of a file's bytes) for everything under root."""
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, None if p.is_symlink() or
                                       not p.is_file() else hashlib.md5(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


def passes(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert "error:" not in r.stderr
    return r.stderr


def fails(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert "FAILED" in r.stderr
    return r.stderr


def sha256sum_ok(root: Path, split: str) -> None:
    r = run(["sha256sum", "-c", "--quiet", "meta/SHA256SUMS." + split], cwd=root)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr


def a_train_image(release, k: int = 0) -> str:
    wnid = sorted(release.train)[k]
    return "train/%s/%s" % (wnid, release.train[wnid][-1])


# ----------------------------------------------------------------------------- interface

def test_imports_without_running_and_has_help():
    mod = load_script("04_verify")
    assert callable(mod.main) and callable(mod.build_parser)
    r = run([sys.executable, VERIFY, "--help"])
    assert r.returncode == 0
    for text in ("--root DIR", "--full", "--decode", "--jobs N", "train val test all",
                 "IMAGENET_ROOT", "Exit codes"):
        assert text in r.stdout
    usage = r.stdout.split("\n\n")[0]
    assert usage.rstrip().endswith(" SPLIT [SPLIT ...]"), usage       # required, not [SPLIT ...]


@pytest.mark.parametrize("args, message", [
    ([], "name at least one SPLIT (train val test all)"),
    (["trian"], "unknown split 'trian'"),
    (["--jobs", "0", "train"], "--jobs wants a number"),
    (["--jobs", "x", "train"], "--jobs wants a number from 1 to 1024"),
    (["--fast", "train"], "unknown option '--fast'"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    r = run([sys.executable, VERIFY, "--root", tmp_path, *args])
    assert_usage_error(r, "04_verify.py", message)


def test_copied_alone_says_the_package_is_missing(tmp_path):
    (tmp_path / VERIFY.name).write_bytes(VERIFY.read_bytes())
    r = run([sys.executable, tmp_path / VERIFY.name, "all"], cwd=tmp_path)
    assert r.returncode == 1 and "needs the folder imagenet_prep/ beside it" in r.stderr


def test_root_that_is_not_there(tmp_path):
    r = run04(tmp_path / "nope", "all")
    assert r.returncode == 1 and "is not a folder" in r.stderr
    r = run04(tmp_path, "all")
    assert r.returncode == 1 and "none of train/, val/, test/" in r.stderr


# ----------------------------------------------------------------------------- good trees

def test_pipeline_tree_passes_structure_and_full(made, release):
    before = snapshot(made)
    err = passes(run04(made, "all"))
    n_train = sum(len(v) for v in release.train.values())
    assert "train: ok: %d classes, %d images" % (len(release.train), n_train) in err
    assert "val: ok: %d images in %d class folders" % (len(release.val), len(release.train)) in err
    assert "test: ok: %d images" % len(release.test) in err
    assert "result: train ok, val ok, test ok" in err
    # the PNG and the CMYK JPEGs are known kinds: named in a note
    for name, kind in release.special.items():
        assert "%s/%s (%s)" % (name.split("_")[0], name, "PNG" if kind == "png" else "CMYK JPEG") \
            in err
    err = passes(run04(made, "--full", "--jobs", "2", "train", "val", "test"))
    for split in ("train", "val", "test"):
        assert "SHA-256 against meta/SHA256SUMS.%s" % split in err
        sha256sum_ok(made, split)
    assert snapshot(made) == before                  # reads only


def test_recipe_made_tree_passes_structure(release, tmp_path):
    """Two-pass tar, a valprep-style loop, the devkit: no 02, no markers, no manifest. The
    classes come from the devkit's meta.mat, the val labels from its ground truth."""
    root = recipe_tree(release, tmp_path / "root")
    assert not (root / "meta").exists()
    err = passes(run04(root, "all"))
    assert "classes: %d, from %s" % (len(release.classes), root / "devkit") in err
    assert "result: train ok, val ok, test ok" in err
    err = passes(run04(root, "--full", "all"))
    assert "no manifest meta/SHA256SUMS.train: --full needs one (01_unzip.sh writes it" in err
    assert not (root / "meta").exists()


def test_recipe_tree_with_a_leftover_inner_tar_fails(release, tmp_path):
    root = recipe_tree(release, tmp_path / "root")
    wnid = sorted(release.train)[3]
    (root / "train" / (wnid + ".tar")).write_bytes(b"\0" * 1024)   # a forgotten `rm "$f"`
    fails(run04(root, "train"), "stray entries", "train/%s.tar" % wnid)


def test_flat_val_before_03_passes_with_a_note(tree, release):
    r = run([sys.executable, script("03_build_val_class_folders.py"), "--root", tree, "--undo"])
    assert r.returncode == 0, r.stderr
    err = passes(run04(tree, "--full", "val"))
    assert "val: note: val is flat, as extracted" in err
    sha256sum_ok(tree, "val")


@pytest.mark.parametrize("mode", ["copy", "link", "symlink"])
def test_manifest_survives_03_modes_and_undo(tree, release, mode):
    """03 rewrites SHA256SUMS.val whatever it does: --full and sha256sum -c pass after each."""
    three = [sys.executable, script("03_build_val_class_folders.py"), "--root", tree]
    for args in (["--undo"], ["--" + mode], ["--undo"], []):
        r = run(three + args)
        assert r.returncode == 0, r.stderr
        err = passes(run04(tree, "--full", "val"))
        sha256sum_ok(tree, "val")
        if args == ["--" + mode]:
            assert "%d flat originals kept" % len(release.val) in err
    bl = tree / "blacklist.txt"
    bl.write_text("".join("%d\n" % i for i in release.blacklist))
    assert run(three + ["--exclude-blacklist", bl]).returncode == 0
    err = passes(run04(tree, "--full", "val"))
    assert "%d images set aside in val_blacklisted/" % len(release.blacklist) in err
    sha256sum_ok(tree, "val")


@pytest.mark.parametrize("mode", ["link", "symlink"])
def test_an_image_with_two_names_is_counted_once_in_the_size(tree, release, mode):
    """03 --link makes hard links, 03 --symlink symbolic ones: the split's size counts each file
    once (by its inode), not once per name."""
    three = [sys.executable, script("03_build_val_class_folders.py"), "--root", tree]
    assert run(three + ["--undo"]).returncode == 0
    size = sum(p.stat().st_size for p in (tree / "val").iterdir())
    assert len(list((tree / "val").iterdir())) == len(release.val)
    r = run(three + ["--" + mode])
    assert r.returncode == 0, r.stderr
    for args in ([], ["--full"]):
        err = passes(run04(tree, *args, "val"))
        m = re.search(r" val: ok: %d images in %d class folders, ([^;]+);" % (
            len(release.val), len(set(release.val.values()))), err)
        assert m and m.group(1) == human(size), err


# ----------------------------------------------------------------------------- damaged trees

def _damage(kind: str, root: Path, release) -> tuple[list[str], list[str]]:
    """Damage the tree one way; return (04's options, words its output must contain)."""
    if kind.startswith("val-") or kind in ("empty", "wrong-folder", "hidden"):
        return _damage_val(kind, root, release)
    image = a_train_image(release)
    wnid = image.split("/")[1]
    if kind == "deleted":
        (root / image).unlink()
        return ["--full"], [verify.GONE, image, verify.COUNT, wnid]
    if kind == "truncated":
        data = (root / image).read_bytes()
        (root / image).write_bytes(data[:len(data) - 100])
        return ["--full"], [verify.CHANGED, image]
    if kind == "flipped":
        data = bytearray((root / image).read_bytes())
        data[len(data) // 2] ^= 0x01
        (root / image).write_bytes(bytes(data))
        return ["--full"], [verify.CHANGED, image]
    if kind == "stray":
        (root / "train" / wnid / "notes.txt").write_text("mine\n")
        return [], [verify.STRAY, "train/%s/notes.txt" % wnid]
    if kind == "stray-jpeg":
        shutil.copy(root / image, root / "train" / wnid / (wnid + "_999999.JPEG"))
        return ["--full"], [verify.NOT_LISTED, "train/%s/%s_999999.JPEG" % (wnid, wnid),
                            verify.COUNT]
    if kind == "missing-class":
        shutil.rmtree(root / "train" / wnid)
        return [], [verify.CLASSES_MISSING, wnid]
    if kind == "extra-class":
        (root / "train" / "n09999999").mkdir()
        shutil.copy(root / image, root / "train" / "n09999999" / "n09999999_1.JPEG")
        return [], [verify.CLASSES_EXTRA, "train/n09999999/"]
    if kind == "temporary":
        (root / "train" / (".%s.tmp-host.4242" % wnid)).mkdir()
        return [], [verify.TEMP, "train/.%s.tmp-host.4242/" % wnid]
    if kind == "not-an-image":
        (root / image).write_text("<html>Please log in</html>\n")
        return [], [verify.NOT_AN_IMAGE, image]
    if kind == "test-missing":
        (root / "test" / release.test[4]).unlink()
        return [], [verify.GAPS, "test/" + release.test[4]]
    if kind == "dangling-symlink":
        (root / image).unlink()
        (root / image).symlink_to("/nonexistent/image.JPEG")
        return [], [verify.NOT_REGULAR, image + " (not a regular file: a symbolic link)",
                    verify.COUNT, wnid]
    raise AssertionError(kind)


def _damage_val(kind: str, root: Path, release) -> tuple[list[str], list[str]]:
    name = VAL % 3
    wnid = release.val[name]
    path = "val/%s/%s" % (wnid, name)
    if kind == "empty":
        (root / path).write_bytes(b"")
        return [], [verify.EMPTY, path]
    if kind == "wrong-folder":
        other = next(w for w in sorted(release.train) if w != wnid)
        os.rename(root / path, root / "val" / other / name)
        return [], [verify.WRONG, "val/%s/%s (label: %s)" % (other, name, wnid)]
    if kind == "hidden":
        (root / "val" / wnid / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        return [], [verify.HIDDEN, "val/%s/.DS_Store" % wnid]
    if kind == "val-missing":
        (root / path).unlink()
        return [], [verify.LABELLED_MISSING, name]
    if kind == "val-still-flat":
        os.rename(root / path, root / "val" / name)
        return [], [verify.STILL_FLAT, "val/" + name]
    if kind == "val-unlabelled":
        shutil.copy(root / path, root / "val" / wnid / (VAL % 999))
        return [], [verify.UNLABELLED, "val/%s/%s" % (wnid, VAL % 999)]
    raise AssertionError(kind)


DAMAGE = ["deleted", "truncated", "flipped", "stray", "stray-jpeg", "empty", "missing-class",
          "extra-class", "wrong-folder", "hidden", "temporary", "not-an-image", "test-missing",
          "val-missing", "val-still-flat", "val-unlabelled", "dangling-symlink"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_each_kind_of_damage_fails_naming_it(tree, release, kind):
    args, words = _damage(kind, tree, release)
    before = snapshot(tree)
    err = fails(run04(tree, *args, "all"), *words)
    assert snapshot(tree) == before
    assert sum(1 for line in err.splitlines() if ": error: " in line) == \
        len([w for w in words if w in vars(verify).values()]), err


def test_many_problems_of_a_kind_are_counted_not_all_listed(tree, release):
    wnid = sorted(release.train)[0]
    for i in range(12):
        (tree / "train" / wnid / ("junk%02d.txt" % i)).write_text("x")
    err = fails(run04(tree, "train"), "stray entries (not images of this split; loaders may read "
                                      "them) (12): ", "... and 7 more")
    assert "junk05.txt" not in err


def test_the_first_problems_of_each_kind_come_with_a_count(tree, release):
    """Problems of several kinds in one split: one error line per kind, and a FAILED summary."""
    for kind in ("stray", "hidden", "empty"):
        _damage(kind, tree, release)
    err = fails(run04(tree, "train", "val"), "val: FAILED (2 problems)", "train: FAILED (1 problem)")
    assert "result: train FAILED (1 problem), val FAILED (2 problems)" in err


def test_a_manifest_left_behind_by_an_old_03_says_to_rerun_it(tree, release):
    """The flat paths of 01 while the images are in class folders: missing + extra, and why."""
    text = (tree / "meta" / "SHA256SUMS.val").read_text()
    (tree / "meta" / "SHA256SUMS.val").write_text(
        "".join("%s  val/%s\n" % (line[:64], line.rsplit("/", 1)[1])
                for line in sorted(text.splitlines(), key=lambda x: x.rsplit("/", 1)[1])))
    fails(run04(tree, "--full", "val"), verify.GONE, verify.NOT_LISTED,
          "%d images are listed in meta/SHA256SUMS.val at another place" % len(release.val),
          "03_build_val_class_folders.py rewrites it: rerun it")
    r = run([sys.executable, script("03_build_val_class_folders.py"), "--root", tree])
    assert r.returncode == 0 and "already done" in r.stderr
    passes(run04(tree, "--full", "val"))


def test_a_damaged_manifest_is_named(tree):
    with open(tree / "meta" / "SHA256SUMS.test", "a") as f:
        f.write("deadbeef  test/x.JPEG\n")
    fails(run04(tree, "--full", "test"), verify.MANIFEST, "SHA256SUMS.test line")


# ----------------------------------------------------------------------------- not regular files

@pytest.mark.parametrize("mode", [[], ["--full"], ["--decode"]])
def test_fifos_and_links_to_devices_are_reported_never_opened(tree, release, mode):
    """A FIFO named like an image, a symlink to /dev/zero and one to /dev/stdin: opening or
    reading any of them would hang; each is an error, and 04 ends within the timeout."""
    fifo = a_train_image(release, 2)
    (tree / fifo).unlink()
    os.mkfifo(tree / fifo)
    links = {}
    for k, device in ((5, "/dev/zero"), (6, "/dev/stdin")):
        name = VAL % k
        links[device] = "val/%s/%s" % (release.val[name], name)
        (tree / links[device]).unlink()
        (tree / links[device]).symlink_to(device)
    test = "test/" + release.test[3]
    (tree / test).unlink()
    os.mkfifo(tree / test)
    before = snapshot(tree)
    fails(run04(tree, *mode, "all", timeout=30), verify.NOT_REGULAR,
          "%s (not a regular file: a FIFO)" % fifo, "%s (not a regular file: a FIFO)" % test,
          *["%s (not a regular file: a symbolic link)" % p for p in links.values()])
    assert snapshot(tree) == before


def test_sockets_devices_and_linked_class_folders_are_not_regular(tree, release, monkeypatch):
    wnids = sorted(release.train)
    odd = "train/%s/x.JPEG" % wnids[0]            # a FIFO by any name is never opened either
    os.mkfifo(tree / odd)
    sock = "test/" + release.test[2]
    (tree / sock).unlink()
    monkeypatch.chdir(tree / "test")              # a socket's path must be short
    server = socket.socket(socket.AF_UNIX)
    server.bind(release.test[2])
    words = [verify.NOT_REGULAR, "%s (not a regular file: a FIFO)" % odd,
             "%s (not a regular file: a socket)" % sock,
             "train/%s (not a regular file: a symbolic link)" % wnids[1]]
    os.rename(tree / "train" / wnids[1], tree / "elsewhere")
    (tree / "train" / wnids[1]).symlink_to(tree / "elsewhere")
    if os.geteuid() == 0:                          # mknod needs root
        dev = "train/%s/%s" % (wnids[2], release.train[wnids[2]][0])
        (tree / dev).unlink()
        os.mknod(tree / dev, stat.S_IFCHR | 0o600, os.makedev(1, 5))     # /dev/zero's numbers
        words.append("%s (not a regular file: a character device)" % dev)
    try:
        fails(run04(tree, "--full", "all", timeout=30), *words)
    finally:
        server.close()


GROUND_TRUTH = "devkit/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
META_MAT = "devkit/ILSVRC2012_devkit_t12/data/meta.mat"


def capped() -> None:
    """In the child: at most 4 GiB of address space, so that a read of /dev/zero fails quickly
    instead of taking the machine's memory (the test then fails, it does not hurt the host)."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def hostile(path: Path, kind: str) -> str:
    """Put a FIFO nobody writes to, or a symbolic link to /dev/zero, at `path`; the words 04
    must say about it."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        return "%s is not a regular file (a FIFO)" % path
    path.symlink_to("/dev/zero")
    return "%s is not a regular file (a symbolic link to /dev/zero)" % path


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_val_ground_truth_that_is_not_a_regular_file_fails_at_once(tree, kind):
    """The devkit's labels as a FIFO (reading it waits forever) or a link to /dev/zero (reading
    it never ends and fills the memory): named, exit 1, within seconds."""
    said = hostile(tree / GROUND_TRUTH, kind)
    t0 = time.monotonic()
    r = run04(tree, "val", timeout=30, preexec_fn=capped)
    fails(r, verify.LABELS, said, "put the devkit's file itself there")
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("what", ["synsets.csv", "meta.mat", "test.done", "val_labels.csv"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_other_inputs_that_are_not_regular_files_are_named(tree, what, kind):
    """The class list (meta/synsets.csv, else the devkit's meta.mat), 01's done marker and 03's
    val_labels.csv: never read unless regular files; said as such, not as missing."""
    if what == "meta.mat":
        (tree / "meta" / "synsets.csv").unlink()                 # the devkit's .mat is read
        path, split = tree / META_MAT, "train"
    elif what == "val_labels.csv":
        shutil.rmtree(tree / "devkit")                           # 03's labels are read
        path, split = tree / "meta" / "val_labels.csv", "val"
    elif what == "test.done":
        path, split = tree / ".01_unzip" / "test.done", "test"
    else:
        path, split = tree / "meta" / "synsets.csv", "train"
    said = hostile(path, kind)
    r = run04(tree, split, timeout=30, preexec_fn=capped)
    assert r.returncode == 1, r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "no meta_clsloc.mat or meta.mat" not in r.stderr


@pytest.mark.parametrize("kind", ["fifo", "folder", "dev-zero"])
def test_full_with_a_manifest_that_is_not_a_regular_file_fails(tree, kind):
    """Not "no manifest" (a note, exit 0): a manifest is there but cannot be read."""
    path = tree / "meta" / "SHA256SUMS.train"
    if kind == "folder":
        path.unlink()
        path.mkdir()
        said = "%s is not a regular file (a folder)" % path
    else:
        said = hostile(path, kind)
    err = fails(run04(tree, "--full", "train", timeout=30, preexec_fn=capped), verify.MANIFEST,
                said, "01_unzip.sh train")
    assert "no manifest" not in err


def test_an_image_that_is_not_a_regular_file_is_reported_once(tree, release, monkeypatch):
    """A FIFO, a link or a socket in place of a listed image: one line, as not a regular file,
    not again as missing from the tree."""
    fifo = a_train_image(release, 3)
    (tree / fifo).unlink()
    os.mkfifo(tree / fifo)
    name = VAL % 7
    link = "val/%s/%s" % (release.val[name], name)
    (tree / link).unlink()
    (tree / link).symlink_to("/dev/zero")
    sock = "test/" + release.test[4]
    (tree / sock).unlink()
    monkeypatch.chdir(tree / "test")                   # a socket's path must be short
    server = socket.socket(socket.AF_UNIX)
    server.bind(release.test[4])
    wnid = sorted(release.train)[5]                    # a class folder that is a link
    os.rename(tree / "train" / wnid, tree / "elsewhere")
    (tree / "train" / wnid).symlink_to(tree / "elsewhere")
    try:
        err = fails(run04(tree, "--full", "all", timeout=30), verify.NOT_REGULAR, fifo, link,
                    sock, "train/%s (not a regular file: a symbolic link)" % wnid)
    finally:
        server.close()
    assert verify.GONE not in err, err


# ----------------------------------------------------------------------------- what is missing

def test_without_a_manifest_full_checks_the_structure_and_says_so(tree):
    """A manifest 01 wrote and that is gone: --full cannot check the bytes, an error saying how to
    get it back. A tree 01 extracted with --no-manifest (its markers say so): a note."""
    for split in ("train", "val", "test"):
        (tree / "meta" / ("SHA256SUMS." + split)).unlink()
    err = fails(run04(tree, "--full", "all"), verify.MANIFEST)
    for split in ("train", "val", "test"):
        assert "meta/SHA256SUMS.%s is missing, but 01_unzip.sh wrote one when it extracted %s" \
            % (split, split) in err
    assert "delete %s and run 01_unzip.sh train" % (tree / ".01_unzip" / "train.done") in err
    for split in ("train", "val", "test"):             # as 01_unzip.sh --no-manifest leaves them
        marker = tree / ".01_unzip" / (split + ".done")
        marker.write_text(json.dumps(dict(json.loads(marker.read_text()), manifest=False)))
    err = passes(run04(tree, "--full", "all"))
    for split in ("train", "val", "test"):
        assert "%s: note: no manifest meta/SHA256SUMS.%s: --full needs one" % (split, split) in err


def test_without_a_class_list_says_how_to_make_one(tree):
    (tree / "meta" / "synsets.csv").unlink()
    shutil.rmtree(tree / "devkit")
    fails(run04(tree, "train"), verify.NO_CLASSES, "run 02_convert_meta_clsloc.py",
          "00_download.sh devkit")
    passes(run04(tree, "test"))                        # test needs no classes


def test_val_labels_from_03s_csv_or_none(tree, release):
    """Without the devkit the labels 03 wrote are used; without those too, a note."""
    shutil.rmtree(tree / "devkit")
    passes(run04(tree, "val"))
    _damage("wrong-folder", tree, release)
    fails(run04(tree, "val"), verify.WRONG)
    (tree / "meta" / "val_labels.csv").unlink()
    err = passes(run04(tree, "val"))
    assert "val: note: no validation labels, so the class of each image is not checked" in err


def test_all_checks_the_splits_that_are_there_a_named_one_must_be(tree):
    shutil.rmtree(tree / "test")
    err = passes(run04(tree, "all"))
    assert "not there, so not checked: test/" in err
    fails(run04(tree, "test"), verify.NO_SPLIT, "01_unzip.sh test extracts it")


def test_official_counts_apply_to_the_release_class_set(tmp_path, release):
    """Without a class list test is taken as the release's: 100,000 images."""
    (tmp_path / "test").mkdir()
    for name in release.test:
        (tmp_path / "test" / name).write_bytes(minirelease.fake_jpeg(random.Random(1), 300))
    fails(run04(tmp_path, "test"), "%s (99990): test/ILSVRC2012_test_00000011.JPEG" % verify.GAPS,
          "... and 99985 more")


# ----------------------------------------------------------------------------- --decode

def test_decode_passes_every_generated_image_and_catches_a_truncated_one(tree, release):
    err = passes(run04(tree, "--decode", "all"))
    assert "every image decoded" in err
    image = a_train_image(release, 5)
    data = (tree / image).read_bytes()
    (tree / image).write_bytes(data[:len(data) // 2])
    for split in ("train", "val", "test"):                # decoding alone finds it
        (tree / "meta" / ("SHA256SUMS." + split)).unlink()
    fails(run04(tree, "--decode", "train"), verify.UNDECODABLE, image)
    passes(run04(tree, "train"))                         # the structure cannot see it


def test_decode_without_pillow_says_how_to_install_it(tree, tmp_path):
    fake = tmp_path / "nopil" / "PIL"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named PIL')\n")
    r = run04(tree, "--decode", "val", env={"PYTHONPATH": str(fake.parent)})
    assert r.returncode == 1 and "pip install Pillow" in r.stderr
    assert "val:" not in r.stderr                        # said before anything is read
    passes(run04(tree, "val", env={"PYTHONPATH": str(fake.parent)}))


# ----------------------------------------------------------------------------- the file checks

def test_file_kind_reads_only_what_it_needs(tmp_path):
    """A CMYK JPEG whose frame header lies 200 KiB in (behind big segments) is found by reading
    a few pages; it agrees with image_kind on the whole file for every kind."""
    rng = random.Random(7)
    cases = {"cmyk.JPEG": (minirelease.fake_jpeg(rng, 200_000, components=4), "CMYK JPEG"),
             "rgb.JPEG": (minirelease.fake_jpeg(rng, 150_000), None),
             "grey.JPEG": (minirelease.fake_jpeg(rng, 300, components=1), None),
             "png.JPEG": (minirelease.fake_png(rng, 9000), "PNG"),
             "html.JPEG": (b"<html>" + bytes(9000), "not a JPEG")}
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data)
        with open(tmp_path / name, "rb") as f:
            assert verify.file_kind(f.fileno(), len(data)) == kind == verify.image_kind(data)
            assert verify.read_all(f.fileno()) == data
    with open(tmp_path / "cmyk.JPEG", "rb") as f:
        view = verify._FileView(f.fileno(), 200_000, os.pread(f.fileno(), verify.PAGE, 0))
        assert verify.image_kind(view) == "CMYK JPEG"
        assert len(view.pages) <= 8                          # of 49
