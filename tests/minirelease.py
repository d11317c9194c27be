#!/usr/bin/env python3
"""Build a miniature ILSVRC2012 release with the exact archive layout of the real one.

Tests, the demo and the benchmarks all use this module; it also runs as a command:

    python3 tests/minirelease.py OUT [--preset unit|bench|files] [--classes K] ...

OUT receives::

    OUT/ILSVRC2012_img_train.tar            outer tar of WNID.tar members, each holding WNID_N.JPEG
    OUT/ILSVRC2012_img_val.tar              flat ILSVRC2012_val_%08d.JPEG
    OUT/ILSVRC2012_img_test_v10102019.tar   test/ILSVRC2012_test_%08d.JPEG
    OUT/ILSVRC2012_devkit_t12.tar.gz        ILSVRC2012_devkit_t12/data/meta.mat + ground truth
    OUT/ILSVRC2017_devkit.tar.gz            ILSVRC/devkit/data/meta_clsloc.mat, map_clsloc.txt, ...
    OUT/labels/                             the val labels in the Kaggle and TF forms
    OUT/expected.json                       what a correct pipeline must produce, whole trees
    OUT/checksums.md5                       md5sum-style lines for every archive

The files other sources give beside the images, as text for a test to serve or write:
hf_classes_py (the Hugging Face dataset's classes.py), kaggle_synset_mapping and
kaggle_val_solution (the Kaggle competition's LOC_synset_mapping.txt and LOC_val_solution.csv).

Class order: devkit IDs 1..K are given to the classes in a shuffled order, so that the devkit order
differs from the sorted-WNID order and tests catch code that mixes the two.

Images: every one decodes (Pillow, torchvision's ImageFolder): a 16x16 baseline JPEG, or for the
specials a CMYK JPEG and a PNG, as in the real release, brought to a random size around the mean
(--kib) with random bytes in segments a decoder skips, so that no two files are equal.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import random
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.io

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
TEST_TAR = "ILSVRC2012_img_test_v10102019.tar"
DEVKIT_2012 = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_2017 = "ILSVRC2017_devkit.tar.gz"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MTIME = 1339632000  # 2012-06-14, fixed so archives are byte-identical for a seed

REAL_TRAIN_TOTAL = 1_281_167
REAL_MIN_PER_CLASS = 732
REAL_MAX_PER_CLASS = 1300
REFERENCE_META = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "meta.mat"

# Presets: (a) seconds-long unit tests, (b) ~2 GB benchmark, (c) 1,281,167 tiny files.
PRESETS = {
    "unit": dict(classes=12, images=(2, 7), val_per_class=3, test=10, kib=1.0),
    "bench": dict(classes=1000, images=(18, 22), val_per_class=2, test=20, kib=110.0),
    "files": dict(classes=1000, images="real", val_per_class=50, test=100, kib=0.1),
}

_WORDS = [
    "kit fox, Vulpes macrotis", "English setter", "Siberian husky", "crane", "maillot",
    "jack-o'-lantern", 'tench, Tinca tinca', "goldfish, Carassius auratus", "dumbbell",
    'great white shark, white shark, man-eater', "crane", "maillot, tank suit", "hen",
    'potter\'s wheel', 'screen, CRT screen', "cock",
]


@dataclass
class Synset:
    ilsvrc_id: int
    wnid: str
    words: str
    gloss: str
    num_train_images: int
    children: list[int] = field(default_factory=list)
    wordnet_height: int = 0


@dataclass
class Release:
    """Paths and expected results of one generated release."""

    out: Path
    classes: list[Synset]            # the K leaf classes, in devkit ID order (ID 1 first)
    internal: list[Synset]           # the 2012-style internal synsets (IDs K+1..)
    train: dict[str, list[str]]      # wnid -> sorted file names
    val: dict[str, str]              # val file name -> wnid
    val_ids: list[int]               # devkit ID of val image k at position k-1
    test: list[str]                  # test file names
    blacklist: list[int]             # 1-based val image indices
    special: dict[str, str]          # train file name -> "png" / "cmyk"
    archives: dict[str, Path]        # split -> archive path
    md5: dict[str, str]
    sizes: dict[str, int]
    labels: dict[str, Path] = field(default_factory=dict)

    @property
    def wnids_sorted(self) -> list[str]:
        return sorted(c.wnid for c in self.classes)

    @functools.cached_property
    def _index_of(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids_sorted)}

    def class_index(self, wnid: str) -> int:
        """0-based position in sorted-WNID order (torchvision ImageFolder, Keras, TFDS, timm)."""
        return self._index_of[wnid]


# ----------------------------------------------------------------------------- images

IMAGE_SIDE = 16        # pixels; every generated image is 16x16
_COM_MAX = 65533       # most bytes one JPEG comment segment holds (its length field is 2 bytes)
_DISTINCT = 8          # random bytes every image carries at least, so no two are equal


def _segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment: FF, the marker, a 2-byte length that counts itself, the payload."""
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _tiny_jpeg(components: int) -> tuple[bytes, bytes]:
    """A valid 16x16 baseline JPEG of flat mid-grey, split where padding may go: (SOI + APP, rest).

    1 component: greyscale; 3: JFIF YCbCr; 4: CMYK, marked as such by an Adobe APP14 segment
    (transform 0). Every 8x8 block is coded as "DC difference 0, end of block", so a DC and an AC
    Huffman table with a single 1-bit code (0) each suffice, and the scan is 2 zero bits per
    block, padded with 1-bits to a whole byte.
    """
    if components == 4:
        app = _segment(0xEE, b"Adobe" + (100).to_bytes(2, "big") + bytes(4) + b"\x00")
    else:
        app = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = _segment(0xDB, b"\x00" + bytes([1]) * 64)                 # table 0: all steps 1
    side = IMAGE_SIDE.to_bytes(2, "big")
    sof = _segment(0xC0, b"\x08" + side + side + bytes([components]) + b"".join(
        bytes([i, 0x11, 0]) for i in range(1, components + 1)))    # no subsampling, table 0
    one_code = bytes([1] + [0] * 15) + b"\x00"                      # one 1-bit code, symbol 0
    dht = _segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)  # DC table 0, AC table 0
    sos = _segment(0xDA, bytes([components]) + b"".join(
        bytes([i, 0x00]) for i in range(1, components + 1)) + b"\x00\x3f\x00")
    bits = 2 * components * (IMAGE_SIDE // 8) ** 2
    scan = bytes(bits // 8) + (bytes([0xFF >> bits % 8]) if bits % 8 else b"")
    return b"\xff\xd8" + app, dqt + sof + dht + sos + scan + b"\xff\xd9"


_JPEG = {n: _tiny_jpeg(n) for n in (1, 3, 4)}


def fake_jpeg(rng: random.Random, size: int, components: int = 3) -> bytes:
    """A decodable 16x16 JPEG of `size` bytes, or of its smallest size (179 bytes in colour).

    components: 3 (colour), 1 (greyscale) or 4 (CMYK). The bytes beyond the image are random
    bytes from `rng` in comment (COM) segments right after the APP segment, so every image
    differs, as real files do, and a decoder skips them.
    """
    head, rest = _JPEG[components]
    pad = max(size - len(head) - len(rest), 4 + _DISTINCT)
    n = -(-pad // (4 + _COM_MAX))                     # fewest segments that hold `pad` bytes
    q, r = divmod(pad - 4 * n, n)
    data = rng.randbytes(pad - 4 * n)
    parts, at = [head], 0
    for i in range(n):
        length = q + (i < r)
        parts.append(b"\xff\xfe" + (length + 2).to_bytes(2, "big") + data[at:at + length])
        at += length
    parts.append(rest)
    return b"".join(parts)


# zlib stream of the 16 rows of a 16x16 8-bit RGB image, each a filter byte 0 and 16 times the
# pixel (200, 120, 40); a constant so that the bytes do not depend on the zlib build
_PNG_ROWS = bytes.fromhex("78da633851a141126218d530aa61f86a000003686810")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload + \
        zlib.crc32(kind + payload).to_bytes(4, "big")


def fake_png(rng: random.Random, size: int) -> bytes:
    """A decodable 16x16 RGB PNG of `size` bytes, or of its smallest size (99 bytes).

    The bytes beyond the image are random bytes from `rng` in a private ancillary chunk (paDd)
    after IHDR, with a correct CRC, which decoders skip.
    """
    side = IMAGE_SIDE.to_bytes(4, "big")
    ihdr = _png_chunk(b"IHDR", side + side + b"\x08\x02\x00\x00\x00")  # 8-bit RGB
    tail = _png_chunk(b"IDAT", _PNG_ROWS) + _png_chunk(b"IEND", b"")
    head = PNG_SIGNATURE + ihdr
    pad = max(size - len(head) - len(tail) - 12, _DISTINCT)
    return head + _png_chunk(b"paDd", rng.randbytes(pad)) + tail


def _image_size(rng: random.Random, kib: float) -> int:
    mean = kib * 1024
    return max(64, int(rng.uniform(0.5, 1.5) * mean))


# ----------------------------------------------------------------------------- tar helpers

def _tarinfo(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _targz(path: Path, members: list[tuple[str, bytes]], dirs: list[str]) -> None:
    # gzip with mtime 0 so the archive is byte-identical for a seed
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in dirs:
            info = _tarinfo(d + "/", 0, 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            add_bytes(tar, name, data)


# ----------------------------------------------------------------------------- classes

def _real_counts() -> Optional[list[int]]:
    """Per-class train counts of the real release, from ../shared when it is there."""
    if not REFERENCE_META.is_file():
        return None
    syn = scipy.io.loadmat(str(REFERENCE_META), squeeze_me=True)["synsets"]
    return [int(s["num_train_images"]) for s in syn if int(s["num_children"]) == 0]


def real_like_counts(k: int, rng: random.Random) -> list[int]:
    """K counts between 732 and 1300 summing to 1,281,167 when K is 1,000 (the real figures)."""
    real = _real_counts()
    if real is not None and k == len(real):
        return real
    total = round(REAL_TRAIN_TOTAL * k / 1000)
    counts = [REAL_MAX_PER_CLASS] * k
    deficit = REAL_MAX_PER_CLASS * k - total
    i = 0
    while deficit > 0:
        j = i % k
        if j % 9 != 0:  # leave most classes at 1300, as in the real release
            take = min(deficit, counts[j] - REAL_MIN_PER_CLASS, rng.randint(1, 568))
            counts[j] -= take
            deficit -= take
        i += 1
    return counts


def real_classes(k: int, counts: list[int], rng: random.Random) -> list[Synset]:
    """K of the real 1,000 classes (the package's table, imagenet_prep/classes.tsv) with their
    WNIDs, words and glosses, numbered 1..K in the order of their real devkit IDs, as 02 numbers
    a part of the table (--expect-classes); all 1,000 keep their IDs. Drawn so that the devkit
    order differs from the sorted-WNID order."""
    repo = str(Path(__file__).resolve().parent.parent)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from imagenet_prep.meta import read_table
    table = read_table()
    while True:
        picked = [table[i] for i in sorted(rng.sample(range(len(table)), k))]
        if k < 2 or [s.wnid for s in picked] != sorted(s.wnid for s in picked):
            break
    return [Synset(n, s.wnid, s.words, s.description, counts[n - 1])
            for n, s in enumerate(picked, start=1)]


def make_classes(k: int, counts: list[int], rng: random.Random,
                 real: bool = False) -> tuple[list[Synset], list[Synset]]:
    """K leaf classes in devkit ID order (made up, or with `real` real_classes) and the 2012-style
    internal synsets above them."""
    if real:
        classes = real_classes(k, counts, rng)
        wnids = {c.wnid for c in classes}
    else:
        wnids = set()
        while len(wnids) < k:
            wnids.add("n%08d" % rng.randrange(1_000_000, 15_000_000))
        ordered = sorted(wnids)
        rng.shuffle(ordered)
        if ordered == sorted(ordered) and k > 1:  # the devkit order must differ from sorted order
            ordered[0], ordered[1] = ordered[1], ordered[0]
        classes = []
        for i, wnid in enumerate(ordered):
            words = _WORDS[i] if i < len(_WORDS) else "synthetic class %d, thing %d" % (i + 1,
                                                                                      i + 1)
            classes.append(Synset(i + 1, wnid, words,
                                  "gloss of %s; generated" % words.split(",")[0], counts[i]))
    # 2012-style internal synsets: a root with children, nodes with several and with one child
    m = max(4, k // 4)
    internal = []
    used = wnids
    for j in range(m):
        while True:
            w = "n%08d" % rng.randrange(1_000, 1_000_000)
            if w not in used:
                used.add(w)
                break
        internal.append(Synset(k + 1 + j, w, "entity" if j == 0 else "group %d" % j,
                               "internal synset %d" % j, 0))
    internal[0].children = [s.ilsvrc_id for s in internal[1:-1]]
    internal[-1].children = [internal[1].ilsvrc_id]            # exactly one child -> int on load
    for c in classes:
        internal[1 + rng.randrange(m - 2)].children.append(c.ilsvrc_id)
    for s in internal[1:-1]:
        if not s.children:  # a childless internal synset would read as a leaf class
            s.children.append(classes[0].ilsvrc_id)
    for s in internal[1:-1]:
        s.wordnet_height = 1
    internal[0].wordnet_height = 2
    internal[-1].wordnet_height = 2
    return classes, internal


def _uint(v: int) -> np.ndarray:
    return np.array([[v]], dtype=np.uint8 if v < 256 else np.uint16)


def _uint_row(values: list[int]) -> np.ndarray:
    dtype = np.uint8 if not values or max(values) < 256 else np.uint16
    return np.array([values], dtype=dtype).reshape(1, len(values))


def _savemat(arr: np.ndarray, created: str) -> bytes:
    """savemat to bytes with a fixed header text (scipy writes the current time there)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": arr}, format="5")
    data = buf.getvalue()
    text = ("MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: %s" % created).encode()
    return text.ljust(116) + data[116:]


def meta_mat_bytes(classes: list[Synset], internal: list[Synset]) -> bytes:
    """A 2012 devkit meta.mat: `synsets`, an (N,1) struct, leaves 1..K first."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    allsyn = classes + internal
    arr = np.empty((len(allsyn), 1), dtype=[(f, object) for f in fields])
    for i, s in enumerate(allsyn):
        arr[i, 0] = (_uint(s.ilsvrc_id), np.array([s.wnid]), np.array([s.words]),
                     np.array([s.gloss]), _uint(len(s.children)), _uint_row(s.children),
                     _uint(s.wordnet_height), _uint(s.num_train_images))
    return _savemat(arr, "Thu Jun 14 02:27:01 2012")


def meta_clsloc_bytes(classes: list[Synset]) -> bytes:
    """A 2015/2017 devkit meta_clsloc.mat: `synsets`, a (1,K) struct."""
    fields = ["ILSVRC2015_CLSLOC_ID", "WNID", "name", "description", "num_train_images"]
    arr = np.empty((1, len(classes)), dtype=[(f, object) for f in fields])
    for i, s in enumerate(classes):
        arr[0, i] = (_uint(s.ilsvrc_id), np.array([s.wnid]), np.array([s.words]),
                     np.array([s.gloss]), _uint(s.num_train_images))
    return _savemat(arr, "Sun May 24 19:54:11 2015")


def short_name(words: str) -> str:
    """First lemma with spaces as underscores: the map_clsloc.txt / Keras name."""
    return words.split(",")[0].strip().replace(" ", "_")


# ----------------------------------------------------------------------------- the release

def make_release(out: Path, classes: int = 12, images=(2, 7), val_per_class: int = 3,
                 test: int = 10, kib: float = 1.0, seed: int = 0, specials: bool = True,
                 test_prefix: str = "test/", progress: bool = False,
                 real_classes: bool = False) -> Release:
    """Write a release to `out` and return what a correct pipeline must produce from it.

    images: (min, max) images per class drawn per class, or "real" for the real per-class counts.
    specials: make one train image a PNG and two CMYK JPEGs, as in the real release.
    real_classes: K of the real classes (real WNIDs and names, numbered 1..K in their real
    order), which a source without a devkit needs: 02 checks its class list against the real
    1,000.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    k = classes
    if images == "real":
        counts = real_like_counts(k, rng)
    else:
        lo, hi = images
        counts = [rng.randint(lo, hi) for _ in range(k)]
    syn, internal = make_classes(k, counts, rng, real_classes)

    # train: an outer tar of WNID.tar members, written in sorted-WNID order like the real one
    train: dict[str, list[str]] = {}
    special: dict[str, str] = {}
    train_path = out / TRAIN_TAR
    with tarfile.open(train_path, "w", format=tarfile.GNU_FORMAT) as outer:
        for n, s in enumerate(sorted(syn, key=lambda c: c.wnid)):
            numbers = sorted(rng.sample(range(1, 3 * s.num_train_images + 50), s.num_train_images))
            names = ["%s_%d.JPEG" % (s.wnid, x) for x in numbers]
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for j, name in enumerate(names):
                    size = _image_size(rng, kib)
                    if specials and n == 0 and j == 0:
                        data, special[name] = fake_png(rng, size), "png"
                    elif specials and n in (1, 2) and j == 0:
                        data, special[name] = fake_jpeg(rng, size, components=4), "cmyk"
                    else:
                        data = fake_jpeg(rng, size)
                    add_bytes(inner, name, data)
            add_bytes(outer, s.wnid + ".tar", buf.getvalue())
            train[s.wnid] = sorted(names)
            if progress and n % 100 == 99:
                print("  train: %d/%d classes" % (n + 1, k), file=sys.stderr)

    # val: flat, labels shuffled over the classes
    val_ids = [s.ilsvrc_id for s in syn for _ in range(val_per_class)]
    rng.shuffle(val_ids)
    by_id = {s.ilsvrc_id: s for s in syn}
    val: dict[str, str] = {}
    with tarfile.open(out / VAL_TAR, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, cid in enumerate(val_ids, start=1):
            name = "ILSVRC2012_val_%08d.JPEG" % i
            add_bytes(tar, name, fake_jpeg(rng, _image_size(rng, kib)))
            val[name] = by_id[cid].wnid

    test_names = ["ILSVRC2012_test_%08d.JPEG" % i for i in range(1, test + 1)]
    with tarfile.open(out / TEST_TAR, "w", format=tarfile.GNU_FORMAT) as tar:
        if test_prefix:
            info = _tarinfo(test_prefix, 0, 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name in test_names:
            add_bytes(tar, test_prefix + name, fake_jpeg(rng, _image_size(rng, kib)))

    ground_truth = "".join("%d\n" % i for i in val_ids).encode()
    blacklist = sorted(rng.sample(range(1, len(val_ids) + 1), max(1, len(val_ids) * 1762 // 50000)))
    _targz(out / DEVKIT_2012, [
        ("ILSVRC2012_devkit_t12/COPYING", b"Miniature devkit generated for tests.\n"),
        ("ILSVRC2012_devkit_t12/readme.txt", b"Generated ILSVRC2012 devkit (miniature).\n"),
        ("ILSVRC2012_devkit_t12/data/meta.mat", meta_mat_bytes(syn, internal)),
        ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", ground_truth),
    ], ["ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12/data"])
    map_clsloc = "".join("%s %d %s\n" % (s.wnid, s.ilsvrc_id, short_name(s.words)) for s in syn)
    _targz(out / DEVKIT_2017, [
        ("ILSVRC/devkit/COPYING", b"Miniature devkit generated for tests.\n"),
        ("ILSVRC/devkit/data/meta_clsloc.mat", meta_clsloc_bytes(syn)),
        ("ILSVRC/devkit/data/map_clsloc.txt", map_clsloc.encode()),
        ("ILSVRC/devkit/data/ILSVRC2015_clsloc_validation_ground_truth.txt", ground_truth),
        ("ILSVRC/devkit/data/ILSVRC2015_clsloc_validation_blacklist.txt",
         "".join("%d\n" % i for i in blacklist).encode()),
    ], ["ILSVRC", "ILSVRC/devkit", "ILSVRC/devkit/data"])

    # val labels in the other forms 03 accepts (the Kaggle one below, once `rel` exists)
    labels_dir = out / "labels"
    labels_dir.mkdir(exist_ok=True)
    (labels_dir / "imagenet_2012_validation_synset_labels.txt").write_text(
        "".join(val[n] + "\n" for n in sorted(val)))
    (labels_dir / "ILSVRC2012_validation_ground_truth.txt").write_bytes(ground_truth)

    archives = {"train": train_path, "val": out / VAL_TAR, "test": out / TEST_TAR,
                "devkit": out / DEVKIT_2012, "devkit2017": out / DEVKIT_2017}
    md5 = {split: _md5(p) for split, p in archives.items()}
    sizes = {split: p.stat().st_size for split, p in archives.items()}
    rel = Release(out=out, classes=syn, internal=internal, train=train, val=val, val_ids=val_ids,
                  test=test_names, blacklist=blacklist, special=special, archives=archives,
                  md5=md5, sizes=sizes,
                  labels={"devkit": labels_dir / "ILSVRC2012_validation_ground_truth.txt",
                          "kaggle": labels_dir / "LOC_val_solution.csv",
                          "tf": labels_dir / "imagenet_2012_validation_synset_labels.txt"})
    rel.labels["kaggle"].write_text(kaggle_val_solution(rel, seed))
    (out / "checksums.md5").write_text(
        "".join("%s  %s\n" % (md5[s], archives[s].name) for s in archives))
    write_expected(rel)
    return rel


# ----------------------------------------------------------------------------- other sources' files

def hf_classes_py(release: Release) -> str:
    """The release's classes as the Hugging Face dataset ILSVRC/imagenet-1k gives them in its
    classes.py: `IMAGENET2012_CLASSES = OrderedDict({"n01440764": "tench, Tinca tinca", ...})`,
    WNID -> words in sorted-WNID order (the class index order). The strings are JSON-quoted,
    which is a valid Python literal (double quotes, \\uXXXX for anything not ASCII)."""
    rows = "".join("        %s: %s,\n" % (json.dumps(s.wnid), json.dumps(s.words))
                   for s in sorted(release.classes, key=lambda c: c.wnid))
    return ("from collections import OrderedDict\n\n"
            "IMAGENET2012_CLASSES = OrderedDict(\n    {\n" + rows + "    }\n)\n")


def kaggle_synset_mapping(release: Release) -> str:
    """LOC_synset_mapping.txt of the Kaggle competition: 'WNID words' per line, sorted by WNID
    (line k = class index k), LF line ends."""
    return "".join("%s %s\n" % (s.wnid, s.words)
                   for s in sorted(release.classes, key=lambda c: c.wnid))


def kaggle_val_solution(release: Release, seed: int = 0) -> str:
    """LOC_val_solution.csv of the Kaggle competition: the header ImageId,PredictionString, then
    one row per val image in a shuffled order (as in the real file), its PredictionString a box
    'WNID xmin ymin xmax ymax ' (every fourth image two boxes of its class), trailing space
    included as in the real file."""
    rng = random.Random(seed)
    rows = []
    for n, (name, wnid) in enumerate(sorted(release.val.items())):
        boxes = []
        for _ in range(2 if n % 4 == 3 else 1):
            x, y = rng.randrange(0, 200), rng.randrange(0, 200)
            boxes.append("%s %d %d %d %d " % (wnid, x, y, x + rng.randrange(10, 300),
                                              y + rng.randrange(10, 300)))
        rows.append("%s,%s\n" % (name[:-len(".JPEG")], "".join(boxes)))
    rng.shuffle(rows)
    return "ImageId,PredictionString\n" + "".join(rows)


def write_expected(rel: Release) -> None:
    doc = {
        "classes": [{"ilsvrc_id": s.ilsvrc_id, "wnid": s.wnid, "words": s.words,
                     "description": s.gloss, "num_train_images": s.num_train_images,
                     "class_index": rel.class_index(s.wnid)} for s in rel.classes],
        "train": rel.train,
        "val": rel.val,
        "test": rel.test,
        "blacklist": rel.blacklist,
        "special": rel.special,
        "archives": {s: {"file": p.name, "md5": rel.md5[s], "size": rel.sizes[s]}
                     for s, p in rel.archives.items()},
    }
    (rel.out / "expected.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- hostile variants

def raw_header(name: str, size: int, typ: bytes = b"0", mode: int = 0o644,
               raw_size: bytes = b"") -> bytes:
    """One ustar header block, made by hand so that a test can put any value in any field
    (raw_size: the bytes of the size field as they are, e.g. base-256 or junk)."""
    h = bytearray(512)
    encoded = name.encode()
    h[0:len(encoded)] = encoded
    h[100:108] = b"%07o\0" % mode
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = raw_size.ljust(12, b"\0") if raw_size else b"%011o\0" % size
    h[136:148] = b"%011o\0" % MTIME
    h[148:156] = b" " * 8
    h[156:157] = typ
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def raw_member(name: str, data: bytes, typ: bytes = b"0", **kw) -> bytes:
    return raw_header(name, len(data), typ, **kw) + data + bytes(-len(data) % 512)


def raw_end(body: bytes) -> bytes:
    """End-of-archive blocks and padding to a 10 KiB record, as tar writes them."""
    body += bytes(1024)
    return body + bytes(-len(body) % 10240)



HOSTILE_KINDS = ("outer-dotdot", "outer-abs", "outer-symlink", "inner-dotdot", "inner-abs",
                 "inner-symlink", "inner-device", "inner-badname", "val-dotdot", "val-symlink",
                 "truncated", "not-a-tar")


HOSTILE_MESSAGES = {  # what 01_unzip.sh and 05_pack_squashfs.py say about each (tests check it)
    "outer-dotdot": "1 member(s) refused, only WNID.tar files (e.g. n01440764.tar) belong here: "
                    "../n01000002.tar",
    "outer-abs": "1 member(s) refused, only WNID.tar files (e.g. n01440764.tar) belong here: "
                 "/tmp/n01000002.tar",
    "outer-symlink": "1 member(s) refused, only WNID.tar files (e.g. n01440764.tar) belong here: "
                     "n01000002.tar -> /etc/passwd is a symbolic link",
    "inner-dotdot": "member ../../escaped.JPEG refused",
    "inner-abs": "member /tmp/escaped.JPEG refused",
    "inner-symlink": "member n01000002_7.JPEG -> ../../../etc/passwd is a symbolic link; refused",
    "inner-device": "member n01000002_7.JPEG is a character device; refused",
    "inner-badname": "member n01000002_7.sh refused",
    "val-dotdot": "1 member(s) refused, expected names like ILSVRC2012_val_<8 digits>.JPEG: "
                  "../ILSVRC2012_val_00000002.JPEG",
    "val-symlink": "member ILSVRC2012_val_00000002.JPEG -> /etc/passwd is a symbolic link; refused",
    "truncated": "truncated inside member n01000003.tar",
    "not-a-tar": "is an HTML page, not a tar archive",
}


def make_hostile(out: Path, kind: str, seed: int = 0) -> Path:
    """Write one hostile or broken archive to `out` and return its path.

    outer-*/inner-*/truncated/not-a-tar give a train archive; val-* a val archive.
    Each hostile archive also holds one good class (n01000001) so partial success can be seen.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def inner_tar(wnid: str, extra=None) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
            for i in (1, 5, 9):
                add_bytes(t, "%s_%d.JPEG" % (wnid, i), fake_jpeg(rng, 600))
            if extra:
                extra(t)
        return buf.getvalue()

    def link(name: str, target: str, kind_: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
        info = _tarinfo(name, 0)
        info.type = kind_
        info.linkname = target
        return info

    if kind == "not-a-tar":
        path = out / TRAIN_TAR
        path.write_bytes(b"<html><body>Please log in</body></html>\n" * 40)
        return path
    if kind.startswith("val-"):
        path = out / VAL_TAR
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            add_bytes(tar, "ILSVRC2012_val_00000001.JPEG", fake_jpeg(rng, 600))
            if kind == "val-dotdot":
                add_bytes(tar, "../ILSVRC2012_val_00000002.JPEG", fake_jpeg(rng, 600))
            else:
                tar.addfile(link("ILSVRC2012_val_00000002.JPEG", "/etc/passwd"))
        return path

    path = out / TRAIN_TAR
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as outer:
        add_bytes(outer, "n01000001.tar", inner_tar("n01000001"))
        if kind == "outer-dotdot":
            add_bytes(outer, "../n01000002.tar", inner_tar("n01000002"))
        elif kind == "outer-abs":
            add_bytes(outer, "/tmp/n01000002.tar", inner_tar("n01000002"))
        elif kind == "outer-symlink":
            outer.addfile(link("n01000002.tar", "/etc/passwd"))
        elif kind == "inner-dotdot":
            add_bytes(outer, "n01000002.tar", inner_tar(
                "n01000002", lambda t: add_bytes(t, "../../escaped.JPEG", fake_jpeg(rng, 600))))
        elif kind == "inner-abs":
            add_bytes(outer, "n01000002.tar", inner_tar(
                "n01000002", lambda t: add_bytes(t, "/tmp/escaped.JPEG", fake_jpeg(rng, 600))))
        elif kind == "inner-symlink":
            add_bytes(outer, "n01000002.tar", inner_tar(
                "n01000002", lambda t: t.addfile(link("n01000002_7.JPEG", "../../../etc/passwd"))))
        elif kind == "inner-device":
            def dev(t):
                info = _tarinfo("n01000002_7.JPEG", 0)
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
                t.addfile(info)
            add_bytes(outer, "n01000002.tar", inner_tar("n01000002", dev))
        elif kind == "inner-badname":
            add_bytes(outer, "n01000002.tar", inner_tar(
                "n01000002", lambda t: add_bytes(t, "n01000002_7.sh", b"#!/bin/sh\necho hi\n")))
        elif kind == "truncated":
            for w in ("n01000002", "n01000003"):
                add_bytes(outer, w + ".tar", inner_tar(w))
        else:
            raise ValueError("unknown hostile kind %r (one of %s)"
                             % (kind, ", ".join(HOSTILE_KINDS)))
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # cut inside the last inner tar
    return path


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", type=Path, help="folder to write the release into")
    p.add_argument("--preset", choices=sorted(PRESETS), default="unit",
                   help="unit: seconds; bench: 1,000 classes, ~110 KiB images, ~2 GB; "
                        "files: 1,000 classes with the real per-class counts (1,281,167 files)")
    p.add_argument("--classes", type=int, help="number of classes (overrides the preset)")
    p.add_argument("--images", help="images per class as MIN-MAX, or 'real' (overrides the preset)")
    p.add_argument("--val-per-class", type=int, help="val images per class (overrides the preset)")
    p.add_argument("--test", type=int, help="number of test images (overrides the preset)")
    p.add_argument("--kib", type=float, help="mean image size in KiB (overrides the preset)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    p.add_argument("--real-classes", action="store_true",
                   help="take the classes from the real 1,000 (as a source without a devkit "
                        "needs) instead of making them up")
    p.add_argument("--hostile", choices=HOSTILE_KINDS,
                   help="write only this hostile/broken archive instead of a release")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hostile:
        print(make_hostile(args.out, args.hostile, args.seed))
        return 0
    opts = dict(PRESETS[args.preset])
    for key in ("classes", "val_per_class", "test", "kib"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if args.images:
        opts["images"] = "real" if args.images == "real" else tuple(
            int(x) for x in args.images.split("-", 1))
    rel = make_release(args.out, seed=args.seed, progress=True, real_classes=args.real_classes,
                       **opts)
    n_train = sum(len(v) for v in rel.train.values())
    print("wrote %s: %d classes, %d train, %d val, %d test images" % (
        rel.out, len(rel.classes), n_train, len(rel.val), len(rel.test)))
    for split, path in rel.archives.items():
        print("  %-10s %12d B  md5 %s  %s" % (split, rel.sizes[split], rel.md5[split], path.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
