"""The miniature release generator: layout checked with GNU tar and Python tarfile, .mat types
checked against the real devkit files when ../shared/reference is present."""
from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import tarfile
import time
import zlib

import numpy as np
import pytest
import scipy.io
from PIL import Image

import minirelease
from conftest import TESTS, run


def gnu_tar_list(path, *opts):
    out = subprocess.run(["tar", *opts, "-tf", str(path)], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_train_is_tar_of_class_tars(release, tmp_path):
    outer = gnu_tar_list(release.archives["train"])
    assert outer == sorted(w + ".tar" for w in release.train)
    with tarfile.open(release.archives["train"]) as t:
        for member in t:
            assert member.isfile()
            inner = tarfile.open(fileobj=t.extractfile(member))
            wnid = member.name[:-4]
            assert sorted(inner.getnames()) == release.train[wnid]
    counts = [len(v) for v in release.train.values()]
    assert len(set(counts)) > 1, "per-class counts must be uneven"
    # N is neither zero-padded nor consecutive
    numbers = sorted(int(n.split("_")[1].split(".")[0]) for n in release.train[outer[0][:-4]])
    assert numbers != list(range(numbers[0], numbers[0] + len(numbers)))
    # GNU tar can unpack an inner tar streamed from the outer one
    first = outer[0]
    stream = subprocess.run(["tar", "-xOf", str(release.archives["train"]), first],
                            capture_output=True, check=True).stdout
    (tmp_path / first).write_bytes(stream)
    assert sorted(gnu_tar_list(tmp_path / first)) == release.train[first[:-4]]


def test_val_test_devkit_layout(release):
    assert gnu_tar_list(release.archives["val"]) == sorted(release.val)
    assert len(release.val) == 3 * len(release.classes)
    assert gnu_tar_list(release.archives["test"]) == ["test/"] + ["test/" + n for n in release.test]
    names = gnu_tar_list(release.archives["devkit"], "-z")
    assert "ILSVRC2012_devkit_t12/data/meta.mat" in names
    assert "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt" in names
    names = gnu_tar_list(release.archives["devkit2017"], "-z")
    for f in ("meta_clsloc.mat", "map_clsloc.txt", "ILSVRC2015_clsloc_validation_ground_truth.txt",
              "ILSVRC2015_clsloc_validation_blacklist.txt"):
        assert "ILSVRC/devkit/data/" + f in names


def test_ground_truth_uses_devkit_ids_not_sorted_index(release):
    with tarfile.open(release.archives["devkit"]) as t:
        gt = t.extractfile(
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read()
    ids = [int(x) for x in gt.split()]
    assert ids == release.val_ids
    by_id = {c.ilsvrc_id: c.wnid for c in release.classes}
    assert [by_id[i] for i in ids] == [release.val[n] for n in sorted(release.val)]
    devkit_order = [c.wnid for c in release.classes]
    assert devkit_order != sorted(devkit_order), "the two class orders must differ"
    assert ids != sorted(ids), "val labels must be shuffled"


def test_label_forms_agree(release):
    kaggle = release.labels["kaggle"].read_text().splitlines()
    assert kaggle[0] == "ImageId,PredictionString"
    rows = {r.split(",")[0] + ".JPEG": r.split(",")[1].split()[0] for r in kaggle[1:]}
    assert rows == release.val
    assert [r.split(",")[0] for r in kaggle[1:]] != sorted(r.split(",")[0] for r in kaggle[1:])
    tf = release.labels["tf"].read_text().split()
    assert tf == [release.val[n] for n in sorted(release.val)]


def test_expected_and_checksums(release):
    doc = json.loads((release.out / "expected.json").read_text())
    assert doc["train"] == release.train and doc["val"] == release.val
    assert [c["ilsvrc_id"] for c in doc["classes"]] == list(range(1, len(release.classes) + 1))
    assert sorted(c["class_index"] for c in doc["classes"]) == list(range(len(release.classes)))
    for line in (release.out / "checksums.md5").read_text().splitlines():
        md5, name = line.split()
        assert hashlib.md5((release.out / name).read_bytes()).hexdigest() == md5
    assert set(doc["special"].values()) == {"png", "cmyk"}


def test_same_seed_same_bytes(tmp_path):
    a = minirelease.make_release(tmp_path / "a", classes=4, images=(1, 3), seed=7)
    time.sleep(1.1)  # a clock-dependent byte (e.g. a .mat header's date) would differ now
    b = minirelease.make_release(tmp_path / "b", classes=4, images=(1, 3), seed=7)
    assert a.md5 == b.md5


def test_images_look_like_jpeg(release):
    with tarfile.open(release.archives["val"]) as t:
        for m in t:
            data = t.extractfile(m).read()
            assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"


def all_images(rel):
    """(split, name, bytes) of every image in a release's train, val and test archives."""
    with tarfile.open(rel.archives["train"]) as outer:
        for m in outer:
            with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                for f in inner:
                    yield "train", f.name, inner.extractfile(f).read()
    for split in ("val", "test"):
        with tarfile.open(rel.archives[split]) as t:
            for f in t:
                if f.isfile():
                    yield split, f.name, t.extractfile(f).read()


def png_chunks(data):
    """(type, payload, CRC is right) of every chunk of a PNG."""
    at, out = 8, []
    while at < len(data):
        n = int.from_bytes(data[at:at + 4], "big")
        kind, payload = data[at + 4:at + 8], data[at + 8:at + 8 + n]
        crc = int.from_bytes(data[at + 8 + n:at + 12 + n], "big")
        out.append((kind, payload, zlib.crc32(kind + payload) == crc))
        at += 12 + n
    return out


@pytest.fixture(params=["unit", "tiny", "large"])
def any_release(request, release, tmp_path):
    """The unit release; one with the "files" preset's ~0.1 KiB images, smaller than the tiny
    images themselves; one with 150 KiB images, which need several JPEG comment segments."""
    if request.param == "unit":
        return release
    kib = 0.1 if request.param == "tiny" else 150.0
    return minirelease.make_release(tmp_path, classes=4, images=(1, 3), val_per_class=1, test=2,
                                    kib=kib)


def test_every_image_decodes(any_release):
    rel = any_release
    seen = set()
    for split, name, data in all_images(rel):
        kind = rel.special.get(name) if split == "train" else None
        image = Image.open(io.BytesIO(data))
        image.load()            # decodes every pixel; raises on a broken stream or a bad CRC
        assert image.size == (minirelease.IMAGE_SIDE, minirelease.IMAGE_SIDE)
        if kind == "png":
            assert (image.format, image.mode) == ("PNG", "RGB"), name
            assert all(ok for _, _, ok in png_chunks(data)), name
        elif kind == "cmyk":
            assert (image.format, image.mode) == ("JPEG", "CMYK"), name
            assert image.info.get("adobe_transform") == 0, name     # Adobe APP14: plain CMYK
        else:
            assert (image.format, image.mode) == ("JPEG", "RGB"), name
        assert image.convert("RGB").mode == "RGB"
        seen.add(hashlib.md5(data).hexdigest())
    n_images = sum(map(len, rel.train.values())) + len(rel.val) + len(rel.test)
    assert len(seen) == n_images, "every image must have bytes of its own"
    assert sorted(rel.special.values()) == ["cmyk", "cmyk", "png"]


@pytest.mark.parametrize("size", [1, 64, 179, 191, 192, 1024, 65_537, 65_800, 131_074, 300_000])
@pytest.mark.parametrize("components,mode", [(1, "L"), (3, "RGB"), (4, "CMYK")])
def test_jpeg_of_any_size_decodes(size, components, mode):
    rng = random.Random(size)
    a = minirelease.fake_jpeg(rng, size, components)
    b = minirelease.fake_jpeg(rng, size, components)
    smallest = len(minirelease.fake_jpeg(random.Random(0), 1, components))
    assert smallest < 200                                 # the "files" preset's ~0.1 KiB images
    assert len(a) == len(b) == max(size, smallest)        # the size asked for, when it fits
    assert a != b
    assert a == minirelease.fake_jpeg(random.Random(size), size, components)   # seeded
    for data in (a, b):
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.mode) == ("JPEG", mode)


@pytest.mark.parametrize("size", [1, 100, 1024, 300_000])
def test_png_of_any_size_decodes(size):
    rng = random.Random(size)
    a, b = minirelease.fake_png(rng, size), minirelease.fake_png(rng, size)
    assert len(a) == len(b) == max(size, len(minirelease.fake_png(random.Random(0), 1)))
    assert a != b
    for data in (a, b):
        assert [(k, ok) for k, _, ok in png_chunks(data)] == [
            (b"IHDR", True), (b"paDd", True), (b"IDAT", True), (b"IEND", True)]
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.mode) == ("PNG", "RGB")
        assert image.getpixel((5, 9)) == (200, 120, 40)


