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
from .gzpoints import Point
from .parquetread import ParquetRows
from .sourcenames import HF_FORMS, KAGGLE_FORMS, KAGGLE_NESTED, NESTED, HfNames, Named, kaggle_member
from .tarstream import BLOCK, Member, Source, iter_tar, read_data
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

class HfTarReader:
    """The images of one of the Hub's tar.gz files (of `split`), read from `raw`: its compressed
    bytes from the first, or, to resume, from a checkpoint's point.offset (or `skip` bytes before
    it) with `resume` that checkpoint.

    With `span` (bytes of output between resume points; gzpoints must be available),
    checkpoint() gives, once an entry's data has been read, where a reader may start again after
    it: {"point": a gzip resume point, "next": the next tar header's position, "folder": the
    folder the names are in}. A resumed reader checks the rest of the file as strictly (the gzip
    member's CRC-32 and length cover the bytes before the point too)."""

    def __init__(self, raw: BinaryIO, split: str, label: str, span: int = 0,
                 resume: Optional[dict] = None, skip: int = 0) -> None:
        self.split, self.label = split, label
        self.names = HfNames(split, label)
        self.next = self.data_end = 0             # after the last entry: its next header, its data's end
        point = None
        if resume is not None:
            point, self.next, folder = self._resume(resume)
            self.names.folder, self.data_end = folder, self.next
        self.gz = GunzipReader(raw, label, span, point, skip)
        while self.gz.pos < self.next:
            if not self.gz.read(min(self.next - self.gz.pos, CHUNK)):
                break                                 # iter_tar says where it ends
        self.src = Source(self.gz, pos=self.gz.pos, seekable=False)

    @staticmethod
    def _resume(doc: dict) -> tuple[Point, int, Optional[str]]:
        """A checkpoint's fields, checked; ValueError when it is not one."""
        point = Point.from_json(doc.get("point") if isinstance(doc, dict) else None)
        nxt, folder = doc.get("next"), doc.get("folder")
        if type(nxt) is not int or nxt < point.pos or nxt % BLOCK:
            raise ValueError("the checkpoint's next tar header is not a block boundary after its point")
        if folder is not None and not (isinstance(folder, str) and (folder == "" or (
                folder.endswith("/") and HfNames.folder_ok(folder[:-1])))):
            raise ValueError("the checkpoint's folder is not a folder name")
        return point, nxt, folder

    def entries(self) -> Iterator[Entry]:
        for m in iter_tar(self.src, self.next, None, self.label, need_eof=True):
            if m.type == b"5":
                self.names.folder_entry(m.name)
                continue
            refuse_unless_file(m, self.label, HF_FORMS[self.split])
            entry = _tar_entry(self.src, m, self.names.name(m.name), self.label)
            self.next = m.offset + (m.size + BLOCK - 1) // BLOCK * BLOCK
            self.data_end = m.offset + m.size
            yield entry

    def checkpoint(self) -> Optional[dict]:
        """Where a reader may start after the entries handed out so far (their data read), or
        None (no resume point yet)."""
        point = self.gz.point_before(self.next)
        if point is None or self.src.pos < self.data_end:
            return None
        return {"point": point.to_json(), "next": self.next, "folder": self.names.folder}


def hf_tar_entries(raw: BinaryIO, split: str, label: str) -> Iterator[Entry]:
    """The images of one of the Hub's tar.gz files (of `split`), read from `raw`, the
    compressed bytes from the first."""
    return HfTarReader(raw, split, label).entries()


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

def kaggle_entries(directory: ZipDirectory, src: Source, first: int = 0,
                   end: Optional[int] = None) -> Iterator[Entry]:
    """What the Kaggle zip holds, from its `first`-th member in file order (a resumed stream, or
    a range of the file) to the end of the zip or, with `end`, to the `end`-th member, whose local
    header is read (so the bytes between the last member given and it are checked too): the
    images and the LOC_* files, and those inside its nested tar.gz (read as it passes)."""
    label = directory.label
    stop = len(directory) if end is None else end
    for k, m in enumerate(directory.members(src, first, check_end=stop == len(directory)), first):
        if k == stop:
            return
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
