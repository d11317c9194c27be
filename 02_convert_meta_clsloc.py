#!/usr/bin/env python3
"""02_convert_meta_clsloc.py — turn the devkit's MATLAB class list into plain CSV/JSON/text.

Reads the 2012 devkit's ``meta.mat`` (1,860 synsets; the 1,000 leaves with num_children == 0 are
the classes) or the 2015/2017 devkit's ``meta_clsloc.mat`` (the 1,000 classes), checks it, and
writes the class metadata every later step reads. This is the only step that reads a MATLAB file.

Usage:
    02_convert_meta_clsloc.py [--root DIR] [--mat PATH | --devkit ARCHIVE] [--out DIR]

Example:
    02_convert_meta_clsloc.py --root /data/imagenet
    02_convert_meta_clsloc.py --root /data/imagenet \
        --devkit /data/imagenet/downloads/ILSVRC2012_devkit_t12.tar.gz

Before (after 01_unzip.sh; either devkit, or both)::

    ROOT/devkit/ILSVRC2012_devkit_t12/data/meta.mat
    ROOT/devkit/ILSVRC/devkit/data/meta_clsloc.mat        (preferred when both are there)

After::

    ROOT/meta/synsets.csv              ilsvrc_id,class_index,wnid,words,description,num_train_images
                                       one row per class, devkit ID order (ID 1 = n02119789 kit fox)
    ROOT/meta/synsets.json             the same records, plus the source file and its format
    ROOT/meta/class_index.json         {"0": ["n01440764", "tench"], ...} sorted-WNID order (Keras)
    ROOT/meta/LOC_synset_mapping.txt   "WNID words" sorted by WNID (Kaggle / Caffe synset_words.txt)
    ROOT/meta/map_clsloc.txt           "WNID ID name" in devkit ID order (as in the 2015 devkit)

ilsvrc_id is the devkit's 1..1000 ID (used by the validation ground truth); class_index is the
0..999 position in sorted-WNID order (torchvision ImageFolder, Keras, TFDS, timm).
Every file is written to a temporary name, fsynced and renamed, and is byte-identical on a rerun;
a rerun with unchanged output says "already done". Exit codes: 0 ok, 1 failure, 2 usage.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import scipy.io

PROG = "02_convert_meta_clsloc.py"
EXPECTED_CLASSES = 1000
REAL_TRAIN_TOTAL = 1_281_167           # sum of num_train_images in the real devkits
META_NAMES = ("meta_clsloc.mat", "meta.mat")   # preference order: newer devkit first
MAT_MAGIC = b"MATLAB"                   # start of the 128-byte header of a v5 / v7.3 .mat
MAT_HEADER = 128                        # then v5 data elements, each an 8-byte tag and its bytes
MAX_MAT_BYTES = 64 << 20               # the real files are 84 KB and 177 KB
WNID_RE = re.compile(r"n[0-9]{8}")
CSV_COLUMNS = ("ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images")

# field names of the `synsets` struct in each devkit
FORMAT_2012 = "ILSVRC2012 meta.mat"
FORMAT_2015 = "ILSVRC2015 meta_clsloc.mat"
FIELDS = {
    FORMAT_2012: dict(id="ILSVRC2012_ID", wnid="WNID", words="words", description="gloss",
                      num_train_images="num_train_images"),
    FORMAT_2015: dict(id="ILSVRC2015_CLSLOC_ID", wnid="WNID", words="name",
                      description="description", num_train_images="num_train_images"),
}

OUT_CSV = "synsets.csv"
OUT_JSON = "synsets.json"
OUT_KERAS = "class_index.json"
OUT_LOC = "LOC_synset_mapping.txt"
OUT_MAP = "map_clsloc.txt"

log = logging.getLogger(PROG)


class MetaError(Exception):
    """A problem with the input or output that the user can fix; printed without a traceback."""


@dataclass(frozen=True)
class Synset:
    ilsvrc_id: int
    wnid: str
    words: str
    description: str
    num_train_images: int

    @property
    def name(self) -> str:
        """First lemma, spaces as underscores: the map_clsloc.txt / Keras class name."""
        return self.words.split(",")[0].strip().replace(" ", "_")


@dataclass
class Source:
    """Where the .mat came from: a file, or a member of a devkit archive."""

    label: str                # stable text for synsets.json (relative to ROOT when inside it)
    shown: str                # what messages call it
    data: bytes


# ----------------------------------------------------------------------------- reading values

def _unwrap(value: Any) -> Any:
    """Strip scipy's 1x1 array wrapping (loadmat without squeeze_me); empty arrays become None."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.size != 1:
            return value
        value = value.reshape(-1)[0]
    return value