def _load(data_or_path):
    return scipy.io.loadmat(data_or_path, squeeze_me=True)["synsets"]


def _types(syn):
    """Set of (field, python type name, dtype if array) over all entries."""
    seen = set()
    for s in syn:
        for f in syn.dtype.names:
            v = s[f]
            seen.add((f, type(v).__name__, str(v.dtype) if isinstance(v, np.ndarray) else ""))
    return seen


def _devkit_mat(release, member):
    import io
    with tarfile.open(release.archives["devkit" if "t12" in member else "devkit2017"]) as t:
        return io.BytesIO(t.extractfile(member).read())


def test_meta_mat_load_types(release):
    syn = _load(_devkit_mat(release, "ILSVRC2012_devkit_t12/data/meta.mat"))
    k = len(release.classes)
    assert syn.dtype.names == ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children",
                               "children", "wordnet_height", "num_train_images")
    assert [int(s["ILSVRC2012_ID"]) for s in syn] == list(range(1, len(syn) + 1))
    assert [int(s["num_children"]) == 0 for s in syn] == [True] * k + [False] * (len(syn) - k)
    kinds = {type(s["children"]).__name__ for s in syn}
    assert kinds == {"ndarray", "int"}  # empty arrays, several children, and one child as an int
    assert isinstance(syn[0]["WNID"], str) and isinstance(syn[0]["num_train_images"], int)


