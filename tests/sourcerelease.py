#!/usr/bin/env python3
"""Miniature releases of the Hugging Face and Kaggle sources, made from a miniature release.

The images are the very bytes of a minirelease.Release (read back from its archives), so a
pipeline fed from any source must give the tree of the image-net.org route, byte for byte:

    make_hf_targz(rel, OUT)     OUT/data/train_images_K.tar.gz (classes mixed across the files),
                                OUT/data/val_images.tar.gz, OUT/data/test_images.tar.gz,
                                OUT/classes.py: the Hub's layout 1 (members WNID_N_WNID.JPEG, ...)
    make_hf_parquet(rel, OUT)   OUT/data/{train,validation,test}-0000K-of-0000N.parquet,
                                OUT/classes.py: the Hub's layout 2 (image {bytes, path}, label)
    make_kaggle_zip(rel, OUT)   OUT/imagenet-object-localization-challenge.zip, the tree inline
                                (shape "inline") or inside imagenet_object_localization_patched
                                2019.tar.gz (shape "nested"), with the LOC_* files at its top;
                                stored and deflated members, Zip64 on demand
    hub_root, kaggle_root       ROOT/downloads/SOURCE/ with those files and the record source.json,
                                as 00_download.sh --source leaves them (docs/sources.md)
    write_zip(items)            a zip written byte by byte (Zip64 records everywhere on demand,
                                data descriptors, Unix attributes), with the offset of every
                                record, for tests that break one on purpose

It also runs as a command (for the demo and the benchmarks):

    python3 tests/sourcerelease.py OUT [--classes K] [--hf] [--kaggle] ...
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import shutil
import struct
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import minirelease
from minirelease import MTIME, Release, add_bytes

KAGGLE_ZIP = "imagenet-object-localization-challenge.zip"
KAGGLE_NESTED = "imagenet_object_localization_patched2019.tar.gz"
TREE = "ILSVRC/Data/CLS-LOC/"
ZIP_TIME = (2019, 10, 2, 12, 0, 0)          # every zip member's time (the archives are reproducible)


# ----------------------------------------------------------------------------- the images

def release_images(rel: Release) -> dict[str, bytes]:
    """Every image of the release under its canonical name: train/WNID/NAME, val/NAME,
    test/NAME, read from the release's archives."""
    out: dict[str, bytes] = {}
    with tarfile.open(rel.archives["train"]) as outer:
        for m in outer.getmembers():
            inner = tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read()))
            wnid = m.name[:-4]
            for im in inner.getmembers():
                out["train/%s/%s" % (wnid, im.name)] = inner.extractfile(im).read()
    for split in ("val", "test"):
        with tarfile.open(rel.archives[split]) as tar:
            for m in tar.getmembers():
                if m.isfile():
                    out["%s/%s" % (split, m.name.rsplit("/", 1)[-1])] = tar.extractfile(m).read()
    return out


def hf_name(path: str, rel: Release) -> str:
    """The Hub's member name of a canonical name: the class appended (train, val)."""
    split, _, rest = path.partition("/")
    if split == "train":
        wnid, name = rest.split("/")
        return "%s_%s.JPEG" % (name[:-5], wnid)
    if split == "val":
        return "%s_%s.JPEG" % (rest[:-5], rel.val[rest])
    return rest


@dataclass
class SourceFile:
    """One file of a source: its path in the source (data/..., or the zip's name), where it is
    here, its size, SHA-256 and split."""
    path: str
    local: Path
    size: int
    sha256: str
    split: str


def _described(path: str, local: Path, split: str) -> SourceFile:
    data = local.read_bytes()
    return SourceFile(path, local, len(data), hashlib.sha256(data).hexdigest(), split)


@dataclass
class HubLayout:
    """One revision's files: layout 'tar.gz' or 'parquet', data/ files, classes.py."""
    layout: str
    root: Path
    files: list[SourceFile]
    classes_py: Path
    members: dict[str, list[str]] = field(default_factory=dict)   # data/ path -> member names

    def by_path(self) -> dict[str, SourceFile]:
        return {f.path: f for f in self.files}


