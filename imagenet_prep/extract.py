"""What every split's extraction shares: where things are, writing one member, the release's counts.

On-disk state of 01_unzip.sh, all under ROOT/.01_unzip/ (the "state" folder):
    SPLIT.done             JSON marker: the split is complete and verified (and from which archive)
    train/WNID.json        record of one finished class: the files written, their sizes and hashes
    *.lock                 flocks that keep two runs off the same work
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Optional

from . import facts
from .console import PrepError, log, shown, thousands
from .files import read_json, umask
from .images import HeadScan
from .tarstream import Member, Source, read_data, sniff

STATE = ".01_unzip"
CHUNK = 4 << 20                      # largest read of one member's data; bounds worker memory
REDO = "download it again (00_download.sh resumes and checks it)"


@dataclass
class Config:
    root: str                        # absolute
    jobs: int = 1                    # worker processes for train
    k: int = 0                       # this run's shard ...
    n: int = 1                       # ... of n
    remove: bool = False             # --remove-archive
    archive: Optional[str] = None    # --archive PATH (one split)
    manifest: bool = True            # hash every file for ROOT/meta/SHA256SUMS.SPLIT
    copy: Optional["Copy"] = None    # --source: the copy the files are (official counts or not)

    @property
    def state(self) -> str:
        return os.path.join(self.root, STATE)

    def marker(self, split: str) -> str:
        return os.path.join(self.state, split + ".done")

    def checkpoint(self, split: str) -> str:
        """Where 01 --stream records how far the split's stream got."""
        return os.path.join(self.state, "stream-%s.json" % split)

    def unproven(self, split: str) -> str:
        """Marks a --stream of the split begun and not finished: what it wrote was not yet proven
        by the archive's MD5 (a later 01 from the archive writes it again and compares)."""
        return os.path.join(self.state, "stream-%s.unproven" % split)

    def forget_stream(self, split: str) -> None:
        """The split is done: a stream checkpoint left (this run's, or of a --stream given up
        on) speaks of work that is finished, and nothing of it is unproven any more."""
        for path in (self.checkpoint(split), self.unproven(split)):
            if os.path.lexists(path):
                os.remove(path)


def find_archive(cfg: Config, split: str,
                 other: str = "name the file with --archive PATH") -> str:
    """The split's archive: --archive, else the first official name in ROOT/downloads/. `other`:
    what else the user can do when it is not there."""
    if cfg.archive:
        path = os.path.abspath(cfg.archive)
        if not os.path.isfile(path):
            raise PrepError("%s: --archive %s is not a file" % (split, cfg.archive))
        return path
    folder = os.path.join(cfg.root, "downloads")
    for name in facts.names(split):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise PrepError("%s: archive not found: expected %s in %s (run 00_download.sh, or %s)"
                    % (split, " or ".join(facts.names(split)), folder, other))