def _as_int(value: Any, what: str) -> int:
    """An integer stored as int, float (MATLAB double), numpy scalar, or 1x1 array."""
    v = _unwrap(value)
    if isinstance(v, (bool, np.bool_)) or v is None:
        raise ValueError("%s is %r, not a number" % (what, v))
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    raise ValueError("%s is %r, not a whole number" % (what, v))


def _as_text(value: Any, what: str) -> str:
    """A MATLAB char row as str ('' for an empty char array)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size > 1 \
            and value.dtype.itemsize == 4:
        value = "".join(value.reshape(-1))     # loadmat(chars_as_strings=False): one char each
    v = _unwrap(value)
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, str):          # includes np.str_
        return str(v)
    raise ValueError("%s is %r, not text" % (what, v))


def _count_children(value: Any) -> int:
    """`children` comes back empty, as a single int, or as an array of IDs."""
    if isinstance(value, np.ndarray):
        if value.dtype == object and value.size == 1:
            return _count_children(value.reshape(-1)[0])
        return int(value.size)
    return 0 if value is None else 1


# ----------------------------------------------------------------------------- the struct

def detect_format(names: tuple) -> str:
    if "ILSVRC2015_CLSLOC_ID" in names:
        fmt = FORMAT_2015
    elif "ILSVRC2012_ID" in names:
        fmt = FORMAT_2012
    else:
        raise MetaError("its `synsets` struct has fields %s; expected the ILSVRC2012 meta.mat "
                        "fields (ILSVRC2012_ID, WNID, words, gloss, num_children, ...) or the "
                        "ILSVRC2015 meta_clsloc.mat fields (ILSVRC2015_CLSLOC_ID, WNID, name, "
                        "description, num_train_images)" % ", ".join(names))
    needed = list(FIELDS[fmt].values())
    missing = [f for f in needed if f not in names]
    if fmt == FORMAT_2012 and "num_children" not in names and "children" not in names:
        missing.append("num_children")
    if missing:
        raise MetaError("its `synsets` struct looks like the %s format but lacks the field(s) %s"
                        % (fmt, ", ".join(missing)))
    return fmt


def _struct_entries(synsets: Any) -> tuple[tuple, list]:
    """Field names and entries (as dicts) of a struct array, however scipy loaded it: a record
    array (the default), or mat_struct objects (struct_as_record=False), squeezed or not."""
    if isinstance(synsets, np.ndarray) and synsets.dtype.names is not None:
        names = tuple(synsets.dtype.names)
        return names, [{k: e[k] for k in names} for e in synsets.reshape(-1, order="F")]
    items = synsets.reshape(-1, order="F") if isinstance(synsets, np.ndarray) \
        and synsets.dtype == object else [synsets]
    if len(items) and all(hasattr(e, "_fieldnames") for e in items):
        names = tuple(items[0]._fieldnames)
        return names, [{k: getattr(e, k, None) for k in names} for e in items]
    raise MetaError("its `synsets` variable is not a MATLAB struct array (got %s)"
                    % (getattr(synsets, "dtype", type(synsets).__name__),))


def synsets_from_struct(synsets: Any) -> tuple[str, list[Synset]]:
    """The classes of a loaded `synsets` struct, in devkit ID order. Works for every way scipy
    loads it (squeeze_me, mat_dtype, struct_as_record, chars_as_strings).

    2012: only the leaves (num_children == 0). 2015/2017: every entry.
    """
    names, entries = _struct_entries(synsets)
    fmt = detect_format(names)
    f = FIELDS[fmt]
    out = []
    for n, entry in enumerate(entries, start=1):
        try:
            if fmt == FORMAT_2012:
                if "num_children" in names:
                    kids = _as_int(entry["num_children"], "num_children")
                else:
                    kids = _count_children(entry["children"])
                if kids != 0:
                    continue
            out.append(Synset(
                ilsvrc_id=_as_int(entry[f["id"]], f["id"]),
                wnid=_as_text(entry[f["wnid"]], f["wnid"]),
                words=_as_text(entry[f["words"]], f["words"]),
                description=_as_text(entry[f["description"]], f["description"]),
                num_train_images=_as_int(entry[f["num_train_images"]], f["num_train_images"])))
        except ValueError as e:
            raise MetaError("entry %d of `synsets`: %s" % (n, e)) from None
    out.sort(key=lambda s: s.ilsvrc_id)
    return fmt, out


def _some(items: list, limit: int = 5) -> str:
    text = ", ".join(str(x) for x in items[:limit])
    return text + (", ... (%d in all)" % len(items) if len(items) > limit else "")


def validate(classes: list[Synset], expect: int) -> None:
    """Exactly `expect` classes, IDs exactly 1..expect, WNIDs unique and shaped n + 8 digits."""
    if len(classes) != expect:
        raise MetaError(
            "it holds %d classes, expected %d; the file is damaged or not an ILSVRC devkit file: "
            "download the devkit again (--expect-classes is only for miniature test devkits)"
            % (len(classes), expect))
    ids = [s.ilsvrc_id for s in classes]
    if ids != list(range(1, expect + 1)):
        seen, dup = set(), []
        for i in ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        missing = sorted(set(range(1, expect + 1)) - seen)
        extra = sorted(i for i in seen if not 1 <= i <= expect)
        parts = [("missing %s" % _some(missing)) if missing else "",
                 ("duplicated %s" % _some(dup)) if dup else "",
                 ("out of range %s" % _some(extra)) if extra else ""]
        raise MetaError("its class IDs are not exactly 1..%d: %s"
                        % (expect, "; ".join(p for p in parts if p)))
    bad = [s for s in classes if not WNID_RE.fullmatch(s.wnid)]
    if bad:
        raise MetaError("malformed WNID(s), expected n + 8 digits: %s"
                        % _some(["%r (ID %d)" % (s.wnid, s.ilsvrc_id) for s in bad]))
    by_wnid: dict[str, list[int]] = {}
    for s in classes:
        by_wnid.setdefault(s.wnid, []).append(s.ilsvrc_id)
    dups = ["%s (IDs %s)" % (w, ", ".join(map(str, i))) for w, i in by_wnid.items() if len(i) > 1]
    if dups:
        raise MetaError("duplicate WNID(s): %s" % _some(dups))
    for s in classes:
        if not s.name:
            raise MetaError("class %d (%s) has no name in its words field" % (s.ilsvrc_id, s.wnid))
        if any(c in s.words + s.description for c in "\r\n"):
            raise MetaError("class %d (%s) has a line break in its text" % (s.ilsvrc_id, s.wnid))
        if s.num_train_images < 0:
            raise MetaError("class %d (%s) has num_train_images %d"
                            % (s.ilsvrc_id, s.wnid, s.num_train_images))


def truncation(data: bytes) -> Optional[str]:
    """How a .mat is cut short: shorter than its header, or a v5 file that ends inside a data
    element. None when it is complete, or its header is not a v5 one (scipy then says what it is).

    After the 128-byte header a v5 file is a sequence of data elements (the real devkit files
    hold one, compressed); each starts with an 8-byte tag giving its type and byte count, so a
    file that ends inside one is truncated wherever it was cut.
    """
    size = format(len(data), ",")
    if len(data) < MAT_HEADER:
        return "%s bytes, cut inside the %d-byte header" % (size, MAT_HEADER)
    order = {b"IM": "little", b"MI": "big"}.get(data[126:128])
    if order is None or int.from_bytes(data[124:126], order) != 0x0100:
        return None                      # not a v5 file: scipy's message says what it is
    if len(data) == MAT_HEADER:
        return "%s bytes, cut right after the %d-byte header: no data follows it" \
            % (size, MAT_HEADER)
    at = MAT_HEADER
    while at < len(data):
        if len(data) - at < 8:
            return "%s bytes, cut inside the tag of the data element at byte %s" \
                % (size, format(at, ","))
        first = int.from_bytes(data[at:at + 4], order)
        if first >> 16:                  # small element: type, count and data in 8 bytes
            at += 8
            continue
        end = at + 8 + int.from_bytes(data[at + 4:at + 8], order)
        if end > len(data):
            return "%s bytes, but the data element at byte %s ends at byte %s" \
                % (size, format(at, ","), format(end, ","))
        at = end
    return None


def load_classes(src: Source, expect: int) -> tuple[str, list[Synset]]:
    """Parse and check the .mat bytes; every problem becomes a MetaError naming the file."""
    try:
        if not src.data:
            raise MetaError("it is empty (0 bytes) — re-download or re-extract the devkit")
        cut = truncation(src.data)
        truncated = "it is a truncated MATLAB .mat file (%s; an interrupted download or " \
            "extraction?) — re-download or re-extract the devkit" % cut
        if MAT_MAGIC.startswith(src.data):
            raise MetaError(truncated)
        if not src.data.startswith(MAT_MAGIC):   # every v5/v7.3 file; v4 files cannot hold structs
            head = src.data[:40].decode("ascii", "replace").strip()
            what = " — an HTML page (a login page saved instead of the file?)" \
                if src.data.lstrip()[:1] == b"<" else ""
            raise MetaError("it is not a MATLAB .mat file: it starts with %r%s; re-download or "
                            "re-extract the devkit" % (head, what))
        try:
            mat = scipy.io.loadmat(io.BytesIO(src.data), squeeze_me=True,
                                   variable_names=["synsets"])
        except NotImplementedError as e:   # MATLAB v7.3 files are HDF5
            raise MetaError("it is a MATLAB v7.3 (HDF5) file, which scipy cannot read (%s); the "
                            "devkit's own file is a v5 .mat: use the one from the devkit archive"
                            % e) from None
        except Exception as e:  # scipy raises ValueError, OSError, MatReadError, ... on junk
            if cut:
                raise MetaError(truncated) from None
            raise MetaError("it is a damaged or truncated MATLAB .mat file (%d bytes; scipy says "
                            "%s: %s) — re-download or re-extract the devkit"
                            % (len(src.data), type(e).__name__, e)) from None
        if "synsets" not in mat:
            if cut:
                raise MetaError(truncated)
            raise MetaError("it is a .mat file but holds no `synsets` variable; this is not the "
                            "devkit's meta.mat or meta_clsloc.mat")
        fmt, classes = synsets_from_struct(mat["synsets"])
        validate(classes, expect)
    except MetaError as e:
        raise MetaError("%s: %s" % (src.shown, e)) from None
    return fmt, classes


# ----------------------------------------------------------------------------- finding the file

def _label(path: Path, root: Path) -> str:
    """Path text for synsets.json: relative to ROOT when inside it, else absolute."""
    full = path.resolve()
    try:
        return full.relative_to(root.resolve()).as_posix()
    except ValueError:
        return full.as_posix()


def _read_file(path: Path, root: Path) -> Source:
    if not path.exists():
        raise MetaError("%s: no such file" % path)
    if path.is_dir():
        raise MetaError("%s is a folder; pass the .mat file itself (e.g. %s)"
                        % (path, path / "data" / "meta.mat"))
    size = path.stat().st_size
    if size > MAX_MAT_BYTES:
        raise MetaError("%s: %d bytes is far too large for a devkit meta file" % (path, size))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MetaError("cannot read %s: %s" % (path, e.strerror or e)) from None
    return Source(label=_label(path, root), shown=str(path), data=data)


def find_in_folder(folder: Path) -> list[Path]:
    """meta_clsloc.mat / meta.mat files under `folder`, newer devkit first; hidden (temporary)
    folders such as an unfinished extraction are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in META_NAMES:
            if name in filenames and (Path(dirpath) / name).is_file():
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: (META_NAMES.index(p.name), p.as_posix()))


