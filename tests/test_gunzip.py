"""imagenet_prep.gunzip, and iter_tar on a tar read through it (its end known only at the end)."""
from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import zlib

import pytest

from imagenet_prep.console import PrepError
from imagenet_prep.gunzip import GunzipReader
from imagenet_prep.tarstream import Source, iter_tar, read_data
from minirelease import raw_end, raw_member

DATA = os.urandom(50000) + bytes(200000) + b"tail"


class Trickle(io.RawIOBase):
    """A raw stream that gives at most `n` bytes a read, as a socket may."""

    def __init__(self, data: bytes, n: int) -> None:
        self.f, self.n = io.BytesIO(data), n

    def read(self, size: int = -1) -> bytes:
        return self.f.read(min(self.n, size if size >= 0 else self.n))


def gunzip(raw: bytes, piece: int = 4096, trickle: int = 0) -> bytes:
    g = GunzipReader(Trickle(raw, trickle) if trickle else io.BytesIO(raw), "x.gz")
    out = []
    while True:
        part = g.read(piece)
        if not part:
            break
        assert len(part) == piece or not g.read(1)          # short only at the end
        out.append(part)
    assert g.raw_pos == len(raw)
    return b"".join(out)


def header(flags: int = 0, extra: bytes = b"", name: bytes = b"", comment: bytes = b"",
           hcrc: bool = False) -> bytes:
    h = b"\x1f\x8b\x08" + bytes([flags | (2 if hcrc else 0)]) + bytes(4) + b"\x00\x03"
    if extra:
        h += struct.pack("<H", len(extra)) + extra
    if name:
        h += name + b"\0"
    if comment:
        h += comment + b"\0"
    if hcrc:
        h += struct.pack("<H", zlib.crc32(h) & 0xFFFF)
    return h


def member(data: bytes, head: bytes = b"") -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (head or header()) + c.compress(data) + c.flush() + \
        struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def test_what_gzip_wrote_comes_out_whole_in_exact_pieces():
    raw = gzip.compress(DATA, mtime=0)
    assert gunzip(raw) == DATA
    assert gunzip(raw, piece=777, trickle=13) == DATA


def test_header_fields_and_several_members():
    head = header(4 | 8 | 16, extra=b"AB\x02\x00hi", name=b"train_images_0.tar", comment=b"c",
                  hcrc=True)
    raw = member(DATA, head) + member(b"second") + gzip.compress(b"", mtime=0)
    g = GunzipReader(io.BytesIO(raw), "x.gz")
    assert g.read() == DATA + b"second" and g.members == 3


@pytest.mark.parametrize("change, said", [
    (lambda r: r[:-8] + struct.pack("<I", zlib.crc32(DATA) ^ 1) + r[-4:],
     "CRC-32 mismatch at the end of gzip member 1"),
    (lambda r: r[:-4] + struct.pack("<I", len(DATA) + 1),
     "decompressed to 250,004 bytes, its trailer says 250,005"),
    (lambda r: r[:-3], "truncated: the compressed stream ends at byte"),
    (lambda r: r[:len(r) // 2], "truncated: the compressed stream ends at byte"),
    (lambda r: r + b"\0" * 512, "after the end of the gzip data"),
    (lambda r: r + b"garbage!!!", "after the end of the gzip data"),
    (lambda r: r[:3] + b"\xe0" + r[4:], "reserved flag bits set"),
    (lambda r: r[:2] + b"\x07" + r[3:], "method 7, not deflate"),
    (lambda r: r[:3] + b"\x02" + r[4:10] + b"\0\0" + r[10:], "its CRC-16 does not match"),
    (lambda r: r[:3] + b"\x08" + r[4:10] + b"n" * 70000, "file name is longer than 65,536 bytes"),
    (lambda r: r[:20] + bytes([r[20] ^ 0xFF]) + r[21:], "x.gz:"),
    (lambda r: b"PK\x03\x04" + r, "not a gzip file (it starts with b'PK"),
    (lambda r: b"<!DOCTYPE html><html>" + r, "is an HTML page"),
    (lambda r: b"", "truncated: the compressed stream ends at byte 0, in a gzip header"),
])
def test_damage_is_caught_and_said(change, said):
    with pytest.raises(PrepError) as e:
        GunzipReader(io.BytesIO(change(gzip.compress(DATA, mtime=0))), "x.gz").read()
    assert said in str(e.value)


# ----------------------------------------------------------------------------- a tar through it

def tar_gz(members: list[tuple[str, bytes]], pad: int = 10240) -> bytes:
    body = b"".join(raw_member(n, d) for n, d in members) + bytes(1024)
    return gzip.compress(body + bytes(-len(body) % pad), mtime=0)


def names_in(raw: bytes) -> list[tuple[str, bytes]]:
    src = Source(GunzipReader(io.BytesIO(raw), "x.tar.gz"), seekable=False)
    return [(m.name, b"".join(read_data(src, m, 1000, "x.tar.gz")))
            for m in iter_tar(src, 0, None, "x.tar.gz", need_eof=True)]


def test_a_tar_through_gunzip_to_its_end():
    files = [("a.JPEG", b"A" * 700), ("b.JPEG", b""), ("c.JPEG", os.urandom(5000))]
    assert names_in(tar_gz(files)) == files
    assert names_in(tar_gz(files, pad=512)) == files                  # no record padding
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:                 # as tarfile writes it
        for n, d in files:
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            t.addfile(ti, io.BytesIO(d))
    assert names_in(buf.getvalue()) == files


def test_data_skipped_unread_still_passes_the_gzip_checks():
    raw = tar_gz([("a", b"A" * 700), ("b", b"B" * 9000)])
    g = GunzipReader(io.BytesIO(raw), "x.tar.gz")
    assert [m.name for m in iter_tar(Source(g, seekable=False), 0, None, "x", True)] == ["a", "b"]
    assert g.raw_pos == len(raw) and g.members == 1
    bad = raw[:-8] + struct.pack("<I", 1) + raw[-4:]
    with pytest.raises(PrepError, match="CRC-32 mismatch"):
        list(iter_tar(Source(GunzipReader(io.BytesIO(bad), "x"), seekable=False), 0, None, "x", True))


@pytest.mark.parametrize("body, said", [
    (raw_member("a", b"1") + bytes(512), "truncated at byte 1,536, in the end-of-archive blocks"),
    (raw_member("a", b"1") + bytes(1024) + b"\1" + bytes(511),
     "data after the end-of-archive marker at byte 1,024"),
    (raw_member("a", b"1") + bytes((1 << 20) + 2048), "goes on with more than 1.0 MiB of zeros"),
    (raw_member("a", b"1" * 5000)[:3000], "truncated inside member a"),
    (raw_member("a", b"1")[:300], "truncated: the archive ends at byte 300"),
])
def test_the_end_of_a_tar_of_unknown_length_is_checked(body, said):
    with pytest.raises(PrepError) as e:
        names_in(gzip.compress(body, mtime=0))
    assert said in str(e.value)


def test_a_tar_of_unknown_length_must_be_read_to_its_end():
    with pytest.raises(ValueError):
        list(iter_tar(Source(io.BytesIO(raw_end(b""))), 0, None, "x", need_eof=False))
