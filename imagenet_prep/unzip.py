"""01_unzip.sh: unpack the ILSVRC2012 archives into ROOT/train/WNID/, ROOT/val/, ROOT/test/, ROOT/devkit/.

train is in train.py; val, test and the devkit are here: each is extracted into a hidden
temporary folder beside its final one and renamed into place when complete and checked.
"""
from __future__ import annotations

import os
import re
import sys
import tarfile
import threading
from typing import Optional

from . import facts, manifest
from .console import (DISK_FULL, PrepError, Parser, disk_full_text, human, jobs_option, log, preflight, run,
                      some, thousands)
from .extract import (Config, check_archive, done_marker, find_archive, maybe_remove, resolve_final,
                      official_counts, refuse_unless_file, safe_mode, twice, write_member)
from .files import Lock, open_dir, remove_tree, temp_beside, write_json
from .progress import Progress
from .tarstream import Source, iter_tar, read_tarfile
from .train import RE_OUTER, clear_split_leftovers, do_train

PROG = "01_unzip.sh"
MAX_SHARDS = 10000     # --shard K/N: N at most this (the release has 1,000 classes)
MAX_CONNECTIONS = 32   # --stream --connections N: N at most this
RE_FLAT = {"val": re.compile(r"(ILSVRC2012_val_[0-9]{8}\.JPEG)\Z"),     # [0-9], not \d (any Unicode digit)
           "test": re.compile(r"(?:test/)?(ILSVRC2012_test_[0-9]{8}\.JPEG)\Z")}
PATTERN_TEXT = {"val": "ILSVRC2012_val_<8 digits>.JPEG",
                "test": "[test/]ILSVRC2012_test_<8 digits>.JPEG"}
INTERRUPTED = "complete work is kept and a rerun resumes"


# ----------------------------------------------------------------------------- where a split goes

def prepare_final(cfg: Config, final: str, split: str) -> None:
    """Clear leftovers; refuse a folder under the final name that this script did not finish."""
    clear_split_leftovers(cfg, split, final)
    refuse_unfinished(cfg, final, split)


def refuse_unfinished(cfg: Config, final: str, split: str) -> None:
    """Refuse a folder under the final name that this script did not finish (an empty one is
    fine: the rename replaces it); a done marker whose folder is gone is removed."""
    if os.path.exists(cfg.marker(split)) and not os.path.isdir(final):
        os.remove(cfg.marker(split))                 # the split it spoke of is gone
    if os.path.isdir(final) and not os.listdir(final):
        return                                   # an empty folder: the rename replaces it
    if os.path.lexists(final):
        raise PrepError("%s exists but was not completed by 01_unzip.sh (no %s); move it away or "
                        "delete it, then run again" % (final, cfg.marker(split)))


# ----------------------------------------------------------------------------- val and test

class FlatNames:
    """The members of a val or test tar as 01 accepts them: files named as the split's images,
    each once (the test tar's test/ folder entry is skipped); names that do not fit are
    collected and refused all together by check()."""

    def __init__(self, split: str, label: str) -> None:
        self.split, self.label = split, label
        self.refused: list[str] = []
        self.seen: set[str] = set()

    def name(self, m) -> Optional[str]:
        """The image's file name, or None (a folder entry to skip, or a refused name)."""
        if self.split == "test" and m.type == b"5" and m.name.rstrip("/") == "test":
            return None
        refuse_unless_file(m, self.label, PATTERN_TEXT[self.split])
        match = RE_FLAT[self.split].match(m.name)
        if not match:
            self.refused.append(m.name)
            return None
        if match.group(1) in self.seen:
            raise PrepError(twice(self.label, m.name))
        self.seen.add(match.group(1))
        return match.group(1)

    def check(self) -> None:
        if self.refused:
            hint = " (this looks like the train archive)" if RE_OUTER.match(self.refused[0]) else ""
            raise PrepError("%s: %d member(s) refused, expected names like %s%s: %s"
                            % (self.label, len(self.refused), PATTERN_TEXT[self.split], hint,
                               some(self.refused)))