def _devkit_hint(root: Path) -> str:
    archives = sorted((root / "downloads").glob("*devkit*.tar*")) if (root / "downloads").is_dir() \
        else []
    if archives:
        return "run 01_unzip.sh --root %s first, or read the archive directly: %s --root %s " \
               "--devkit %s" % (root, PROG, root, archives[0])
    return "run 01_unzip.sh first, or pass --mat PATH or --devkit ARCHIVE"


def source_from_root(root: Path) -> Source:
    devkit = root / "devkit"
    if not devkit.is_dir():
        raise MetaError("no devkit folder at %s; %s" % (devkit, _devkit_hint(root)))
    found = find_in_folder(devkit)
    if not found:
        raise MetaError("no meta_clsloc.mat or meta.mat under %s; %s"
                        % (devkit, _devkit_hint(root)))
    if len(found) > 1:
        log.info("found %d devkit meta files (%s); using the newer devkit's", len(found),
                 ", ".join(map(str, found)))
    return _read_file(found[0], root)


def source_from_archive(archive: Path, root: Path) -> Source:
    """Read only the meta .mat out of a devkit .tar.gz (or plain .tar) into memory."""
    if not archive.exists():
        raise MetaError("%s: no such file" % archive)
    if archive.is_dir():
        found = find_in_folder(archive)
        if not found:
            raise MetaError("no meta_clsloc.mat or meta.mat under the folder %s" % archive)
        return _read_file(found[0], root)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.rsplit("/", 1)[-1] in META_NAMES]
            if not members:
                raise MetaError("%s holds no meta_clsloc.mat or meta.mat; is it the devkit archive "
                                "(ILSVRC2012_devkit_t12.tar.gz or ILSVRC2017_devkit.tar.gz)?"
                                % archive)
            members.sort(key=lambda m: (META_NAMES.index(m.name.rsplit("/", 1)[-1]), m.name))
            member = members[0]
            if len(members) > 1:
                log.info("%s holds %d meta files; using %s", archive, len(members), member.name)
            if member.size > MAX_MAT_BYTES:
                raise MetaError("%s: member %s is %d bytes, far too large for a devkit meta file"
                                % (archive, member.name, member.size))
            fobj = tar.extractfile(member)
            data = fobj.read() if fobj is not None else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
        raise MetaError("%s is not a readable .tar.gz or .tar archive (%s) — download the devkit "
                        "again" % (archive, why)) from None
    return Source(label="%s:%s" % (_label(archive, root), member.name),
                  shown="%s (member %s)" % (archive, member.name), data=data)


