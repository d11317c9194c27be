"""Tests of 03_build_val_class_folders.py: real files, real processes, the tree on disk checked;
and of its label logic in imagenet_prep/valfolders.py, which later stages call directly."""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import minirelease
from conftest import load_script, run, script
from imagenet_prep import valfolders
from imagenet_prep.console import PrepError

SCRIPT = script("03_build_val_class_folders.py")
COLUMNS = ["ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images"]
VAL = "ILSVRC2012_val_%08d.JPEG"


# ----------------------------------------------------------------------------- helpers

def write_synsets(path: Path, rows: list) -> None:
    """synsets.csv per the contract; rows are (ilsvrc_id, wnid, words, description, n_train)."""
    order = sorted(r[1] for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for ilsvrc_id, wnid, words, gloss, n in sorted(rows):
            w.writerow([ilsvrc_id, order.index(wnid), wnid, words, gloss, n])


def release_synsets(release) -> list:
    return [(c.ilsvrc_id, c.wnid, c.words, c.gloss, c.num_train_images) for c in release.classes]


def make_root(tmp_path: Path, release, devkit: str = "devkit") -> Path:
    """ROOT with val/ extracted flat from the val archive, the devkit, and meta/synsets.csv."""
    root = tmp_path / "root"
    with tarfile.open(release.archives["val"]) as tar:
        tar.extractall(root / "val")
    if devkit:
        with tarfile.open(release.archives[devkit]) as tar:
            tar.extractall(root / "devkit")
    write_synsets(root / "meta" / "synsets.csv", release_synsets(release))
    return root


def snapshot(root: Path) -> dict:
    """relative path -> (kind, inode, content hash or link text) for everything under root."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                snap[rel] = ("link", st.st_ino, os.readlink(p))
            elif p.is_dir():
                snap[rel] = ("dir",)
            else:
                snap[rel] = ("file", st.st_ino, hashlib.md5(p.read_bytes()).hexdigest())
    return snap


def image_tree(root: Path) -> set:
    """Relative paths of every file under ROOT/val, ROOT/val_blacklisted and ROOT/val_flat."""
    out = set()
    for tree in ("val", "val_blacklisted", "val_flat"):
        for dirpath, _, filenames in os.walk(root / tree):
            out.update(str((Path(dirpath) / f).relative_to(root)) for f in filenames)
    return out


def expected_tree(release, excluded=frozenset()) -> set:
    return {"%s/%s/%s" % ("val_blacklisted" if n in excluded else "val", w, n)
            for n, w in release.val.items()}


def flat_tree(release) -> set:
    return {"val/" + n for n in release.val}


def kept_tree(release) -> set:
    """Where --copy, --link and --symlink keep the flat originals."""
    return {"val_flat/" + n for n in release.val}


def timm_classes(folder: Path) -> dict:
    """{image file: its class} as timm's folder reader labels a tree: it walks every level
    (following links) and names each image's class after the folder it is in, relative to the
    top: an image at the top itself gets the class ''."""
    out = {}
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        rel = os.path.relpath(dirpath, folder)
        for f in filenames:
            if f.lower().endswith((".jpeg", ".jpg", ".png")):
                out[os.path.join(rel, f) if rel != "." else f] = \
                    "" if rel == "." else os.path.basename(rel)
    return out


def write_manifest(root: Path) -> Path:
    """ROOT/meta/SHA256SUMS.val for the flat val, as 01_unzip.sh writes it (sha256sum format)."""
    path = root / "meta" / "SHA256SUMS.val"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("%s  val/%s\n" % (hashlib.sha256(p.read_bytes()).hexdigest(), p.name)
                            for p in sorted((root / "val").iterdir())))
    return path


def manifest_paths(root: Path) -> set:
    return {line[66:] for line in (root / "meta" / "SHA256SUMS.val").read_text().splitlines()}


def sha256sum_ok(root: Path) -> None:
    """`cd ROOT && sha256sum -c --quiet meta/SHA256SUMS.val` passes; the lines are sorted."""
    r = run(["sha256sum", "-c", "--quiet", "meta/SHA256SUMS.val"], cwd=root)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    lines = (root / "meta" / "SHA256SUMS.val").read_text().splitlines()
    assert lines == sorted(lines, key=lambda line: line[66:])


def run03(*args, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, SCRIPT, *args], **kw)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    if "--help" not in r.args:
        assert r.stdout == "", r.stdout             # results are log lines, on stderr
    return r


# ----------------------------------------------------------------------------- interface

def test_imports_without_running_and_has_help():
    mod = load_script("03_build_val_class_folders")
    assert callable(mod.main) and callable(mod.build_parser)
    r = ok(run03("--help"))
    for opt in ("--root", "--labels", "--meta", "--copy", "--link", "--symlink", "--dry-run",
                "--undo", "--exclude-blacklist"):
        assert opt in r.stdout
    text = " ".join(r.stdout.split())          # read_blacklist takes numbers and names
    assert "one per line: an image number (1-based, as in ILSVRC2015_clsloc_validation_" \
           "blacklist.txt) or a file name, with or without .JPEG" in text
    r = run03("--copy", "--link")
    assert r.returncode == 2 and "not allowed" in r.stderr
    r = run03("--bogus")
    assert r.returncode == 2 and "usage:" in r.stderr.lower()


def test_runs_from_any_folder_but_not_without_its_package(tmp_path, release):
    """Through a symlink from elsewhere it finds imagenet_prep/ beside its real file; copied
    alone it says what is missing, and nothing else."""
    root = make_root(tmp_path, release)
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / SCRIPT.name).symlink_to(SCRIPT)
    ok(run([sys.executable, elsewhere / SCRIPT.name, "--root", root], cwd=elsewhere))
    assert image_tree(root) == expected_tree(release)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / SCRIPT.name).write_bytes(SCRIPT.read_bytes())
    r = run([sys.executable, alone / SCRIPT.name, "--root", root, "--undo"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "needs the folder imagenet_prep/ beside it (in %s)" % alone in r.stderr
    assert "copy or clone the whole repository folder, not the script alone" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert image_tree(root) == expected_tree(release)


# ----------------------------------------------------------------------------- happy paths

def test_devkit_labels_found_automatically(tmp_path, release):
    root = make_root(tmp_path, release)
    before = snapshot(root / "val")
    r = ok(run03("--root", root))
    assert "devkit ground truth" in r.stderr
    assert image_tree(root) == expected_tree(release)
    # every image kept its bytes and its inode (a rename, not a copy)
    after = snapshot(root / "val")
    by_name = {Path(k).name: v for k, v in before.items() if v[0] == "file"}
    moved = {Path(k).name: v for k, v in after.items() if v[0] == "file"}
    assert moved == by_name
    # val_labels.csv: every image, its WNID, devkit ID and sorted-WNID index
    with open(root / "meta" / "val_labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "wnid", "ilsvrc_id", "class_index"]
    ids = {c.wnid: c.ilsvrc_id for c in release.classes}
    assert rows[1:] == [[n, release.val[n], str(ids[release.val[n]]),
                         str(release.class_index(release.val[n]))] for n in sorted(release.val)]
    assert "done: 36 images verified" in r.stderr
    assert not list((root / "meta").glob(".*"))


def test_2015_devkit_ground_truth_found_too(tmp_path, release):
    root = make_root(tmp_path, release, devkit="devkit2017")
    r = ok(run03("--root", root))
    assert "ILSVRC2015_clsloc_validation_ground_truth.txt" in r.stderr
    assert image_tree(root) == expected_tree(release)


@pytest.mark.parametrize("form,says", [("devkit", "devkit ground truth"),
                                       ("kaggle", "Kaggle LOC_val_solution.csv"),
                                       ("tf", "WNID list")])
def test_every_label_form_gives_the_exact_tree(tmp_path, release, form, says):
    root = make_root(tmp_path, release, devkit="")
    labels = release.labels[form]
    if form == "kaggle":  # rows in a different order than the generator's, to be sure
        lines = labels.read_text().splitlines(keepends=True)
        body = lines[1:]
        random.Random(5).shuffle(body)
        labels = tmp_path / "LOC_val_solution.csv"
        labels.write_text(lines[0] + "".join(body))
    r = ok(run03("--root", root, "--labels", labels))
    assert says in r.stderr
    assert "%s form labels" % ("wnid" if form == "tf" else form) in r.stderr
    assert image_tree(root) == expected_tree(release)


def test_root_from_environment_and_current_directory(tmp_path, release):
    root = make_root(tmp_path, release)
    ok(run03(env={**os.environ, "IMAGENET_ROOT": str(root)}))
    assert image_tree(root) == expected_tree(release)
    ok(run03("--undo", cwd=root))
    assert image_tree(root) == flat_tree(release)


def test_rerun_is_a_no_op(tmp_path, release):
    root = make_root(tmp_path, release)
    ok(run03("--root", root))
    before = snapshot(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    r = ok(run03("--root", root))
    assert "already done" in r.stderr
    assert snapshot(root) == before
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes


def test_undo_restores_the_flat_set_exactly(tmp_path, release):
    root = make_root(tmp_path, release)
    before = snapshot(root / "val")
    ok(run03("--root", root))
    r = ok(run03("--root", root, "--undo"))
    assert "done: 36 images flat" in r.stderr
    assert snapshot(root / "val") == before  # same names, bytes and inodes; no folders left
    r = ok(run03("--root", root, "--undo"))
    assert "already done" in r.stderr
    assert snapshot(root / "val") == before
    ok(run03("--root", root))  # and forward again
    assert image_tree(root) == expected_tree(release)


def test_dry_run_changes_nothing(tmp_path, release):
    root = make_root(tmp_path, release)
    before = snapshot(root)
    r = ok(run03("--root", root, "--dry-run"))
    assert "would move 36 images into 12 class folders" in r.stderr
    assert snapshot(root) == before
    ok(run03("--root", root))
    done = snapshot(root)
    r = ok(run03("--root", root, "--undo", "--dry-run"))
    assert "would move 36 images back" in r.stderr
    assert snapshot(root) == done


@pytest.mark.parametrize("mode", ["copy", "link", "symlink"])
def test_copy_link_symlink_leave_only_class_folders_in_val(tmp_path, release, mode):
    """timm's folder reader walks ROOT/val to the bottom: an image at its top would be one more
    class, '', and shift every class index by one. Whatever the mode, ROOT/val holds the class
    folders and nothing else."""
    root = make_root(tmp_path, release)
    ok(run03("--root", root, "--" + mode))
    assert [p.name for p in (root / "val").iterdir() if not p.is_dir()] == []
    labels = timm_classes(root / "val")
    assert sorted(set(labels.values())) == release.wnids_sorted
    assert labels == {"%s/%s" % (w, n): w for n, w in release.val.items()}


@pytest.mark.parametrize("mode", ["copy", "link", "symlink"])
def test_copy_link_symlink_keep_the_originals_in_val_flat(tmp_path, release, mode):
    root = make_root(tmp_path, release)
    flat_before = snapshot(root / "val")
    r = ok(run03("--root", root, "--" + mode))
    assert "; move %d flat originals from %s to %s" % (len(release.val), root / "val",
                                                      root / "val_flat") in r.stderr
    assert "val_flat/: %d originals" % len(release.val) in r.stderr
    assert image_tree(root) == expected_tree(release) | kept_tree(release)
    for name, wnid in release.val.items():
        kept, placed = root / "val_flat" / name, root / "val" / wnid / name
        assert placed.read_bytes() == kept.read_bytes()
        if mode == "copy":
            assert not placed.is_symlink() and placed.stat().st_ino != kept.stat().st_ino
        elif mode == "link":
            assert placed.stat().st_ino == kept.stat().st_ino
        else:
            assert os.readlink(placed) == "../../val_flat/" + name   # relative: ROOT can move
    assert snapshot(root / "val_flat") == flat_before     # the originals, moved (same inodes)
    r = ok(run03("--root", root, "--" + mode))
    assert "already done" in r.stderr
    ok(run03("--root", root, "--undo"))
    assert snapshot(root / "val") == flat_before
    assert not (root / "val_flat").exists()


@pytest.mark.parametrize("mode", ["copy", "link", "symlink"])
def test_a_tree_sorted_by_an_older_03_gets_its_originals_out_of_val(tmp_path, release, mode):
    """Class-folder copies or links beside flat originals in ROOT/val (what 03 --copy, --link,
    --symlink made before): the rerun moves the originals to ROOT/val_flat (and points the
    links there); the manifest follows."""
    root = make_root(tmp_path, release)
    write_manifest(root)
    for name, wnid in release.val.items():
        (root / "val" / wnid).mkdir(exist_ok=True)
        flat, placed = root / "val" / name, root / "val" / wnid / name
        if mode == "copy":
            placed.write_bytes(flat.read_bytes())
        elif mode == "link":
            os.link(flat, placed)
        else:
            placed.symlink_to("../" + name)
    r = ok(run03("--root", root, "--" + mode))
    n = len(release.val)
    assert "%s %d images into 12 class folders under %s; move %d flat originals from %s to %s (" \
        % ({"link": "Hard-link"}.get(mode, mode.capitalize()), n if mode == "symlink" else 0,
           root / "val", n, root / "val", root / "val_flat") in r.stderr
    assert image_tree(root) == expected_tree(release) | kept_tree(release)
    assert [p.name for p in (root / "val").iterdir() if not p.is_dir()] == []
    assert all((root / "val" / w / n).read_bytes() == (root / "val_flat" / n).read_bytes()
               for n, w in release.val.items())
    assert manifest_paths(root) == image_tree(root)
    sha256sum_ok(root)


def test_copy_then_move_ends_with_one_file_per_image(tmp_path, release):
    root = make_root(tmp_path, release)
    data = {n: (root / "val" / n).read_bytes() for n in release.val}
    ok(run03("--root", root, "--symlink"))
    ok(run03("--root", root))
    assert image_tree(root) == expected_tree(release)
    assert all((root / "val" / w / n).read_bytes() == data[n] and
               not (root / "val" / w / n).is_symlink() for n, w in release.val.items())


def test_leftover_temporary_copy_is_removed(tmp_path, release):
    root = make_root(tmp_path, release)
    name = VAL % 1
    wnid = release.val[name]
    (root / "val" / wnid).mkdir()
    (root / "val" / wnid / (".%s.tmp-999" % name)).write_bytes(b"half a cop")
    (root / "meta" / ".val_labels.csv.tmp-999").write_text("file,wnid\n")
    ok(run03("--root", root, "--copy"))
    assert sorted(p.name for p in (root / "meta").iterdir()) == ["synsets.csv", "val_labels.csv"]
    assert image_tree(root) == expected_tree(release) | kept_tree(release)
    assert (root / "val" / wnid / name).read_bytes() == (root / "val_flat" / name).read_bytes()


def test_other_files_are_left_alone_with_a_warning(tmp_path, release):
    root = make_root(tmp_path, release)
    (root / "val" / "README.txt").write_text("notes\n")
    (root / "val" / "lost+found").mkdir()
    r = ok(run03("--root", root))
    assert "leaving 2 other entries alone" in r.stderr
    assert (root / "val" / "README.txt").read_text() == "notes\n"
    assert image_tree(root) == expected_tree(release) | {"val/README.txt"}
    ok(run03("--root", root, "--undo"))
    assert image_tree(root) == flat_tree(release) | {"val/README.txt"}


def test_blacklist_option_and_its_undo(tmp_path, release):
    root = make_root(tmp_path, release)
    flat_before = snapshot(root / "val")
    bl = tmp_path / "blacklist.txt"
    bl.write_text("".join("%d\n" % i for i in release.blacklist))
    excluded = {VAL % i for i in release.blacklist}
    ok(run03("--root", root, "--exclude-blacklist", bl))
    assert image_tree(root) == expected_tree(release, excluded)
    rows = (root / "meta" / "val_labels.csv").read_text().splitlines()
    assert len(rows) == 1 + len(release.val)  # the labels keep all images
    r = ok(run03("--root", root, "--exclude-blacklist", bl))
    assert "already done" in r.stderr
    # without the option the blacklisted images come back into val/WNID/, and the folders
    # they leave empty go
    ok(run03("--root", root))
    assert image_tree(root) == expected_tree(release)
    assert not (root / "val_blacklisted").exists()
    ok(run03("--root", root, "--exclude-blacklist", bl))
    ok(run03("--root", root, "--undo"))
    assert snapshot(root / "val") == flat_before
    assert not (root / "val_blacklisted").exists()


def test_blacklist_with_symlinks_points_to_the_originals(tmp_path, release):
    root = make_root(tmp_path, release)
    bl = tmp_path / "blacklist.txt"
    bl.write_text("".join("%s\n" % (VAL % i)[:-5] for i in release.blacklist))  # names work too
    ok(run03("--root", root, "--symlink", "--exclude-blacklist", bl))
    name = VAL % release.blacklist[0]
    link = root / "val_blacklisted" / release.val[name] / name
    assert os.readlink(link) == "../../val_flat/" + name
    assert link.read_bytes() == (root / "val_flat" / name).read_bytes()


# ----------------------------------------------------------------------------- the manifest

@pytest.mark.parametrize("mode", ["move", "copy", "link", "symlink"])
def test_manifest_follows_the_images_and_their_undo(tmp_path, release, mode):
    """SHA256SUMS.val lists every image where it is now (--copy/--link/--symlink: the class-folder
    entry the loaders read and the flat original); the hashes are the original ones."""
    root = make_root(tmp_path, release)
    write_manifest(root)
    digests = {line[66:].rsplit("/", 1)[1]: line[:64]
               for line in (root / "meta" / "SHA256SUMS.val").read_text().splitlines()}
    before = snapshot(root)
    r = ok(run03("--root", root, "--dry-run"))
    assert "and keep %s in step" % (root / "meta" / "SHA256SUMS.val") in r.stderr
    assert snapshot(root) == before
    r = ok(run03("--root", root, *(["--" + mode] if mode != "move" else [])))
    assert "rewrote %s" % (root / "meta" / "SHA256SUMS.val") in r.stderr
    assert manifest_paths(root) == image_tree(root)
    sha256sum_ok(root)
    assert {line[66:].rsplit("/", 1)[1]: line[:64] for line in
            (root / "meta" / "SHA256SUMS.val").read_text().splitlines()} == digests
    assert "rewrote" not in ok(run03("--root", root, *(["--" + mode] if mode != "move" else []))
                               ).stderr                  # already done: not written again
    ok(run03("--root", root, "--undo"))
    assert manifest_paths(root) == flat_tree(release)
    sha256sum_ok(root)
    assert not [p for p in (root / "meta").iterdir() if p.name.startswith(".")]


def test_manifest_lists_blacklisted_images_where_they_are(tmp_path, release):
    root = make_root(tmp_path, release)
    write_manifest(root)
    bl = tmp_path / "blacklist.txt"
    bl.write_text("".join("%d\n" % i for i in release.blacklist))
    excluded = {VAL % i for i in release.blacklist}
    ok(run03("--root", root, "--exclude-blacklist", bl))
    assert manifest_paths(root) == expected_tree(release, excluded)
    assert any(p.startswith("val_blacklisted/") for p in manifest_paths(root))
    sha256sum_ok(root)
    ok(run03("--root", root, "--undo"))
    assert manifest_paths(root) == flat_tree(release)
    sha256sum_ok(root)


def test_a_manifest_left_behind_by_a_killed_run_is_fixed_by_the_rerun(tmp_path, release):
    """Killed after its moves, before the rewrite: the rerun has nothing to move but rewrites the
    manifest (and clears the temporary file a killed rewrite leaves)."""
    root = make_root(tmp_path, release)
    flat = write_manifest(root).read_bytes()
    ok(run03("--root", root))
    (root / "meta" / "SHA256SUMS.val").write_bytes(flat)
    (root / "meta" / ".SHA256SUMS.val.tmp-host.999").write_bytes(flat[:100])
    r = ok(run03("--root", root))
    assert "already done" in r.stderr and "rewrote" in r.stderr
    assert manifest_paths(root) == expected_tree(release)
    assert not (root / "meta" / ".SHA256SUMS.val.tmp-host.999").exists()
    sha256sum_ok(root)
    (root / "meta" / "SHA256SUMS.val").write_bytes(flat)   # the same for --undo
    ok(run03("--root", root, "--undo"))
    (root / "meta" / "SHA256SUMS.val").write_text(
        (root / "meta" / "SHA256SUMS.val").read_text().replace("  val/", "  val/n00000001/"))
    r = ok(run03("--root", root, "--undo"))
    assert "already done" in r.stderr and "rewrote" in r.stderr
    sha256sum_ok(root)


def test_manifest_of_images_not_found_or_not_listed(tmp_path, release):
    """A listed image that is not there keeps its line (sha256sum -c says it is missing); an
    image the manifest does not list is left out, with a warning."""
    root = make_root(tmp_path, release)
    write_manifest(root)
    text = (root / "meta" / "SHA256SUMS.val").read_text().splitlines(keepends=True)
    gone = VAL % 5                                   # not listed (e.g. added after 01)
    lines = [x for x in text if not x.rstrip().endswith(gone)]
    (root / "meta" / "SHA256SUMS.val").write_text(
        "".join(sorted(lines + ["%s  val/%s\n" % ("0" * 64, VAL % 99)], key=lambda x: x[66:])))
    r = ok(run03("--root", root))
    assert "warning: 1 images are not listed in" in r.stderr and gone in r.stderr
    assert manifest_paths(root) == (expected_tree(release) - {"val/%s/%s" % (release.val[gone], gone)}
                                    | {"val/" + VAL % 99})


def test_no_manifest_no_word_about_it(tmp_path, release):
    root = make_root(tmp_path, release)
    r = ok(run03("--root", root))
    r2 = ok(run03("--root", root, "--undo"))
    assert "SHA256SUMS" not in r.stderr + r2.stderr
    assert sorted(p.name for p in (root / "meta").iterdir()) == ["synsets.csv", "val_labels.csv"]


def test_a_damaged_manifest_stops_the_run_before_anything_moves(tmp_path, release):
    root = make_root(tmp_path, release)
    path = write_manifest(root)
    path.write_text(path.read_text() + "not a line\n")
    before = snapshot(root)
    r = run03("--root", root)
    assert r.returncode == 1 and "SHA256SUMS.val line %d" % (len(release.val) + 1) in r.stderr
    assert snapshot(root) == before
    lines = path.read_text().splitlines()[:-1]
    path.write_text("\n".join(lines + ["f" * 64 + lines[0][64:].replace("val/", "val/n00000001/")])
                    + "\n")
    before = snapshot(root)
    r = run03("--root", root)
    assert r.returncode == 1 and "different SHA-256s" in r.stderr
    assert snapshot(root) == before


# ----------------------------------------------------------------------------- the label API

@pytest.mark.parametrize("form", ["devkit", "kaggle", "tf"])
def test_val_labels_gives_every_image_its_wnid(tmp_path, release, form):
    """What 04 and 05 call: {file: WNID}, from ROOT's defaults or from explicit paths."""
    root = make_root(tmp_path, release)
    before = snapshot(root)
    if form == "devkit":
        assert valfolders.val_labels(root) == release.val
    synsets = root / "meta" / "synsets.csv"
    got = valfolders.val_labels(None, synsets_csv=synsets, labels_file=release.labels[form])
    assert got == release.val
    if form != "kaggle":
        assert list(got) == sorted(got)      # in image order
    assert snapshot(root) == before          # reading changes nothing


def test_read_synsets_gives_the_classes_with_their_counts(tmp_path, release):
    root = make_root(tmp_path, release)
    classes = valfolders.read_synsets(root / "meta" / "synsets.csv")
    assert list(classes) == [c.wnid for c in sorted(release.classes, key=lambda c: c.ilsvrc_id)]
    for c in release.classes:
        row = classes[c.wnid]
        assert (row.ilsvrc_id, row.class_index, row.words, row.description,
                row.num_train_images) == (c.ilsvrc_id, release.class_index(c.wnid), c.words,
                                          c.gloss, c.num_train_images)


def test_the_label_api_raises_prep_errors(tmp_path, release):
    root = make_root(tmp_path, release)
    lines = _lines(release)
    lines[4] = "1001"
    with pytest.raises(PrepError, match="line 5: 1001"):
        valfolders.val_labels(root, labels_file=_labels(tmp_path, lines))
    synsets = root / "meta" / "synsets.csv"
    with pytest.raises(PrepError, match="no validation labels found in"):
        valfolders.val_labels(tmp_path, synsets_csv=synsets)      # no devkit there
    with pytest.raises(PrepError, match="run 02_convert_meta_clsloc.py first"):
        valfolders.val_labels(tmp_path)                           # no synsets.csv there
    rows = synsets.read_text().splitlines()
    rows[3] = rows[3].rsplit(",", 1)[0] + ",many"
    synsets.write_text("\n".join(rows) + "\n")
    with pytest.raises(PrepError, match="line 4 is not ilsvrc_id,class_index,wnid"):
        valfolders.read_synsets(synsets)


# ----------------------------------------------------------------------------- bad inputs

def _lines(release) -> list:
    return release.labels["devkit"].read_text().splitlines()


def _labels(tmp_path, lines) -> Path:
    p = tmp_path / "labels.txt"
    p.write_text("".join(x + "\n" for x in lines))
    return p


def _bad_case(kind, tmp_path, root, release):
    """Set up one bad input; return (extra args, words the error must contain)."""
    lines = _lines(release)
    if kind == "short":
        return ["--labels", _labels(tmp_path, lines[:-1])], ["label count does not match",
                                                            "35 images", "without a label",
                                                            VAL % 36]
    if kind == "long":
        return ["--labels", _labels(tmp_path, lines + ["1"])], ["label count does not match",
                                                               "not found", VAL % 37]
    if kind in ("id0", "id1001"):
        lines[4] = "0" if kind == "id0" else "1001"
        return ["--labels", _labels(tmp_path, lines)], ["line 5: " + lines[4], "IDs 1..12"]
    if kind == "missing":
        (root / "val" / (VAL % 7)).unlink()
        return [], ["not found", VAL % 7, "01_unzip.sh"]
    if kind == "extra":
        (root / "val" / (VAL % 37)).write_bytes(b"\xff\xd8stray")
        return [], ["without a label", VAL % 37]
    if kind == "no-synsets":
        (root / "meta" / "synsets.csv").unlink()
        return [], ["run 02_convert_meta_clsloc.py first"]
    if kind == "other-classes":
        other = ["n0%07d" % (9000000 + i % 12) for i in range(len(lines))]
        return ["--labels", _labels(tmp_path, other)], ["does not have", "different class sets"]
    if kind == "wrong-folder":
        name = VAL % 3
        wrong = next(c.wnid for c in release.classes if c.wnid != release.val[name])
        (root / "val" / wrong).mkdir()
        os.rename(root / "val" / name, root / "val" / wrong / name)
        return [], ["wrong class folder", "%s/%s (label: %s)" % (wrong, name, release.val[name])]
    if kind == "twice":
        name = VAL % 4
        for tree in ("val", "val_blacklisted"):
            (root / tree / release.val[name]).mkdir(parents=True)
            (root / tree / release.val[name] / name).write_bytes(b"x")
        (root / "val" / name).unlink()
        return [], ["more than one class folder", name]
    if kind == "kaggle-twice":
        text = release.labels["kaggle"].read_text()
        lines = text.splitlines(keepends=True)
        p = tmp_path / "LOC_val_solution.csv"
        p.write_text("".join(lines) + lines[3])
        return ["--labels", p], ["images listed more than once", lines[3].split(",")[0]]
    if kind == "garbage":
        return ["--labels", _labels(tmp_path, ["hello world"] + lines)], ["cannot tell the form"]
    if kind == "blank-line":
        return ["--labels", _labels(tmp_path, lines[:5] + [""] + lines[5:-1])], [
            "not in the devkit form", "line 6"]
    if kind == "bad-synsets":
        p = root / "meta" / "synsets.csv"
        p.write_text(p.read_text().replace("class_index", "index", 1))
        return [], ["does not start with the header", "02_convert_meta_clsloc.py"]
    if kind == "bad-blacklist":
        return ["--exclude-blacklist", _labels(tmp_path, ["3", "999"])], ["line 2: 999"]
    if kind == "no-val":
        for p in (root / "val").iterdir():
            p.unlink()
        (root / "val").rmdir()
        return [], ["run 01_unzip.sh first"]
    raise AssertionError(kind)


BAD = ["short", "long", "id0", "id1001", "missing", "extra", "no-synsets", "other-classes",
       "wrong-folder", "twice", "kaggle-twice", "garbage", "blank-line", "bad-synsets",
       "bad-blacklist", "no-val"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_leaves_the_tree_untouched(tmp_path, release, kind):
    root = make_root(tmp_path, release)
    args, words = _bad_case(kind, tmp_path, root, release)
    before = snapshot(tmp_path)
    r = run03("--root", root, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "error:" in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert snapshot(tmp_path) == before
    assert not (root / "meta" / "val_labels.csv").exists()


def test_a_second_run_at_the_same_time_is_refused(tmp_path, release):
    import fcntl
    root = make_root(tmp_path, release)
    before = snapshot(root)
    fd = os.open(root / "val", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running copy of 03 holds
        r = run03("--root", root)
        assert r.returncode == 1 and "another run of" in r.stderr
        assert snapshot(root) == before
    finally:
        os.close(fd)
    ok(run03("--root", root))
    assert image_tree(root) == expected_tree(release)


def test_no_labels_anywhere_says_where_it_looked(tmp_path, release):
    root = make_root(tmp_path, release, devkit="")
    before = snapshot(root)
    r = run03("--root", root)
    assert r.returncode == 1
    assert "no validation labels found in %s (looked for ILSVRC2012_validation_ground_truth" \
           ".txt or ILSVRC2015_clsloc_validation_ground_truth.txt under %s, and for %s and %s)" \
        % (root, root / "devkit", root / "kaggle" / "LOC_val_solution.csv",
           root / "hf" / "val_labels.csv") in r.stderr
    assert "--labels FILE" in r.stderr
    assert snapshot(root) == before


def test_partly_sorted_tree_with_a_problem_is_left_as_it_is(tmp_path, release):
    """Validation covers images already in folders: a later problem moves nothing back or forth."""
    root = make_root(tmp_path, release)
    ok(run03("--root", root))
    ok(run03("--root", root, "--undo"))
    name = VAL % 1
    (root / "val" / release.val[name]).mkdir()
    os.rename(root / "val" / name, root / "val" / release.val[name] / name)
    (root / "val" / (VAL % 2)).unlink()
    before = snapshot(root)
    r = run03("--root", root)
    assert r.returncode == 1 and VAL % 2 in r.stderr
    assert snapshot(root) == before


def test_undo_refuses_a_symlink_without_its_original(tmp_path, release):
    root = make_root(tmp_path, release)
    ok(run03("--root", root, "--symlink"))
    (root / "val_flat" / (VAL % 9)).unlink()
    before = snapshot(root)
    r = run03("--root", root, "--undo")
    assert r.returncode == 1 and "flat original is missing" in r.stderr and VAL % 9 in r.stderr
    assert snapshot(root) == before


# ------------------------------------------------------------------------- kill at random moments

def _big_root(tmp_path: Path, n_classes: int, per_class: int, seed: int):
    """ROOT with n flat files whose bytes name the file, devkit labels, synsets.csv."""
    rng = random.Random(seed)
    wnids = sorted({"n%08d" % rng.randrange(10**6, 10**7) for _ in range(3 * n_classes)})
    wnids = rng.sample(wnids, n_classes)  # devkit order != sorted order
    ids = [1 + i % n_classes for i in range(n_classes * per_class)]
    rng.shuffle(ids)
    root = tmp_path / "root"
    (root / "val").mkdir(parents=True)
    for k in range(1, len(ids) + 1):
        with open(root / "val" / (VAL % k), "wb") as f:
            f.write((VAL % k).encode() * 20)
    write_manifest(root)
    labels = tmp_path / "gt.txt"
    labels.write_text("".join("%d\n" % i for i in ids))
    write_synsets(root / "meta" / "synsets.csv",
                  [(i + 1, w, "class %d" % i, "", 0) for i, w in enumerate(wnids)])
    truth = {VAL % k: wnids[i - 1] for k, i in enumerate(ids, start=1)}
    return root, labels, truth


def _check_invariant(root: Path, truth: dict, copies: bool) -> str:
    """Every image exactly once (flat or in its folder; copies: its original flat in val/ or
    val_flat/, and maybe its copy), with its full bytes under every final name; returns 'flat',
    'sorted' or 'mixed'."""
    seen = {}
    for dirpath, _, files in [*os.walk(root / "val"), *os.walk(root / "val_flat")]:
        rel = os.path.relpath(dirpath, root / "val")
        for f in files:
            if f.startswith(".") and ".tmp-" in f:
                assert copies and rel not in (".", "../val_flat"), f   # only a copy's temporary
                continue
            assert f in truth, (rel, f)
            assert rel in (".", truth[f]) or copies and rel == "../val_flat", (rel, f, truth[f])
            assert (Path(dirpath) / f).read_bytes() == f.encode() * 20, (rel, f)
            seen.setdefault(f, []).append(rel)
    assert set(seen) == set(truth)
    for f, places in seen.items():
        if copies:
            assert len({".", "../val_flat"}.intersection(places)) == 1 and len(places) <= 2, \
                (f, places)
        else:
            assert len(places) == 1, (f, places)
    labels_csv = root / "meta" / "val_labels.csv"
    if labels_csv.exists():
        assert len(labels_csv.read_text().splitlines()) == len(truth) + 1
    n_sorted = sum(1 for p in seen.values() if any(x not in (".", "../val_flat") for x in p))
    return "flat" if n_sorted == 0 else "sorted" if n_sorted == len(truth) else "mixed"


def _kill_rounds(root, labels, truth, mode_args, rounds, seed):
    rng = random.Random(seed)
    cmds = {"fwd": [sys.executable, str(SCRIPT), "--root", str(root), "--labels", str(labels),
                    *mode_args],
            "undo": [sys.executable, str(SCRIPT), "--root", str(root), "--undo"]}
    took = {}
    for name, cmd in cmds.items():  # one full run each way, to know how long a run takes
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        took[name] = time.monotonic() - t0
    states = []
    for i in range(rounds):
        name = "fwd" if i % 2 == 0 else "undo"
        proc = subprocess.Popen(cmds[name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 1.2 * took[name]))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        states.append(_check_invariant(root, truth, copies=bool(mode_args)))
    return cmds, states


@pytest.mark.parametrize("mode_args,rounds", [([], 24), (["--copy"], 20)])
def test_sigkill_at_random_moments_then_rerun(tmp_path, mode_args, rounds):
    per_class = 150 if not mode_args else 60
    root, labels, truth = _big_root(tmp_path, 40, per_class, seed=len(mode_args))
    cmds, states = _kill_rounds(root, labels, truth, mode_args, rounds, seed=11)
    print("states after the %d kills: %s" % (rounds, states))
    r = subprocess.run(cmds["fwd"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _check_invariant(root, truth, copies=bool(mode_args))
    want = {"val/%s/%s" % (w, f) for f, w in truth.items()}
    if mode_args:
        want |= {"val_flat/" + f for f in truth}
    assert image_tree(root) == want
    assert manifest_paths(root) == want               # the manifest follows, whatever the kills
    sha256sum_ok(root)
    assert "already done" in subprocess.run(cmds["fwd"], capture_output=True, text=True,
                                            timeout=120).stderr
    r = subprocess.run(cmds["undo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert image_tree(root) == {"val/" + f for f in truth}
    assert sorted(p.name for p in (root / "val").iterdir()) == sorted(truth)
    assert manifest_paths(root) == {"val/" + f for f in truth}
    sha256sum_ok(root)


def _sorting_started(root: Path, wnids: set) -> bool:
    for w in wnids:
        with contextlib.suppress(FileNotFoundError):
            if os.listdir(root / "val" / w):
                return True
    return False


@pytest.mark.parametrize("mode_args", [[], ["--copy"]], ids=["move", "copy"])
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_cleanly_and_rerun_finishes(tmp_path, mode_args, sig, code, said):
    root, labels, truth = _big_root(tmp_path, 40, 150 if not mode_args else 60, seed=3)
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), "--labels", str(labels), *mode_args]
    wnids = set(truth.values())
    for _ in range(10):
        proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30          # signal once images are being placed
        while time.monotonic() < deadline and proc.poll() is None \
                and not _sorting_started(root, wnids):
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
        ok(run03("--root", root, "--undo"))       # it finished first: start again
    assert proc.returncode == code, err[-2000:]
    assert said + "; every image is either flat or in its folder" in err, err[-2000:]
    assert "Traceback" not in err and out == ""
    _check_invariant(root, truth, copies=bool(mode_args))
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]      # no half copy left
    ok(run03(*cmd[2:]))
    want = {"val/%s/%s" % (w, f) for f, w in truth.items()}
    assert image_tree(root) == (want | {"val_flat/" + f for f in truth} if mode_args else want)


# ------------------------------------------------------------- sources without a devkit

def hf_val_labels(release) -> str:
    """ROOT/hf/val_labels.csv as the Hugging Face source's 01 writes it: the classes its member
    names carry, in Kaggle's form (no boxes), in name order."""
    return "ImageId,PredictionString\n" + "".join(
        "%s,%s\n" % (n[:-len(".JPEG")], w) for n, w in sorted(release.val.items()))


def put_source_labels(root: Path, release, which: str) -> Path:
    path = root / {"kaggle": "kaggle/LOC_val_solution.csv", "hf": "hf/val_labels.csv"}[which]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(minirelease.kaggle_val_solution(release) if which == "kaggle"
                    else hf_val_labels(release))
    return path


@pytest.mark.parametrize("which", ["kaggle", "hf"])
def test_without_a_devkit_the_sources_labels_are_found(tmp_path, release, which):
    root = make_root(tmp_path, release, devkit="")
    path = put_source_labels(root, release, which)
    r = ok(run03("--root", root))
    assert "labels: %s (36 images), read as Kaggle LOC_val_solution.csv" % path in r.stderr
    assert image_tree(root) == expected_tree(release)
    r = ok(run03("--root", root))
    assert "already done: 36 images in place" in r.stderr


def test_labels_found_in_several_places_must_agree(tmp_path, release):
    root = make_root(tmp_path, release)
    kaggle = put_source_labels(root, release, "kaggle")
    hf = put_source_labels(root, release, "hf")
    r = ok(run03("--root", root, "--dry-run"))
    assert "labels: %s (36 images), read as devkit ground truth" % (
        root / "devkit" / "ILSVRC2012_devkit_t12" / "data" /
        "ILSVRC2012_validation_ground_truth.txt") in r.stderr
    for path in (kaggle, hf):
        assert "labels: %s agrees: the same 36 images and classes" % path in r.stderr
    name = VAL % 7
    other = next(w for w in release.wnids_sorted if w != release.val[name])
    hf.write_text(hf.read_text().replace("%s,%s" % (name[:-5], release.val[name]),
                                         "%s,%s" % (name[:-5], other)))
    before = snapshot(tmp_path)
    r = run03("--root", root)
    assert r.returncode == 1
    assert "the labels %s and %s (found in ROOT, both read) disagree, nothing was changed:\n" \
           "  images given another class (or none) by the second: 1 (first: %s: %s, %s)" \
        % (root / "devkit" / "ILSVRC2012_devkit_t12" / "data" /
           "ILSVRC2012_validation_ground_truth.txt", hf, name, release.val[name], other) \
        in r.stderr
    assert snapshot(tmp_path) == before
    r = ok(run03("--root", root, "--labels", kaggle))             # named: the others are not read
    assert image_tree(root) == expected_tree(release)


def test_a_sorted_val_without_labels_is_said_to_be_sorted(tmp_path, release):
    """A source's 01 may leave val sorted and no labels: 03 says so and exits 0; a flat val
    without labels is an error (test_no_labels_anywhere_says_where_it_looked)."""
    root = make_root(tmp_path, release)
    ok(run03("--root", root))
    shutil.rmtree(root / "devkit")
    before = snapshot(root)
    r = ok(run03("--root", root))
    assert "already done: val is sorted (val/: 12 folders x 3 images = 36), but there are no " \
           "validation labels to check the classes against (none in %s): pass --labels FILE" \
        % root in r.stderr
    assert snapshot(root) == before


@pytest.mark.parametrize("which", ["kaggle", "hf"])
def test_02_and_03_without_a_devkit_give_the_devkit_routes_tree(tmp_path, which):
    """A source without a devkit, end to end for 02 and 03: its class list and its labels (a
    miniature of real classes) give the tree and val_labels.csv the devkit gives."""
    rel = minirelease.make_release(tmp_path / "release", real_classes=True)
    root = make_root(tmp_path, rel, devkit="")
    (root / "meta" / "synsets.csv").unlink()
    lists = {"kaggle": ("kaggle/LOC_synset_mapping.txt", minirelease.kaggle_synset_mapping),
             "hf": ("hf/classes.py", minirelease.hf_classes_py)}[which]
    (root / lists[0]).parent.mkdir(parents=True)
    (root / lists[0]).write_text(lists[1](rel))
    put_source_labels(root, rel, which)
    r = run([sys.executable, script("02_convert_meta_clsloc.py"), "--root", root,
             "--expect-classes", 12])
    assert r.returncode == 0, r.stderr
    ok(run03("--root", root))
    assert image_tree(root) == expected_tree(rel)
    rows = list(csv.reader((root / "meta" / "val_labels.csv").open(newline="")))
    by_wnid = {c.wnid: c for c in rel.classes}
    assert rows[1:] == [[n, rel.val[n], str(by_wnid[rel.val[n]].ilsvrc_id),
                         str(rel.class_index(rel.val[n]))] for n in sorted(rel.val)]


# --------------------------------------------------------------------- with 04 and 05

def test_04_reports_originals_left_at_the_top_of_val_and_03_moves_them(tmp_path, release):
    """A tree an older 03 --copy made (originals flat in val/ beside the class folders): 04 says
    what a loader that walks the tree makes of it and how to mend it; 03 mends it."""
    root = make_root(tmp_path, release)
    for name, wnid in release.val.items():
        (root / "val" / wnid).mkdir(exist_ok=True)
        os.link(root / "val" / name, root / "val" / wnid / name)
    four = [sys.executable, script("04_verify.py"), "--root", root, "val"]
    r = run(four)
    assert r.returncode == 1, r.stderr
    assert "val images at the top of val/ beside their class-folder copies or links" in r.stderr
    assert "takes them for one more class, '', and shifts every class index by one): rerun " \
           "03_build_val_class_folders.py, which keeps them in val_flat/" in r.stderr
    ok(run03("--root", root, "--link"))
    r = run(four)
    assert r.returncode == 0, r.stderr
    assert "%d flat originals kept in val_flat/" % len(release.val) in r.stderr


@pytest.mark.skipif(not (shutil.which("sqfstar") and shutil.which("unsquashfs")),
                    reason="squashfs-tools >= 4.5.1 not installed (sqfstar, unsquashfs)")
def test_04_full_and_05_from_tree_after_03_symlink(tmp_path, release):
    """01 → 02 → 03 --symlink: 04 --full checks every image through its link into val_flat/, and
    05 --from-tree packs the class folders (the links read through) as it packs the archive."""
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    for split in ("val", "devkit"):
        shutil.copy(release.archives[split], root / "downloads")
    env = {k: v for k, v in os.environ.items() if k != "IMAGENET_ROOT"}
    for cmd in (["bash", script("01_unzip.sh"), "--root", root, "val", "devkit"],
                [sys.executable, script("02_convert_meta_clsloc.py"), "--root", root,
                 "--expect-classes", 12],
                [sys.executable, SCRIPT, "--root", root, "--symlink"],
                [sys.executable, script("04_verify.py"), "--root", root, "--full", "val"],
                [sys.executable, script("05_pack_squashfs.py"), "--root", root, "--from-tree",
                 "val"]):
        r = run(cmd, env=env)
        assert r.returncode == 0, r.stderr
        if "--full" in cmd:
            assert "result: val ok" in r.stderr
            assert "val: note: %d flat originals kept in val_flat/" % len(release.val) in r.stderr
    lln = run(["unsquashfs", "-lln", root / "squashfs" / "val.sqfs"]).stdout
    tree = sorted(line.split()[-1] for line in lln.splitlines())
    assert tree == sorted(["squashfs-root"] + ["squashfs-root/" + w for w in release.wnids_sorted]
                          + ["squashfs-root/%s/%s" % (w, n) for n, w in release.val.items()])
    for name in ("val.sqfs", "val.sqfs.json"):
        (root / "squashfs" / name).unlink()
    r = run([sys.executable, script("05_pack_squashfs.py"), "--root", root, "val"], env=env)
    assert r.returncode == 0, r.stderr
    assert run(["unsquashfs", "-lln", root / "squashfs" / "val.sqfs"]).stdout == lln


# --------------------------------------------------------------------- with 02 and the real data

def test_after_02_convert_meta_clsloc(tmp_path, release):
    two = script("02_convert_meta_clsloc.py")
    h = run([sys.executable, two, "--help"])
    if h.returncode != 0 or "not implemented" in h.stdout + h.stderr:
        pytest.skip("02_convert_meta_clsloc.py is not implemented yet")
    root = make_root(tmp_path, release)
    (root / "meta" / "synsets.csv").unlink()
    extra = ["--expect-classes", "12"] if "--expect-classes" in h.stdout else []
    r = run([sys.executable, two, "--root", root, *extra])
    assert r.returncode == 0, r.stderr
    ok(run03("--root", root))
    assert image_tree(root) == expected_tree(release)
    rows = list(csv.reader((root / "meta" / "val_labels.csv").open(newline="")))
    assert rows[1:] == [[n, release.val[n], str(next(c.ilsvrc_id for c in release.classes
                                                     if c.wnid == release.val[n])),
                         str(release.class_index(release.val[n]))] for n in sorted(release.val)]


def _real_synsets(reference: Path) -> list:
    import scipy.io
    syn = scipy.io.loadmat(str(reference / "meta.mat"), squeeze_me=True)["synsets"]
    return [(int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]), str(s["gloss"]),
             int(s["num_train_images"])) for s in syn if int(s["num_children"]) == 0]


def test_real_ground_truth_puts_50000_images_where_kaggle_says(tmp_path, reference):
    root = tmp_path / "root"
    (root / "val").mkdir(parents=True)
    rows = _real_synsets(reference)
    assert len(rows) == 1000
    write_synsets(root / "meta" / "synsets.csv", rows)
    for k in range(1, 50_001):
        open(root / "val" / (VAL % k), "wb").close()
    devkit = root / "devkit" / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_bytes(
        (reference / "ILSVRC2012_validation_ground_truth.txt").read_bytes())
    r = ok(run03("--root", root))
    assert "val/: 1000 folders x 50 images = 50000" in r.stderr
    with open(reference / "LOC_val_solution.csv", newline="") as f:
        kaggle = {row[0] + ".JPEG": row[1].split()[0] for row in list(csv.reader(f))[1:]}
    assert len(kaggle) == 50_000
    assert image_tree(root) == {"val/%s/%s" % (w, n) for n, w in kaggle.items()}
    # the Kaggle and TF label files agree: a rerun with either is "already done"
    for labels in ("LOC_val_solution.csv", "imagenet_2012_validation_synset_labels.txt"):
        r = ok(run03("--root", root, "--labels", reference / labels))
        assert "already done" in r.stderr
    # and the real blacklist moves its 1,762 images aside and back
    bl = reference / "ILSVRC2015_clsloc_validation_blacklist.txt"
    r = ok(run03("--root", root, "--exclude-blacklist", bl))
    assert "val_blacklisted/: " in r.stderr and "= 1762" in r.stderr
    ok(run03("--root", root, "--undo"))
    assert image_tree(root) == {"val/" + n for n in kaggle}


# ----------------------------------------------------------------------------- hostile input

@pytest.mark.parametrize("option", ["--labels", "--meta", "--exclude-blacklist"])
def test_a_folder_given_for_a_file_is_said_plainly(tmp_path, release, option):
    root = make_root(tmp_path, release)
    folder = tmp_path / "somewhere"
    folder.mkdir()
    before = snapshot(tmp_path)
    r = run03("--root", root, option, folder)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "%s is a folder, not a file" % folder in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


def test_a_meta_file_that_is_not_there_is_said_as_given(tmp_path, release):
    root = make_root(tmp_path, release)
    before = snapshot(tmp_path)
    r = run03("--root", root, "--meta", tmp_path / "nonexist.csv")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "--meta %s: no such file" % (tmp_path / "nonexist.csv") in r.stderr, r.stderr
    assert "or pass --meta CSV" not in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


def capped() -> None:
    """In the child: at most 4 GiB of address space, so that a read of /dev/zero fails quickly
    instead of taking the machine's memory."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("what", ["--labels", "ground truth", "--meta", "synsets.csv",
                                  "--exclude-blacklist"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_inputs_that_are_not_regular_files_are_refused_plainly(tmp_path, release, what, kind):
    """A FIFO (reading it waits forever) or a link to /dev/zero (reading it never ends) given
    or found as labels, class list or blacklist: named as not a regular file (not as missing),
    within seconds, nothing changed."""
    root = make_root(tmp_path, release)
    if what == "ground truth":
        path = root / "devkit" / "ILSVRC2012_devkit_t12" / "data" / \
            "ILSVRC2012_validation_ground_truth.txt"
    elif what == "synsets.csv":
        path = root / "meta" / "synsets.csv"
    else:
        path = tmp_path / "hostile.txt"
    if path.exists():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    args = [what, path] if what.startswith("--") else []
    t0 = time.monotonic()
    r = run03("--root", root, *args, timeout=30, preexec_fn=capped)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "%s is not a regular file (" % path in r.stderr, r.stderr
    assert ("a FIFO" if kind == "fifo" else "/dev/zero") in r.stderr, r.stderr
    assert "does not exist" not in r.stderr and "not found" not in r.stderr
    assert time.monotonic() - t0 < 20
    assert image_tree(root) == flat_tree(release)
    assert not (root / "meta" / "val_labels.csv").exists()


def test_a_labels_file_named_through_a_symbolic_link_is_read(tmp_path, release):
    """--labels names a link to a regular file: read (a file found in ROOT must be one)."""
    root = make_root(tmp_path, release, devkit="")
    link = tmp_path / "labels.txt"
    link.symlink_to(release.labels["devkit"])
    ok(run03("--root", root, "--labels", link))
    assert image_tree(root) == expected_tree(release)


@pytest.mark.parametrize("kind", ["missing", "fifo", "folder"])
def test_a_manifest_01_wrote_that_is_missing_or_not_a_file_stops_the_run(tmp_path, release,
                                                                          kind):
    """01's done marker says it wrote SHA256SUMS.val: 03 does not move the images leaving it
    behind (missing), nor read a FIFO or a folder in its place; it says how to get it back."""
    root = make_root(tmp_path, release)
    path = write_manifest(root)
    marker = root / ".01_unzip" / "val.done"
    marker.parent.mkdir()
    marker.write_text(json.dumps({"images": len(release.val), "bytes": 1, "manifest": True}))
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    for args in ([], ["--dry-run"], ["--undo"]):
        r = run03("--root", root, *args, timeout=30)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert str(path) in r.stderr and "nothing was changed" in r.stderr, r.stderr
        assert ("is missing, but 01_unzip.sh wrote it" if kind == "missing" else
                "is not a regular file (a %s)" % ("FIFO" if kind == "fifo" else "folder")) \
            in r.stderr, r.stderr
        assert "01_unzip.sh val" in r.stderr and "restore it" in r.stderr
        assert image_tree(root) == flat_tree(release)
        assert not (root / "meta" / "val_labels.csv").exists()
    if kind == "missing":                             # 01 --no-manifest: nothing to keep in step
        marker.write_text(json.dumps({"images": len(release.val), "bytes": 1, "manifest": False}))
        r = ok(run03("--root", root))
        assert "SHA256SUMS" not in r.stderr and image_tree(root) == expected_tree(release)


def test_a_stray_class_folder_is_refused_and_named(tmp_path, release):
    """val/n99999999 is not a class of the devkit: a loader would take it for one."""
    root = make_root(tmp_path, release)
    (root / "val" / "n99999999").mkdir()
    before = snapshot(tmp_path)
    for args in ([], ["--dry-run"], ["--copy"]):
        r = run03("--root", root, *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "val/n99999999" in r.stderr and "synsets.csv" in r.stderr, r.stderr
        assert "nothing was changed" in r.stderr
        assert snapshot(tmp_path) == before
    ok(run03("--root", root, "--undo"))                # the way out: it removes the empty folder
    assert not (root / "val" / "n99999999").exists()
    ok(run03("--root", root))


@pytest.mark.parametrize("bad", ["val/../../../etc/hostname", "/etc/hostname",
                                 "val/./ILSVRC2012_val_00000001.JPEG", "val//x.JPEG"])
def test_a_manifest_path_that_leaves_the_tree_is_refused(tmp_path, release, bad):
    root = make_root(tmp_path, release)
    path = write_manifest(root)
    with open(path, "a") as f:
        f.write("%s  %s\n" % ("0" * 64, bad))
    before = snapshot(tmp_path)
    r = run03("--root", root)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert repr(bad) in r.stderr and "not a path inside ROOT" in r.stderr, r.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where, line", [("blacklist", "\u00b2"), ("labels", "\u0663")])
def test_only_ascii_digits_are_numbers(tmp_path, release, where, line):
    """'²' and '٣' are digits to str.isdigit (and \\d): refused as lines, no traceback."""
    root = make_root(tmp_path, release)
    lines = _lines(release)
    if where == "blacklist":
        args = ["--exclude-blacklist", _labels(tmp_path, ["3", line])]
    else:
        args = ["--labels", _labels(tmp_path, lines[:4] + [line] + lines[5:])]
    before = snapshot(tmp_path)
    r = run03("--root", root, *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "line %d" % (2 if where == "blacklist" else 5) in r.stderr, r.stderr
    assert snapshot(tmp_path) == before
