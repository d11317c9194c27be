"""Stage 02: the devkit's MATLAB class list (meta.mat, meta_clsloc.mat) as plain CSV/JSON/text.

The only module that reads a MATLAB file. Reading: find_meta / read_mat_file / read_from_archive
give a Source (the .mat's bytes and where they came from); load_classes parses and checks it
(truncation, format, class IDs, WNIDs). Writing: render gives every output file's bytes,
write_outputs puts them in place. convert is the whole stage, as 02_convert_meta_clsloc.py runs it.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import scipy.io

from . import facts, files
from .console import DISK_FULL, PrepError, disk_full_text, human, log, some
from .tarstream import read_tarfile
from .valfolders import HF_DIR, KAGGLE_DIR, problem_text

PROG = "02_convert_meta_clsloc.py"
META_NAMES = ("meta_clsloc.mat", "meta.mat")   # preference order: newer devkit first
MAT_MAGIC = b"MATLAB"                   # start of the 128-byte header of a v5 / v7.3 .mat
MAT_HEADER = 128                        # then v5 data elements, each an 8-byte tag and its bytes
MAX_MAT_BYTES = 64 << 20               # the real files are 81 KiB and 172 KiB
CSV_COLUMNS = ("ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images")

# field names of the `synsets` struct in each devkit
FORMAT_2012 = "ILSVRC2012 meta.mat"
FORMAT_2015 = "ILSVRC2015 meta_clsloc.mat"
FIELDS = {
    FORMAT_2012: {"id": "ILSVRC2012_ID", "wnid": "WNID", "words": "words",
                  "description": "gloss", "num_train_images": "num_train_images"},
    FORMAT_2015: {"id": "ILSVRC2015_CLSLOC_ID", "wnid": "WNID", "words": "name",
                  "description": "description", "num_train_images": "num_train_images"},
}

OUT_CSV = "synsets.csv"
OUT_JSON = "synsets.json"
OUT_KERAS = "class_index.json"
OUT_LOC = "LOC_synset_mapping.txt"
OUT_MAP = "map_clsloc.txt"
REDO = "re-download or re-extract the devkit"

# Without a devkit (the Hugging Face and Kaggle sources): the source's own class list, read as
# data, and the devkit IDs, descriptions and train counts from the package's table of the classes
TABLE = Path(__file__).resolve().parent / "classes.tsv"
TABLE_REL = "imagenet_prep/classes.tsv"
TABLE_TOOL = "tools/make_class_table.py"
TABLE_COLUMNS = ("ilsvrc_id", "wnid", "words", "description", "num_train_images")
FORMAT_HF = "Hugging Face classes.py"
FORMAT_KAGGLE = "Kaggle LOC_synset_mapping.txt"
HF_VARIABLE = "IMAGENET2012_CLASSES"
CLASS_LISTS = (Path(HF_DIR) / "classes.py", Path(KAGGLE_DIR) / "LOC_synset_mapping.txt")
MAX_LIST_BYTES = 1 << 20                # the real lists: 31 KiB (Kaggle), about 45 KiB (Hub)
LIST_FORMS = ("the Hugging Face dataset's classes.py (IMAGENET2012_CLASSES = OrderedDict("
              "{\"n01440764\": \"tench, Tinca tinca\", ...})) or Kaggle's LOC_synset_mapping.txt "
              "('n01440764 tench, Tinca tinca' per line)")


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
    """Where a class list came from (a devkit .mat, a file or a member of a devkit archive; or
    another source's list, ClassList), and its bytes."""

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
    """FORMAT_2012 or FORMAT_2015 from the field names of the `synsets` struct."""
    if "ILSVRC2015_CLSLOC_ID" in names:
        fmt = FORMAT_2015
    elif "ILSVRC2012_ID" in names:
        fmt = FORMAT_2012
    else:
        raise PrepError("its `synsets` struct has fields %s; expected the ILSVRC2012 meta.mat "
                        "fields (ILSVRC2012_ID, WNID, words, gloss, num_children, ...) or the "
                        "ILSVRC2015 meta_clsloc.mat fields (ILSVRC2015_CLSLOC_ID, WNID, name, "
                        "description, num_train_images)" % ", ".join(names))
    needed = list(FIELDS[fmt].values())
    missing = [f for f in needed if f not in names]
    if fmt == FORMAT_2012 and "num_children" not in names and "children" not in names:
        missing.append("num_children")
    if missing:
        raise PrepError("its `synsets` struct looks like the %s format but lacks the field(s) %s"
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
    raise PrepError("its `synsets` variable is not a MATLAB struct array (got %s)"
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
            raise PrepError("entry %d of `synsets`: %s" % (n, e)) from None
    out.sort(key=lambda s: s.ilsvrc_id)
    return fmt, out


def _id_problems(ids: list[int], expect: int) -> str:
    """'missing 500; duplicated 7; out of range 1200' for IDs that are not exactly 1..expect."""
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    missing = sorted(set(range(1, expect + 1)) - seen)
    extra = sorted(i for i in seen if not 1 <= i <= expect)
    parts = [("missing %s" % some(missing)) if missing else "",
             ("duplicated %s" % some(dup)) if dup else "",
             ("out of range %s" % some(extra)) if extra else ""]
    return "; ".join(p for p in parts if p)


def validate(classes: list[Synset], expect: int) -> None:
    """Exactly `expect` classes, IDs exactly 1..expect, WNIDs unique and shaped n + 8 digits."""
    if len(classes) != expect:
        raise PrepError(
            "it holds %d classes, expected %d; the file is damaged or not an ILSVRC devkit file: "
            "download the devkit again (--expect-classes is only for miniature test devkits)"
            % (len(classes), expect))
    ids = [s.ilsvrc_id for s in classes]
    if ids != list(range(1, expect + 1)):
        raise PrepError("its class IDs are not exactly 1..%d: %s" % (expect,
                                                                     _id_problems(ids, expect)))
    bad = [s for s in classes if not facts.WNID_RE.match(s.wnid)]
    if bad:
        raise PrepError("malformed WNID(s), expected n + 8 digits: %s"
                        % some(["%r (ID %d)" % (s.wnid, s.ilsvrc_id) for s in bad]))
    by_wnid: dict[str, list[int]] = {}
    for s in classes:
        by_wnid.setdefault(s.wnid, []).append(s.ilsvrc_id)
    dups = ["%s (IDs %s)" % (w, ", ".join(map(str, i))) for w, i in by_wnid.items() if len(i) > 1]
    if dups:
        raise PrepError("duplicate WNID(s): %s" % some(dups))
    for s in classes:
        if not s.name:
            raise PrepError("class %d (%s) has no name in its words field" % (s.ilsvrc_id, s.wnid))
        if any(c in s.words + s.description for c in "\r\n"):
            raise PrepError("class %d (%s) has a line break in its text" % (s.ilsvrc_id, s.wnid))
        if s.num_train_images < 0:
            raise PrepError("class %d (%s) has num_train_images %d"
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


def _load_synsets(data: bytes) -> Any:
    """The `synsets` variable of a .mat file's bytes; PrepError (without the file's name) if the
    bytes are not a complete v5 .mat holding one."""
    if not data:
        raise PrepError("it is empty (0 bytes) — " + REDO)
    cut = truncation(data)
    truncated = PrepError("it is a truncated MATLAB .mat file (%s; an interrupted download or "
                          "extraction?) — %s" % (cut, REDO))
    if MAT_MAGIC.startswith(data):
        raise truncated
    if not data.startswith(MAT_MAGIC):   # every v5/v7.3 file; v4 files cannot hold structs
        head = data[:40].decode("ascii", "replace").strip()
        what = " — an HTML page (a login page saved instead of the file?)" \
            if data.lstrip()[:1] == b"<" else ""
        raise PrepError("it is not a MATLAB .mat file: it starts with %r%s; %s"
                        % (head, what, REDO))
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, variable_names=["synsets"])
    except NotImplementedError as e:   # MATLAB v7.3 files are HDF5
        raise PrepError("it is a MATLAB v7.3 (HDF5) file, which scipy cannot read (%s); the "
                        "devkit's own file is a v5 .mat: use the one from the devkit archive"
                        % e) from None
    except Exception as e:  # noqa: BLE001  scipy raises ValueError, OSError, MatReadError, ...
        if cut:
            raise truncated from None
        raise PrepError("it is a damaged or truncated MATLAB .mat file (%d bytes; scipy says "
                        "%s: %s) — %s" % (len(data), type(e).__name__, e, REDO)) from None
    if "synsets" not in mat:
        if cut:
            raise truncated
        raise PrepError("it is a .mat file but holds no `synsets` variable; this is not the "
                        "devkit's meta.mat or meta_clsloc.mat")
    return mat["synsets"]


def load_classes(src: Source, expect: Optional[int]) -> tuple[str, list[Synset]]:
    """The format and the classes (devkit ID order) of a devkit .mat, checked: exactly `expect`
    classes (None: any number, e.g. a miniature devkit) with IDs 1..N and unique WNIDs. Every
    problem is a PrepError naming the file."""
    try:
        fmt, classes = synsets_from_struct(_load_synsets(src.data))
        validate(classes, len(classes) if expect is None else expect)
    except PrepError as e:
        raise PrepError("%s: %s" % (src.shown, e)) from None
    return fmt, classes


# ----------------------------------------------------------------------------- finding the file

def _label(path: Path, root: Path) -> str:
    """Path text for synsets.json: relative to ROOT when inside it, else absolute."""
    full = path.resolve()
    try:
        return full.relative_to(root.resolve()).as_posix()
    except ValueError:
        return full.as_posix()


def read_mat_file(path: Path, root: Path, given: bool = False) -> Source:
    """The bytes of a .mat file (`root`: for the label synsets.json gives its source). One found
    under a folder (ROOT/devkit/) is read only if it is a regular file (files.read_regular: a
    FIFO or /dev/zero there would never end); one `given` (02 --mat) is read as asked (a pipe
    too), but never more than MAX_MAT_BYTES."""
    if not path.exists() and not path.is_symlink():
        raise PrepError("%s: no such file" % path)
    if path.is_dir():
        raise PrepError("%s is a folder; pass the .mat file itself (e.g. %s)"
                        % (path, path / "data" / "meta.mat"))
    try:
        if not given:
            data = files.read_regular(str(path), "put the devkit's file itself there (%s)"
                                      % REDO, limit=MAX_MAT_BYTES)
        else:
            size = path.stat().st_size
            if size > MAX_MAT_BYTES:
                raise PrepError("%s: %s is far too large for a devkit meta file"
                                % (path, human(size)))
            with open(path, "rb") as f:
                data = f.read(MAX_MAT_BYTES + 1)
            if len(data) > MAX_MAT_BYTES:
                raise PrepError("%s: more than %s, far too large for a devkit meta file"
                                % (path, human(MAX_MAT_BYTES)))
    except OSError as e:
        raise PrepError("cannot read %s: %s" % (path, e.strerror or e)) from None
    return Source(label=_label(path, root), shown=str(path), data=data)


def find_in_folder(folder: Path) -> list[Path]:
    """meta_clsloc.mat / meta.mat files under `folder`, newer devkit first; hidden (temporary)
    folders such as an unfinished extraction are skipped. Entries of those names that are not
    regular files (a FIFO, a link) are found too: read_mat_file refuses them, saying so."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in META_NAMES:
            if name in filenames:
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: (META_NAMES.index(p.name), p.as_posix()))


def _devkit_hint(root: Path) -> str:
    downloads = root / "downloads"
    archives = sorted(downloads.glob("*devkit*.tar*")) if downloads.is_dir() else []
    if archives:
        return "run 01_unzip.sh --root %s first, or read the archive directly: %s --root %s " \
               "--devkit %s" % (root, PROG, root, archives[0])
    return "run 01_unzip.sh first, or pass --mat PATH or --devkit ARCHIVE (without a devkit: " \
           "the class list of another source, %s, or --classes FILE)" \
           % " or ".join(str(root / p) for p in CLASS_LISTS)


def find_meta(root: Path) -> Source:
    """The devkit's meta file under ROOT/devkit/ (meta_clsloc.mat preferred), read."""
    devkit = root / "devkit"
    if not devkit.is_dir():
        raise PrepError("no devkit folder at %s; %s" % (devkit, _devkit_hint(root)))
    found = find_in_folder(devkit)
    if not found:
        raise PrepError("no meta_clsloc.mat or meta.mat under %s; %s"
                        % (devkit, _devkit_hint(root)))
    if len(found) > 1:
        log.info("found %d devkit meta files (%s); using the newer devkit's", len(found),
                 ", ".join(map(str, found)))
    return read_mat_file(found[0], root)


def read_from_archive(archive: Path, root: Path) -> Source:
    """Read only the meta .mat out of a devkit .tar.gz (or plain .tar, or an extracted devkit
    folder) into memory. The archive is read strictly: truncated or damaged is an error."""
    if not archive.exists():
        raise PrepError("%s: no such file" % archive)
    if archive.is_dir():
        found = find_in_folder(archive)
        if not found:
            raise PrepError("no meta_clsloc.mat or meta.mat under the folder %s" % archive)
        return read_mat_file(found[0], root)
    tar, members = read_tarfile(str(archive))
    with tar:
        metas = [m for m in members if m.isfile() and m.name.rsplit("/", 1)[-1] in META_NAMES]
        if not metas:
            raise PrepError("%s holds no meta_clsloc.mat or meta.mat; is it the devkit archive "
                            "(ILSVRC2012_devkit_t12.tar.gz or ILSVRC2017_devkit.tar.gz)?" % archive)
        metas.sort(key=lambda m: (META_NAMES.index(m.name.rsplit("/", 1)[-1]), m.name))
        member = metas[0]
        if len(metas) > 1:
            log.info("%s holds %d meta files; using %s", archive, len(metas), member.name)
        if member.size > MAX_MAT_BYTES:
            raise PrepError("%s: member %s is %s, far too large for a devkit meta file"
                            % (archive, member.name, human(member.size)))
        try:
            fobj = tar.extractfile(member)
            data = fobj.read() if fobj is not None else b""
        except (EOFError, OSError, ValueError) as e:   # zlib.error, tarfile.ReadError
            raise PrepError("%s is damaged (%s); download the devkit again" % (archive, e)) \
                from None
    return Source(label="%s:%s" % (_label(archive, root), member.name),
                     shown="%s (member %s)" % (archive, member.name), data=data)


# ----------------------------------------------------------------------------- the class table

def table_text(classes: list[Synset], fmt: str, data: bytes) -> str:
    """classes.tsv for the classes of a devkit file (format `fmt`, bytes `data`): a header that
    says where it comes from, then one tab-separated row per class, in devkit ID order."""
    bad = [s.wnid for s in classes if "\t" in s.words + s.description]
    if bad:
        raise PrepError("class(es) %s hold a tab, which the table cannot" % some(bad))
    head = [
        "# The %s classes of ILSVRC2012 as the devkit lists them, for the sources that come "
        "without a devkit" % format(len(classes), ","),
        "# (Hugging Face, Kaggle): %s takes their devkit IDs, descriptions and train counts "
        "from here." % PROG,
        "# Written by %s from the %s (sha256 %s);" % (TABLE_TOOL, fmt,
                                                      hashlib.sha256(data).hexdigest()),
        "# tests/test_02_convert_meta_clsloc.py checks it against that file. Tab-separated, "
        "devkit ID order.",
        "\t".join(TABLE_COLUMNS)]
    rows = ["%d\t%s\t%s\t%s\t%d" % (s.ilsvrc_id, s.wnid, s.words, s.description,
                                    s.num_train_images) for s in classes]
    return "\n".join(head + rows) + "\n"


@functools.lru_cache(maxsize=None)
def table_bytes() -> bytes:
    """The bytes of the package's class table (TABLE)."""
    with open(TABLE, "rb") as f:
        return f.read(MAX_LIST_BYTES + 1)


@functools.lru_cache(maxsize=None)
def read_table() -> tuple[Synset, ...]:
    """The package's table of the 1,000 classes (TABLE), checked as a devkit's classes are."""
    fix = "restore it from the repository (git checkout %s), or regenerate it with %s" \
        % (TABLE_REL, TABLE_TOOL)
    try:
        text = table_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PrepError("cannot read the package's class table %s (%s): %s" % (TABLE, e, fix)) \
            from None
    rows = [line for line in text.splitlines() if not line.startswith("#")]
    if not rows or rows[0] != "\t".join(TABLE_COLUMNS):
        raise PrepError("%s does not start with the header %s: %s"
                        % (TABLE, " ".join(TABLE_COLUMNS), fix))
    classes = []
    for n, row in enumerate(rows[1:], start=2):
        cells = row.split("\t")
        if len(cells) != len(TABLE_COLUMNS) or not is_count(cells[0]) or not is_count(cells[4]):
            raise PrepError("%s: row %d is damaged (%r): %s" % (TABLE, n, row[:80], fix))
        classes.append(Synset(int(cells[0]), cells[1], cells[2], cells[3], int(cells[4])))
    try:
        validate(classes, facts.CLASSES)
    except PrepError as e:
        raise PrepError("%s: %s; %s" % (TABLE, e, fix)) from None
    return tuple(classes)


def is_count(text: str) -> bool:
    """A whole number written in ASCII digits, at most 9 of them."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


# ----------------------------------------------------------------------------- other sources' lists

@dataclass
class ClassList:
    """The class list of a source without a devkit: (WNID, words) in the file's order."""

    form: str                        # FORMAT_HF or FORMAT_KAGGLE
    source: Source
    pairs: list[tuple[str, str]]


def _parse_mapping(text: str) -> list[tuple[str, str]]:
    """LOC_synset_mapping.txt: 'WNID words' per line (trailing spaces and a CR are dropped)."""
    pairs, bad = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        wnid, _, words = line.rstrip().partition(" ")
        if not facts.WNID_RE.match(wnid) or not words.strip():
            if line.strip():
                bad.append("line %d: %r" % (n, line[:60]))
            continue
        pairs.append((wnid, words))
    if bad:
        raise PrepError("lines that are not 'WNID words' (e.g. 'n01440764 tench, Tinca tinca'): "
                        "%s" % some(bad))
    return pairs


def _classes_value(tree: ast.Module) -> ast.expr:
    """The value assigned to IMAGENET2012_CLASSES, the file's one statement besides imports and
    a docstring."""
    value = None
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            continue
        if value is None and isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == HF_VARIABLE:
            value = node.value
            continue
        raise PrepError("line %d holds a statement other than `%s = ...` and imports"
                        % (node.lineno, HF_VARIABLE))
    if value is None:
        raise PrepError("it assigns no `%s`" % HF_VARIABLE)
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "collections" else None)
        if name != "OrderedDict" or len(value.args) != 1 or value.keywords:
            raise PrepError("line %d: `%s` is not OrderedDict({...}), OrderedDict([...]) or "
                            "{...}" % (value.lineno, HF_VARIABLE))
        value = value.args[0]
    return value


def _parse_classes_py(text: str) -> list[tuple[str, str]]:
    """classes.py of the Hugging Face dataset, read as data: IMAGENET2012_CLASSES =
    OrderedDict({"WNID": "words", ...}) (or OrderedDict([("WNID", "words"), ...]), or a plain
    dict); every key and value a string literal. Nothing in it is imported or run."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # SyntaxWarning: nothing to tell the user
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise PrepError("it is not Python that can be read (%s: %s)"
                        % (type(e).__name__, getattr(e, "msg", None) or e)) from None
    value = _classes_value(tree)
    if isinstance(value, ast.Dict):
        items = list(zip(value.keys, value.values))
    elif isinstance(value, (ast.List, ast.Tuple)):
        items = [tuple(e.elts) if isinstance(e, ast.Tuple) and len(e.elts) == 2 else (e, e)
                 for e in value.elts]
    else:
        raise PrepError("line %d: `%s` holds no dict or list of pairs"
                        % (value.lineno, HF_VARIABLE))
    pairs, bad = [], []
    for key, val in items:
        if isinstance(key, ast.Constant) and isinstance(val, ast.Constant) \
                and isinstance(key.value, str) and isinstance(val.value, str):
            pairs.append((key.value, val.value))
        else:
            bad.append("line %d" % (key or val).lineno)
    if bad:
        raise PrepError("entries that are not \"WNID\": \"words\" string pairs: %s" % some(bad))
    return pairs


def read_class_list(path: Path, root: Path, given: bool = False) -> ClassList:
    """A Hugging Face classes.py or a Kaggle LOC_synset_mapping.txt (told apart by the first
    line), read only if it is a regular file of at most MAX_LIST_BYTES (`given`, --classes: a
    symbolic link to one too) and parsed as data. A PrepError names the file."""
    what = ("pass the class list itself with --classes" if given else
            "the source's 01 leaves the file itself there")
    try:
        data = files.read_regular(str(path), what, limit=MAX_LIST_BYTES, follow=given)
    except FileNotFoundError:
        raise PrepError("%s: no such file" % path) from None
    except OSError as e:
        raise PrepError("cannot read %s: %s" % (path, e.strerror or e)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PrepError("%s is not UTF-8 text (%s): it is no class list" % (path, e)) from None
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise PrepError("%s is empty (%d bytes): it lists no classes; expected %s"
                        % (path, len(data), LIST_FORMS))
    form = FORMAT_KAGGLE if facts.WNID_RE.match(first[:9]) else FORMAT_HF
    try:
        pairs = (_parse_mapping if form == FORMAT_KAGGLE else _parse_classes_py)(text)
    except PrepError as e:
        raise PrepError("%s, read as a %s (a class list, never run): %s; expected %s"
                        % (path, form, e, LIST_FORMS)) from None
    if not pairs:                                                   # {} or []
        raise PrepError("%s lists no classes; expected %s" % (path, LIST_FORMS))
    return ClassList(form, Source(_label(path, root), str(path), data), pairs)


def find_class_lists(root: Path) -> list[ClassList]:
    """The class lists another source's 01 left in ROOT (ROOT/hf/classes.py,
    ROOT/kaggle/LOC_synset_mapping.txt), read."""
    return [read_class_list(root / rel, root) for rel in CLASS_LISTS
            if os.path.lexists(root / rel)]


def list_problems(pairs: list[tuple[str, str]], reference: dict[str, str], expect: int,
                  name: str) -> list[tuple[str, list[str]]]:
    """What is wrong with a source's class list against `reference` (WNID -> words: the devkit's
    classes, or the package's table): `expect` classes, each a class of the reference, unique,
    in sorted-WNID order, named as the reference names them; every class of the reference when
    `expect` is its size (a smaller `expect`, --expect-classes: a part of it)."""
    wnids = [w for w, _ in pairs]
    seen: set[str] = set()
    repeated = [w for w in wnids if w in seen or seen.add(w)]
    out: list[tuple[str, list[str]]] = []
    if len(pairs) != expect:
        out.append(("it lists %d classes, expected %d" % (len(pairs), expect), []))
    for title, offenders in (
            ("classes that %s does not have" % name, [w for w in wnids if w not in reference]),
            ("classes of %s it does not list" % name,
             [w for w in reference if w not in seen] if expect == len(reference) else []),
            ("classes listed more than once", repeated),
            ("classes out of sorted-WNID order (the class index order)",
             [b for a, b in zip(wnids, wnids[1:]) if b < a]),
            ("names that differ from %s's (given, then %s's)" % (name, name),
             ["%s %r, %r" % (w, words, reference[w]) for w, words in pairs
              if w in reference and words != reference[w]])):
        if offenders:
            out.append((title, offenders))
    return out


def check_list(cl: ClassList, reference: dict[str, str], expect: int, name: str,
               advice: str) -> None:
    """list_problems as one PrepError naming the file, or nothing when the list is right."""
    problems = list_problems(cl.pairs, reference, expect, name)
    if problems:
        raise PrepError("%s (%s) does not agree with %s, nothing was written:\n%s\n%s"
                        % (cl.source.shown, cl.form, name, problem_text(problems), advice))


def table_classes(cl: ClassList, expect: int) -> list[Synset]:
    """The classes of a checked list, from the package's table: as they are for the 1,000
    classes; for a part of them (--expect-classes, a miniature), numbered 1..N in the order of
    their devkit IDs, as a miniature devkit of those classes numbers them."""
    table = read_table()
    if expect == len(table):
        return list(table)
    keep = {w for w, _ in cl.pairs}
    return [dataclasses.replace(s, ilsvrc_id=n)
            for n, s in enumerate((s for s in table if s.wnid in keep), start=1)]


# ----------------------------------------------------------------------------- output

def render(classes: list[Synset], fmt: str, src: Source,
           table: Optional[bytes] = None) -> dict[str, bytes]:
    """The content of every output file, in the order they are written (synsets.csv last: once it
    is there, the rest is too). `table`: the bytes of the package's class table, when the devkit
    IDs came from it (synsets.json then says so)."""
    index = {w: i for i, w in enumerate(sorted(s.wnid for s in classes))}
    by_wnid = sorted(classes, key=lambda s: s.wnid)

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    records = []
    for s in classes:
        rec = {"ilsvrc_id": s.ilsvrc_id, "class_index": index[s.wnid], "wnid": s.wnid,
               "words": s.words, "description": s.description,
               "num_train_images": s.num_train_images}
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
    if table is not None:
        doc["class_table"] = {"path": TABLE_REL, "sha256": hashlib.sha256(table).hexdigest()}
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


def _read_or_none(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_outputs(out: Path, outputs: dict[str, bytes]) -> list[str]:
    """Write what differs from what is on disk (temporary file, fsync, rename); return the names
    written. Leftover temporary files of a killed run are removed."""
    if out.exists() and not out.is_dir():
        raise PrepError("output %s exists and is not a folder" % out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        changed = []
        for name, data in outputs.items():
            files.clear_temps(str(out), name)
            path = out / name
            old = _read_or_none(path)
            if old == data:
                continue
            if path.exists() and name == OUT_CSV:
                log.warning("replacing %s: its classes differ from what %s gives", path, PROG)
            elif path.exists():
                log.info("updating %s", path)
            files.atomic_write(str(path), data)
            changed.append(name)
        if changed:
            files.fsync_dir(str(out))
    except OSError as e:
        where = getattr(e, "filename", None) or out
        if e.errno in DISK_FULL:
            raise PrepError(disk_full_text(str(where))) from None
        raise PrepError("cannot write to %s: %s" % (where, e.strerror or e)) from None
    return changed


def duplicate_names(classes: list[Synset]) -> dict[str, list[str]]:
    """Class names (first lemma) shared by several classes, with their WNIDs."""
    by_name: dict[str, list[str]] = {}
    for s in classes:
        by_name.setdefault(s.name, []).append(s.wnid)
    return {n: w for n, w in sorted(by_name.items()) if len(w) > 1}


# ----------------------------------------------------------------------------- the stage

def convert(root: Path, out: Path, mat: Optional[Path] = None, devkit: Optional[Path] = None,
            expect: int = facts.CLASSES, classes_file: Optional[Path] = None) -> int:
    """Stage 02: read the .mat (`mat`, else from the `devkit` archive or folder, else found under
    ROOT/devkit/), check it holds `expect` classes, write the outputs into `out`. Without a
    devkit: the class list of another source (`classes_file`, else ROOT/hf/classes.py or
    ROOT/kaggle/LOC_synset_mapping.txt), checked against the package's table, which gives the
    devkit IDs. A devkit and a list: the devkit's classes, the list checked against them.
    Returns 0."""
    if mat is None and devkit is None and classes_file is None and not root.is_dir():
        raise PrepError("ROOT %s is not a folder; pass --root DIR or set IMAGENET_ROOT" % root)
    lists = [read_class_list(classes_file, root, given=True)] if classes_file is not None \
        else find_class_lists(root) if root.is_dir() else []
    if mat is not None:
        src: Optional[Source] = read_mat_file(mat, root, given=True)
    elif devkit is not None:
        src = read_from_archive(devkit, root)
    elif lists and not (root.is_dir() and find_in_folder(root / "devkit")):
        src = None                       # no devkit: the source's list and the package's table
    else:
        src = find_meta(root)
    table = None
    if src is not None:
        log.info("reading %s", src.shown)
        fmt, classes = load_classes(src, expect)
        words = {s.wnid: s.words for s in classes}
        for cl in lists:
            check_list(cl, words, expect, "the devkit",
                       "the devkit (%s) and that list describe different class sets: check that "
                       "both are ILSVRC2012's; the devkit's classes are the ones 02 writes, so to "
                       "use them, move the list out of the way" % src.shown)
            log.info("%s (%s) agrees with the devkit: the same %d classes and names",
                     cl.source.shown, cl.form, len(cl.pairs))
    else:
        fmt, classes, src, table = from_class_lists(lists, expect)
    total = sum(s.num_train_images for s in classes)
    log.info("%s: %d classes (IDs 1..%d), %s train images%s", fmt, len(classes), len(classes),
             format(total, ","), " (the real total)" if total == facts.images("train") else "")
    dups = duplicate_names(classes)
    if dups:
        log.info("%d names are shared by several classes (use the WNID, not the name, as the "
                 "key): %s", len(dups),
                 "; ".join("%s: %s" % (n, ", ".join(w)) for n, w in dups.items()))
    changed = write_outputs(out, render(classes, fmt, src, table))
    if changed:
        log.info("wrote %s in %s", ", ".join(changed), out)
    else:
        log.info("already done: %s is up to date with %s", out, src.shown)
    return 0


def from_class_lists(lists: list[ClassList],
                     expect: int) -> tuple[str, list[Synset], Source, bytes]:
    """No devkit: every list checked against the package's table; the classes of the first,
    with the table's devkit IDs, descriptions and train counts. (format, classes, source, the
    table's bytes)."""
    table = read_table()
    words = {s.wnid: s.words for s in table}
    for cl in lists:
        check_list(cl, words, expect, "ILSVRC2012",
                   "the classes are checked against %s, the 2012 devkit's classes: get the "
                   "source's file again, or use the devkit (--mat, --devkit: its classes are "
                   "then taken)" % TABLE_REL)
    chosen = lists[0]
    log.info("no devkit: the classes are those of %s (%s); devkit IDs, descriptions and train "
             "counts from %s, the 2012 devkit's table%s", chosen.source.shown, chosen.form,
             TABLE_REL, "; %s agrees" % ", ".join(cl.source.shown for cl in lists[1:])
             if lists[1:] else "")
    classes = table_classes(chosen, expect)
    validate(classes, expect)
    return chosen.form, classes, chosen.source, table_bytes()