class FlatWriter(FlatNames):
    """The members of the val or test tar as files of one folder, checked on the way."""

    def __init__(self, split: str, folder_fd: int, label: str, digest: bool) -> None:
        super().__init__(split, label)
        self.folder_fd, self.digest = folder_fd, digest
        self.count = self.bytes = 0
        self.sums: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, src: Source, m) -> Optional[str]:
        """Write member m (unless refused); its file name, or None."""
        name = self.name(m)
        if name is not None:
            self.write(src, m, name)
        return name

    def write(self, src: Source, m, name: str) -> Optional[str]:
        """Write member m as `name` (once a member was refused, only count it); its SHA-256 when
        hashed. name() takes the members in archive order; write() may run in several threads at
        once, one member each."""
        sha = None
        if not self.refused:
            _, sha = write_member(src, m, self.folder_fd, name, self.label, self.digest)
        with self.lock:
            if sha:
                self.sums.append((name, sha))
            self.count += 1
            self.bytes += m.size
        return sha


def write_flat(src: Source, size: int, split: str, tmp: str, label: str,
               digest: bool) -> tuple[int, int, list[tuple[str, str]]]:
    """The members of the val or test tar as files of folder `tmp`: (count, bytes, [(name, sha)])."""
    bar = Progress(split, size, "B")
    with open_dir(tmp) as folder:
        out = FlatWriter(split, folder, label, digest)
        for m in iter_tar(src, 0, size, label, need_eof=True):
            if out.add(src, m) and not out.refused:
                bar.update(m.offset + m.size, "%d images" % out.count)
    bar.close()
    out.check()
    return out.count, out.bytes, out.sums


def finish_flat(cfg: Config, split: str, tmp: str, final: str, archive: tuple[str, int],
                counts: tuple[int, int, list]) -> None:
    """Check the counts, write the manifest and the done marker, rename the folder into place."""
    count, nbytes, sums = counts
    log.info("%s: verified %d images, %s", split, count, human(nbytes))
    official_counts(split, archive[1], None, count, cfg.copy)
    if count != facts.images(split):
        log.info("%s: note: the official release has %s images; this archive has %s", split,
                 thousands(facts.images(split)), thousands(count))
    with_manifest = cfg.manifest and len(sums) == count
    if with_manifest:
        manifest.write(cfg.root, split, [("%s/%s" % (split, n), d) for n, d in sums])
    write_json(cfg.marker(split), {"images": count, "bytes": nbytes, "archive": archive[0],
                                   "archive_size": archive[1], "manifest": with_manifest})
    os.rename(tmp, final)
    cfg.forget_stream(split)
    log.info("%s: complete: %d images in %s%s", split, count, final,
             ", manifest meta/SHA256SUMS.%s" % split if with_manifest else "")


def do_flat(cfg: Config, split: str) -> int:
    final = resolve_final(cfg.root, split)
    doc = done_marker(cfg, split, final)
    if doc:
        log.info("%s: already done (%d images, %s in %s); nothing to do", split, doc["images"],
                 human(doc["bytes"]), final)
        clear_split_leftovers(cfg, split, final)
        maybe_remove(cfg, split, None, doc)
        return 0
    archive = find_archive(cfg, split)
    check_archive(archive, split)
    size = os.path.getsize(archive)
    with Lock(cfg.marker(split) + ".lock", "another 01_unzip.sh is extracting %s" % split, wait=True):
        if done_marker(cfg, split, final):
            log.info("%s: already done by another process; nothing to do", split)
            return 0
        prepare_final(cfg, final, split)
        preflight(os.path.dirname(final), size, split)
        tmp = temp_beside(final)
        os.mkdir(tmp, 0o755)
        try:
            with open(archive, "rb", buffering=1 << 20) as f:
                counts = write_flat(Source(f), size, split, tmp, os.path.basename(archive),
                                    cfg.manifest)
            finish_flat(cfg, split, tmp, final, (os.path.basename(archive), size), counts)
        except BaseException as e:
            remove_tree(tmp)
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                raise PrepError("%s: %s" % (split, disk_full_text(os.path.dirname(final), size))) \
                    from None
            raise
    maybe_remove(cfg, split, archive)
    return 0


