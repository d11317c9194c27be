"""ROOT/meta/SHA256SUMS.SPLIT: the SHA-256 of every file a split holds, as `sha256sum` writes them.

One line per file, ``<64 hex>  <path relative to ROOT>``, sorted by path, so that
``cd ROOT && sha256sum -c --quiet meta/SHA256SUMS.train`` checks a tree. 01_unzip.sh writes it from
the hashes it took while writing the files; 03 rewrites the val paths when it moves images.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

from .console import PrepError
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


def read(path: str) -> dict[str, str]:
    """{path relative to ROOT: hex digest}; a malformed line, or a path that would lead out of
    ROOT (absolute, or with '..'), is an error naming it: such a path is never followed."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="ascii", newline="\n") as f:
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
