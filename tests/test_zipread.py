"""imagenet_prep.zipread: zips of the standard library and written by hand, read from a file and as a
stream, and zips that are truncated, overlapping, lying or hostile."""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import pytest

from imagenet_prep.console import PrepError
from imagenet_prep.tarstream import Source
from imagenet_prep.zipread import ZipDirectory, file_range
from sourcerelease import ZipItem, write_zip

FILES = {"ILSVRC/": b"", "ILSVRC/a.JPEG": os.urandom(3000), "ILSVRC/b.txt": b"text " * 2000,
         "ILSVRC/empty": b"", "LOC_x.csv": b"ImageId,PredictionString\n" * 50}


def directory(data: bytes, label: str = "t.zip") -> ZipDirectory:
    return ZipDirectory(len(data), lambda a, b: data[a:b], label)


def read(data: bytes, stream: bool = True, chunk: int = 1000, first: int = 0) -> dict[str, bytes]:
    """Every member's name and bytes, read in file order (as a stream: only forward)."""
    d = directory(data)
    src = Source(io.BytesIO(data), seekable=not stream)
    src.skip_to(d.start_of(first))
    return {m.name: b"".join(m.chunks(chunk)) for m in d.members(src, first)}


class Unseekable(io.RawIOBase):
    """An output that cannot seek: zipfile writes data descriptors then."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        return len(b)


def stdlib_zip(files: dict[str, bytes], method=zipfile.ZIP_DEFLATED, force_zip64=False,
               seekable=True) -> bytes:
    out = io.BytesIO() if seekable else Unseekable()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, (2019, 10, 2, 12, 0, 0))
            info.compress_type = method
            if name.endswith("/"):
                z.writestr(info, b"")
                continue
            info.external_attr = 0o100640 << 16
            with z.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return out.getvalue() if seekable else bytes(out.buf)


def items(zip64=False, descriptor=False, **kw) -> bytes:
    return write_zip([ZipItem(n, d, 0 if n.endswith(".JPEG") or n.endswith("/") else 8,
                              0o40755 if n.endswith("/") else 0o100644, descriptor)
                      for n, d in FILES.items()], zip64=zip64, **kw).data


# ----------------------------------------------------------------------------- good zips

@pytest.mark.parametrize("kind", ["stored", "deflated", "force_zip64", "descriptors",
                                  "hand", "hand_zip64", "hand_descriptors", "hand_zip64_descriptors"])
def test_every_member_comes_out_as_written_from_a_file_and_from_a_stream(kind):
    if kind.startswith("hand"):
        data = items(zip64="zip64" in kind, descriptor="descriptors" in kind, comment=b"PK\x05\x06 x")
    else:
        data = stdlib_zip(FILES, zipfile.ZIP_STORED if kind == "stored" else zipfile.ZIP_DEFLATED,
                          force_zip64=kind == "force_zip64", seekable=kind != "descriptors")
    assert read(data, stream=True) == FILES
    assert read(data, stream=False, chunk=7) == FILES
    d = directory(data)
    entries = {e.name: e for e in d.in_file_order()}
    assert entries["ILSVRC/"].is_dir and not entries["ILSVRC/a.JPEG"].is_dir
    if not kind.startswith("hand"):
        assert entries["ILSVRC/a.JPEG"].mode == 0o640
        assert entries["ILSVRC/a.JPEG"].mtime == 1570017600.0          # 2019-10-02 12:00 UTC


def test_file_order_not_directory_order_and_a_resumed_stream():
    layout = write_zip([ZipItem("z", b"1" * 100), ZipItem("a", b"2" * 200), ZipItem("m", b"3")])
    data = bytearray(layout.data)
    # the central directory lists them in another order than the file holds them
    cd = data[layout.cd_offset:layout.end]
    entries, p = [], 0
    while p < len(cd):
        n, x, c = struct.unpack_from("<HHH", cd, p + 28)
        entries.append(cd[p:p + 46 + n + x + c])
        p += 46 + n + x + c
    data[layout.cd_offset:layout.end] = entries[2] + entries[0] + entries[1]
    data = bytes(data)
    d = directory(data)
    assert [e.name for e in d.in_file_order()] == ["z", "a", "m"]
    assert list(read(data)) == ["z", "a", "m"]
    assert read(data, first=1) == {"a": b"2" * 200, "m": b"3"}
    assert d.start_of(3) == layout.cd_offset


def test_more_than_65535_members_use_the_zip64_end_records():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(65540):
            z.writestr("f%05d" % i, b"%d" % i)
    data = buf.getvalue()
    assert b"PK\x06\x06" in data[-200:]
    got = read(data)
    assert len(got) == 65540 and got["f65539"] == b"65539"


def test_offsets_and_sizes_over_4_gib(tmp_path):
    """A stored member of 5 GiB (a sparse file) read through Zip64 fields: the directory and the
    walk over it, without its data."""
    big = (5 << 30) + 3
    name = b"ILSVRC/big.JPEG"
    path = tmp_path / "big.zip"
    with open(path, "wb") as f:
        f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 0, 0, 0x4F42, 0, 0xFFFFFFFF,
                            0xFFFFFFFF, len(name), 20) + name + struct.pack("<HHQQ", 1, 16, big, big))
        data_end = f.tell() + big
        f.seek(data_end)
        cd_offset = f.tell()
        f.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0x32D, 45, 0, 0, 0, 0x4F42, 0,
                            0xFFFFFFFF, 0xFFFFFFFF, len(name), 28, 0, 0, 0, 0o100644 << 16, 0xFFFFFFFF)
                + name + struct.pack("<HHQQQ", 1, 24, big, big, 0))
        cd_size = f.tell() - cd_offset
        end64 = f.tell()
        f.write(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, cd_size, cd_offset))
        f.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, end64, 1))
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, cd_size, 0xFFFFFFFF, 0))
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        d = ZipDirectory(size, file_range(f), "big.zip")
        [m] = list(d.members(Source(f)))
        assert m.size == big and m.data_offset == 30 + len(name) + 20 and d.cd_offset == data_end


# ----------------------------------------------------------------------------- hostile zips

def patch(data: bytes, at: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


def plain(**kw):
    return write_zip([ZipItem("a.JPEG", b"A" * 500, 0), ZipItem("b.txt", b"B" * 5000, 8),
                      ZipItem("c.txt", b"C" * 100, 0)], **kw)


def fails(data: bytes, said: str, stream: bool = True) -> str:
    with pytest.raises(PrepError) as e:
        read(data, stream)
    assert said in str(e.value), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.95, -10, -1])
def test_a_truncated_zip_is_said_to_be_truncated(cut):
    data = plain().data
    n = int(len(data) * cut) if cut > 0 else len(data) + cut
    fails(data[:n], "is not a complete zip archive")


def test_a_stream_that_ends_early_names_the_member():
    z = plain()
    d = directory(z.data)
    src = Source(io.BytesIO(z.data[:z.local[1] + 40]), seekable=False)
    with pytest.raises(PrepError, match="member b.txt: truncated"):
        for m in d.members(src):
            b"".join(m.chunks())


def test_a_stream_that_differs_from_the_directory_read_at_its_end():
    a, b = plain().data, bytearray(plain().data)
    b[-30] ^= 1                                        # a central directory byte, not a member's
    d = directory(a)
    with pytest.raises(PrepError, match="differs from the one read first"):
        for m in d.members(Source(io.BytesIO(bytes(b)), seekable=False)):
            b"".join(m.chunks())


def test_overlapping_members():
    z = plain()
    data = patch(z.data, z.central[1] + 42, "<I", z.local[0] + 10)
    fails(data, "overlaps")
    # one member's data reaching into the central directory
    fails(patch(z.data, z.central[2] + 42, "<I", z.cd_offset - 60), "runs into the central directory")


def test_bytes_hidden_between_members_or_in_front():
    z = write_zip([ZipItem("a", b"1" * 10), ZipItem("b", b"2" * 10, after=b"hidden"), ZipItem("c")])
    fails(z.data, "6 bytes belong to no member (it has no data descriptor)")
    fails(b"junk" + plain().data, "does not end where the end records start")


def test_a_local_header_that_lies_is_refused_naming_the_member():
    z = plain()
    cases = [
        (patch(z.data, z.local[1] + 30, "5s", b"x.txt"), "member b.txt (local header at byte"),
        (patch(z.data, z.local[1] + 8, "<H", 0), "the local header says method 0"),
        (patch(z.data, z.local[1] + 6, "<H", 0x0801), "flags 0x0801"),
        (patch(z.data, z.local[1] + 22, "<I", 5001), "the local header says CRC"),
        (patch(z.data, z.local[1] + 14, "<I", 0), "the local header says CRC 00000000"),
        (patch(z.data, z.local[2], "4s", b"PK\x01\x02"), "no local header signature"),
    ]
    for data, said in cases:
        fails(data, said)


def test_a_flipped_byte_in_the_data_is_caught_by_the_crc():
    z = plain()
    data = bytearray(z.data)
    data[z.local[0] + 30 + 6 + 100] ^= 0x20            # stored member a.JPEG
    said = fails(bytes(data), "member a.JPEG: CRC-32 mismatch")
    assert "download it again" in said
    data = bytearray(z.data)
    data[z.local[1] + 30 + 5 + 3] ^= 0xFF               # deflated member b.txt
    fails(bytes(data), "member b.txt:")


def test_zip_bomb_sizes():
    z = plain()
    # a size no deflate stream of that length can give
    fails(patch(z.data, z.central[1] + 24, "<I", 2 ** 31), "more than deflate can give")
    # a size smaller than what it inflates to: stopped at that size
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = bomb.compress(bytes(20 << 20)) + bomb.flush()
    zb = write_zip([ZipItem("bomb", b"", 0)])
    data = bytearray(zb.data[:zb.local[0] + 30 + 4])
    data += body
    cd_offset = len(data)
    entry = bytearray(zb.data[zb.central[0]:zb.end])
    struct.pack_into("<H", entry, 10, 8)
    struct.pack_into("<III", entry, 16, zlib.crc32(bytes(20 << 20)), len(body), 1 << 20)
    data += entry
    data += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(entry), cd_offset, 0)
    struct.pack_into("<HHHIII", data, 8, 8, 0, 0x4F42, zlib.crc32(bytes(20 << 20)), len(body), 1 << 20)
    fails(bytes(data), "inflates to more than the 1,048,576 bytes")


def test_zip64_fields_missing_or_lying():
    z = plain()
    fails(patch(z.data, z.central[0] + 20, "<I", 0xFFFFFFFF), "Zip64 field of its compressed size is missing")
    fails(patch(z.data, z.end + 10, "<H", 0xFFFF), "no Zip64 end record locator")
    z = plain(zip64=True)
    assert read(z.data)["b.txt"] == b"B" * 5000
    fails(patch(patch(z.data, z.end64 + 24, "<QQ", 4, 4), z.end + 8, "<HH", 3, 3),
          "count on this disk (4) disagrees with the end record's (3)")
    fails(patch(z.data, z.end + 10, "<H", 2), "count (3) disagrees with the end record's (2)")
    fails(patch(z.data, z.locator + 8, "<Q", z.end64 - 8), "no Zip64 end record signature")
    fails(patch(z.data, z.locator + 8, "<Q", z.locator), "does not fit before the locator")
    fails(patch(z.data, z.end64 + 4, "<Q", 40), "does not end where the locator starts")
    fails(patch(z.data, z.locator + 16, "<I", 2), "spans 2 disks")
    # the 8-byte offset of a member, beyond the file; its 8-byte size in the local header
    fails(patch(z.data, z.central[2] + 46 + 5 + 20, "<Q", 1 << 40), "runs into the central directory")
    fails(patch(z.data, z.local[1] + 30 + 5 + 4, "<Q", 4999), "the local header says CRC")
    fails(patch(z.data, z.central[1] + 46 + 5, "<H", 0x9999),
          "Zip64 field of its size and compressed size and offset is missing")


def test_counts_that_disagree():
    z = plain()
    fails(patch(z.data, z.end + 8, "<HH", 2, 2), "bytes after its 2 entries")
    z2 = write_zip([ZipItem("x" * 60), ZipItem("y" * 60)])
    fails(patch(z2.data, z2.end + 8, "<HH", 3, 3), "the directory ends inside it")
    fails(patch(z.data, z.end + 8, "<HH", 400, 400), "400 members cannot fit")
    fails(patch(z.data, z.end + 4, "<HH", 1, 1), "spans several disks")
    fails(patch(z.data, z.end + 8, "<H", 2), "spans several disks")


@pytest.mark.parametrize("name, said", [
    ("../evil.JPEG", "'..', '.' or an empty part in the name"),
    ("ILSVRC/../../evil", "'..', '.' or an empty part in the name"),
    ("/etc/evil", "an absolute path in the name"),
    ("C:evil", "an absolute path in the name"),
    ("a//b", "an empty part"),
    ("a\\..\\b", "a backslash in the name"),
    ("a\nb", "a control character"),
])
def test_names_that_could_leave_the_tree_are_refused(name, said):
    fails(write_zip([ZipItem("ok", b"1"), ZipItem(name, b"2")]).data, said)


@pytest.mark.parametrize("mode, said", [(0o120777, "is a symbolic link"), (0o020644, "is a character device"),
                                        (0o010644, "is a FIFO"), (0o040755, "its name is not a folder's")])
def test_links_devices_and_mislabelled_folders_are_refused(mode, said):
    fails(write_zip([ZipItem("ILSVRC/x.JPEG", b"/etc/passwd", 0, mode)]).data, "member ILSVRC/x.JPEG " + said
          if "is a" in said else said)


def test_a_name_twice_is_refused():
    fails(write_zip([ZipItem("a", b"1"), ZipItem("b", b"2"), ZipItem("a", b"3")]).data,
          "member a appears twice in the central directory (entries 0 and 2)")


def test_encrypted_and_other_methods_are_refused_by_name():
    z = plain()
    data = patch(patch(z.data, z.local[1] + 6, "<H", 0x0801), z.central[1] + 8, "<H", 0x0801)
    fails(data, "member b.txt is encrypted; refused")
    data = patch(patch(z.data, z.local[1] + 8, "<H", 12), z.central[1] + 10, "<H", 12)
    fails(data, "compressed with method 12 (bzip2)")
    data = patch(patch(z.data, z.local[1] + 8, "<H", 99), z.central[1] + 10, "<H", 99)
    fails(data, "is encrypted")


def test_a_lying_data_descriptor():
    z = write_zip([ZipItem("a", b"1" * 100, descriptor=True), ZipItem("b", b"2")])
    assert read(z.data) == {"a": b"1" * 100, "b": b"2"}
    at = z.local[1] - 16
    fails(patch(z.data, at + 8, "<I", 99), "its data descriptor says CRC")
    fails(patch(z.data, at, "4s", b"PK\x07\x09"), "without its signature")


def test_not_a_zip_at_all():
    with pytest.raises(PrepError, match="is 5 bytes: too small to be a zip"):
        directory(b"hello")
    with pytest.raises(PrepError, match="HTML page"):
        directory(b"<!DOCTYPE html><html>please log in</html>" * 10)
    with pytest.raises(PrepError, match="no end of central directory record in its last"):
        directory(os.urandom(70000))
    with pytest.raises(PrepError, match="reading its end .* gave 10 bytes"):
        ZipDirectory(1000, lambda a, b: b"x" * 10, "short.zip")
