"""Tests for 02_convert_meta_clsloc.py: generated 2012/2015 .mat files, bad input, the real devkit.

Every expectation is computed here from the generator's classes (release.classes), not from the
script; the script runs as a subprocess and the files it leaves on disk are checked byte for byte.
Its logic lives in imagenet_prep/meta.py, which the unit tests here import.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
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
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import minirelease
from conftest import REPO, load_script, run, script
from imagenet_prep import meta
from imagenet_prep.console import PrepError

SCRIPT = script("02_convert_meta_clsloc.py")
OUTPUTS = ["synsets.csv", "synsets.json", "class_index.json", "LOC_synset_mapping.txt",
           "map_clsloc.txt"]
COLUMNS = ["ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images"]
META_2012 = "ILSVRC2012_devkit_t12/data/meta.mat"
META_2017 = "ILSVRC/devkit/data/meta_clsloc.mat"


def convert(*args, **kw):
    return run([sys.executable, SCRIPT, *args], **kw)


def member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read()


def extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):   # Python >= 3.9.17 / 3.11.4
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def snapshot(folder: Path) -> dict:
    """Every file below `folder` (hidden ones too) with its bytes."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def name_of(words: str) -> str:
    return words.split(",")[0].strip().replace(" ", "_")


def expected_files(classes) -> dict:
    """What the four plain-text outputs must contain for these classes (devkit ID order)."""
    wnids = sorted(c.wnid for c in classes)
    by_wnid = {c.wnid: c for c in classes}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for c in classes:
        w.writerow([c.ilsvrc_id, wnids.index(c.wnid), c.wnid, c.words, c.gloss, c.num_train_images])
    keras = "{%s}" % ", ".join('"%d": ["%s", "%s"]' % (i, wn, name_of(by_wnid[wn].words))
                               for i, wn in enumerate(wnids))
    return {
        "synsets.csv": buf.getvalue().encode(),
        "class_index.json": keras.encode(),
        "LOC_synset_mapping.txt": "".join("%s %s\n" % (wn, by_wnid[wn].words)
                                          for wn in wnids).encode(),
        "map_clsloc.txt": "".join("%s %d %s\n" % (c.wnid, c.ilsvrc_id, name_of(c.words))
                                  for c in classes).encode(),
    }


def mat_2015(classes, numbers=np.uint16, drop=()) -> bytes:
    """A meta_clsloc.mat built here, with the numeric fields stored as `numbers`."""
    fields = [f for f in ("ILSVRC2015_CLSLOC_ID", "WNID", "name", "description",
                          "num_train_images") if f not in drop]
    arr = np.empty((1, len(classes)), dtype=[(f, object) for f in fields])
    for i, s in enumerate(classes):
        values = {"ILSVRC2015_CLSLOC_ID": np.array([[s.ilsvrc_id]], dtype=numbers),
                  "WNID": np.array([s.wnid]), "name": np.array([s.words]),
                  "description": np.array([s.gloss]),
                  "num_train_images": np.array([[s.num_train_images]], dtype=numbers)}
        arr[0, i] = tuple(values[f] for f in fields)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": arr}, format="5")
    return buf.getvalue()


def retag(classes, i, **changes):
    """A copy of the class list with class i changed."""
    out = [minirelease.Synset(**vars(c)) for c in classes]
    for k, v in changes.items():
        setattr(out[i], k, v)
    return out


LOADMAT_VARIANTS = [{}, {"squeeze_me": True}, {"mat_dtype": True},
                    {"mat_dtype": True, "squeeze_me": True}, {"chars_as_strings": False},
                    {"struct_as_record": False}, {"struct_as_record": False, "squeeze_me": True}]


@pytest.fixture(scope="module")
def big():
    """1,000 generated classes plus the 2012 internal synsets."""
    rng = random.Random(7)
    counts = [rng.randint(732, 1300) for _ in range(1000)]
    classes, internal = minirelease.make_classes(1000, counts, rng)
    # make_classes can leave a middle internal synset without children, which a 2012 meta.mat
    # reader must count as a leaf class; the real meta.mat has none: give each one a child
    for s in internal[1:-1]:
        if not s.children:
            s.children.append(classes[0].ilsvrc_id)
    return classes, internal


@pytest.fixture(scope="module")
def good_outputs(release, tmp_path_factory) -> dict:
    """The outputs for the release's 2012 devkit, to put in place before a failing run."""
    out = tmp_path_factory.mktemp("good") / "meta"
    r = convert("--devkit", release.archives["devkit"], "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    return snapshot(out)


def n(release) -> str:
    return str(len(release.classes))


# ----------------------------------------------------------------------------- usage

def test_help_lists_every_option_with_its_default():
    r = convert("--help", env=dict(os.environ, IMAGENET_ROOT="/data/elsewhere"))
    assert r.returncode == 0
    for opt in ("--root", "--mat", "--devkit", "--classes", "--out", "--expect-classes"):
        assert opt in r.stdout
    assert "(default: 1000)" in r.stdout
    assert "ROOT/meta" in r.stdout
    # the root's default said as 03-05 say it, not the value of the moment
    assert " ".join(r.stdout.split()).count(
        "--root DIR dataset root (default: $IMAGENET_ROOT, else the current directory)") == 1
    assert "/data/elsewhere" not in r.stdout


def test_script_imports_without_running():
    mod = load_script("02_convert_meta_clsloc")
    assert callable(mod.main) and callable(mod.build_parser)
    assert mod.PROG == meta.PROG == "02_convert_meta_clsloc.py"


def test_runs_from_any_folder_but_not_without_its_package(release, tmp_path):
    """Through a symlink from elsewhere it finds imagenet_prep/ beside its real file; copied
    alone it says what is missing, and nothing else."""
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / SCRIPT.name).symlink_to(SCRIPT)
    r = run([sys.executable, elsewhere / SCRIPT.name, "--devkit", release.archives["devkit"],
             "--out", tmp_path / "meta", "--expect-classes", 12], cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "meta" / "synsets.csv").is_file()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(SCRIPT, alone)
    r = run([sys.executable, alone / SCRIPT.name, "--help"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "needs the folder imagenet_prep/ beside it (in %s)" % alone in r.stderr
    assert "copy or clone the whole repository folder, not the script alone" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args", [["--bogus"], ["--mat", "a.mat", "--devkit", "b.tar.gz"],
                                  ["--expect-classes", "x"], ["--expect-classes", "0"]])