def check_archive(path: str, split: str) -> str:
    """'tar' or 'gz' (devkit only); an empty, HTML or non-tar file is refused up front."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return sniff(path, os.path.getsize(path), head, split == "devkit", "%s archive" % split)


def resolve_final(root: str, split: str) -> str:
    """Where a split's folder goes: ROOT/SPLIT, or the folder it links to (e.g. on another disk).
    The split is built beside it and renamed into place."""
    link = os.path.join(root, split)
    if not os.path.islink(link):
        return link
    target = os.path.realpath(link)
    if os.path.lexists(target) and not os.path.isdir(target) or target == link:
        raise PrepError("%s: %s is a symbolic link to %s, which is not a folder (or leads back to "
                        "itself): remove the link, or point it to a folder, then run again"
                        % (split, link, target))
    if not os.path.isdir(target):
        raise PrepError("%s: %s is a symbolic link to %s, which is not a folder: create that folder "
                        "(mkdir -p %s) or remove the link, then run again"
                        % (split, link, target, target))
    return target


MARKER_FIELDS = {            # what each split's done marker must hold, and of which type
    "train": {"classes": list, "images": int, "bytes": int, "special": dict},
    "val": {"images": int, "bytes": int}, "test": {"images": int, "bytes": int},
    "devkit": {"files": int, "bytes": int, "top": str},
}
TYPE_WORDS = {list: "a list", int: "a whole number", dict: "a mapping", str: "text"}


def read_marker(cfg: Config, split: str) -> Optional[dict]:
    """The split's done marker; None if there is none. A marker that is not one 01_unzip.sh
    wrote (edited by hand, damaged) is an error: nothing is taken for done on its word."""
    path = cfg.marker(split)
    if not os.path.lexists(path):
        return None
    doc = read_json(path, "01_unzip.sh writes it when %s is complete: remove it, then run "
                          "01_unzip.sh %s again" % (split, split))
    bad = "not JSON" if not isinstance(doc, dict) else next(
        ("%s is not %s" % (k, TYPE_WORDS[t]) for k, t in MARKER_FIELDS[split].items()
         if not isinstance(doc.get(k), t) or isinstance(doc.get(k), bool)), None)
    if bad is None and split == "train" and not (doc["classes"] and all(
            isinstance(w, str) and facts.WNID_RE.match(w) for w in doc["classes"])):
        bad = "classes holds other things than WNIDs" if doc["classes"] else "it lists no class"
    if bad:
        raise PrepError("%s is damaged or not 01_unzip.sh's (%s); delete it%s and run again"
                        % (path, bad, "" if split == "train" else
                           " and move %s away" % os.path.join(cfg.root, split)))
    return doc


def done_marker(cfg: Config, split: str, final: str) -> Optional[dict]:
    """The split's done marker, if the split's folder is there too."""
    doc = read_marker(cfg, split)
    return doc if doc is not None and os.path.isdir(final) else None


@dataclass(frozen=True)
class Copy:
    """Which copy of the release a split comes from when it is not an image-net.org archive (the
    Hugging Face or Kaggle files, whose size says nothing): `name` says it in messages; with
    `official` its counts must be the release's, else they are not checked (and that is said);
    `redo` is what to do when they are wrong."""
    name: str
    official: bool
    redo: str = ""


def is_official(split: str, archive_size: int, copy: Optional[Copy] = None) -> bool:
    """The split comes from the official release: an archive of the official size, or a copy
    known to be official (the Hub's tar.gz revision, Kaggle's real zip)."""
    return copy.official if copy is not None else archive_size == facts.official_size(split)


def official_counts(split: str, archive_size: int, classes: Optional[int], images: int,
                    copy: Optional[Copy] = None) -> None:
    """An archive of the official size (or a `copy` known to be official) must hold the official
    counts: else an error."""
    size = facts.official_size(split)
    if copy is not None:
        if not copy.official:
            log.info("%s: %s; official counts not checked", split, copy.name)
            return
    elif size is None:
        return
    elif archive_size != size:
        log.info("%s: archive is not the official one (%s B, official %s B); official counts not "
                 "checked", split, thousands(archive_size), thousands(size))
        return
    want_classes = facts.official(split).classes if classes is not None else None
    if images != facts.images(split) or classes != want_classes:
        official = ("the official archive", "this one", "it is damaged; download it again "
                    "(00_download.sh checks its MD5)") if copy is None else \
            (copy.name, "these files", copy.redo)
        raise PrepError("%s: %s holds %s images%s, %s %s%s: %s"
                        % (split, official[0], thousands(facts.images(split)),
                           " in %s classes" % thousands(want_classes) if classes is not None else "",
                           official[1], thousands(images),
                           " in %d classes" % classes if classes is not None else "", official[2]))


def maybe_remove(cfg: Config, split: str, archive: Optional[str], doc: Optional[dict] = None) -> None:
    """--remove-archive: delete the archive of a split that is complete and verified. For a split
    done earlier (`doc`, its marker), only the very archive it was extracted from."""
    if not cfg.remove:
        return
    if archive is None:
        try:
            archive = find_archive(cfg, split)
        except PrepError:
            return
        if doc is None or doc.get("archive_size") != os.path.getsize(archive):
            log.info("%s: not removing %s: it is not the archive the split was extracted from "
                     "(%s, %s B)", split, archive, (doc or {}).get("archive"),
                     (doc or {}).get("archive_size"))
            return
    os.remove(archive)
    log.info("%s: removed %s as asked (--remove-archive); the split is complete and verified",
             split, archive)


# ----------------------------------------------------------------------------- one member

def safe_mode(mode: int) -> int:
    """The member's permission bits as tar applies them for a user: no set-id or sticky bits, the
    umask applied, and always readable and writable by the owner."""
    return (mode & 0o777 | 0o600) & ~umask()


def keep_attributes(fd: int, mode: int, mtime: Optional[float]) -> None:
    """The member's (safe) permission bits and, where the source keeps one, its modification time,
    as tar and torchvision keep them."""
    os.fchmod(fd, safe_mode(mode))
    if mtime is not None:
        os.utime(fd, (mtime, mtime))


def write_member(src: Source, m: Member, folder_fd: int, name: str, label: str,
                 digest: bool) -> tuple[Optional[str], Optional[str]]:
    """Copy member m's data from `src` into a new file `name` of the folder.

    Returns (its image kind, from its headers however far they go: images.HeadScan; SHA-256 of
    its bytes when `digest`)."""
    fd = create_file(folder_fd, name, "%s: member %s" % (label, shown(m.name)))
    try:
        return write_chunks(read_data(src, m, CHUNK, label), fd, m.mode, m.mtime, digest)
    finally:
        os.close(fd)


def create_file(folder_fd: int, name: str, origin: str) -> int:
    """A new file `name` (a path relative to the folder), opened for writing; one that exists
    already is a second member of that name (`origin` names it): refused."""
    try:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                       0o644, dir_fd=folder_fd)
    except FileExistsError:
        raise PrepError(appears_twice(origin)) from None


def write_chunks(chunks: Iterable[bytes], fd: int, mode: int, mtime: Optional[float],
                 digest: bool) -> tuple[Optional[str], Optional[str]]:
    """Write the bytes of `chunks` to the new file `fd` and give it `mode` and `mtime` (None: the
    time of writing). Returns (its image kind, its SHA-256 when `digest`)."""
    kind, sha, head = None, hashlib.sha256() if digest else None, HeadScan()
    for buf in chunks:
        head.feed(buf)
        if sha is not None:
            sha.update(buf)
        view = memoryview(buf)
        while view:
            view = view[os.write(fd, view):]
    kind = head.end().kind
    keep_attributes(fd, mode, mtime)
    return kind, sha.hexdigest() if sha is not None else None


def twice(label: str, name: str) -> str:
    """The message for a member seen a second time."""
    return appears_twice("%s: member %s" % (label, shown(name)))


def appears_twice(origin: str) -> str:
    """The message for a member (`origin`: where it is) seen a second time."""
    return ("%s appears twice; refused: an official archive holds each image once, so this one is "
            "damaged or was altered: download it again" % origin)


def refuse_unless_file(m: Member, label: str, pattern_text: str) -> None:
    if not m.is_file():
        raise PrepError("%s: member %s; refused (only %s files belong here)"
                        % (label, m.describe(), pattern_text))
