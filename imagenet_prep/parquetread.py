"""Reading the Hub's Parquet files (ILSVRC/imagenet-1k, layout 2): rows of (image, label), checked.

Each file holds the columns `image`, a struct {bytes: binary, path: string} (the JPEG's bytes
unchanged and the tar.gz member name it had), and `label`, an int64 (the class's index in
sorted-WNID order; -1 for test). ParquetRows reads one row group at a time (memory: one row
group, a few MB in the Hub's files; a row group claiming more than ROW_GROUP_MAX is refused
before it is read), checks the schema before the first row and every value of every row (no
null image, bytes, path or label; the counts of the footer and of each row group agree), and the
CRC of every page that has one. The Hub's files carry no page CRCs: their SHA-256 (the tree API's
lfs.oid) is what proves their bytes.

pyarrow reads the format; it is needed only for this layout, so it is imported on first use and
its absence is said with what to install.
"""
from __future__ import annotations

import os
import sys
from typing import Iterator, Optional

from .console import PrepError, human, shown, thousands
from .files import NotRegular, open_regular
from .tarstream import REDO, _why

MAGIC = b"PAR1"
ROW_GROUP_MAX = 1 << 30           # the largest row group read (uncompressed bytes, as its footer says)
COLUMNS = ("image", "label")


def pyarrow_modules():
    """(pyarrow, pyarrow.parquet), or a PrepError that says what to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise PrepError("this revision of ILSVRC/imagenet-1k holds Parquet files, and reading them "
                        "needs pyarrow, which this Python (%s) cannot import (%s): install it with "
                        "'%s -m pip install pyarrow' (or '-r requirements.txt'), or use the tar.gz "
                        "revision, the default" % (sys.executable, e, sys.executable)) from None
    return pyarrow, pyarrow.parquet


def _schema_problem(pa, schema) -> Optional[str]:
    """None if the Arrow schema is the Hub's layout, else what differs."""
    names = list(schema.names)
    if sorted(names) != sorted(COLUMNS):
        return "columns %s, not image and label" % ", ".join(names)
    image, label = schema.field("image").type, schema.field("label").type
    if not pa.types.is_struct(image) or sorted(image.field(i).name for i in range(image.num_fields)) \
            != ["bytes", "path"]:
        return "column image is %s, not a struct of bytes and path" % image
    kind = {image.field(i).name: image.field(i).type for i in range(image.num_fields)}
    if not (pa.types.is_binary(kind["bytes"]) or pa.types.is_large_binary(kind["bytes"])):
        return "image.bytes is %s, not binary" % kind["bytes"]
    if not (pa.types.is_string(kind["path"]) or pa.types.is_large_string(kind["path"])):
        return "image.path is %s, not a string" % kind["path"]
    if not pa.types.is_int64(label):
        return "column label is %s, not int64" % label
    return None


class ParquetRows:
    """The rows of one Parquet file of the Hub's layout, at `path` (a regular file), checked.

    rows() yields (row number, image.path, label, image.bytes). `label` names the file in
    messages. Use as a context manager, or call close()."""

    def __init__(self, path: str, label: Optional[str] = None) -> None:
        self.path, self.label = path, label or os.path.basename(path)
        pa, pq = pyarrow_modules()
        self.pa = pa
        try:
            fd = open_regular(path)
        except NotRegular as e:
            raise PrepError("%s is %s; %s" % (path, e, REDO)) from None
        self.f = os.fdopen(fd, "rb")
        try:
            self._open(pa, pq)
        except BaseException:
            self.f.close()
            raise

    def _open(self, pa, pq) -> None:
        size = os.fstat(self.f.fileno()).st_size
        head = os.pread(self.f.fileno(), 4, 0)
        foot = os.pread(self.f.fileno(), 4, max(0, size - 4))
        if size < 12 or head != MAGIC or foot != MAGIC:
            low = os.pread(self.f.fileno(), 1024, 0).lstrip().lower()
            what = "an HTML page (a login or error page saved instead of the data?)" \
                if low.startswith((b"<!doc", b"<html")) else \
                "not a Parquet file (no PAR1 at its %s)" % ("start" if head != MAGIC else "end")
            raise PrepError("%s is %s; %s" % (self.label, what, REDO))
        try:
            self.pf = pq.ParquetFile(self.f, page_checksum_verification=True)
            md = self.pf.metadata
            schema = self.pf.schema_arrow
        except (pa.ArrowException, OSError, ValueError) as e:
            raise PrepError("%s is not a readable Parquet file (%s); %s" % (self.label, _why(e), REDO)) \
                from None
        problem = _schema_problem(pa, schema)
        if problem:
            raise PrepError("%s is not of the Hub's ILSVRC/imagenet-1k layout: %s; is it the right "
                            "file?" % (self.label, problem))
        self.groups, self.count = md.num_row_groups, md.num_rows
        counted = sum(md.row_group(i).num_rows for i in range(self.groups))
        if self.count < 0 or counted != self.count:
            raise PrepError("%s: its footer says %s rows, its row groups hold %s; the file is "
                            "damaged: %s" % (self.label, thousands(self.count), thousands(counted), REDO))

    def rows(self) -> Iterator[tuple[int, str, int, bytes]]:
        """(row number, image.path, label, image.bytes) of every row, one row group at a time."""
        row = 0
        md = self.pf.metadata
        for g in range(self.groups):
            meta = md.row_group(g)
            if meta.total_byte_size > ROW_GROUP_MAX or meta.total_byte_size < 0:
                raise PrepError("%s: row group %d claims %s, more than the %s read at once; the file "
                                "is damaged or not the Hub's: %s" % (self.label, g,
                                                                    human(meta.total_byte_size),
                                                                    human(ROW_GROUP_MAX), REDO))
            try:
                table = self.pf.read_row_group(g, columns=list(COLUMNS))
                values = table.to_pylist()
            except (self.pa.ArrowException, OSError, ValueError) as e:
                raise PrepError("%s: row group %d cannot be read (%s); %s"
                                % (self.label, g, _why(e), REDO)) from None
            if len(values) != meta.num_rows:
                raise PrepError("%s: row group %d holds %s rows, its footer says %s; %s"
                                % (self.label, g, thousands(len(values)), thousands(meta.num_rows), REDO))
            for v in values:
                yield self._row(row, v)
                row += 1
            del table, values

    def _row(self, row: int, v: dict) -> tuple[int, str, int, bytes]:
        image, label = v.get("image"), v.get("label")
        where = "%s: row %d" % (self.label, row)
        if not isinstance(image, dict):
            raise PrepError("%s has no image (null); the file is not the Hub's: %s" % (where, REDO))
        data, path = image.get("bytes"), image.get("path")
        if not isinstance(path, str) or not path:
            raise PrepError("%s has no image.path; the file is not the Hub's: %s" % (where, REDO))
        where = "%s (%s)" % (where, shown(path))
        if not isinstance(data, bytes) or not data:
            raise PrepError("%s has no image bytes (%s); %s"
                            % (where, "null" if data is None else "empty", REDO))
        if label is None:
            raise PrepError("%s has no label (null); %s" % (where, REDO))
        return row, path, label, data

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "ParquetRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
