"""The files of the Hugging Face and Kaggle sources as members under their canonical names.

Each reader here is the stack of layers for one kind of file, fed with bytes (a file, or a
stream that the fetch engine gives):

    Hub tar.gz     bytes -> GunzipReader -> iter_tar (to the stream's end) -> HfNames
    Hub Parquet    file  -> ParquetRows (a row group at a time)           -> HfNames.row
    Kaggle zip     bytes -> ZipDirectory.members (CRC-32 each)            -> kaggle_member
                   and its nested tar.gz member -> GunzipReader -> iter_tar -> kaggle_member

and yields Entry records: the canonical name (sourcenames.Named), size, time, mode, and the
member's bytes, which must be read (Entry.chunks) before the next entry is asked for. The checks
that need the whole file (a gzip's CRC-32 and length, a tar's end, the zip's central directory
read again at its end) happen when the iteration ends: a file is good only once its reader has
finished without an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

from .console import shown
from .extract import CHUNK, refuse_unless_file
from .gunzip import GunzipReader
from .parquetread import ParquetRows
from .sourcenames import HF_FORMS, KAGGLE_FORMS, KAGGLE_NESTED, NESTED, HfNames, Named, kaggle_member
from .tarstream import Member, Source, iter_tar, read_data
from .zipread import ZipDirectory, ZipMember


@dataclass
class Entry:
    """A member of a source under its canonical name. chunks() gives its bytes, checked, once;
    mtime None: the source keeps no time (Parquet)."""
    named: Named
    size: int
    mtime: Optional[float]
    mode: int
    origin: str                                   # where it comes from, for messages
    chunks: Callable[[], Iterator[bytes]]


class IterReader:
    """A reader over an iterator of byte strings: read(n) gives exactly n bytes, fewer only at
    the end (where the iterator's own checks, e.g. a zip member's CRC-32, have run)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self.parts, self.buf, self.at = parts, b"", 0

    def read(self, n: int) -> bytes:
        out = []
        while n > 0:
            if self.at >= len(self.buf):
                self.buf, self.at = next(self.parts, b""), 0
                if not self.buf:
                    break
            piece = self.buf[self.at:self.at + n]
            self.at += len(piece)
            n -= len(piece)
            out.append(piece)
        return b"".join(out)


def _tar_entry(src: Source, m: Member, named: Named, label: str) -> Entry:
    return Entry(named, m.size, m.mtime, m.mode, "%s: member %s" % (label, shown(m.name)),
                 lambda: read_data(src, m, CHUNK, label))


# ----------------------------------------------------------------------------- Hugging Face

def hf_tar_entries(raw: BinaryIO, split: str, label: str) -> Iterator[Entry]:
    """The images of one of the Hub's tar.gz files (of `split`), read from `raw`, the
    compressed bytes from the first."""
    src = Source(GunzipReader(raw, label), seekable=False)
    names = HfNames(split, label)
    for m in iter_tar(src, 0, None, label, need_eof=True):
        if m.type == b"5":
            names.folder_entry(m.name)
            continue
        refuse_unless_file(m, label, HF_FORMS[split])
        yield _tar_entry(src, m, names.name(m.name), label)


def hf_parquet_entries(path: str, split: str, wnids: list[str],
                       label: Optional[str] = None) -> Iterator[Entry]:
    """The images of one of the Hub's Parquet files (of `split`); `wnids`: the classes in
    sorted-WNID order (the labels index them)."""
    with ParquetRows(path, label) as rows:
        names = HfNames(split, rows.label)
        for row, name, lab, data in rows.rows():
            named = names.row(name, lab, wnids, row)
            yield Entry(named, len(data), None, 0o644, "%s: row %d (%s)" % (rows.label, row, shown(name)),
                        lambda data=data: iter((data,)))


# ----------------------------------------------------------------------------- Kaggle

def kaggle_entries(directory: ZipDirectory, src: Source, first: int = 0) -> Iterator[Entry]:
    """What the Kaggle zip holds, from its `first`-th member in file order (a resumed stream):
    the images and the LOC_* files, and those inside its nested tar.gz (read as it passes)."""
    label = directory.label
    for m in directory.members(src, first):
        named = kaggle_member(m.name, label)
        if named is None:
            continue
        if named.split == NESTED:
            yield from nested_entries(m, label)
            continue
        yield Entry(named, m.size, m.entry.mtime, m.entry.mode,
                    "%s: member %s" % (label, shown(m.name)), m.chunks)


def nested_entries(member: ZipMember, label: str) -> Iterator[Entry]:
    """The images of the tar.gz inside the older Kaggle zip: its bytes pass the zip member's
    CRC-32, gunzip (CRC-32, length) and the tar reader, and its names the same rules."""
    inner = "%s: %s" % (label, KAGGLE_NESTED)
    src = Source(GunzipReader(IterReader(member.chunks()), inner), seekable=False)
    for m in iter_tar(src, 0, None, inner, need_eof=True):
        if m.type == b"5":
            kaggle_member(m.name.rstrip("/") + "/", inner, top=False)    # checked, skipped
            continue
        refuse_unless_file(m, inner, KAGGLE_FORMS)
        named = kaggle_member(m.name, inner, top=False)
        if named is None:
            continue
        yield _tar_entry(src, m, named, inner)