# ----------------------------------------------------------------------------- devkit

def devkit_members(members: list[tarfile.TarInfo], label: str) -> str:
    """Check every member before anything is written: only files and folders, all under one top
    folder, no absolute or '..' paths. Returns the top folder's name."""
    top = None
    for ti in members:
        parts = ti.name.rstrip("/").split("/")
        if ti.name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise PrepError("%s: member %s refused: absolute path, '..' or empty part"
                            % (label, ti.name))
        if not (ti.isfile() or ti.isdir()):
            raise PrepError("%s: member %s is a link or device; refused" % (label, ti.name))
        top = top or parts[0]
        if parts[0] != top:
            raise PrepError("%s: member %s refused: every member must be under one top folder "
                            "(%s/)" % (label, ti.name, top))
    if top is None or not any(ti.isfile() for ti in members):
        raise PrepError("%s holds no files; download it again" % label)
    return top


def write_devkit(tar: tarfile.TarFile, members: list[tarfile.TarInfo], tmp: str) -> None:
    """Extract the checked members into `tmp`, keeping their times and (safe) modes."""
    folders = []
    for ti in members:
        path = os.path.join(tmp, *ti.name.rstrip("/").split("/"))
        if ti.isdir():
            os.makedirs(path, exist_ok=True)
            folders.append((path, ti))
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        src = tar.extractfile(ti)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            while True:
                buf = src.read(1 << 20)
                if not buf:
                    break
                out.write(buf)
            out.flush()
            os.fchmod(out.fileno(), safe_mode(ti.mode))
            os.utime(out.fileno(), (ti.mtime, ti.mtime))
    for path, ti in reversed(folders):   # innermost first: writing files changes a folder's time
        os.chmod(path, safe_mode(ti.mode) | 0o700)
        os.utime(path, (ti.mtime, ti.mtime))


def do_devkit(cfg: Config) -> int:
    final = resolve_final(cfg.root, "devkit")
    doc = done_marker(cfg, "devkit", final)
    if doc:
        log.info("devkit: already done (%s in %s); nothing to do", doc.get("top"), final)
        clear_split_leftovers(cfg, "devkit", final)
        maybe_remove(cfg, "devkit", None, doc)
        return 0
    archive = find_archive(cfg, "devkit")
    fmt = check_archive(archive, "devkit")
    label = os.path.basename(archive)
    with Lock(cfg.marker("devkit") + ".lock", "another 01_unzip.sh is extracting the devkit",
              wait=True):
        if done_marker(cfg, "devkit", final):
            log.info("devkit: already done by another process; nothing to do")
            return 0
        prepare_final(cfg, final, "devkit")
        tar, members = read_tarfile(archive)
        tmp, need = temp_beside(final), sum(ti.size for ti in members)
        try:
            top = devkit_members(members, label)
            preflight(os.path.dirname(final), need, "devkit")
            os.mkdir(tmp, 0o755)
            write_devkit(tar, members, tmp)
            count = sum(1 for ti in members if ti.isfile())
            write_json(cfg.marker("devkit"), {"top": top, "files": count, "bytes": need,
                                              "archive": label,
                                              "archive_size": os.path.getsize(archive)})
            os.rename(tmp, final)
        except BaseException as e:
            remove_tree(tmp)
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                raise PrepError("devkit: %s" % disk_full_text(os.path.dirname(final), need)) \
                    from None
            raise
        finally:
            tar.close()
    log.info("devkit: complete: %d files, %s in %s/%s (%s archive)", count, human(need), final, top,
             "gzip" if fmt == "gz" else "plain tar")
    maybe_remove(cfg, "devkit", archive)
    return 0


# ----------------------------------------------------------------------------- command line

