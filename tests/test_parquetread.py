"""imagenet_prep.parquetread: the Hub's Parquet layout read row group by row group, every value checked."""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from imagenet_prep import parquetread
from imagenet_prep.console import PrepError
from imagenet_prep.parquetread import ParquetRows

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema([("image", IMAGE), ("label", pa.int64())])
ROWS = [{"image": {"bytes": b"\xff\xd8jpeg %d" % i,
                   "path": "n0144076%d_%d_n0144076%d.JPEG" % (i % 3, i, i % 3)},
         "label": i % 3} for i in range(10)]


def write(path, rows=ROWS, schema=SCHEMA, row_group: int = 3) -> str:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group)
    return str(path)


def rows_of(path) -> list:
    with ParquetRows(str(path)) as r:
        return list(r.rows())


def test_rows_come_out_in_order_one_row_group_at_a_time(tmp_path):
    path = write(tmp_path / "train-00000-of-00001.parquet")
    with ParquetRows(path) as r:
        assert (r.groups, r.count) == (4, 10)
        got = list(r.rows())
    assert got == [(i, row["image"]["path"], row["label"], row["image"]["bytes"])
                   for i, row in enumerate(ROWS)]
    # large_binary / large_string columns are the same layout
    big = pa.schema([("image", pa.struct([("bytes", pa.large_binary()), ("path", pa.large_string())])),
                     ("label", pa.int64())])
    assert rows_of(write(tmp_path / "large.parquet", schema=big)) == got


@pytest.mark.parametrize("schema, said", [
    (pa.schema([("image", IMAGE), ("label", pa.int32())]), "column label is int32, not int64"),
    (pa.schema([("image", pa.binary()), ("label", pa.int64())]), "column image is binary, not a struct"),
    (pa.schema([("image", IMAGE), ("label", pa.int64()), ("x", pa.int8())]), "columns image, label, x"),
    (pa.schema([("image", pa.struct([("bytes", pa.string()), ("path", pa.string())])),
                ("label", pa.int64())]), "image.bytes is string, not binary"),
    (pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.binary())])),
                ("label", pa.int64())]), "image.path is binary, not a string"),
])
def test_another_schema_is_refused_before_any_row(tmp_path, schema, said):
    rows = [{k: v for k, v in r.items()} for r in ROWS]
    for r in rows:
        r.setdefault("x", 1)
        if pa.types.is_binary(schema.field("image").type):
            r["image"] = b"x"
        elif pa.types.is_string(schema.field("image").type.field("bytes").type):
            r["image"] = {"bytes": "x", "path": "p"}
        elif pa.types.is_binary(schema.field("image").type.field("path").type):
            r["image"] = {"bytes": b"x", "path": b"p"}
    path = write(tmp_path / "x.parquet", rows, schema)
    with pytest.raises(PrepError, match="is not of the Hub's ILSVRC/imagenet-1k layout: " + said):
        ParquetRows(path)


@pytest.mark.parametrize("row, said", [
    ({"image": None, "label": 1}, "row 4 has no image"),
    ({"image": {"bytes": None, "path": "a.JPEG"}, "label": 1},
     r"row 4 \(a.JPEG\) has no image bytes \(null\)"),
    ({"image": {"bytes": b"", "path": "a.JPEG"}, "label": 1}, r"has no image bytes \(empty\)"),
    ({"image": {"bytes": b"x", "path": None}, "label": 1}, "row 4 has no image.path"),
    ({"image": {"bytes": b"x", "path": "a.JPEG"}, "label": None}, r"row 4 \(a.JPEG\) has no label"),
])
def test_every_value_of_every_row_is_checked(tmp_path, row, said):
    path = write(tmp_path / "x.parquet", ROWS[:4] + [row] + ROWS[5:])
    with pytest.raises(PrepError, match=said):
        rows_of(path)


def test_files_that_are_not_parquet(tmp_path):
    good = open(write(tmp_path / "good.parquet"), "rb").read()
    cases = {"html.parquet": b"<!DOCTYPE html><html>log in</html>" * 20,
             "cut.parquet": good[:len(good) // 2], "empty.parquet": b"",
             "zip.parquet": b"PK\x03\x04" + bytes(100)}
    said = {"html.parquet": "an HTML page", "cut.parquet": "no PAR1 at its end",
            "empty.parquet": "no PAR1 at its start", "zip.parquet": "no PAR1 at its start"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(PrepError, match=said[name]):
            ParquetRows(str(tmp_path / name))
    # its footer damaged, the magic bytes kept
    footer = int.from_bytes(good[-8:-4], "little")
    for k, at in enumerate((len(good) - 8 - footer, len(good) - 8)):
        bad = bytearray(good)
        bad[at:at + 4] = b"\xff\xff\xff\x7f"                # the metadata, or its length
        (tmp_path / ("footer%d.parquet" % k)).write_bytes(bytes(bad))
        with pytest.raises(PrepError, match="footer%d.parquet is not a readable Parquet file" % k):
            rows_of(tmp_path / ("footer%d.parquet" % k))
    os.mkfifo(tmp_path / "fifo.parquet")
    with pytest.raises(PrepError, match="not a regular file: a FIFO"):
        ParquetRows(str(tmp_path / "fifo.parquet"))


def test_a_page_crc_when_the_file_has_them(tmp_path):
    path = tmp_path / "crc.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS, schema=SCHEMA), path, row_group_size=3,
                   write_page_checksum=True, compression="none")
    assert len(rows_of(path)) == 10
    data = bytearray(path.read_bytes())
    data[data.index(b"jpeg 7") + 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(PrepError, match="row group 2 cannot be read .*CRC"):
        rows_of(path)


def test_a_row_group_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = write(tmp_path / "x.parquet")
    monkeypatch.setattr(parquetread, "ROW_GROUP_MAX", 64)
    with pytest.raises(PrepError, match="row group 0 claims .* more than the 64 B read at once"):
        rows_of(path)


def test_without_pyarrow_the_message_says_what_to_install(tmp_path):
    path = write(tmp_path / "x.parquet")
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from imagenet_prep.console import PrepError\n"
            "from imagenet_prep.parquetread import ParquetRows\n"
            "try:\n    ParquetRows(%r)\nexcept PrepError as e:\n    print(e)\n" % path)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert "needs pyarrow" in out.stdout and "-m pip install pyarrow" in out.stdout, out
