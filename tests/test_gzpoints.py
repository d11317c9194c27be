"""imagenet_prep.gzpoints: a gzip stream entered again at a deflate block boundary (zlib's window
and bit position, through libz), by gunzip.GunzipReader and by the Hub's tar.gz reader."""
from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest

from imagenet_prep import gzpoints
from imagenet_prep.console import PrepError
from imagenet_prep.gunzip import GunzipReader
from imagenet_prep.gzpoints import Point, PointInflater
from imagenet_prep.sourceread import HfTarReader

pytestmark = pytest.mark.skipif(not gzpoints.available(), reason="no usable libz: %s"
                                % gzpoints.unavailable_reason())

DATA = b"".join(b"%d ImageNet %s\n" % (i, os.urandom(i % 11)) for i in range(120000))


def read_all(g: GunzipReader, piece: int = 65536) -> tuple[bytes, list[Point]]:
    out, points = [], []
    while True:
        part = g.read(piece)
        if not part:
            return b"".join(out), points
        out.append(part)
        points.extend(p for p in g.points if p not in points)


def test_every_point_resumes_to_the_same_bytes_and_passes_the_trailer_checks():
    raw = gzip.compress(DATA, mtime=0) + gzip.compress(DATA[:900000], mtime=0)   # two gzip members
    whole, points = read_all(GunzipReader(io.BytesIO(raw), "x.gz", span=256 << 10))
    assert whole == DATA + DATA[:900000]
    assert len(points) >= 8 and {p.member for p in points} == {0, 1}
    for p in points:
        skip = p.offset % 64                           # as from a hash state at a 64-byte boundary
        again = GunzipReader(io.BytesIO(raw[p.offset - skip:]), "x.gz", point=p, skip=skip)
        assert again.read() == whole[p.pos:] and again.raw_pos == len(raw)
        # and through JSON, as a checkpoint holds it
        q = Point.from_json(json.loads(json.dumps(p.to_json())))
        assert q == p


def test_a_wrong_point_is_caught_by_the_gzip_checks():
    raw = gzip.compress(DATA, mtime=0)
    _, points = read_all(GunzipReader(io.BytesIO(raw), "x.gz", span=256 << 10))
    p = points[1]
    bad = Point(p.offset, p.bits, p.byte, bytes(len(p.window)), p.pos, p.member, p.crc, p.size)
    with pytest.raises(PrepError, match="x.gz: (CRC-32 mismatch|the compressed data is corrupt)"):
        GunzipReader(io.BytesIO(raw[p.offset:]), "x.gz", point=bad).read()
    bad = Point(p.offset, p.bits, p.byte, p.window, p.pos, p.member, p.crc ^ 1, p.size)
    with pytest.raises(PrepError, match="CRC-32 mismatch"):
        GunzipReader(io.BytesIO(raw[p.offset:]), "x.gz", point=bad).read()


@pytest.mark.parametrize("change", [
    {"version": "gzpoint0"}, {"offset": -1}, {"offset": 0}, {"bits": 8}, {"byte": 256}, {"crc": 1 << 32},
    {"pos": "12"}, {"size": True}, {"window": "not base64!"}, {"size": 10 ** 12},
])
def test_a_point_read_back_is_checked(change):
    p = Point(100, 3, 0x5A, b"w" * 50, 5000, 0, 123, 5000).to_json()
    assert Point.from_json(dict(p)).pos == 5000
    with pytest.raises(ValueError):
        Point.from_json(dict(p, **change))
    with pytest.raises(ValueError):
        Point.from_json(dict(p, window="QQ==" * 20000))          # a window of 60,000 bytes


def test_without_libz_the_reason_is_said(monkeypatch):
    monkeypatch.setattr(gzpoints, "_LIB", (None, "libz.so.1: cannot open shared object file"))
    assert not gzpoints.available()
    with pytest.raises(OSError, match="not available: libz.so.1: cannot open"):
        PointInflater(span=1)


def hub_tar_gz(n: int = 400) -> tuple[bytes, dict[str, bytes]]:
    files = {"n01440764_%d_n01440764.JPEG" % i: os.urandom(1500) + bytes(500 + i) for i in range(n)}
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue(), {"train/n01440764/" + k[:-15] + ".JPEG": v for k, v in files.items()}


def test_a_hub_tar_gz_resumed_inside_the_file():
    raw, want = hub_tar_gz()
    first = HfTarReader(io.BytesIO(raw), "train", "train_images_0.tar.gz", span=64 << 10)
    got, checkpoints = {}, []
    for e in first.entries():
        got[e.named.path] = b"".join(e.chunks())
        doc = first.checkpoint()
        if doc is not None:
            checkpoints.append((len(got), json.loads(json.dumps(doc))))
    assert got == want and len(checkpoints) > 100
    for done, doc in checkpoints[::40]:               # as if killed after `done` images
        offset = doc["point"]["offset"]
        again = HfTarReader(io.BytesIO(raw[offset:]), "train", "train_images_0.tar.gz", span=64 << 10,
                            resume=doc)
        rest = {e.named.path: b"".join(e.chunks()) for e in again.entries()}
        assert list(rest) == list(want)[done:] and all(rest[k] == want[k] for k in rest)


def test_a_checkpoint_that_is_not_one_is_refused():
    raw, _ = hub_tar_gz(50)
    r = HfTarReader(io.BytesIO(raw), "train", "t.tar.gz", span=8 << 10)
    for e in r.entries():
        b"".join(e.chunks())
    doc = r.checkpoint()
    assert doc is not None
    for change in ({"next": doc["next"] + 1}, {"next": doc["point"]["pos"] - 512}, {"folder": "../"},
                   {"point": {"version": "x"}}):
        with pytest.raises(ValueError):
            HfTarReader(io.BytesIO(raw), "train", "t.tar.gz", resume=dict(doc, **change))