def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Unpack ILSVRC2012 archives from ROOT/downloads/ into ROOT.",
               epilog=EPILOG)
    p.add_argument("splits", nargs="+", metavar="SPLIT", help="train val test devkit all")
    p.add_argument("--root", metavar="DIR",
                   help="data folder (default: $IMAGENET_ROOT, else the current directory)")
    p.add_argument("--source", metavar="NAME", default="imagenet", help="where the files come "
                   "from: imagenet (the image-net.org archives in ROOT/downloads/), hf (the Hugging "
                   "Face dataset ILSVRC/imagenet-1k, in ROOT/downloads/hf/) or kaggle (the Kaggle "
                   "competition's zip, in ROOT/downloads/kaggle/), as 00_download.sh --source "
                   "downloaded them; every source gives the same tree (docs/sources.md)")
    p.add_argument("--archive", metavar="PATH", help="read this archive instead of "
                   "ROOT/downloads/<official name> (one SPLIT only)")
    p.add_argument("--jobs", metavar="N", help="classes extracted in parallel; with --stream, "
                   "threads writing the files; with --source, files (or ranges of the zip) read in "
                   "parallel (default: the cores available to this process)")
    p.add_argument("--shard", metavar="K/N", help="extract only share K of N of the train classes "
                   "(0 <= K < N <= %d); shares can run at the same time on one ROOT. Default: in a "
                   "SLURM array, K = (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / "
                   "SLURM_ARRAY_TASK_STEP and N = SLURM_ARRAY_TASK_COUNT; else 0/1 (everything)"
                   % MAX_SHARDS)
    p.add_argument("--remove-archive", action="store_true", help="delete the archive once its "
                   "split is complete and verified; with --source, the split's files (the Kaggle "
                   "zip: once every split asked is) (default: keep)")
    p.add_argument("--no-manifest", dest="manifest", action="store_false", help="do not hash the "
                   "files for ROOT/meta/SHA256SUMS.SPLIT (default: hash them while writing)")
    s = p.add_argument_group("streaming (no archive on disk)")
    s.add_argument("--stream", action="store_true", help="read train, val or test straight from "
                   "the link in urls.sh (as 00_download.sh does) into the tree: no archive is "
                   "stored; the MD5 of all bytes is checked, across interruptions")
    s.add_argument("--urls", metavar="FILE", help="with --stream: the file with the DOWNLOAD_URL_* "
                   "links (default: $IMAGENET_URLS, else ./urls.sh, else urls.sh beside this script)")
    s.add_argument("--connections", metavar="N", default="1", help="with --stream: fetch ahead over "
                   "N connections (1 to %d) into a spool of 64 MiB windows (at most 2N on disk)"
                   % MAX_CONNECTIONS)
    s.add_argument("--no-verify", dest="verify", action="store_false", help="with --stream: do not "
                   "check the MD5 (the size is always checked)")
    s.add_argument("--in-flight", metavar="MIB", default="64", help="with --stream: at most this "
                   "many MiB of files read from the link and not yet written (--jobs threads write "
                   "them)")
    return p


def check_stream_options(parser: Parser, args, splits: list[str]) -> int:
    """The options that go with --stream (or not); the number of connections."""
    if not args.stream:
        for given, name in ((args.urls, "--urls"), (args.connections != "1", "--connections"),
                            (not args.verify, "--no-verify"), (args.in_flight != "64", "--in-flight")):
            if given:
                parser.error("%s goes with --stream" % name)
        return 1
    for given, name in ((args.archive, "--archive"), (args.shard, "--shard"),
                        (args.remove_archive, "--remove-archive")):
        if given:
            parser.error("%s does not go with --stream (no archive is stored)" % name)
    if "devkit" in splits and "all" not in args.splits:
        parser.error("--stream is for train, val and test; download the devkit (small) with "
                     "00_download.sh devkit and extract it with 01_unzip.sh devkit")
    if "devkit" in splits:
        splits.remove("devkit")                      # --stream all: train, val and test
    if not re.fullmatch(r"[1-9][0-9]?", args.connections) or int(args.connections) > MAX_CONNECTIONS:
        parser.error("--connections must be a whole number from 1 to %d, not '%s'"
                     % (MAX_CONNECTIONS, args.connections))
    if not re.fullmatch(r"[1-9][0-9]{0,3}", args.in_flight) or int(args.in_flight) > 4096:
        parser.error("--in-flight must be a whole number of MiB from 1 to 4096, not '%s'"
                     % args.in_flight)
    return int(args.connections)


