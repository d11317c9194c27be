"""Stage 05: each split as one SquashFS image holding the tree 01 makes, built from the archives.

    ROOT/squashfs/train.sqfs        n01440764/n01440764_10026.JPEG ...       1,000 class folders
    ROOT/squashfs/val.sqfs          n01440764/ILSVRC2012_val_00000293.JPEG   1,000 x 50, as 03 sorts
    ROOT/squashfs/test.sqfs         ILSVRC2012_test_00000001.JPEG ...        flat
    ROOT/squashfs/SPLIT.sqfs.json   done marker: source, counts, sizes, listing digest, settings
    ROOT/squashfs/.SPLIT.sqfs.lock  flock of the run building SPLIT (and when it started)

A source (the archive in ROOT/downloads/, or with --from-tree the folder 01 made) is read once and
turned into one flat tar stream, a WNID/ entry per folder and then its files (owner 0, modes
0755/0644, each member's own time), piped into sqfstar (squashfs-tools >= 4.5.1) or, failing that,
tar2sqfs (squashfs-tools-ng). Nothing is written to disk but the image, under a temporary name;
every member is checked on the way as 01 checks it. Before the rename the image's listing (every
name, type, size, owner and mode, from `unsquashfs -lln`) must equal what was streamed into it, a
sample of files read back with `unsquashfs -cat` must equal the source's bytes, and the official
counts must hold. An interrupted build cannot be resumed: a rerun starts that image over.

Here: find_tools; make_plan (the split's members from members.plan_split: every check that can
come before the builder starts) -> feed (streams them in the source's order) -> Pack (the tar stream,
and the Listing and Sample it records) -> Builder (the process) -> check_image (unsquashfs) ->
build_split names the image; pack_split adds the marker, lock and leftovers; pack is the stage as
05_pack_squashfs.py runs it.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from . import members
from .console import (PrepError, disk_full_text, each_split, human, log, preflight, shown, some,
                      thousands)
from .extract import Config, find_archive, official_counts
from .files import (Lock, clear_temps, fsync_dir, need_folder, parse_json, read_json, temp_beside,
                    temp_of, write_json)
from .members import DIR_MODE, Plan, tar_header
from .progress import Progress

PROG = "05_pack_squashfs.py"
SPLITS = ("train", "val", "test")
OUT_DIR = "squashfs"                 # ROOT/squashfs/SPLIT.sqfs
SAMPLE = 64                          # files read back from each image: between 64 and 128
CHUNK = 8 << 20                      # largest sendfile() of one member's data
PIPE_SIZE = 1 << 20                  # the pipe into the builder (Linux default: 64 KiB)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# sqfstar: data stored as it is (JPEG does not shrink: compressing only costs time), each file's
# data in one piece (no fragments: a file is read with no neighbours' bytes), no duplicate search
# (costs time, finds nothing in ImageNet), no xattrs, owner root, root folder 0755 (else 0777).
# The inode and folder tables stay gzip-compressed (small, read once, cached). Times come from
# SOURCE_DATE_EPOCH (Tools.build_env): sqfstar 4.5.1 ignores -root-time.
SQFSTAR_OPTIONS = ("-noD", "-no-fragments", "-no-duplicates", "-no-xattrs", "-all-root",
                   "-root-mode", "755", "-exit-on-error", "-quiet", "-no-progress")
# tar2sqfs cannot store data uncompressed; gzip (read by every kernel and squashfuse) keeps a block
# as it is when it does not shrink. --no-skip: stop at a record it cannot read, never skip it.
TAR2SQFS_OPTIONS = ("--quiet", "--no-skip", "--no-xattr", "--compressor", "gzip")
PACKAGES = ("sqfstar comes with squashfs-tools 4.5.1 or later, tar2sqfs with squashfs-tools-ng, "
            "unsquashfs with squashfs-tools")
INSTALL = ("install them: sudo apt-get install squashfs-tools (Debian 12, Ubuntu 24.04 and later "
           "have sqfstar; on older releases add squashfs-tools-ng for tar2sqfs), or ask your "
           "cluster's admins for a module")
EPOCH_MAX = (1 << 32) - 1            # a SquashFS time is 32 bits
MASK = (1 << 128) - 1                # Listing's digests: sums of 128-bit hashes
LS_LINE = re.compile(r"([-dlbcps])([-rwxsStT]{9}) ([0-9]+)/([0-9]+) +([0-9]+) "
                     r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} squashfs-root(/.*)?\Z")
INTERRUPTED = ("the image being built was removed (an image cannot be resumed); run the same "
               "command again to build it anew")


@dataclass(frozen=True)
class Settings:
    root: str                        # absolute
    from_tree: bool = False          # pack ROOT/SPLIT/ instead of the archive
    processors: Optional[int] = None  # the builder's threads (default: every core)
    labels: Optional[str] = None     # val: the labels file (default: the devkit's, as 03 finds it)
    meta: Optional[str] = None       # val: the classes (default: ROOT/meta/synsets.csv)

    @property
    def out(self) -> str:
        return os.path.join(self.root, OUT_DIR)


# ----------------------------------------------------------------------------- the tools

@dataclass(frozen=True)
class Tools:
    builder: str                     # "sqfstar" or "tar2sqfs"
    path: str
    unsquashfs: str
    unsquashfs_help: str

    def build_argv(self, out: str, epoch: int, processors: Optional[int]) -> list[str]:
        if self.builder == "sqfstar":
            more = ["-processors", str(processors)] if processors else []
            return [self.path, *SQFSTAR_OPTIONS, *more, out]
        more = ["--num-jobs", str(processors)] if processors else []
        return [self.path, *TAR2SQFS_OPTIONS, "--defaults",
                "uid=0,gid=0,mode=0%o,mtime=%d" % (DIR_MODE, epoch), *more, out]

    def build_env(self, epoch: int) -> dict[str, str]:
        """sqfstar takes the image's time (superblock, root folder) from SOURCE_DATE_EPOCH, and
        clamps any later member time to it; tar2sqfs gets it in --defaults instead."""
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        if self.builder == "sqfstar":
            env["SOURCE_DATE_EPOCH"] = str(epoch)
        return env


def find_tools() -> Tools:
    """sqfstar (else tar2sqfs) to build, unsquashfs (with -lln and -cat) to check."""
    unsquashfs = shutil.which("unsquashfs")
    builder = next(((name, path) for name in ("sqfstar", "tar2sqfs")
                    for path in [shutil.which(name)] if path), None)
    if builder is None or unsquashfs is None:
        missing = [n for n, p in (("sqfstar or tar2sqfs", builder), ("unsquashfs", unsquashfs))
                   if p is None]
        raise PrepError("%s needs %s, not found in PATH (%s): %s; then run again"
                        % (PROG, " and ".join(missing), PACKAGES, INSTALL))
    r = subprocess.run([unsquashfs, "-help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors="replace")
    if "-lln" not in r.stdout or "-cat" not in r.stdout:
        raise PrepError("%s has no -lln or -cat option, which checking an image needs: it is older "
                        "than squashfs-tools 4.5; %s" % (unsquashfs, INSTALL))
    if builder[0] == "tar2sqfs":
        log.info("sqfstar not found (squashfs-tools 4.5.1 or later); building with %s, which "
                 "compresses every block (slower)", builder[1])
    return Tools(builder[0], builder[1], unsquashfs, r.stdout)


def tool_version(tools: Tools) -> str:
    """'sqfstar version 4.5.1 (2022/03/17)': the first line of the builder's version text."""
    flag = "-version" if tools.builder == "sqfstar" else "--version"
    try:
        r = subprocess.run([tools.path, flag], capture_output=True, text=True, errors="replace",
                           stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return tools.builder
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if r.returncode == 0 and first else tools.builder


# ----------------------------------------------------------------------------- what an image holds

class Listing:
    """Per folder of an image: its entries, their bytes, and a digest of their (name, type, size)
    that does not depend on their order. Built from the stream and again from the image."""

    def __init__(self) -> None:
        self.folders: dict[str, list[int]] = {}     # folder ("" = the root) -> [entries, bytes, digest]
        self.files = self.bytes = 0

    def add(self, path: str, is_dir: bool, size: int) -> None:
        parent, _, name = path.rpartition("/")
        line = ("%s\t%s\t%d" % (name, "d" if is_dir else "f", size)).encode("utf-8", "surrogateescape")
        h = int.from_bytes(hashlib.blake2b(line, digest_size=16).digest(), "big")
        rec = self.folders.setdefault(parent, [0, 0, 0])
        rec[0] += 1
        rec[1] += size
        rec[2] = (rec[2] + h) & MASK
        if is_dir:
            self.folders.setdefault(path, [0, 0, 0])
        else:
            self.files += 1
            self.bytes += size

    def digest(self) -> str:
        h = hashlib.sha256()
        for folder in sorted(self.folders):
            line = "%s\t%d\t%d\t%032x\n" % (folder, *self.folders[folder])
            h.update(line.encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def differences(self, image: "Listing") -> list[str]:
        """Where the image (`image`) differs from what was streamed (self), one line per folder."""
        out = []
        for folder in sorted(set(self.folders) | set(image.folders)):
            want, got = self.folders.get(folder), image.folders.get(folder)
            where = folder or "the image's root"
            if want is None or got is None:
                out.append("%s: %s" % (where, "not streamed" if want is None else "missing"))
            elif want != got:
                out.append("%s: streamed %d entries (%s), the image holds %d (%s)%s"
                           % (where, want[0], human(want[1]), got[0], human(got[1]),
                              "; names or sizes differ" if want[:2] == got[:2] else ""))
        return out


@dataclass(frozen=True)
class Piece:
    """One file of an image and where its bytes are: `size` bytes at `offset` of file `source`."""
    path: str
    source: str
    offset: int
    size: int


class Sample:
    """Every k-th file streamed, k doubling as needed: 64 to 128 files spread over the whole
    image, the same ones on every build; plus the last file."""

    def __init__(self, limit: int = SAMPLE) -> None:
        self.limit, self.every, self.seen = limit, 1, 0
        self.items: list[Piece] = []
        self.last: Optional[Piece] = None

    def offer(self, piece: Piece) -> None:
        if self.seen % self.every == 0:
            self.items.append(piece)
            if len(self.items) >= 2 * self.limit:
                self.items = self.items[::2]
                self.every *= 2
        self.seen += 1
        self.last = piece

    def pieces(self) -> list[Piece]:
        if self.last is not None and (not self.items or self.items[-1] != self.last):
            return self.items + [self.last]
        return list(self.items)


# ----------------------------------------------------------------------------- the stream

class Pack:
    """The flat tar stream into the builder's stdin (`fd`), and what it records on the way: the
    listing, the sample, the counts. Times later than `epoch` are clamped to it."""

    def __init__(self, fd: int, epoch: int, bar: Progress) -> None:
        self.fd, self.epoch, self.bar = fd, epoch, bar
        self.listing = Listing()
        self.sample = Sample()
        self.top_folders = 0
        self.sendfile = True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _time(self, mtime: float) -> int:
        return max(0, min(int(mtime), self.epoch))

    @staticmethod
    def epoch_of(mtimes) -> int:
        """The image's time: the newest of `mtimes`, within what a superblock holds."""
        return max(0, min(int(max(mtimes)), EPOCH_MAX))

    def folder(self, path: str, mtime: float) -> None:
        self._write(tar_header(path, 0, self._time(mtime), True))
        self.listing.add(path, True, 0)
        self.top_folders += "/" not in path

    def file(self, piece: Piece, mtime: float, fd: int, pos: Optional[int] = None,
             hashed: bool = False) -> Optional[str]:
        """Member piece.path: piece.size bytes at piece.offset of `fd` (open on piece.source);
        `pos`: where the source is now, for the progress (default: the bytes streamed so far).
        `hashed`: the bytes pass through here (no sendfile) and their SHA-256 is returned."""
        self._write(tar_header(piece.path, piece.size, self._time(mtime), False))
        h = hashlib.sha256() if hashed else None
        self._copy(fd, piece.offset, piece.size, piece.source, h)
        self._write(bytes(-piece.size % tarfile.BLOCKSIZE))
        self.listing.add(piece.path, False, piece.size)
        self.sample.offer(piece)
        if self.listing.files % 64 == 0:
            self.bar.update(self.listing.bytes if pos is None else pos,
                            "%s files" % thousands(self.listing.files))
        return h.hexdigest() if h is not None else None

    def _copy(self, fd: int, offset: int, size: int, source: str, h=None) -> None:
        left = size
        while left:
            n = 0
            if self.sendfile and h is None:
                try:
                    n = os.sendfile(self.fd, fd, offset, min(left, CHUNK))
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    self.sendfile = False       # no sendfile into a pipe here: copy by hand
                    continue
            else:
                buf = os.pread(fd, min(left, CHUNK), offset)
                if h is not None:
                    h.update(buf)
                self._write(buf)
                n = len(buf)
            if n == 0:
                raise PrepError("%s ended %s bytes early, while being read (was it changed or "
                                "truncated meanwhile?); run again" % (source, thousands(left)))
            offset += n
            left -= n

    def end(self) -> None:
        self._write(bytes(2 * tarfile.BLOCKSIZE))


# ----------------------------------------------------------------------------- the plan

FROM_TREE_HINT = "pack the tree 01_unzip.sh made with --from-tree"


def make_plan(cfg: Settings, split: str) -> Plan:
    """The split's members (members.plan_split: every check that can come first)."""
    return members.plan_split(cfg, split, cfg.from_tree, FROM_TREE_HINT)


def image_time(plan: Plan) -> int:
    """The image's time (its root folder and superblock): the newest of the members' times."""
    return Pack.epoch_of([plan.newest])


def feed(pack: Pack, src: Plan, epoch: int) -> None:
    """Every entry of the source: a folder (its time, else the image's), an archive's member read
    in place (the archive kept open), or a tree's file opened one by one and, with the manifest,
    hashed on the way and checked against it."""
    archive_fd, archive = -1, None
    try:
        for it in src.entries():
            if isinstance(it, members.Folder):
                pack.folder(it.path, epoch if it.mtime is None else it.mtime)
            elif it.archived:
                if it.source != archive:
                    if archive_fd >= 0:
                        os.close(archive_fd)
                    archive_fd, archive = os.open(it.source, os.O_RDONLY | os.O_CLOEXEC), it.source
                pack.file(Piece(it.path, it.source, it.offset, it.size), it.mtime, archive_fd,
                          pos=it.offset + it.size)
            else:
                with members.open_tree_file(it.source, it.size) as (fd, st):
                    got = pack.file(Piece(it.path, it.source, 0, st.st_size), st.st_mtime, fd,
                                    hashed=bool(src.sums))
                    if src.sums is not None:
                        src.sums.check(it.rel, it.source, got)
    finally:
        if archive_fd >= 0:
            os.close(archive_fd)


# ----------------------------------------------------------------------------- the builder

class Builder:
    """sqfstar or tar2sqfs reading the stream on stdin and writing the image `out`."""

    def __init__(self, tools: Tools, out: str, epoch: int, processors: Optional[int]) -> None:
        self.tools, self.out = tools, out
        self.tail: collections.deque = collections.deque(maxlen=20)
        argv = tools.build_argv(out, epoch, processors)
        log.info("%s", " ".join(argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=tools.build_env(epoch))
        self.fd = self.proc.stdin.fileno()
        try:
            fcntl.fcntl(self.fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass                                 # a smaller pipe is only slower
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.tail.append(line.decode("utf-8", "replace").rstrip())

    def failure(self) -> str:
        said = "; ".join(t for t in self.tail if t.strip()) or "no message"
        if "No space left" in said or "quota" in said.lower():
            return disk_full_text(self.out)
        rc = self.proc.returncode
        how = "was killed by signal %d (out of memory?)" % -rc if rc < 0 else "failed (exit code %d)" % rc
        return "%s %s: %s" % (self.tools.builder, how, said)

    def finish(self) -> None:
        """Close the stream, wait for the image; a failure is a PrepError with its message."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.reader.join(timeout=10)
        if self.proc.returncode != 0:
            raise PrepError(self.failure())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


def stream_into(tools: Tools, plan: Plan, tmp: str, processors: Optional[int]) -> Pack:
    """Run the builder on the plan's stream; the listing and sample of what went in."""
    bar, epoch = Progress(plan.split, plan.total, "B"), image_time(plan)
    builder = Builder(tools, tmp, epoch, processors)
    try:
        pack = Pack(builder.fd, epoch, bar)
        try:
            feed(pack, plan, epoch)
            pack.end()
        except BrokenPipeError:
            builder.finish()                     # says why it stopped reading
            raise PrepError("%s stopped reading the stream" % tools.builder) from None
        builder.finish()
    finally:
        builder.stop()
        bar.close()
    return pack


# ----------------------------------------------------------------------------- checks

def image_listing(tools: Tools, image: str) -> Listing:
    """The image's entries from `unsquashfs -lln`, read strictly: every line in the expected form,
    a root folder first, owner 0/0, folders 0755 and files 0644 only."""
    got = Listing()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([tools.unsquashfs, "-lln", image], stdout=subprocess.PIPE,
                                stderr=err, text=True, errors="surrogateescape")
        bad: list[str] = []
        nbad = 0
        try:
            for n, line in enumerate(proc.stdout):
                why = listing_line(got, line.rstrip("\n"), n)
                if why:
                    nbad += 1
                    bad += [why] if len(bad) < 10 else []
        finally:
            proc.stdout.close()
            proc.wait()
        err.seek(0)
        said = err.read().decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise PrepError("unsquashfs -lln %s failed (exit code %d): %s"
                        % (image, proc.returncode, said[-500:]))
    if bad:
        raise PrepError("the image %s holds %d unexpected entries: %s" % (image, nbad, some(bad)))
    return got


def listing_line(got: Listing, line: str, n: int) -> Optional[str]:
    """Add one line of `unsquashfs -lln` to `got`; the problem with it, if any."""
    m = LS_LINE.match(line)
    if not m:
        return "line %d is not a listing line: %r" % (n + 1, line[:120])
    kind, perms, uid, gid, size, path = m.groups()
    if (n == 0) != (path is None):
        return "line %d: %s" % (n + 1, "the root folder should come first" if n else line)
    want = "rwxr-xr-x" if kind == "d" else "rw-r--r--"
    if kind not in "-d" or perms != want or (uid, gid) != ("0", "0"):
        return "%s (%s%s %s/%s)" % (path or "/", kind, perms, uid, gid)
    if path is not None:
        got.add(path[1:], kind == "d", 0 if kind == "d" else int(size))
    return None


def check_sample(tools: Tools, image: str, pieces: list[Piece]) -> None:
    """The sample's files read back from the image equal the source's bytes."""
    r = subprocess.run([tools.unsquashfs, "-cat", image, *[p.path for p in pieces]],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise PrepError("unsquashfs -cat %s failed (exit code %d): %s"
                        % (image, r.returncode, r.stderr.decode("utf-8", "replace")[-500:]))
    data, pos, differ = r.stdout, 0, []
    for p in pieces:
        with open(p.source, "rb") as f:
            f.seek(p.offset)
            if data[pos:pos + p.size] != f.read(p.size):
                differ.append(p.path)
        pos += p.size
    if differ or pos != len(data):
        raise PrepError("the image %s gives other bytes than its source for %d of %d files read "
                        "back (%s)" % (image, len(differ), len(pieces), some(differ) or "lengths"))


def check_time(tools: Tools, image: str, epoch: int) -> None:
    """The image's creation time is the one asked for: its bytes do not depend on when it was built."""
    if "-mkfs-time" not in tools.unsquashfs_help:
        return
    r = subprocess.run([tools.unsquashfs, "-mkfs-time", image], capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() != str(epoch):
        raise PrepError("the image %s was stamped %r, not %d: this %s does not make reproducible "
                        "images; install squashfs-tools 4.5.1 or later"
                        % (image, r.stdout.strip() or r.stderr.strip(), epoch, tools.builder))


def check_image(tools: Tools, plan: Plan, pack: Pack, tmp: str) -> None:
    """Counts, listing, bytes and time of the image just built, before it gets its name."""
    listing = pack.listing
    log.info("%s: streamed %s folders, %s files, %s; checking the image", plan.split,
             thousands(len(listing.folders) - 1), thousands(listing.files), human(listing.bytes))
    classes = pack.top_folders if plan.classes else None
    if plan.expect_files is not None and listing.files != plan.expect_files:
        raise PrepError("%s: %s holds %s images, but 01_unzip.sh extracted %s: the tree changed "
                        "since; extract it again with 01_unzip.sh, or pack the archive"
                        % (plan.split, plan.source, thousands(listing.files),
                           thousands(plan.expect_files)))
    if plan.check_official:
        official_counts(plan.split, plan.archive_size, classes, listing.files)
    differences = listing.differences(image_listing(tools, tmp))
    if differences:
        raise PrepError("%s: the image's listing differs from what was streamed into it (%d "
                        "folders): %s" % (plan.split, len(differences), some(differences)))
    pieces = pack.sample.pieces()
    check_sample(tools, tmp, pieces)
    check_time(tools, tmp, image_time(plan))
    log.info("%s: the image's listing equals the stream (%s entries); %d files read back equal "
             "the source", plan.split, thousands(sum(f[0] for f in listing.folders.values())),
             len(pieces))


# ----------------------------------------------------------------------------- the stage

def duration(seconds: float) -> str:
    return "%.1f s" % seconds if seconds < 90 else "%.1f min" % (seconds / 60)


def marker_of(image: str) -> str:
    return image + ".json"


def finished(image: str) -> Optional[dict]:
    """The image's done marker, if the image is there with the size it records."""
    doc = read_json(marker_of(image), "%s writes it when the image is complete: remove it, and "
                                      "the image if it was not built here, then run again" % PROG)
    try:
        ok = isinstance(doc, dict) and os.path.getsize(image) == doc.get("image_bytes")
    except OSError:
        return None
    return doc if ok else None


def built_from(cfg: Settings, split: str, doc: dict) -> str:
    """What the marker says the image was built from, named in this ROOT, or, when that was
    another ROOT's (the image was copied or moved since), with that ROOT's path and saying so."""
    origin, source = str(doc.get("origin")), str(doc.get("source"))
    if origin == "archive":
        here = os.path.join(cfg.root, "downloads", os.path.basename(source))
    else:
        here = os.path.join(cfg.root, split)
    if os.path.realpath(source) == os.path.realpath(here):
        return "the %s %s" % (origin, here)
    return "the %s %s of another ROOT: the image was copied or moved here since" % (
        shown(origin), shown(source))


def already_done(cfg: Settings, split: str, doc: dict) -> None:
    log.info("%s: already done (%s files, %s in %s, built from %s); nothing to do", split,
             thousands(doc.get("files") or 0), human(doc["image_bytes"]),
             os.path.join(cfg.out, split + ".sqfs"), built_from(cfg, split, doc))
    if not cfg.from_tree and doc.get("origin") == "archive":
        try:
            archive = find_archive(Config(cfg.root), split, FROM_TREE_HINT)
        except PrepError:
            return
        if os.path.getsize(archive) != doc.get("archive_size"):
            log.warning("%s: warning: %s is not the archive the image was built from (%s B, now "
                        "%s B): delete %s and its .json to build it anew", split, archive,
                        thousands(doc.get("archive_size") or 0),
                        thousands(os.path.getsize(archive)), split + ".sqfs")


def clear_interrupted(cfg: Settings, split: str, lock: Lock) -> None:
    """Remove what an interrupted build left (saying what was lost), then note this run's start
    in the lock file."""
    name = split + ".sqfs"
    leftovers = [e for e in os.scandir(cfg.out) if temp_of(e.name) == name and e.is_file()]
    if leftovers:
        started = None
        try:
            started = parse_json(os.pread(lock.fd, 4096, 0).decode() or "null")
        except (OSError, ValueError):
            pass
        for e in leftovers:
            st = e.stat()
            ran = " in %s" % duration(st.st_mtime - started["started"]) \
                if isinstance(started, dict) and isinstance(started.get("started"), (int, float)) else ""
            log.info("%s: a build interrupted earlier had written %s%s (%s); an image cannot be "
                     "resumed: removing it and starting over", split, human(st.st_size), ran, e.name)
    clear_temps(cfg.out, name)
    clear_temps(cfg.out, name + ".json")
    note = json.dumps({"started": time.time(), "host": socket.gethostname(), "pid": os.getpid()})
    os.ftruncate(lock.fd, 0)
    os.pwrite(lock.fd, note.encode() + b"\n", 0)


def refuse_foreign(image: str) -> None:
    """An image under the final name without a valid marker was not finished here."""
    if os.path.exists(marker_of(image)):
        log.info("%s does not match its marker (missing, or another size): building it anew",
                 image)
        os.remove(marker_of(image))
    if os.path.lexists(image):
        raise PrepError("%s exists but was not completed by %s (no valid %s): move it away or "
                        "delete it, then run again" % (image, PROG, os.path.basename(marker_of(image))))


def marker_doc(tools: Tools, plan: Plan, pack: Pack, tmp: str, seconds: float) -> dict:
    return {"split": plan.split, "image": plan.split + ".sqfs", "image_bytes": os.path.getsize(tmp),
            "origin": plan.origin, "source": plan.source, "archive": plan.archive,
            "archive_size": plan.archive_size, "folders": len(pack.listing.folders) - 1,
            "files": pack.listing.files, "bytes": pack.listing.bytes,
            "listing_digest": pack.listing.digest(), "epoch": image_time(plan),
            "builder": tool_version(tools),
            "options": list(tools.build_argv("IMAGE", image_time(plan), None)[1:-1]),
            "seconds": round(seconds, 1)}


def build_split(cfg: Settings, split: str, tools: Tools) -> None:
    """Plan (every check that can come first), stream into the builder, check, name the image."""
    image = os.path.join(cfg.out, split + ".sqfs")
    plan = make_plan(cfg, split)
    preflight(cfg.out, plan.total, "%s image" % split)
    tmp = temp_beside(image)
    t0 = time.monotonic()
    try:
        pack = stream_into(tools, plan, tmp, cfg.processors)
        check_image(tools, plan, pack, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        doc = marker_doc(tools, plan, pack, tmp, time.monotonic() - t0)
        write_json(marker_of(image), doc)
        os.rename(tmp, image)
        fsync_dir(cfg.out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    log.info("%s: complete: %s, %s holding %s folders and %s files (%s), built and checked in %s",
             split, image, human(doc["image_bytes"]), thousands(doc["folders"]),
             thousands(doc["files"]), human(doc["bytes"]), duration(doc["seconds"]))


def pack_split(cfg: Settings, split: str, tools: Callable[[], Tools]) -> int:
    image = os.path.join(cfg.out, split + ".sqfs")
    doc = finished(image)
    if doc:
        already_done(cfg, split, doc)
        return 0
    found = tools()
    need_folder(cfg.out, "the images")
    os.makedirs(cfg.out, exist_ok=True)
    with Lock(os.path.join(cfg.out, ".%s.lock" % os.path.basename(image)),
              "another %s is building %s; let it finish, or stop it, then run again" % (PROG, image)) as lock:
        if finished(image):
            log.info("%s: already done by another run; nothing to do", split)
            return 0
        clear_interrupted(cfg, split, lock)
        refuse_foreign(image)
        build_split(cfg, split, found)
    return 0


def pack(cfg: Settings, splits: list[str]) -> int:
    """Build ROOT/squashfs/SPLIT.sqfs for each split; go on with the others after a failure."""
    members.need_root(cfg.root)
    log.info("ROOT=%s splits=%s source=%s", cfg.root, " ".join(splits),
             "the trees (--from-tree)" if cfg.from_tree else "the archives in downloads/")
    cache: list[Tools] = []

    def tools() -> Tools:
        if not cache:
            cache.append(find_tools())
        return cache[0]

    return each_split(splits, lambda split: pack_split(cfg, split, tools), cfg.out)


def iter_splits(names: list[str]) -> list[str]:
    """The requested splits, once each, in the order train, val, test ('all': the three)."""
    chosen = set(SPLITS) if "all" in names else set(names)
    return [s for s in SPLITS if s in chosen]