def test_meta_clsloc_load_types(release):
    syn = _load(_devkit_mat(release, "ILSVRC/devkit/data/meta_clsloc.mat"))
    assert syn.dtype.names == ("ILSVRC2015_CLSLOC_ID", "WNID", "name", "description",
                               "num_train_images")
    assert [s["WNID"] for s in syn] == [c.wnid for c in release.classes]


def test_mat_types_match_real_meta_mat(release, reference):
    real = _types(_load(str(reference / "meta.mat")))
    ours = _types(_load(_devkit_mat(release, "ILSVRC2012_devkit_t12/data/meta.mat")))
    # same fields and Python types; array dtypes a subset (few classes need no uint16 children)
    assert {(f, t) for f, t, _ in ours} == {(f, t) for f, t, _ in real}
    assert ours <= real
    real_raw = scipy.io.loadmat(str(reference / "meta.mat"))["synsets"]
    ours_raw = scipy.io.loadmat(
        _devkit_mat(release, "ILSVRC2012_devkit_t12/data/meta.mat"))["synsets"]
    assert real_raw.shape[1] == ours_raw.shape[1] == 1
    assert real_raw.dtype.names == ours_raw.dtype.names


def test_mat_types_match_real_meta_clsloc(release, reference):
    real = _types(_load(str(reference / "meta_clsloc.mat")))
    ours = _types(_load(_devkit_mat(release, "ILSVRC/devkit/data/meta_clsloc.mat")))
    assert ours == real
    real_raw = scipy.io.loadmat(str(reference / "meta_clsloc.mat"))["synsets"]
    ours_raw = scipy.io.loadmat(
        _devkit_mat(release, "ILSVRC/devkit/data/meta_clsloc.mat"))["synsets"]
    assert real_raw.shape[0] == ours_raw.shape[0] == 1


def test_real_like_counts():
    import random
    counts = minirelease.real_like_counts(1000, random.Random(0))
    assert sum(counts) == 1_281_167 and min(counts) >= 732 and max(counts) == 1300


@pytest.mark.parametrize("kind", minirelease.HOSTILE_KINDS)
def test_hostile_variants(tmp_path, kind):
    path = minirelease.make_hostile(tmp_path, kind)
    r = run(["tar", "-tvf", path])
    if kind in ("truncated", "not-a-tar"):
        assert r.returncode != 0
    else:
        assert r.returncode == 0, r.stderr


def test_command_line(tmp_path):
    r = run(["python3", TESTS / "minirelease.py", tmp_path / "rel", "--classes", "5",
             "--images", "1-2", "--test", "3"])
    assert r.returncode == 0, r.stderr
    assert "5 classes" in r.stdout
    assert len(gnu_tar_list(tmp_path / "rel" / "ILSVRC2012_img_train.tar")) == 5
    r = run(["python3", TESTS / "minirelease.py", tmp_path / "h", "--hostile", "outer-dotdot"])
    assert r.returncode == 0
    assert "../n01000002.tar" in gnu_tar_list(tmp_path / "h" / minirelease.TRAIN_TAR)


def test_the_files_of_the_other_sources(release):
    """classes.py (Hugging Face), LOC_synset_mapping.txt and LOC_val_solution.csv (Kaggle) say
    what the release says: read back as data, never executed."""
    import ast
    tree = ast.parse(minirelease.hf_classes_py(release))
    call = tree.body[-1].value
    assert tree.body[-1].targets[0].id == "IMAGENET2012_CLASSES" and call.func.id == "OrderedDict"
    classes = ast.literal_eval(call.args[0])
    words = {c.wnid: c.words for c in release.classes}
    assert list(classes) == release.wnids_sorted and classes == words
    mapping = minirelease.kaggle_synset_mapping(release).splitlines()
    assert [line.split(" ", 1) for line in mapping] == [[w, words[w]] for w in release.wnids_sorted]
    text = minirelease.kaggle_val_solution(release)
    assert text == minirelease.kaggle_val_solution(release)            # same seed, same bytes
    rows = text.splitlines()
    assert rows[0] == "ImageId,PredictionString"
    got = {}
    for row in rows[1:]:
        image, boxes = row.split(",")
        tokens = boxes.split()
        assert len(tokens) in (5, 10) and boxes.endswith(" ")
        assert set(tokens[::5]) == {tokens[0]}
        got[image + ".JPEG"] = tokens[0]
    assert got == release.val and len(rows) == len(release.val) + 1
    assert [r.split(",")[0] for r in rows[1:]] != sorted(r.split(",")[0] for r in rows[1:])
    assert release.labels["kaggle"].read_text() == text