# ----------------------------------------------------------------------------- output

def render(classes: list[Synset], fmt: str, src: Source) -> dict[str, bytes]:
    """The content of every output file, in the order they are written (synsets.csv last: once it
    is there, the rest is too)."""
    index = {w: i for i, w in enumerate(sorted(s.wnid for s in classes))}
    by_wnid = sorted(classes, key=lambda s: s.wnid)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    records = []
    for s in classes:
        rec = dict(ilsvrc_id=s.ilsvrc_id, class_index=index[s.wnid], wnid=s.wnid, words=s.words,
                   description=s.description, num_train_images=s.num_train_images)
        writer.writerow([rec[c] for c in CSV_COLUMNS])
        records.append(rec)
    doc = {
        "source": src.label,
        "format": fmt,
        "sha256": hashlib.sha256(src.data).hexdigest(),
        "num_classes": len(classes),
        "num_train_images": sum(s.num_train_images for s in classes),
        "columns": list(CSV_COLUMNS),
        "synsets": records,
    }
    # Keras' imagenet_class_index.json: one line, default separators, no final newline
    keras = {str(index[s.wnid]): [s.wnid, s.name] for s in by_wnid}
    return {
        OUT_JSON: (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
        OUT_KERAS: json.dumps(keras).encode("utf-8"),
        OUT_LOC: "".join("%s %s\n" % (s.wnid, s.words) for s in by_wnid).encode("utf-8"),
        OUT_MAP: "".join("%s %d %s\n" % (s.wnid, s.ilsvrc_id, s.name)
                         for s in classes).encode("utf-8"),
        OUT_CSV: buf.getvalue().encode("utf-8"),
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file beside `path`, fsync, rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".%s.tmp-" % path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_outputs(out: Path, files: dict[str, bytes]) -> list[str]:
    """Write what differs from what is on disk; return the names written."""
    if out.exists() and not out.is_dir():
        raise MetaError("output %s exists and is not a folder" % out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        changed = []
        for name, data in files.items():
            path = out / name
            if path.is_file() and path.read_bytes() == data:
                continue
            if path.exists() and name == OUT_CSV:
                log.warning("replacing %s: its classes differ from what %s gives", path, PROG)
            elif path.exists():
                log.info("updating %s", path)
            atomic_write(path, data)
            changed.append(name)
        if changed:
            _fsync_dir(out)
    except OSError as e:
        raise MetaError("cannot write to %s: %s" % (getattr(e, "filename", None) or out,
                                                     e.strerror or e)) from None
    return changed


def duplicate_names(classes: list[Synset]) -> dict[str, list[str]]:
    """Class names (first lemma) shared by several classes, with their WNIDs."""
    by_name: dict[str, list[str]] = {}
    for s in classes:
        by_name.setdefault(s.name, []).append(s.wnid)
    return {n: w for n, w in sorted(by_name.items()) if len(w) > 1}


# ----------------------------------------------------------------------------- command line

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: their help text says what happens instead."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter,
        description="Convert the ILSVRC devkit's meta.mat (2012) or meta_clsloc.mat (2015/2017) "
                    "into ROOT/meta/synsets.csv, synsets.json, class_index.json, "
                    "LOC_synset_mapping.txt and map_clsloc.txt.",
        epilog="Exit codes: 0 ok (a rerun with unchanged output says 'already done'), 1 failure, "
               "2 usage. Example: %s --root /data/imagenet" % PROG)
    p.add_argument("--root", type=Path, default=Path(os.environ.get("IMAGENET_ROOT", ".")),
                   metavar="DIR",
                   help="dataset root: $IMAGENET_ROOT if set, else the current folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--mat", type=Path, default=None, metavar="PATH",
                     help="the meta.mat or meta_clsloc.mat to read "
                          "(default: found under ROOT/devkit/, meta_clsloc.mat preferred)")
    src.add_argument("--devkit", type=Path, default=None, metavar="ARCHIVE",
                     help="read the .mat straight from a devkit .tar.gz or .tar, extracting "
                          "nothing (default: not used)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: ROOT/meta)")
    p.add_argument("--expect-classes", type=int, default=EXPECTED_CLASSES, metavar="N",
                   help="number of classes the file must hold; change it only for "
                        "test/miniature devkits")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.expect_classes < 1:
        parser.error("--expect-classes must be at least 1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, datefmt="%H:%M:%S",
                        format=PROG + " %(asctime)s %(message)s")
    start = time.monotonic()
    log.info("%s %s", PROG, " ".join(sys.argv[1:] if argv is None else argv))
    root: Path = args.root
    out: Path = args.out if args.out is not None else root / "meta"
    try:
        if args.mat is not None:
            src = _read_file(args.mat, root)
        elif args.devkit is not None:
            src = source_from_archive(args.devkit, root)
        else:
            if not root.is_dir():
                raise MetaError("ROOT %s is not a folder; pass --root DIR or set IMAGENET_ROOT"
                                % root)
            src = source_from_root(root)
        log.info("reading %s", src.shown)
        fmt, classes = load_classes(src, args.expect_classes)
        total = sum(s.num_train_images for s in classes)
        log.info("%s: %d classes (IDs 1..%d), %s train images%s", fmt, len(classes), len(classes),
                 format(total, ","), " (the real total)" if total == REAL_TRAIN_TOTAL else "")
        dups = duplicate_names(classes)
        if dups:
            log.info("%d names are shared by several classes (use the WNID, not the name, as the "
                     "key): %s", len(dups),
                     "; ".join("%s: %s" % (n, ", ".join(w)) for n, w in dups.items()))
        changed = write_outputs(out, render(classes, fmt, src))
    except MetaError as e:
        log.error("error: %s", e)
        return 1
    except KeyboardInterrupt:
        log.error("error: interrupted; outputs are either complete or untouched")
        return 130
    if changed:
        log.info("wrote %s in %s", ", ".join(changed), out)
    else:
        log.info("already done: %s is up to date with %s", out, src.shown)
    log.info("finished in %.1f s", time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
