"""imagenet_prep.tarstream: the tar header loop and the strict tarfile wrapper, on real archives."""
from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest

from imagenet_prep.console import PrepError
from imagenet_prep.tarstream import Source, iter_tar, number, read_data, read_tarfile, sniff
from minirelease import MTIME, raw_end, raw_header, raw_member


def members_of(data: bytes, need_eof: bool = True, seekable: bool = True, end=None):
    src = Source(io.BytesIO(data), seekable=seekable)
    out = []
    for m in iter_tar(src, 0, len(data) if end is None else end, "x.tar", need_eof):
        out.append((m, b"".join(read_data(src, m, 7, "x.tar"))))
    return out


def tarfile_bytes(fmt: int, files: dict[str, bytes], mtime: float = MTIME) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), mtime, 0o640
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


LONG = "n01440764/" + "x" * 150 + ".JPEG"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_names_sizes_times_and_data_as_tarfile_wrote_them(fmt):
    files = {"a.JPEG": b"A" * 700, "dir/b.JPEG": b"", "c.JPEG": bytes(range(256)) * 5}
    if fmt != tarfile.USTAR_FORMAT:
        files[LONG] = b"long name"
    got = members_of(tarfile_bytes(fmt, files, MTIME + (0.5 if fmt == tarfile.PAX_FORMAT else 0)))
    assert {m.name: data for m, data in got} == files
    for m, _ in got:
        assert m.is_file() and m.mode == 0o640 and m.offset % 512 == 0
        assert m.mtime == MTIME + (0.5 if fmt == tarfile.PAX_FORMAT else 0)


def test_a_stream_gives_the_same_members_and_every_byte_once():
    data = tarfile_bytes(tarfile.GNU_FORMAT, {"a": b"1" * 1000, LONG: b"2" * 3000, "c": b"3"})
    seen = hashlib.md5()
    src = Source(io.BytesIO(data), seekable=False, seen=seen.update)
    names = [m.name for m in iter_tar(src, 0, len(data), "x.tar", need_eof=True)]   # data skipped
    assert names == ["a", LONG, "c"]
    assert src.pos == len(data) and seen.hexdigest() == hashlib.md5(data).hexdigest()


def test_base256_sizes():
    assert number(b"\x80" + (600).to_bytes(11, "big"), "") == 600
    assert number(b"\x80" + (200 << 30).to_bytes(11, "big"), "") == 200 << 30   # 200 GiB
    data = raw_end(raw_header("big.JPEG", 0, raw_size=b"\x80" + (600).to_bytes(11, "big"))
                   + b"B" * 600 + bytes(424))
    [(m, body)] = members_of(data)
    assert m.size == 600 and body == b"B" * 600
    with pytest.raises(PrepError, match="negative base-256 number"):
        number(b"\xff" * 12, "")


@pytest.mark.parametrize("raw", [b"1e9", b"1_0", b"+7", b"-1", b"0o17", b"9"])
def test_a_size_that_is_not_octal_is_an_error(raw):
    with pytest.raises(PrepError, match="bad number"):
        members_of(raw_end(raw_header("a", 0, raw_size=raw)))


@pytest.mark.parametrize("records, said", [
    (b"0 \n", "record at offset 0 claims 0 bytes"),
    (b" 5 a=b\n", "record at offset 0 has no length"),
    (b"3 \n", "record at offset 0 claims 3 bytes"),
    (b"99 path=x\n", "record at offset 0 claims 99 bytes"),
    (b"9 pathx\n\n", "has no '='"),
    (b"12 size=abc\n", "size='abc' is not a number"),
    (b"13 mtime=now\n", "mtime='now' is not a time"),
    (b"x path=a\n", "has no length"),
])
def test_bad_pax_records_are_errors_that_end(records, said):
    data = raw_end(raw_member("PaxHeaders/a", records, b"x") + raw_member("a", b"data"))
    with pytest.raises(PrepError, match=said):
        members_of(data)


def test_pax_size_and_path_apply_to_the_next_member_only():
    pax = b"16 path=renamed\n" + b"10 size=3\n"
    data = raw_end(raw_member("PaxHeaders/a", pax, b"x") + raw_header("a", 99) + b"abc" + bytes(509)
                   + raw_member("b", b"bb"))
    assert [(m.name, d) for m, d in members_of(data)] == [("renamed", b"abc"), ("b", b"bb")]