def test_usage_errors_exit_2(tmp_path, args):
    r = convert(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- generated devkits

@pytest.mark.parametrize("fmt", ["2012", "2015"])
def test_generated_mat_gives_exact_outputs(release, tmp_path, fmt):
    if fmt == "2012":
        data, label = member(release.archives["devkit"], META_2012), "ILSVRC2012 meta.mat"
    else:
        data = member(release.archives["devkit2017"], META_2017)
        label = "ILSVRC2015 meta_clsloc.mat"
    mat = tmp_path / "in.mat"
    mat.write_bytes(data)
    out = tmp_path / "meta"
    r = convert("--mat", mat, "--out", out, "--expect-classes", n(release))
    assert r.returncode == 0, r.stderr
    files = snapshot(out)
    assert sorted(files) == sorted(OUTPUTS)
    for name, content in expected_files(release.classes).items():
        assert files[name] == content, name

    doc = json.loads(files["synsets.json"])
    assert doc["format"] == label
    assert doc["source"] == mat.resolve().as_posix()
    assert doc["num_classes"] == 12
    assert doc["num_train_images"] == sum(c.num_train_images for c in release.classes)
    wnids = sorted(c.wnid for c in release.classes)
    assert doc["synsets"] == [
        {"ilsvrc_id": c.ilsvrc_id, "class_index": wnids.index(c.wnid), "wnid": c.wnid,
         "words": c.words, "description": c.gloss, "num_train_images": c.num_train_images}
        for c in release.classes]

    total = sum(c.num_train_images for c in release.classes)
    assert "12 classes" in r.stderr and "%d train images" % total in r.stderr
    # the miniature has two "crane" and two "maillot", as the real release does
    assert "crane" in r.stderr and "maillot" in r.stderr and "shared by several" in r.stderr


def test_synsets_csv_follows_the_contract(release, tmp_path):
    out = tmp_path / "meta"
    r = convert("--devkit", release.archives["devkit"], "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    with open(out / "synsets.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [int(r["ilsvrc_id"]) for r in rows] == list(range(1, 13))
    assert sorted(int(r["class_index"]) for r in rows) == list(range(12))
    expected = {c.wnid: c for c in release.classes}
    for row in rows:
        c = expected[row["wnid"]]
        assert (int(row["ilsvrc_id"]), row["words"], row["description"],
                int(row["num_train_images"])) == (c.ilsvrc_id, c.words, c.gloss, c.num_train_images)
        assert int(row["class_index"]) == release.class_index(c.wnid)
    assert b"\r" not in (out / "synsets.csv").read_bytes()


def test_both_formats_give_identical_classes(release, tmp_path):
    outs = {}
    for key in ("devkit", "devkit2017"):
        outs[key] = tmp_path / key
        r = convert("--devkit", release.archives[key], "--out", outs[key], "--expect-classes", 12)
        assert r.returncode == 0, r.stderr
    a, b = snapshot(outs["devkit"]), snapshot(outs["devkit2017"])
    for name in ("synsets.csv", "class_index.json", "LOC_synset_mapping.txt", "map_clsloc.txt"):
        assert a[name] == b[name], name
    ja, jb = json.loads(a["synsets.json"]), json.loads(b["synsets.json"])
    assert ja["synsets"] == jb["synsets"]
    assert (ja["format"], jb["format"]) == ("ILSVRC2012 meta.mat", "ILSVRC2015 meta_clsloc.mat")


def test_map_clsloc_equals_the_2017_devkit_file(release, tmp_path):
    out = tmp_path / "meta"
    r = convert("--devkit", release.archives["devkit"], "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert (out / "map_clsloc.txt").read_bytes() == member(
        release.archives["devkit2017"], "ILSVRC/devkit/data/map_clsloc.txt")


@pytest.mark.parametrize("numbers", [np.uint8, np.uint16, np.int32, np.float64])
def test_numbers_in_any_storage_type(release, tmp_path, numbers):
    """MATLAB writes doubles unless told otherwise; the devkits hold uint8/uint16."""
    classes = [c for c in release.classes]
    if numbers is np.uint8:
        classes = [minirelease.Synset(**{**vars(c), "num_train_images": c.num_train_images % 200})
                   for c in classes]
    mat = tmp_path / "meta_clsloc.mat"
    mat.write_bytes(mat_2015(classes, numbers))
    out = tmp_path / "meta"
    r = convert("--mat", mat, "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert (out / "synsets.csv").read_bytes() == expected_files(classes)["synsets.csv"]


def test_loader_quirks_give_the_same_classes(release):
    """The struct reader copes with squeeze_me on/off and MATLAB doubles (mat_dtype)."""
    for data in (member(release.archives["devkit"], META_2012),
                 member(release.archives["devkit2017"], META_2017)):
        results = []
        for kw in LOADMAT_VARIANTS:
            loaded = scipy.io.loadmat(io.BytesIO(data), **kw)["synsets"]
            fmt, classes = meta.synsets_from_struct(loaded)
            results.append([(s.ilsvrc_id, s.wnid, s.words, s.description, s.num_train_images)
                            for s in classes])
        assert all(r == results[0] for r in results)
        assert results[0] == [(c.ilsvrc_id, c.wnid, c.words, c.gloss, c.num_train_images)
                              for c in release.classes]


def test_children_quirks_of_the_2012_file(release):
    """The generated 2012 file has empty, single-int and array `children`, like the real one."""
    syn = scipy.io.loadmat(io.BytesIO(member(release.archives["devkit"], META_2012)),
                           squeeze_me=True)["synsets"]
    kinds = {type(s["children"]).__name__ + ("-empty" if np.size(s["children"]) == 0 else "")
             for s in syn}
    assert {"ndarray-empty", "int", "ndarray"} <= kinds
    assert len(syn) > 12  # internal synsets present and skipped by the converter


# ----------------------------------------------------------------------------- finding the file

def test_finds_the_newer_devkit_under_root(release, tmp_path):
    root = tmp_path / "root"
    extract(release.archives["devkit"], root / "devkit")
    extract(release.archives["devkit2017"], root / "devkit")
    r = convert("--root", root, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert "found 2 devkit meta files" in r.stderr
    assert "reading %s\n" % (root / "devkit" / META_2017) in r.stderr
    doc = json.loads((root / "meta" / "synsets.json").read_text())
    assert doc["source"] == "devkit/" + META_2017
    assert doc["format"] == "ILSVRC2015 meta_clsloc.mat"
    assert (root / "meta" / "synsets.csv").read_bytes() == \
        expected_files(release.classes)["synsets.csv"]


def test_finds_the_2012_devkit_under_root_and_skips_temporary_folders(release, tmp_path):
    root = tmp_path / "root"
    extract(release.archives["devkit"], root / "devkit")
    junk = root / "devkit" / ".ILSVRC.tmp-1234" / "devkit" / "data" / "meta_clsloc.mat"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"half an extraction")
    r = convert("--root", root, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert json.loads((root / "meta" / "synsets.json").read_text())["source"] == \
        "devkit/" + META_2012
    assert "tmp-1234" not in r.stderr


def test_root_from_environment_then_current_folder(release, tmp_path):
    root = tmp_path / "root"
    extract(release.archives["devkit"], root / "devkit")
    env = {**os.environ, "IMAGENET_ROOT": str(root)}
    r = convert("--expect-classes", 12, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (root / "meta" / "synsets.csv").is_file()
    shutil.rmtree(root / "meta")
    env.pop("IMAGENET_ROOT")
    r = convert("--expect-classes", 12, cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    assert (root / "meta" / "synsets.csv").is_file()


@pytest.mark.parametrize("gz", [True, False], ids=["tar.gz", "plain-tar"])
def test_devkit_archive_is_read_without_extracting(release, tmp_path, gz):
    archive = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    data = release.archives["devkit"].read_bytes()
    archive.write_bytes(data if gz else gzip.decompress(data))  # browsers sometimes un-gzip it
    root = tmp_path / "root"
    root.mkdir()
    r = convert("--root", root, "--devkit", archive, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ILSVRC2012_devkit_t12.tar.gz", "root"]
    assert sorted(p.name for p in root.iterdir()) == ["meta"]
    assert sorted(snapshot(root / "meta")) == sorted(OUTPUTS)
    doc = json.loads((root / "meta" / "synsets.json").read_text())
    assert doc["source"] == "%s:%s" % (archive.as_posix(), META_2012)
    assert (root / "meta" / "synsets.csv").read_bytes() == \
        expected_files(release.classes)["synsets.csv"]


def test_devkit_option_also_takes_an_extracted_devkit_folder(release, tmp_path):
    extract(release.archives["devkit"], tmp_path / "dk")
    r = convert("--devkit", tmp_path / "dk", "--out", tmp_path / "meta", "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "meta" / "synsets.csv").read_bytes() == \
        expected_files(release.classes)["synsets.csv"]


def test_devkit_archive_with_both_files_prefers_meta_clsloc(release, tmp_path):
    archive = tmp_path / "both.tar"
    with tarfile.open(archive, "w") as tar:
        for key, name in (("devkit", META_2012), ("devkit2017", META_2017)):
            data = member(release.archives[key], name)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = convert("--devkit", archive, "--out", tmp_path / "meta", "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "meta" / "synsets.json").read_text())["format"] == \
        "ILSVRC2015 meta_clsloc.mat"


# ----------------------------------------------------------------------------- reruns

def test_rerun_is_byte_identical_and_says_already_done(release, tmp_path):
    root = tmp_path / "root"
    extract(release.archives["devkit2017"], root / "devkit")
    first = convert("--root", root, "--expect-classes", 12)
    assert first.returncode == 0, first.stderr
    before = snapshot(root / "meta")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (root / "meta").iterdir()}
    second = convert("--root", root, "--expect-classes", 12)
    assert second.returncode == 0, second.stderr
    assert "already done" in second.stderr
    assert snapshot(root / "meta") == before          # no temp files left either
    assert {p.name: p.stat().st_mtime_ns for p in (root / "meta").iterdir()} == mtimes

    # a damaged output is rewritten, the others are left alone
    (root / "meta" / "class_index.json").write_text("{}")
    third = convert("--root", root, "--expect-classes", 12)
    assert third.returncode == 0, third.stderr
    assert "wrote class_index.json in" in third.stderr
    assert snapshot(root / "meta") == before


def test_leftovers_of_a_killed_run_are_removed(release, tmp_path):
    out = tmp_path / "meta"
    out.mkdir()
    for name in (".synsets.csv.tmp-node7.4242", ".class_index.json.tmp-1f3xk9q2"):  # new, old
        (out / name).write_bytes(b"half a file")
    (out / "notes.txt").write_text("mine\n")
    r = convert("--devkit", release.archives["devkit"], "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert sorted(snapshot(out)) == sorted(OUTPUTS + ["notes.txt"])


def test_other_classes_replace_the_output_with_a_warning(release, tmp_path):
    out = tmp_path / "meta"
    r = convert("--devkit", release.archives["devkit"], "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    other = retag(release.classes, 0, num_train_images=999)
    mat = tmp_path / "other.mat"
    mat.write_bytes(mat_2015(other))
    r = convert("--mat", mat, "--out", out, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert "replacing %s" % (out / "synsets.csv") in r.stderr
    assert (out / "synsets.csv").read_bytes() == expected_files(other)["synsets.csv"]
    assert sorted(snapshot(out)) == sorted(OUTPUTS)


# ----------------------------------------------------------------------------- bad input

def _bad_mats(release, big):
    classes, internal = big
    c12 = release.classes
    real = member(release.archives["devkit"], META_2012)
    v73 = bytearray(real)
    v73[124:126] = b"\x00\x02"       # the version field of a MATLAB 7.3 (HDF5) file
    extra = minirelease.Synset(1001, "n00000042", "extra class", "one too many", 10)
    wrong = np.empty((1, 2), dtype=[("a", object), ("b", object)])
    wrong[0, 0] = (np.array([[1]]), np.array(["x"]))
    wrong[0, 1] = (np.array([[2]]), np.array(["y"]))

    def save(d):
        buf = io.BytesIO()
        scipy.io.savemat(buf, d, format="5")
        return buf.getvalue()

    return {
        "html": (b"<html><body>Please log in</body></html>\n" * 40,
                 "not a MATLAB .mat file: it starts with '<html><body>Please log in</body></html>'"
                 " — an HTML page"),
        "binary": (bytes(range(256)) * 4, "not a MATLAB .mat file"),
        "empty": (b"", "empty (0 bytes)"),
        "truncated": (real[: len(real) // 2],
                      "it is a truncated MATLAB .mat file (%s bytes, but the data element at byte "
                      "128 ends at byte %s" % (format(len(real) // 2, ","),
                                               format(len(real), ","))),
        "damaged": (real[:300] + bytes(40) + real[340:], "damaged or truncated MATLAB .mat file"),
        "v7.3": (bytes(v73), "MATLAB v7.3 (HDF5)"),
        "no-synsets": (save({"classes": np.arange(3)}), "no `synsets` variable"),
        "synsets-not-struct": (save({"synsets": np.arange(3)}), "not a MATLAB struct"),
        "wrong-struct": (save({"synsets": wrong}), "has fields a, b"),
        "missing-field": (mat_2015(c12, drop=("num_train_images",)),
                          "lacks the field(s) num_train_images"),
        "999-2012": (minirelease.meta_mat_bytes(classes[:-1], internal),
                     "holds 999 classes, expected 1000"),
        "1001-2012": (minirelease.meta_mat_bytes(classes + [extra], internal),
                      "holds 1001 classes, expected 1000"),
        "999-2015": (minirelease.meta_clsloc_bytes(classes[:-1]),
                     "holds 999 classes, expected 1000"),
        "1001-2015": (minirelease.meta_clsloc_bytes(classes + [extra]),
                      "holds 1001 classes, expected 1000"),
        "id-gap": (minirelease.meta_clsloc_bytes(retag(classes, 499, ilsvrc_id=1200)),
                   "not exactly 1..1000: missing 500; out of range 1200"),
        "id-twice": (minirelease.meta_clsloc_bytes(retag(classes, 499, ilsvrc_id=7)),
                     "not exactly 1..1000: missing 500; duplicated 7"),
        "duplicate-wnid": (minirelease.meta_clsloc_bytes(retag(classes, 9, wnid=classes[3].wnid)),
                           "duplicate WNID(s): %s (IDs 4, 10)" % classes[3].wnid),
        "malformed-wnid": (minirelease.meta_clsloc_bytes(retag(classes, 2, wnid="n0144076")),
                           "malformed WNID(s), expected n + 8 digits: 'n0144076' (ID 3)"),
        "text-id": (save({"synsets": _text_id(c12)}),
                    "entry 1 of `synsets`: ILSVRC2015_CLSLOC_ID is 'one', not a"),
    }


def _text_id(classes):
    fields = ["ILSVRC2015_CLSLOC_ID", "WNID", "name", "description", "num_train_images"]
    arr = np.empty((1, len(classes)), dtype=[(f, object) for f in fields])
    for i, s in enumerate(classes):
        arr[0, i] = (np.array(["one"]) if i == 0 else np.array([[s.ilsvrc_id]]),
                     np.array([s.wnid]), np.array([s.words]), np.array([s.gloss]),
                     np.array([[s.num_train_images]]))
    return arr


SMALL_BAD = ["html", "binary", "empty", "truncated", "damaged", "v7.3", "no-synsets",
             "synsets-not-struct", "wrong-struct", "missing-field",
             "text-id"]      # checked with --expect-classes 12
BAD = SMALL_BAD + ["999-2012", "1001-2012", "999-2015", "1001-2015", "id-gap", "id-twice",
                   "duplicate-wnid", "malformed-wnid"]


@pytest.fixture(scope="module")
def bad_mats(release, big):
    return _bad_mats(release, big)


@pytest.mark.parametrize("kind", BAD)
def test_bad_mat_is_refused_and_outputs_are_left_alone(tmp_path, bad_mats, good_outputs, kind):
    data, message = bad_mats[kind]
    mat = tmp_path / "meta.mat"
    mat.write_bytes(data)
    out = tmp_path / "meta"
    out.mkdir()
    for name, content in good_outputs.items():
        (out / name).write_bytes(content)
    expect = "12" if kind in SMALL_BAD else "1000"
    r = convert("--mat", mat, "--out", out, "--expect-classes", expect)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "error: %s: " % mat in r.stderr     # names the file
    assert message in r.stderr
    assert snapshot(out) == good_outputs       # nothing replaced, no temp files


def _cuts(size: int) -> list[int]:
    """Where a download or an extraction can stop: right after the 128-byte header, inside it,
    inside the first data tag, just after it, mid-file, one byte short (every other point:
    test_a_mat_cut_anywhere_says_truncated)."""
    return [128, 100, 132, 136, size // 2, size - 1]


@pytest.mark.parametrize("member_name", [META_2012, META_2017])
def test_a_truncated_mat_says_truncated(release, tmp_path, good_outputs, member_name):
    archive = release.archives["devkit" if member_name == META_2012 else "devkit2017"]
    data = member(archive, member_name)
    out = tmp_path / "meta"
    out.mkdir()
    for name, content in good_outputs.items():
        (out / name).write_bytes(content)
    for cut in _cuts(len(data)):
        mat = tmp_path / ("cut-%d.mat" % cut)
        mat.write_bytes(data[:cut])
        r = convert("--mat", mat, "--out", out, "--expect-classes", n(release))
        assert r.returncode == 1, (cut, r.stderr)
        assert "Traceback" not in r.stderr
        assert "error: %s: it is a truncated MATLAB .mat file (%s bytes, " \
            % (mat, format(cut, ",")) in r.stderr, (cut, r.stderr)
        assert "re-download or re-extract the devkit" in r.stderr
        if cut == 128:
            assert "cut right after the 128-byte header" in r.stderr
        if cut >= 136:      # the tag is whole: it gives the size the file should have
            assert "ends at byte %s" % format(len(data), ",") in r.stderr, (cut, r.stderr)
        assert "not the devkit's" not in r.stderr
        assert snapshot(out) == good_outputs       # nothing replaced, no temp files


def test_a_mat_cut_anywhere_says_truncated(release):
    for name, step in ((META_2017, 1), (META_2012, 7)):
        data = member(release.archives["devkit" if name == META_2012 else "devkit2017"], name)
        for cut in range(1, len(data), step):
            src = meta.Source(label="x", shown="x", data=data[:cut])
            with pytest.raises(PrepError, match="^x: it is a truncated MATLAB .mat file "):
                meta.load_classes(src, len(release.classes))
        assert meta.truncation(data) is None
        assert meta.load_classes(meta.Source(label="x", shown="x", data=data),
                                len(release.classes))[1]


def test_a_truncated_real_meta_mat_says_truncated(reference, tmp_path):
    data = (reference / "meta.mat").read_bytes()
    for cut in (128, 4096, len(data) // 2, len(data) - 1):
        mat = tmp_path / "meta.mat"
        mat.write_bytes(data[:cut])
        r = convert("--mat", mat, "--out", tmp_path / "meta")
        assert r.returncode == 1
        assert "it is a truncated MATLAB .mat file (%s bytes, " % format(cut, ",") in r.stderr
        assert not (tmp_path / "meta").exists()


def test_the_real_count_is_the_default(release, tmp_path):
    r = convert("--devkit", release.archives["devkit"], "--out", tmp_path / "meta")
    assert r.returncode == 1
    assert "holds 12 classes, expected 1000" in r.stderr
    assert "--expect-classes" in r.stderr
    assert not (tmp_path / "meta").exists()


def test_a_1000_class_file_passes_by_default(big, tmp_path):
    classes, internal = big
    mat = tmp_path / "meta.mat"
    mat.write_bytes(minirelease.meta_mat_bytes(classes, internal))
    r = convert("--mat", mat, "--out", tmp_path / "meta")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "meta" / "synsets.csv").read_bytes() == \
        expected_files(classes)["synsets.csv"]


def test_missing_files(tmp_path):
    for args, message in (
            (["--mat", tmp_path / "nope.mat"], "%s: no such file" % (tmp_path / "nope.mat")),
            (["--devkit", tmp_path / "nope.tar.gz"],
             "%s: no such file" % (tmp_path / "nope.tar.gz")),
            (["--mat", tmp_path], "is a folder"),
            (["--root", tmp_path / "absent"], "ROOT %s is not a folder" % (tmp_path / "absent")),
            (["--root", tmp_path], "no devkit folder at %s" % (tmp_path / "devkit"))):
        r = convert(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert message in r.stderr
        assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_huge_file_is_not_read(tmp_path):
    mat = tmp_path / "meta.mat"
    with open(mat, "wb") as f:
        f.truncate(65 << 20)                      # sparse: nothing is really written
    r = convert("--mat", mat, "--out", tmp_path / "meta")
    assert r.returncode == 1
    assert "%s: 65.0 MiB is far too large for a devkit meta file" % mat in r.stderr
    assert not (tmp_path / "meta").exists()


def test_empty_devkit_folder_points_at_the_archive(release, tmp_path):
    (tmp_path / "devkit").mkdir()
    r = convert("--root", tmp_path)
    assert r.returncode == 1
    assert "no meta_clsloc.mat or meta.mat under %s" % (tmp_path / "devkit") in r.stderr
    assert "run 01_unzip.sh first" in r.stderr
    (tmp_path / "downloads").mkdir()
    shutil.copy(release.archives["devkit"], tmp_path / "downloads")
    r = convert("--root", tmp_path)
    assert r.returncode == 1
    assert "--devkit %s" % (tmp_path / "downloads" / "ILSVRC2012_devkit_t12.tar.gz") in r.stderr
    assert not (tmp_path / "meta").exists()


def test_bad_devkit_archives(release, tmp_path):
    html = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    html.write_bytes(b"<html><body>Please log in</body></html>\n" * 40)
    r = convert("--devkit", html, "--out", tmp_path / "meta")
    assert r.returncode == 1
    assert "%s is not a readable .tar or .tar.gz archive" % html in r.stderr

    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(release.archives["devkit"].read_bytes()[:300])
    r = convert("--devkit", cut, "--out", tmp_path / "meta")
    assert r.returncode == 1
    assert "%s is damaged" % cut in r.stderr and "download it again" in r.stderr

    other = tmp_path / "ILSVRC2012_img_test.tar"
    shutil.copy(release.archives["test"], other)
    r = convert("--devkit", other, "--out", tmp_path / "meta")
    assert r.returncode == 1
    assert "%s holds no meta_clsloc.mat or meta.mat" % other in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "meta").exists()


def _plain_devkit(release) -> bytes:
    return gzip.decompress(release.archives["devkit"].read_bytes())


@pytest.mark.parametrize("damage", ["cut-after-meta", "bad-header-after-meta", "gzip-of-cut"])
def test_a_devkit_archive_that_stops_early_is_refused(release, tmp_path, damage):
    """tarfile alone would stop quietly at a missing or corrupt header after meta.mat and read
    the file: the archive is incomplete, so it is refused."""
    raw = _plain_devkit(release)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        info = tar.getmember(META_2012)
    end = info.offset_data + (info.size + 511) // 512 * 512      # the header after meta.mat
    if damage == "bad-header-after-meta":
        data = raw[:end] + b"\x01" * 512 + raw[end + 512:]
    else:
        data = raw[:end]
    archive = tmp_path / ("devkit.tar.gz" if damage == "gzip-of-cut" else "devkit.tar")
    archive.write_bytes(gzip.compress(data) if damage == "gzip-of-cut" else data)
    r = convert("--devkit", archive, "--out", tmp_path / "meta", "--expect-classes", 12)
    assert r.returncode == 1, r.stderr
    assert "error: %s is damaged" % archive in r.stderr and "download it again" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "meta").exists()


def test_output_path_that_is_a_file(release, tmp_path):
    (tmp_path / "meta").write_text("not a folder")
    r = convert("--devkit", release.archives["devkit"], "--out", tmp_path / "meta",
                "--expect-classes", 12)
    assert r.returncode == 1
    assert "output %s exists and is not a folder" % (tmp_path / "meta") in r.stderr
    assert (tmp_path / "meta").read_text() == "not a folder"


# ----------------------------------------------------------------------------- the real devkit

def test_real_meta_and_meta_clsloc_give_identical_classes(reference, tmp_path):
    outs = {}
    for name in ("meta.mat", "meta_clsloc.mat"):
        outs[name] = tmp_path / name
        r = convert("--mat", reference / name, "--out", outs[name])
        assert r.returncode == 0, r.stderr
        assert "1000 classes" in r.stderr and "1,281,167 train images" in r.stderr
        assert "crane: n02012849, n03126707" in r.stderr
        assert "maillot: n03710637, n03710721" in r.stderr
    a, b = snapshot(outs["meta.mat"]), snapshot(outs["meta_clsloc.mat"])
    for name in ("synsets.csv", "class_index.json", "LOC_synset_mapping.txt", "map_clsloc.txt"):
        assert a[name] == b[name], name
    assert json.loads(a["synsets.json"])["synsets"] == json.loads(b["synsets.json"])["synsets"]

    rows = list(csv.DictReader(io.StringIO(a["synsets.csv"].decode())))
    assert len(rows) == 1000
    assert sum(int(r["num_train_images"]) for r in rows) == 1_281_167
    assert rows[0]["wnid"] == "n02119789" and rows[0]["class_index"] == "278"
    assert rows[999]["wnid"] == "n03255030"
    assert json.loads(a["synsets.json"])["num_train_images"] == 1_281_167


def test_real_outputs_match_the_published_files(reference, tmp_path):
    out = tmp_path / "meta"
    r = convert("--mat", reference / "meta.mat", "--out", out)
    assert r.returncode == 0, r.stderr
    ours = json.loads((out / "class_index.json").read_text())
    theirs = json.loads((reference / "imagenet_class_index.json").read_text())
    assert ours == theirs                                          # every index, WNID and name
    assert (out / "class_index.json").read_bytes() == \
        (reference / "imagenet_class_index.json").read_bytes()     # and the same bytes
    assert (out / "LOC_synset_mapping.txt").read_bytes() == \
        (reference / "LOC_synset_mapping.txt").read_bytes()
    assert (out / "map_clsloc.txt").read_bytes() == (reference / "map_clsloc.txt").read_bytes()
    rows = list(csv.DictReader(open(out / "synsets.csv", newline="", encoding="utf-8")))
    assert sorted(r["wnid"] for r in rows) == \
        (reference / "imagenet_lsvrc_2015_synsets.txt").read_text().split()


def test_real_meta_from_a_devkit_archive(reference, tmp_path):
    archive = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(reference / "meta.mat", arcname=META_2012)
        tar.add(reference / "ILSVRC2012_validation_ground_truth.txt",
                arcname="ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
    r = convert("--devkit", archive, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    r = convert("--mat", reference / "meta_clsloc.mat", "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "synsets.csv").read_bytes() == \
        (tmp_path / "b" / "synsets.csv").read_bytes()


def test_real_meta_loader_quirks(reference):
    results = []
    for kw in LOADMAT_VARIANTS:
        loaded = scipy.io.loadmat(reference / "meta.mat", **kw)["synsets"]
        fmt, classes = meta.synsets_from_struct(loaded)
        assert fmt == "ILSVRC2012 meta.mat"
        results.append(classes)
    assert all(r == results[0] for r in results)
    assert [s.ilsvrc_id for s in results[0]] == list(range(1, 1001))


# ----------------------------------------------------------------------------- Ctrl-C and SIGTERM

@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_exit_130_143_and_leave_outputs_alone(tmp_path, good_outputs, sig,
                                                                  code, said):
    """A .mat that is a FIFO nobody writes to: 02 waits in its read, then gets the signal."""
    out = tmp_path / "meta"
    out.mkdir()
    for name, content in good_outputs.items():
        (out / name).write_bytes(content)
    fifo = tmp_path / "meta.mat"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--mat", str(fifo), "--out", str(out),
                             "--expect-classes", "12"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stderr.readline()                  # the command line: the handlers are set
    assert SCRIPT.name in first, first
    time.sleep(0.3)                                 # into the read of the FIFO
    proc.send_signal(sig)
    out_text, rest = proc.communicate(timeout=60)
    err = first + rest
    assert proc.returncode == code, err
    assert said in err and "either complete or untouched" in err, err
    assert "Traceback" not in err and out_text == ""
    assert snapshot(out) == good_outputs


# ----------------------------------------------------------------------------- without a devkit

LISTS = {"hf": ("hf/classes.py", minirelease.hf_classes_py, "Hugging Face classes.py"),
         "kaggle": ("kaggle/LOC_synset_mapping.txt", minirelease.kaggle_synset_mapping,
                    "Kaggle LOC_synset_mapping.txt")}


def table_release():
    """The package's table of the 1,000 classes as a stand-in release: what the generators of
    the other sources' files read (its classes)."""
    return types.SimpleNamespace(classes=[
        minirelease.Synset(s.ilsvrc_id, s.wnid, s.words, s.description, s.num_train_images)
        for s in meta.read_table()])


def put_list(root: Path, kind: str, release, text=None) -> Path:
    """ROOT/hf/classes.py or ROOT/kaggle/LOC_synset_mapping.txt for the release's classes (or
    `text`, str or bytes), where the source's 01 leaves it."""
    rel, make, _ = LISTS[kind]
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make(release) if text is None else text
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture(scope="module")
def real_release(tmp_path_factory):
    """A miniature release of 12 real classes (as a source without a devkit must have)."""
    return minirelease.make_release(tmp_path_factory.mktemp("real"), real_classes=True)


def test_the_class_table_holds_the_real_classes():
    table = meta.read_table()
    assert len(table) == 1000 and [s.ilsvrc_id for s in table] == list(range(1, 1001))
    assert (table[0].wnid, table[0].words) == ("n02119789", "kit fox, Vulpes macrotis")
    assert table[-1].wnid == "n03255030"
    assert sum(s.num_train_images for s in table) == 1_281_167
    assert sorted(s.wnid for s in table)[0] == "n01440764"
    assert meta.TABLE.read_text().startswith("# The 1,000 classes of ILSVRC2012")


def test_the_class_table_is_the_2012_devkits(reference, tmp_path):
    """tools/make_class_table.py regenerates the shipped table byte for byte from the devkit."""
    out = tmp_path / "classes.tsv"
    r = run([sys.executable, REPO / "tools" / "make_class_table.py", reference / "meta.mat",
             "--out", out])
    assert r.returncode == 0, r.stderr
    assert "wrote %s: 1000 classes" % out in r.stderr
    assert out.read_bytes() == meta.TABLE.read_bytes()


@pytest.mark.parametrize("kind", ["hf", "kaggle", "--classes"])
def test_without_a_devkit_the_source_list_gives_the_devkit_files(tmp_path, kind):
    table = table_release()
    root = tmp_path / "root"
    root.mkdir()
    if kind == "--classes":
        path = put_list(tmp_path, "kaggle", table)           # outside ROOT
        r = convert("--root", root, "--classes", path)
    else:
        path = put_list(root, kind, table)
        r = convert("--root", root)
    assert r.returncode == 0, r.stderr
    form = LISTS["kaggle" if kind == "--classes" else kind][2]
    assert "no devkit: the classes are those of %s (%s); devkit IDs, descriptions and train " \
           "counts from imagenet_prep/classes.tsv" % (path, form) in r.stderr
    assert "%s: 1000 classes (IDs 1..1000), 1,281,167 train images (the real total)" % form \
        in r.stderr
    out = snapshot(root / "meta")
    for name, data in expected_files(table.classes).items():
        assert out[name] == data, name
    doc = json.loads(out["synsets.json"])
    assert doc["format"] == form
    assert doc["source"] == (str(path) if kind == "--classes" else LISTS[kind][0])
    assert doc["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc["class_table"] == {"path": "imagenet_prep/classes.tsv",
                                  "sha256": hashlib.sha256(meta.TABLE.read_bytes()).hexdigest()}
    r = convert("--root", root, *(["--classes", path] if kind == "--classes" else []))
    assert r.returncode == 0 and "already done" in r.stderr, r.stderr


def test_a_list_edited_on_windows_reads_the_same(tmp_path):
    """A byte-order mark, CRLF line ends and trailing spaces do not change the classes."""
    table = table_release()
    text = minirelease.kaggle_synset_mapping(table)
    plain = put_list(tmp_path / "a", "kaggle", table)
    edited = put_list(tmp_path / "b", "kaggle", table,
                      b"\xef\xbb\xbf" + text.replace("\n", " \r\n").encode())
    assert meta.read_class_list(edited, tmp_path).pairs == \
        meta.read_class_list(plain, tmp_path).pairs
    assert len(meta.read_class_list(plain, tmp_path).pairs) == 1000


def test_both_lists_are_checked_and_the_first_is_used(tmp_path):
    table = table_release()
    hf, kaggle = put_list(tmp_path, "hf", table), put_list(tmp_path, "kaggle", table)
    r = convert("--root", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the classes are those of %s (Hugging Face classes.py)" % hf in r.stderr
    assert "; %s agrees" % kaggle in r.stderr
    before = snapshot(tmp_path / "meta")
    put_list(tmp_path, "kaggle", table,
             kaggle.read_text().replace("tench, Tinca tinca", "tench"))
    r = convert("--root", tmp_path)
    assert r.returncode == 1
    assert "%s (Kaggle LOC_synset_mapping.txt) does not agree with ILSVRC2012, nothing was " \
           "written:\n  names that differ from ILSVRC2012's (given, then ILSVRC2012's): 1 " \
           "(first: n01440764 'tench', 'tench, Tinca tinca')" % kaggle in r.stderr
    assert snapshot(tmp_path / "meta") == before


def _drop_tench(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if "n01440764" not in line)


def _swap_first_two(text: str) -> str:
    lines = text.splitlines(True)
    return "".join([lines[1], lines[0]] + lines[2:])


BAD_LISTS = {   # kind: (list form, its text from the good one, what the message says)
    "missing": ("hf", _drop_tench, "it lists 999 classes, expected 1000\n  classes of ILSVRC2012 "
                "it does not list: 1 (first: n01440764)"),
    "unknown": ("hf", lambda t: t.replace("n01440764", "n01440765"),
                "classes that ILSVRC2012 does not have: 1 (first: n01440765)"),
    "repeated": ("kaggle", lambda t: t.replace("n01443537 goldfish", "n01440764 goldfish"),
                 "classes listed more than once: 1 (first: n01440764)"),
    "order": ("kaggle", _swap_first_two,
              "classes out of sorted-WNID order (the class index order): 1 (first: n01440764)"),
    "bad-line": ("kaggle", lambda t: t + "hello world\n",
                 "lines that are not 'WNID words' (e.g. 'n01440764 tench, Tinca tinca'): "
                 "line 1001: 'hello world'"),
    "code": ("hf", lambda t: t + "import os\nos.system('touch PWNED')\n",
             "line 1008 holds a statement other than `IMAGENET2012_CLASSES = ...` and imports"),
    "call": ("hf", lambda t: 'IMAGENET2012_CLASSES = __import__("os").system("touch PWNED")\n',
             "line 1: `IMAGENET2012_CLASSES` is not OrderedDict({...}), OrderedDict([...]) or "
             "{...}"),
    "not-a-string": ("hf", lambda t: t.replace('"tench, Tinca tinca"', "5"),
                     'entries that are not "WNID": "words" string pairs: line 5'),
    "unpacking": ("hf", lambda t: t.replace('        "n01440764": "tench, Tinca tinca",',
                                            "        **os.environ,"),
                  'entries that are not "WNID": "words" string pairs: line 5'),
    "no-variable": ("hf", lambda t: "from collections import OrderedDict\n",
                    "it assigns no `IMAGENET2012_CLASSES`"),
    "syntax": ("hf", lambda t: t[:-10], "it is not Python that can be read (SyntaxError: "),
    "deep": ("hf", lambda t: "IMAGENET2012_CLASSES = " + "[" * 100_000 + "]" * 100_000,
             "it is not Python that can be read ("),
    "not-utf8": ("hf", lambda t: b"\xff\xfe" + t.encode("utf-16-le"), "is not UTF-8 text"),
    "empty": ("kaggle", lambda t: "\n\n", "is empty (2 bytes): it lists no classes; expected "
              "the Hugging Face dataset's classes.py (IMAGENET2012_CLASSES = OrderedDict({"),
    "no-classes": ("hf", lambda t: "IMAGENET2012_CLASSES = {}\n", "lists no classes; expected"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LISTS) + ["huge"])
def test_a_bad_class_list_is_refused_and_nothing_is_written(tmp_path, kind):
    """Every way a source's list can be wrong: what is wrong, naming the file; no output; and
    nothing in a classes.py is ever run. (In-process: the run's exit 1 is the next test's.)"""
    table = table_release()
    if kind == "huge":
        path = put_list(tmp_path, "hf", table, "")
        with open(path, "wb") as f:
            f.truncate(2 << 20)                                # sparse
        says = "%s is 2.0 MiB, more than the 1.0 MiB such a file can be" % path
    else:
        form, damage, says = BAD_LISTS[kind]
        path = put_list(tmp_path, form, table, damage(LISTS[form][1](table)))
    with pytest.raises(PrepError) as e:
        meta.convert(tmp_path, tmp_path / "meta")
    assert says in str(e.value) and str(path) in str(e.value), str(e.value)
    assert not (tmp_path / "meta").exists() and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("kind", ["code", "fifo", "fake-wnids"])
def test_a_bad_class_list_exits_1(tmp_path, release, kind):
    """The script's way: exit 1 with the message, no traceback, no output, nothing run."""
    if kind == "code":
        table = table_release()
        path = put_list(tmp_path, "hf", table, BAD_LISTS[kind][1](LISTS["hf"][1](table)))
        says = BAD_LISTS[kind][2]
    elif kind == "fifo":
        path = tmp_path / "hf" / "classes.py"
        path.parent.mkdir()
        os.mkfifo(path)
        says = "%s is not a regular file (a FIFO), so it was not read" % path
    else:                           # the made-up WNIDs of the usual miniature release
        path = put_list(tmp_path, "hf", release)
        says = "classes that ILSVRC2012 does not have: 12 (first: "
    r = convert("--root", tmp_path, *(["--expect-classes", 12] if kind == "fake-wnids" else []),
                cwd=tmp_path, timeout=60)
    assert r.returncode == 1, r.stderr
    assert says in r.stderr and str(path) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "meta").exists() and not (tmp_path / "PWNED").exists()


def test_with_a_devkit_the_devkit_wins_and_the_list_is_checked(tmp_path, release, good_outputs):
    extract(release.archives["devkit"], tmp_path / "devkit")
    hf = put_list(tmp_path, "hf", release)
    r = convert("--root", tmp_path, "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    assert "reading %s" % (tmp_path / "devkit" / META_2012) in r.stderr
    assert "%s (Hugging Face classes.py) agrees with the devkit: the same 12 classes and names" \
        % hf in r.stderr
    assert (tmp_path / "meta" / "synsets.csv").read_bytes() == good_outputs["synsets.csv"]
    before = snapshot(tmp_path / "meta")
    other = tmp_path / "other.txt"
    other.write_text(_swap_first_two(minirelease.kaggle_synset_mapping(release)))
    r = convert("--root", tmp_path, "--expect-classes", 12, "--classes", other)
    assert r.returncode == 1
    assert "%s (Kaggle LOC_synset_mapping.txt) does not agree with the devkit, nothing was " \
           "written:\n  classes out of sorted-WNID order" % other in r.stderr
    assert "the devkit's classes are the ones 02 writes, so to use them, move the list out of " \
           "the way" in r.stderr
    assert snapshot(tmp_path / "meta") == before


def test_a_miniature_of_real_classes_numbers_them_as_its_devkit(tmp_path, real_release):
    """--expect-classes with a part of the real classes: devkit IDs 1..K in the order of the
    real ones, as the miniature devkit has them; words and descriptions from the table."""
    put_list(tmp_path / "a", "hf", real_release)
    r = convert("--root", tmp_path / "a", "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    r = convert("--devkit", real_release.archives["devkit"], "--out", tmp_path / "b",
                "--expect-classes", 12)
    assert r.returncode == 0, r.stderr
    rows = [list(csv.reader(open(tmp_path / x / "meta" / "synsets.csv" if x == "a" else
                                 tmp_path / x / "synsets.csv", newline="")))
            for x in ("a", "b")]
    assert [row[:5] for row in rows[0]] == [row[:5] for row in rows[1]]
    counts = {s.wnid: str(s.num_train_images) for s in meta.read_table()}
    assert [row[5] for row in rows[0][1:]] == [counts[row[2]] for row in rows[0][1:]]


def test_without_a_devkit_the_files_equal_the_2012_devkits(reference, tmp_path):
    """The real Kaggle LOC_synset_mapping.txt and the package's table give byte for byte the
    files the real 2012 devkit gives; synsets.json differs only in what says where it came
    from."""
    put_list(tmp_path / "k", "kaggle", None, (reference / "LOC_synset_mapping.txt").read_bytes())
    r = convert("--root", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    r = convert("--mat", reference / "meta.mat", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    ours, devkit = snapshot(tmp_path / "k" / "meta"), snapshot(tmp_path / "d")
    for name in OUTPUTS[:1] + OUTPUTS[2:]:
        assert ours[name] == devkit[name], name
    a, b = json.loads(ours["synsets.json"]), json.loads(devkit["synsets.json"])
    assert {k for k in a if a.get(k) != b.get(k)} == {"source", "format", "sha256",
                                                     "class_table"}