def _split_of(path: str) -> str:
    return path.partition("/")[0]


def _shares(names: list[str], n: int, rng: random.Random) -> list[list[str]]:
    """`names` shuffled (classes mixed) into n shares of about the same size."""
    names = list(names)
    rng.shuffle(names)
    return [names[i::n] for i in range(n)]


def _targz(path: Path, members: list[tuple[str, bytes]], folder: str = "",
           fmt: int = tarfile.GNU_FORMAT) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=fmt) as tar:
        if folder:
            info = tarfile.TarInfo(folder.rstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name, data in members:
            add_bytes(tar, folder + name, data)


def make_hf_targz(rel: Release, out: Path, train_files: int = 3, prefix: str = "",
                  seed: int = 0, images: Optional[dict[str, bytes]] = None) -> HubLayout:
    """The Hub's tar.gz layout under `out`, the train images shuffled across `train_files`
    files. prefix: a folder in front of every member of every file, with its folder entry
    (e.g. "images/"), or "split" for the split's name as that folder; "": none."""
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    images = images if images is not None else release_images(rel)
    rng = random.Random(seed)
    by_split: dict[str, list[str]] = {s: sorted(p for p in images if _split_of(p) == s)
                                      for s in ("train", "val", "test")}
    plan = [("data/train_images_%d.tar.gz" % k, "train", share)
            for k, share in enumerate(_shares(by_split["train"], train_files, rng))]
    plan += [("data/val_images.tar.gz", "val", by_split["val"]),
             ("data/test_images.tar.gz", "test", by_split["test"])]
    files, members = [], {}
    for path, split, names in plan:
        folder = (split + "/") if prefix == "split" else prefix
        pairs = [(hf_name(p, rel), images[p]) for p in names]
        _targz(out / path, pairs, folder, tarfile.PAX_FORMAT if split == "test" else tarfile.GNU_FORMAT)
        files.append(_described(path, out / path, split))
        members[path] = [folder + n for n, _ in pairs]
    classes = out / "classes.py"
    classes.write_text(minirelease.hf_classes_py(rel))
    return HubLayout("tar.gz", out, files, classes, members)


def make_hf_parquet(rel: Release, out: Path, shards: Optional[dict[str, int]] = None,
                    row_group: int = 4, seed: int = 0,
                    images: Optional[dict[str, bytes]] = None) -> HubLayout:
    """The Hub's Parquet layout under `out`: rows (image {bytes, path}, label) in row groups of
    `row_group` rows, the train rows shuffled across `shards['train']` files."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    shards = shards or {"train": 3, "validation": 2, "test": 2}
    images = images if images is not None else release_images(rel)
    rng = random.Random(seed)
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("label", pa.int64())],
                       metadata={b"huggingface": b'{"info": {"features": {"image": {"_type": '
                                 b'"Image"}, "label": {"_type": "ClassLabel"}}}}'})
    files, members = [], {}
    for hub_split, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        names = sorted(p for p in images if _split_of(p) == split)
        n = shards[hub_split]
        for k, share in enumerate(_shares(names, n, rng)):
            path = "data/%s-%05d-of-%05d.parquet" % (hub_split, k, n)
            rows = [{"image": {"bytes": images[p], "path": hf_name(p, rel)},
                     "label": label_of(p, rel)} for p in share]
            table = pa.Table.from_pylist(rows, schema=schema)
            pq.write_table(table, out / path, row_group_size=row_group)
            files.append(_described(path, out / path, split))
            members[path] = [r["image"]["path"] for r in rows]
    classes = out / "classes.py"
    classes.write_text(minirelease.hf_classes_py(rel))
    return HubLayout("parquet", out, files, classes, members)


def label_of(path: str, rel: Release) -> int:
    """The Hub's label of a canonical name: the sorted-WNID index of its class, -1 for test."""
    split, _, rest = path.partition("/")
    if split == "train":
        return rel.class_index(rest.split("/")[0])
    if split == "val":
        return rel.class_index(rel.val[rest])
    return -1


# ----------------------------------------------------------------------------- Kaggle

def kaggle_tree(rel: Release, images: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The ILSVRC/ tree of the Kaggle competition (folders end with '/', data b''), sorted by
    name: the images, the boxes of half the train images and of every val image, the image
    sets."""
    items: dict[str, bytes] = {}

    def folder(name: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            items.setdefault("/".join(parts[:i]) + "/", b"")

    def box(stem: str, wnid: str) -> bytes:
        return ("<annotation><filename>%s</filename><object><name>%s</name><bndbox><xmin>1</xmin>"
                "<ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>\n"
                % (stem, wnid)).encode()

    train_cls, train_loc = [], []
    for k, (path, data) in enumerate(sorted(images.items())):
        split, _, rest = path.partition("/")
        name = TREE + path
        folder(name)
        items[name] = data
        stem = rest[:-5]
        if split == "train":
            wnid = rest.split("/")[0]
            train_cls.append("%s %d\n" % (stem, len(train_cls) + 1))
            if k % 2 == 0:
                xml = "ILSVRC/Annotations/CLS-LOC/train/%s.xml" % stem
                folder(xml)
                items[xml] = box(stem.split("/")[1], wnid)
                train_loc.append("%s %d\n" % (stem, len(train_loc) + 1))
        elif split == "val":
            xml = "ILSVRC/Annotations/CLS-LOC/val/%s.xml" % stem
            folder(xml)
            items[xml] = box(stem, rel.val[rest])
    val = ["%s %d\n" % (n[:-5], i + 1) for i, n in enumerate(sorted(rel.val))]
    test = ["%s %d\n" % (n[:-5], i + 1) for i, n in enumerate(sorted(rel.test))]
    for name, lines in (("train_cls.txt", train_cls), ("train_loc.txt", train_loc),
                        ("val.txt", val), ("test.txt", test)):
        path = "ILSVRC/ImageSets/CLS-LOC/" + name
        folder(path)
        items[path] = "".join(lines).encode()
    return sorted(items.items())


def kaggle_files(rel: Release, images: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The LOC_* files at the top of the Kaggle zip."""
    train_rows = ["%s,%s 1 2 30 40 \n" % (p.rsplit("/", 1)[1][:-5], p.split("/")[1])
                  for p in sorted(images) if p.startswith("train/")]
    sample = ["%s,%s 0 0 100 100\n" % (n[:-5], rel.wnids_sorted[0]) for n in sorted(rel.test)]
    return [("LOC_sample_submission.csv", ("ImageId,PredictionString\n" + "".join(sample)).encode()),
            ("LOC_synset_mapping.txt", minirelease.kaggle_synset_mapping(rel).encode()),
            ("LOC_train_solution.csv", ("ImageId,PredictionString\n" + "".join(train_rows)).encode()),
            ("LOC_val_solution.csv", minirelease.kaggle_val_solution(rel).encode())]


@dataclass
class KaggleZip:
    """The Kaggle zip made: where it is, its size, its shape and what it holds."""
    file: SourceFile
    shape: str
    names: list[str]                         # every member name of the zip, in file order
    tree: list[str]                          # the names of the ILSVRC/ tree (in the zip or nested)


def make_kaggle_zip(rel: Release, out: Path, shape: str = "inline", force_zip64: bool = False,
                    stored_every: int = 2, images: Optional[dict[str, bytes]] = None,
                    name: str = KAGGLE_ZIP) -> KaggleZip:
    """The Kaggle competition's zip under `out` with the standard library's zipfile: shape
    'inline' (the ILSVRC/ tree as members) or 'nested' (the tree in one tar.gz member); every
    `stored_every`-th file stored, the others deflated (0: all deflated); force_zip64: Zip64
    extra fields in every local header."""
    if shape not in ("inline", "nested"):
        raise ValueError("shape is inline or nested, not %r" % shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = images if images is not None else release_images(rel)
    tree = kaggle_tree(rel, images)
    if shape == "inline":
        members = tree + kaggle_files(rel, images)
    else:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for n, data in tree:
                if n.endswith("/"):
                    info = tarfile.TarInfo(n.rstrip("/"))
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    tar.addfile(info)
                else:
                    add_bytes(tar, n, data)
        members = [(KAGGLE_NESTED, buf.getvalue())] + kaggle_files(rel, images)
    path = out / name
    with zipfile.ZipFile(path, "w") as zf:
        k = 0
        for n, data in members:
            info = zipfile.ZipInfo(n, ZIP_TIME)
            if n.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(info, b"")
                continue
            info.external_attr = 0o100644 << 16
            k += 1
            stored = n == KAGGLE_NESTED or (stored_every and k % stored_every == 0)
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return KaggleZip(_described(name, path, "all"), shape, [n for n, _ in members],
                     [n for n, _ in tree])


# ----------------------------------------------------------------------------- ROOT as 00 leaves it

def hub_record(layout: HubLayout, revision: str = "b" * 40, asked: str = "main",
               hashes_from: str = "the Hub's API", verified=lambda f: True) -> dict:
    """source.json as 00_download.sh --source hf writes it."""
    return {"source": "hf", "repo": "ILSVRC/imagenet-1k", "revision": revision, "asked": asked,
            "layout": "tar" if layout.layout == "tar.gz" else "parquet", "hashes_from": hashes_from,
            "files": [{"path": f.path, "split": f.split, "size": f.size, "sha256": f.sha256,
                       "verified": verified(f)} for f in layout.files]}


def hub_root(tmp_path: Path, layout: HubLayout, name: str = "root", **kw) -> Path:
    """ROOT with the Hub's files in ROOT/downloads/hf/ (copies: tests damage them) and the record."""
    root = tmp_path / name
    hf = root / "downloads" / "hf"
    for f in layout.files:
        (hf / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.local, hf / f.path)
    shutil.copyfile(layout.classes_py, hf / "classes.py")
    write_record(root, "hf", hub_record(layout, **kw))
    return root


def kaggle_root(tmp_path: Path, z: KaggleZip, name: str = "root",
                verified: bool = True) -> Path:
    """ROOT with the Kaggle zip in ROOT/downloads/kaggle/ (a copy) and the record."""
    root = tmp_path / name
    (root / "downloads" / "kaggle").mkdir(parents=True)
    shutil.copyfile(z.file.local, root / "downloads" / "kaggle" / KAGGLE_ZIP)
    write_record(root, "kaggle", {"source": "kaggle", "competition": KAGGLE_ZIP[:-4],
                                  "files": [{"path": KAGGLE_ZIP, "split": "all", "size": z.file.size,
                                             "sha256": None, "verified": verified}]})
    return root


def write_record(root: Path, source: str, doc: dict) -> None:
    (root / "downloads" / source / "source.json").write_text(json.dumps(doc, indent=1))


# ----------------------------------------------------------------------------- zips by hand

@dataclass
class ZipItem:
    """A member for write_zip: name, data, method (0 stored, 8 deflated), Unix mode (with its
    type bits; 0: none), a data descriptor after it, and bytes hidden after it (in no record)."""
    name: str
    data: bytes = b""
    method: int = 8
    mode: int = 0o100644
    descriptor: bool = False
    after: bytes = b""


@dataclass
class ZipLayout:
    """What write_zip wrote: the bytes, and where each record starts."""
    data: bytes
    local: list[int]                     # each member's local header
    central: list[int]                   # each member's central directory entry
    cd_offset: int
    end64: int                           # the Zip64 end record (-1: none)
    locator: int                         # the Zip64 locator (-1: none)
    end: int                             # the end of central directory record


def write_zip(items: list[ZipItem], zip64: bool = False, comment: bytes = b"") -> ZipLayout:
    """A zip of `items` in their order. zip64: every size and offset in the Zip64 extra fields
    (0xFFFFFFFF in the headers), the counts in a Zip64 end record (0xFFFF in the end record)."""
    out = bytearray()
    local, central, entries = [], [], []
    dos_time, dos_date = (12 << 11), ((2019 - 1980) << 9) | (10 << 5) | 2
    for it in items:
        raw = it.name.encode()
        body = it.data
        if it.method == 8:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = c.compress(it.data) + c.flush()
        crc, size, csize = zlib.crc32(it.data), len(it.data), len(body)
        flags = 0x0800 | (0x0008 if it.descriptor else 0)
        offset = len(out)
        local.append(offset)
        l_crc, l_size, l_csize = (0, 0, 0) if it.descriptor else (crc, size, csize)
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, l_size, l_csize)
            l_size = l_csize = 0xFFFFFFFF
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45 if zip64 else 20, flags, it.method,
                           dos_time, dos_date, l_crc, l_csize, l_size, len(raw), len(extra))
        out += raw + extra + body
        if it.descriptor:
            out += struct.pack("<4sIQQ", b"PK\x07\x08", crc, csize, size) if zip64 else \
                struct.pack("<4sIII", b"PK\x07\x08", crc, csize, size)
        out += it.after
        entries.append((raw, it, flags, crc, size, csize, offset))
    cd_offset = len(out)
    for raw, it, flags, crc, size, csize, offset in entries:
        central.append(len(out))
        extra = b""
        c_size, c_csize, c_offset = size, csize, offset
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, csize, offset)
            c_size = c_csize = c_offset = 0xFFFFFFFF
        out += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", (3 << 8) | 45, 45 if zip64 else 20,
                           flags, it.method, dos_time, dos_date, crc, c_csize, c_size, len(raw),
                           len(extra), 0, 0, 0, (it.mode << 16) | (0x10 if it.name.endswith("/") else 0),
                           c_offset)
        out += raw + extra
    cd_size = len(out) - cd_offset
    end64 = locator = -1
    count = len(items)
    if zip64:
        end64 = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size,
                           cd_offset)
        locator = len(out)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, end64, 1)
        count16, cd_size32, cd_offset32 = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        count16, cd_size32, cd_offset32 = count, cd_size, cd_offset
    end = len(out)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count16, count16, cd_size32, cd_offset32,
                       len(comment)) + comment
    return ZipLayout(bytes(out), local, central, cd_offset, end64, locator, end)


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", type=Path, help="folder to write into (release/, hf-targz/, hf-parquet/, "
                   "kaggle/, kaggle-nested/)")
    p.add_argument("--preset", choices=sorted(minirelease.PRESETS), default="unit",
                   help="the miniature release's preset (tests/minirelease.py)")
    p.add_argument("--classes", type=int, help="number of classes (overrides the preset)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    p.add_argument("--train-files", type=int, default=3, help="train_images_K.tar.gz files")
    p.add_argument("--prefix", default="", help="a folder in front of the Hub's tar.gz members")
    p.add_argument("--zip64", action="store_true", help="Zip64 extra fields in the Kaggle zip's "
                   "local headers")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    opts = dict(minirelease.PRESETS[a.preset])
    if a.classes is not None:
        opts["classes"] = a.classes
    rel = minirelease.make_release(a.out / "release", seed=a.seed, **opts)
    images = release_images(rel)
    made = [make_hf_targz(rel, a.out / "hf-targz", a.train_files, a.prefix, a.seed, images),
            make_hf_parquet(rel, a.out / "hf-parquet", seed=a.seed, images=images)]
    for layout in made:
        for f in layout.files:
            print("  %-13s %12d B  sha256 %s  %s" % ("hf " + layout.layout, f.size, f.sha256, f.local))
    for shape in ("inline", "nested"):
        z = make_kaggle_zip(rel, a.out / ("kaggle" if shape == "inline" else "kaggle-nested"), shape,
                            a.zip64, images=images)
        print("  %-13s %12d B  sha256 %s  %s" % ("kaggle " + shape, z.file.size, z.file.sha256,
                                                 z.file.local))
    return 0


if __name__ == "__main__":
    sys.exit(main())