def test_truncation_at_inside_and_after_a_header():
    data = raw_end(raw_member("a", b"A" * 600) + raw_member("b", b"B" * 10))
    second = 512 + 1024                                  # where b's header starts
    with pytest.raises(PrepError, match=r"truncated: the archive ends at byte 1536, inside or before "
                                        r"a tar header \(after member a\)"):
        members_of(data[:second])                        # cut exactly at a header
    with pytest.raises(PrepError, match="inside or before a tar header"):
        members_of(data[:second + 100])                  # cut inside a header
    with pytest.raises(PrepError, match="truncated inside member b"):
        members_of(data[:second + 512 + 5])              # cut inside the data
    with pytest.raises(PrepError, match="truncated inside member a"):
        members_of(data[:900])


def test_the_end_of_an_archive_is_where_its_file_ends():
    good = raw_end(raw_member("a", b"A"))
    assert len(members_of(good)) == 1
    one = raw_member("a", b"A")
    assert len(members_of(one + bytes((1 << 20) - len(one)))) == 1   # padded to a 1 MiB record
    with pytest.raises(PrepError, match="goes on for 5.0 MiB more: an unfinished download"):
        members_of(good + bytes(5 << 20))
    with pytest.raises(PrepError, match="data after the end-of-archive marker"):
        members_of(good + b"x")
    # inside another archive (need_eof=False) reading stops at the end blocks or at `end`
    assert len(members_of(good + b"junk after", need_eof=False)) == 1
    assert len(members_of(raw_member("a", b"A"), need_eof=False)) == 1


def test_every_mutation_of_an_archive_ends_in_members_or_an_error():
    """Random bytes changed in headers: the loop always ends (no hang), with a PrepError at worst."""
    base = tarfile_bytes(tarfile.PAX_FORMAT, {LONG: b"x" * 100, "b": b"y" * 700, "c": b"z"})
    rng = random.Random(1)
    outcomes = set()
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(0, 2048)] = rng.randrange(256)
        try:
            members_of(bytes(data), seekable=rng.random() < 0.5)
            outcomes.add("ok")
        except PrepError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}


# ----------------------------------------------------------------------------- read_tarfile

def write_targz(path: Path, files: dict[str, bytes]) -> bytes:
    raw = tarfile_bytes(tarfile.GNU_FORMAT, files)
    path.write_bytes(gzip.compress(raw))
    return raw


def test_read_tarfile_lists_a_good_archive(tmp_path):
    write_targz(tmp_path / "d.tar.gz", {"top/a": b"a", "top/b": b"b" * 2000})
    tar, members = read_tarfile(str(tmp_path / "d.tar.gz"))
    with tar:
        assert [m.name for m in members] == ["top/a", "top/b"]
        assert tar.extractfile(members[1]).read() == b"b" * 2000


def test_read_tarfile_refuses_what_tarfile_would_silently_cut(tmp_path):
    raw = tarfile_bytes(tarfile.GNU_FORMAT, {"top/a": b"a" * 100, "top/b": b"b" * 2000,
                                             "top/c": b"c"})
    cases = {
        "cut.tar.gz": gzip.compress(raw)[:-30],                     # gzip stream cut short
        "cut-data.tar": raw[:512 * 3 + 300],                          # inside b's data
        "cut-header.tar": raw[:1024 + 100],                           # inside b's header
    }
    bad = bytearray(raw)
    bad[1024 + 10] ^= 0xFF                                           # b's header: bad checksum
    cases["bad-header.tar"] = bytes(bad)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PrepError, match="damaged"):
            read_tarfile(str(tmp_path / name))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(PrepError, match="not a readable .tar or .tar.gz"):
        read_tarfile(str(tmp_path / "junk.tar"))


@pytest.mark.parametrize("head, size, said", [
    (b"", 0, "is empty"),
    (b"<!DOCTYPE html><html><body>Log in</body></html>", 50, "is an HTML page, not a tar archive"),
    (b"\x1f\x8b\x08" + bytes(600), 600, "gzip-compressed, but the train archive is a plain tar"),
    (bytes(1024), 1024, "holds no members"),
    (b"PK\x03\x04" + bytes(600), 600, "is not a tar archive"),
])
def test_sniff_names_what_a_file_is_instead(head, size, said):
    with pytest.raises(PrepError, match=said):
        sniff("f", size, head, allow_gzip=False, what="train archive")
    assert sniff("f", 600, b"\x1f\x8b\x08" + bytes(600), allow_gzip=True) == "gz"
    assert sniff("f", 1024, raw_member("a", b"x"), allow_gzip=False) == "tar"