EPILOG = """\
  train   ILSVRC2012_img_train.tar            -> ROOT/train/WNID/WNID_N.JPEG  (1,000 folders)
  val     ILSVRC2012_img_val.tar              -> ROOT/val/ILSVRC2012_val_%08d.JPEG
  test    ILSVRC2012_img_test_v10102019.tar   -> ROOT/test/ILSVRC2012_test_%08d.JPEG
          (or ILSVRC2012_img_test.tar)
  devkit  ILSVRC2012_devkit_t12.tar.gz        -> ROOT/devkit/ILSVRC2012_devkit_t12/...
          (or ILSVRC2012_devkit_t12.tar, ILSVRC2017_devkit.tar.gz)
  --source hf      ROOT/downloads/hf/data/*.tar.gz or *.parquet       -> the same tree (no devkit)
  --source kaggle  ROOT/downloads/kaggle/imagenet-object-localization-challenge.zip  -> the same

A rerun skips what is complete, clears leftovers of interrupted work and finishes the rest; a
finished split says "already done". Exit codes: 0 ok, 1 failure, 2 usage, 130 Ctrl-C, 143 SIGTERM.
Example: ./01_unzip.sh --root /data/imagenet all
"""


def check_source_options(parser: Parser, args, splits: list[str]) -> None:
    """--source hf|kaggle: what goes with it; the devkit is not among its splits."""
    if args.source not in ("imagenet", "hf", "kaggle"):
        parser.error("--source is imagenet, hf or kaggle, not '%s'" % args.source)
    if args.source == "imagenet":
        return
    for given, name in ((args.archive, "--archive"), (args.shard, "--shard"),
                        (args.stream, "--stream")):
        if given:
            parser.error("%s does not go with --source %s (it reads ROOT/downloads/%s/, as "
                         "00_download.sh --source %s left it)" % (name, args.source, args.source,
                                                                  args.source))
    if "devkit" in args.splits:
        parser.error("there is no devkit in the %s source: 02_convert_meta_clsloc.py takes the "
                     "classes from the source's own list (%s, which 01_unzip.sh --source %s "
                     "keeps), and 03 the val labels; ask for train, val, test or all"
                     % (args.source, "ROOT/hf/classes.py" if args.source == "hf" else
                        "ROOT/kaggle/LOC_synset_mapping.txt", args.source))
    if "devkit" in splits:
        splits.remove("devkit")                      # all: train, val and test


def splits_of(parser: Parser, names: list[str]) -> list[str]:
    """The requested splits, once each, devkit first (small), then train, val, test."""
    chosen = set()
    for s in names:
        if s == "all":
            chosen.update(facts.SPLITS)
        elif s in facts.SPLITS:
            chosen.add(s)
        else:
            parser.error("unknown split '%s' (one of: %s all)" % (s, " ".join(facts.SPLITS)))
    return [s for s in ("devkit", "train", "val", "test") if s in chosen]


