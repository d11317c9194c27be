"""ROOT/meta/SHA256SUMS.SPLIT: the SHA-256 of every file a split holds, as `sha256sum` writes them.

One line per file, ``<64 hex>  <path relative to ROOT>``, sorted by path, so that
``cd ROOT && sha256sum -c --quiet meta/SHA256SUMS.train`` checks a tree. 01_unzip.sh writes it from
the hashes it took while writing the files; 03 rewrites the val paths when it moves images.

Reading (03, 04, 05): read() opens it only if it is a regular file (files.open_input); load() also
refuses a manifest that is missing although 01's done marker (ROOT/.01_unzip/SPLIT.done) says
"manifest": true, and rewrite_hint() says how to get it back.
"""
from __future__ import annotations

import os
import re
import stat
from typing import Iterable, Optional

from . import files
from .console import PrepError
from .extract import Config
from .files import atomic_write

LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9_./-]+)\Z")


def path_of(root: str, split: str) -> str:
    return os.path.join(root, "meta", "SHA256SUMS." + split)


def render(entries: Iterable[tuple[str, str]]) -> bytes:
    """(path relative to ROOT, hex digest) pairs as the file's bytes, sorted by path."""
    return "".join("%s  %s\n" % (digest, path) for path, digest in sorted(entries)).encode("ascii")


def write(root: str, split: str, entries: Iterable[tuple[str, str]]) -> str:
    """Write the split's manifest atomically; returns its path."""
    path = path_of(root, split)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, render(entries))
    return path


def inside(rel: str) -> bool:
    """A path relative to ROOT that stays inside it: not absolute, no empty, '.' or '..' part."""
    return not rel.startswith("/") and all(p not in ("", ".", "..") for p in rel.split("/"))


def done_path(root: str, split: str) -> str:
    """01_unzip.sh's done marker of the split."""
    return Config(root).marker(split)


def read_done(root: str, split: str) -> object:
    """01's done marker of the split (None: missing or not JSON), read only if it is a regular
    file: anything else is a PrepError."""
    path = done_path(root, split)
    return files.read_json(path, "01_unzip.sh writes it when %s is complete: remove it, then "
                                 "run 01_unzip.sh %s again" % (split, split))


def written_by_01(root: str, split: str) -> bool:
    """01_unzip.sh wrote the split's manifest: its done marker says "manifest": true."""
    doc = read_done(root, split)
    return isinstance(doc, dict) and doc.get("manifest") is True


def rewrite_hint(root: str, split: str) -> str:
    """How to get the split's manifest back: restore it, or have 01 write it again."""
    if split == "train":
        again = ("have 01_unzip.sh write it again: delete %s and run 01_unzip.sh train (with the "
                 "archive in ROOT/downloads/: the class folders as it wrote them are kept, checked "
                 "by name and size, and the manifest is written from its records)"
                 % done_path(root, split))
    else:
        again = ("extract %s again: move %s away and run 01_unzip.sh %s (with the archive in "
                 "ROOT/downloads/)%s" % (split, os.path.join(root, split), split,
                                         ", then 03_build_val_class_folders.py"
                                         if split == "val" else ""))
    return "restore it (from a backup or another copy of ROOT/meta/), or %s" % again


def present(root: str, split: str) -> bool:
    """True if the split has a manifest to read (a regular file), False if it has none and 01
    wrote none (01 ran with --no-manifest, or other tools made the tree). Missing although 01
    wrote one, or not a regular file: a PrepError saying what to do."""
    path = path_of(root, split)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if written_by_01(root, split):
            raise PrepError("%s is missing, but 01_unzip.sh wrote it when it extracted %s (%s says "
                            "\"manifest\": true): without it the files cannot be checked against "
                            "what was extracted (04_verify.py --full, 05_pack_squashfs.py "
                            "--from-tree); %s" % (path, split, done_path(root, split),
                                                        rewrite_hint(root, split))) from None
        return False
    if not stat.S_ISREG(st.st_mode):
        os.close(files.open_input(path, _fix(path)))       # raises, saying what it is
    return True


def load(root: str, split: str) -> Optional[dict[str, str]]:
    """The split's manifest (read()) if present(), else None."""
    return read(path_of(root, split)) if present(root, split) else None


def _fix(path: str) -> str:
    """What to do about the manifest `path` (ROOT/meta/SHA256SUMS.SPLIT) that cannot be read."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return "remove it, then %s" % rewrite_hint(root, os.path.basename(path).rsplit(".", 1)[-1])


def read(path: str) -> dict[str, str]:
    """{path relative to ROOT: hex digest}; a malformed line, or a path that would lead out of
    ROOT (absolute, or with '..'), is an error naming it: such a path is never followed. Opened
    only if it is a regular file of at most files.INPUT_MAX bytes (files.open_input)."""
    out: dict[str, str] = {}
    fd = files.open_input(path, _fix(path))
    try:
        with open(fd, encoding="ascii", newline="\n") as f:
            for n, line in enumerate(f, start=1):
                m = LINE.match(line.rstrip("\n"))
                if not m or m.group(2) in out:
                    raise PrepError("%s line %d is not '<sha256>  <path>' (or repeats a path): %r; "
                                    "the manifest is damaged: extract the split again to rewrite it"
                                    % (path, n, line[:120]))
                if not inside(m.group(2)):
                    raise PrepError("%s line %d: %r is not a path inside ROOT (it is absolute, or "
                                    "has a '..', '.' or empty part), refused and not followed; the "
                                    "manifest is damaged or not one 01_unzip.sh wrote: extract the "
                                    "split again to rewrite it, or delete it"
                                    % (path, n, m.group(2)))
                out[m.group(2)] = m.group(1)
    except UnicodeDecodeError:
        raise PrepError("%s is not a SHA256SUMS manifest (not ASCII text)" % path) from None
    return out