def shard_of(parser: Parser, text: Optional[str]) -> tuple[int, int]:
    """--shard K/N, else a SLURM array task's share, else 0/1. Numbers are checked before use."""
    if text is not None:
        m = re.fullmatch(r"([0-9]{1,5})/([0-9]{1,5})", text)
        if not m:
            parser.error("--shard wants K/N with 0 <= K < N <= %d, e.g. --shard 0/8 (got '%s')"
                         % (MAX_SHARDS, text))
        k, n = int(m.group(1)), int(m.group(2))
        if not (1 <= n <= MAX_SHARDS and k < n):
            parser.error("--shard K/N needs 0 <= K < N <= %d (got '%s')" % (MAX_SHARDS, text))
        return k, n
    env = os.environ
    if not (env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT")):
        return 0, 1
    values = [env["SLURM_ARRAY_TASK_ID"], env.get("SLURM_ARRAY_TASK_MIN") or "0",
              env.get("SLURM_ARRAY_TASK_STEP") or "1", env["SLURM_ARRAY_TASK_COUNT"]]
    bad = [v for v in values if not re.fullmatch(r"[0-9]{1,7}", v)]
    if bad:
        raise PrepError("SLURM_ARRAY_TASK_* must be numbers of at most 7 digits (got '%s'); pass "
                        "--shard K/N instead" % bad[0])
    task, first, step, n = (int(v) for v in values)
    k = (task - first) // max(step, 1)
    if not (1 <= n <= MAX_SHARDS and 0 <= k < n):
        raise PrepError("cannot derive a shard from SLURM_ARRAY_TASK_ID=%d (MIN=%d STEP=%d COUNT=%d);"
                        " pass --shard K/N" % (task, first, step, n))
    log.info("SLURM array task %d: shard %d/%d", task, k, n)
    return k, n


def stream_splits(cfg: Config, splits: list[str], args, connections: int) -> int:
    """--stream: each split from its link (checked all before the first byte is fetched)."""
    from .stream import stream_flat, stream_train
    from .transport import policy_from_env
    from .urls import load
    policy = policy_from_env()
    links = load(splits, args.urls, args.verify)
    rc = 0
    for link in links:
        log.info("%s: streaming %s -> %s", link.split, link.shown, os.path.join(cfg.root, link.split))
        try:
            if link.split == "train":
                rc = max(rc, stream_train(cfg, link, policy, connections, args.verify,
                                          int(args.in_flight)))
            else:
                rc = max(rc, stream_flat(cfg, link.split, link, policy, connections, args.verify,
                                         int(args.in_flight)))
        except PrepError as e:
            log.error("error: %s", e)
            rc = 1
    return rc


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    splits = splits_of(parser, args.splits)
    if args.archive and len(splits) != 1:
        parser.error("--archive names one archive: give exactly one SPLIT with it")
    jobs = jobs_option(parser, args.jobs)
    check_source_options(parser, args, splits)
    connections = check_stream_options(parser, args, splits)

    def body() -> int:
        k, n = shard_of(parser, args.shard)
        root = args.root or os.environ.get("IMAGENET_ROOT") or "."
        if not os.path.isdir(root):
            where = "where the tree goes" if args.stream else "the folder holding downloads/"
            if os.path.lexists(root):
                raise PrepError("ROOT '%s' is not a folder (a file or a link to one?): pass --root DIR "
                                "(%s)" % (root, where))
            raise PrepError("ROOT '%s' is not a folder; create it (mkdir -p %s), or pass --root DIR "
                            "(%s)" % (root, root, where))
        cfg = Config(os.path.realpath(root), jobs, k, n, args.remove_archive, args.archive,
                     args.manifest)
        log.info("ROOT=%s splits=%s jobs=%d shard=%d/%d%s", cfg.root, " ".join(splits), jobs, k, n,
                 "" if args.source == "imagenet" else " source=" + args.source)
        os.makedirs(cfg.state, exist_ok=True)
        if args.stream:
            return stream_splits(cfg, splits, args, connections)
        if args.source != "imagenet":
            from .sources import extract
            return extract(cfg, args.source, splits)
        rc = 0
        for split in splits:
            try:
                if split == "train":
                    rc = max(rc, do_train(cfg))
                elif split == "devkit":
                    rc = max(rc, do_devkit(cfg))
                else:
                    rc = max(rc, do_flat(cfg, split))
            except PrepError as e:
                log.error("error: %s", e)
                rc = 1
            except OSError as e:
                log.error("error: %s: %s", split, disk_full_text(e.filename or cfg.root)
                          if e.errno in DISK_FULL else e)
                rc = 1
        return rc

    return run(PROG, argv, body, INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
