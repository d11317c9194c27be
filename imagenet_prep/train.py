"""The train split: the outer tar's class tars (WNID.tar) written to ROOT/train/WNID/, class by class.

The outer tar's headers are read once (index_outer); each class is then a byte range that a worker
extracts on its own, without ever writing the inner tar. A class is built in the hidden folder
train/.WNID.tmp-HOST.PID, its record (what was written, with sizes and SHA-256) is saved in
ROOT/.01_unzip/train/WNID.json, and the folder is renamed into place: a class folder under its
final name is always complete, and one without a matching record was not made here.
"""
from __future__ import annotations

import functools
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from . import facts, manifest, valfolders
from .console import (DISK_FULL, ErrorList, PrepError, disk_full_text, human, log, preflight, shown,
                      some)
from .extract import (Config, check_archive, find_archive, is_official, maybe_remove, official_counts,
                      read_marker, refuse_unless_file, resolve_final, twice, write_member)
from .files import (Lock, clear_leftover, clear_temps, read_json, remove_tree, temp_name, temp_of,
                    try_flock, write_json)
from .parallel import run_parallel
from .progress import Progress
from .tarstream import Member, Source, iter_tar

RE_OUTER = re.compile(r"n[0-9]{8}\.tar\Z")                 # [0-9]: \d takes any Unicode digit
FLAT_NAME = re.compile(r"ILSVRC2012_(val|test)_[0-9]{8}\.JPEG\Z")


@dataclass(frozen=True)
class ClassTar:
    """One member of the outer tar: a class's tar, as a byte range of the archive."""
    wnid: str
    offset: int
    size: int
    mtime: float


@dataclass(frozen=True)
class Job:
    """What a worker needs to extract one class (sent through a pipe)."""
    archive: str
    train_dir: str
    records: str
    tar: ClassTar
    digest: bool
    replace: bool = False            # a class on disk is written again and kept only if the same


# ----------------------------------------------------------------------------- records

def read_record(records: str, wnid: str) -> Optional[dict]:
    """What 01_unzip.sh wrote into train/WNID, from its record; None if there is no usable one.

    files: [[name, size, sha256 or null], ...] sorted by name (records of older versions have no
    files and are trusted by their count)."""
    doc = read_json(os.path.join(records, wnid + ".json"),
                    "01_unzip.sh writes it: remove it and the folder train/%s, then run "
                    "01_unzip.sh train to extract the class again" % wnid)
    if not (isinstance(doc, dict) and isinstance(doc.get("images"), int)
            and isinstance(doc.get("bytes"), int) and isinstance(doc.get("special"), dict)):
        return None
    files = doc.get("files")
    if files is not None and not (isinstance(files, list) and len(files) == doc["images"]
                                  and all(isinstance(f, list) and len(f) == 3 and isinstance(f[0], str)
                                          and type(f[1]) is int and (f[2] is None or isinstance(f[2], str))
                                          for f in files)):
        return None
    return doc


def foreign_reason(folder: str, rec: Optional[dict], sizes: bool = False) -> Optional[str]:
    """None if `folder` holds exactly the files 01_unzip.sh recorded writing into it (by name; with
    `sizes`, each of its recorded size too), else why not."""
    names = os.listdir(folder)
    if rec is None:
        return "%d files, not written by 01_unzip.sh" % len(names)
    if rec.get("files") is None:
        same = len(names) == rec["images"]
    else:
        same = sorted(names) == [f[0] for f in rec["files"]]
    if not same:
        return "%d files, but 01_unzip.sh wrote %d into it" % (len(names), rec["images"])
    if sizes and rec.get("files"):
        changed = [f[0] for f in rec["files"]
                   if os.lstat(os.path.join(folder, f[0])).st_size != f[1]]
        if changed:
            return "%d file(s) of another size than 01_unzip.sh wrote (%s)" % (len(changed),
                                                                                some(changed, 3))
    return None


def check_class_folders(train_dir: str, records: str, wnids: Iterable[str]) -> None:
    """Refuse class folders that 01_unzip.sh did not write (another tool, an interrupted tar recipe,
    files added or removed since); an empty one is removed, to be extracted again."""
    foreign = []
    for w in wnids:
        folder = os.path.join(train_dir, w)
        if not os.path.isdir(folder):
            continue
        if not os.listdir(folder):
            os.rmdir(folder)
            log.info("train: %s was an empty folder; removed it, the class is extracted again", folder)
            continue
        why = foreign_reason(folder, read_record(records, w))
        if why:
            foreign.append("%s (%s)" % (w, why))
    if foreign:
        raise PrepError("train: %d class folder(s) in %s are not as 01_unzip.sh left them: %s. Move "
                        "them out of %s (or delete them), then run again: the classes are extracted "
                        "anew" % (len(foreign), train_dir, some(foreign), train_dir))


# ----------------------------------------------------------------------------- one class

@functools.lru_cache(maxsize=None)
def class_pattern(wnid: str) -> re.Pattern:
    """The names of class `wnid`'s images (compiled once a class: the Hub's and Kaggle's names
    come with their classes mixed, where re's own cache of 512 patterns would compile them anew
    for nearly every name)."""
    return re.compile(re.escape(wnid) + r"_[0-9]{1,20}\.JPEG\Z")     # (a name fits a file system)


def check_class_member(m: Member, wnid: str, label: str, pattern: re.Pattern, seen: set) -> None:
    """A member of a class tar as 01 accepts it: a file named WNID_<number>.JPEG, once."""
    refuse_unless_file(m, label, wnid + "_<number>.JPEG")
    if not pattern.match(m.name):
        raise PrepError("%s: member %s refused: names in this class must look like %s_<number>.JPEG"
                        % (label, shown(m.name), wnid))
    if m.name in seen:
        raise PrepError(twice(label, m.name))
    seen.add(m.name)


class ClassWriter:
    """One class being written: its images go into train/.WNID.tmp-TAG (held with an flock until it
    has its final name, so that no rerun clears it), then its record is saved and the folder is
    renamed to train/WNID. check() takes the members in archive order; write() may run in several
    threads at once, one member each; then finish() once, or abort()."""

    def __init__(self, tar: ClassTar, train_dir: str, records: str, label: str, digest: bool) -> None:
        self.tar, self.records, self.label, self.digest = tar, records, label, digest
        self.final = os.path.join(train_dir, tar.wnid)
        self.tmp = os.path.join(train_dir, temp_name(tar.wnid))
        self.pattern = class_pattern(tar.wnid)
        self.files: list[list] = []
        self.nbytes, self.special, self.seen = 0, {}, set()
        self.outcome = "new"           # after finish(replace=True): "same" or "replaced" too
        self.lock = threading.Lock()
        os.mkdir(self.tmp, 0o755)
        self.fd = -1
        try:
            self.fd = os.open(self.tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            if not try_flock(self.fd):
                raise PrepError("%s: another run is clearing %s; run again" % (label, self.tmp))
        except BaseException:
            self.abort()
            raise

    def check(self, m: Member) -> None:
        check_class_member(m, self.tar.wnid, self.label, self.pattern, self.seen)

    def write(self, src: Source, m: Member) -> None:
        kind, sha = write_member(src, m, self.fd, m.name, self.label, self.digest)
        with self.lock:
            if kind:
                self.special[m.name] = kind
            self.files.append([m.name, m.size, sha])
            self.nbytes += m.size

    def finish(self, replace: bool = False) -> dict:
        """Record the class and give it its final name. replace: train/WNID may exist already
        (written by an earlier run from bytes read before): if it holds exactly these files it is
        kept as it is, else it is replaced by the new folder (replace_class)."""
        if not self.files:
            raise PrepError("%s: holds no images; the archive is damaged: download it again"
                            % self.label)
        os.utime(self.fd, (self.tar.mtime, self.tar.mtime))
        rec = {"wnid": self.tar.wnid, "images": len(self.files), "bytes": self.nbytes,
               "special": self.special, "files": sorted(self.files)}
        if replace and os.path.isdir(self.final):
            kept = replace_class(self.tmp, self.final, self.records, rec)
            self.outcome = "same" if kept is not rec else "replaced"
            self.close()
            return kept
        write_json(os.path.join(self.records, self.tar.wnid + ".json"), rec, sync=False)
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not os.path.isdir(self.final):
                raise
            remove_tree(self.tmp)            # another process finished this class first
        self.close()
        return rec

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        """Drop what was written (the class is not there)."""
        self.close()
        remove_tree(self.tmp)


def write_class(src: Source, tar: ClassTar, train_dir: str, records: str, label: str,
                digest: bool, replace: bool = False) -> dict:
    """Write the images of one class tar from `src` into train/.WNID.tmp-TAG, record them, and
    rename the folder to train/WNID. Returns the record. replace: train/WNID may be there already
    (ClassWriter.finish)."""
    out = ClassWriter(tar, train_dir, records, label, digest)
    try:
        for m in iter_tar(src, tar.offset, tar.offset + tar.size, label, need_eof=False):
            out.check(m)
            out.write(src, m)
        return out.finish(replace)
    except BaseException:
        out.abort()
        raise


def replace_class(tmp: str, final: str, records: str, rec: dict) -> dict:
    """train/WNID written again from new bytes (in `tmp`): keep the folder there if it holds the
    same files, else swap the new one in (the old one goes to a temporary name, then away)."""
    old = read_record(records, rec["wnid"])
    if old is not None and old.get("files") == rec["files"] and not foreign_reason(final, old):
        remove_tree(tmp)
        return old
    log.info("train: %s differs from the bytes read now: replaced by them", final)
    aside = os.path.join(os.path.dirname(final), temp_name(rec["wnid"] + ".old"))
    os.rename(final, aside)
    write_json(os.path.join(records, rec["wnid"] + ".json"), rec, sync=False)
    os.rename(tmp, final)
    remove_tree(aside)
    return rec


def extract_class(job: Job) -> tuple[str, str, object]:
    """Worker: one class from the archive file. ("ok", wnid, record), ("skip", wnid, None), or
    ("error" | "full", wnid, message): "full" when the disk is full (start no more classes)."""
    wnid = job.tar.wnid
    label = "%s: %s.tar" % (os.path.basename(job.archive), wnid)
    try:
        if os.path.isdir(os.path.join(job.train_dir, wnid)) and not job.replace:
            return ("skip", wnid, None)
        with open(job.archive, "rb", buffering=1 << 20) as f:
            rec = write_class(Source(f), job.tar, job.train_dir, job.records, label, job.digest,
                              job.replace)
        return ("ok", wnid, rec)
    except PrepError as e:
        return ("error", wnid, str(e))
    except OSError as e:
        if e.errno in DISK_FULL:
            return ("full", wnid, "%s: %s" % (label, disk_full_text(job.train_dir)))
        return ("error", wnid, "%s: %s" % (label, e))
    except Exception as e:                   # a bug must fail this class, not kill the worker
        return ("error", wnid, "%s: unexpected %s: %s" % (label, type(e).__name__, e))


# ----------------------------------------------------------------------------- the outer tar

def index_outer(archive: str) -> tuple[list[ClassTar], list[str], Optional[str]]:
    """Read the outer tar's headers only: its class tars, the members refused (anything but a
    WNID.tar file, or one seen twice), and the error that ended the reading, if any."""
    label = os.path.basename(archive)
    classes, refused, seen = [], [], set()
    with open(archive, "rb", buffering=512) as f:
        try:
            for m in iter_tar(Source(f), 0, os.path.getsize(archive), label, need_eof=True):
                if not m.is_file():
                    refused.append(m.describe())
                elif not RE_OUTER.match(m.name):
                    refused.append(m.name)
                elif m.name in seen:
                    refused.append("%s (a second time)" % m.name)
                else:
                    seen.add(m.name)
                    classes.append(ClassTar(m.name[:-4], m.offset, m.size, m.mtime))
        except PrepError as e:
            return classes, refused, str(e)
    return classes, refused, None


def refused_text(label: str, refused: list[str]) -> str:
    """One line for all refused members of the outer tar: the first few, then a count."""
    hint = ""
    if FLAT_NAME.match(refused[0]):
        hint = " (this looks like the val or test archive, not the train archive)"
    return ("%s: %d member(s) refused, only WNID.tar files (e.g. n01440764.tar) belong here%s: %s"
            % (label, len(refused), hint, some(refused)))


# ----------------------------------------------------------------------------- the split

def train_done(cfg: Config) -> Optional[dict]:
    """The done marker, if every class it lists is still there (else it is removed)."""
    train_dir = os.path.join(cfg.root, "train")
    doc = read_marker(cfg, "train")
    if doc is None:
        return None
    missing = [w for w in doc["classes"] if not os.path.isdir(os.path.join(train_dir, w))]
    if missing:
        log.info("train: %d classes recorded as done are missing (e.g. %s); extracting them again",
                 len(missing), missing[0])
        os.remove(cfg.marker("train"))
        return None
    return doc


def clear_split_leftovers(cfg: Config, split: str, final: str, keep: str = "") -> None:
    """What runs of `split` left when they were killed (temporary names that no live run holds):
    the split's folder being built beside `final` (ROOT/.val.tmp-HOST.PID), its done marker,
    checkpoint and manifest being written, and for train the class folders and records being
    built. A rerun clears them whether or not the split is done (04 tells the user to rerun for
    them), never the split's folder itself: 03 may be working in val/. `keep`: the temporary
    folder beside `final` that the caller holds (01 --source's staging folder)."""
    clear_temps(os.path.dirname(final), os.path.basename(final), keep)
    clear_temps(cfg.state, os.path.basename(cfg.marker(split)))
    clear_temps(cfg.state, os.path.basename(cfg.checkpoint(split)))
    clear_temps(os.path.dirname(manifest.path_of(cfg.root, split)),
                os.path.basename(manifest.path_of(cfg.root, split)))
    if split == "train":
        for folder in (final, os.path.join(cfg.state, "train")):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                if temp_of(e.name):
                    clear_leftover(e.path)


def clear_share_leftovers(train_dir: str, records: str, mine: set) -> None:
    """Temporary folders and records of interrupted runs of these classes."""
    for e in os.scandir(train_dir):
        if temp_of(e.name) in mine:
            clear_leftover(e.path)
    for e in os.scandir(records):
        name = temp_of(e.name) or ""
        if name.endswith(".json") and name[:-5] in mine:
            os.remove(e.path)


def extract_share(cfg: Config, archive: str, todo: list[ClassTar], errors: ErrorList,
                  replace: bool = False) -> None:
    """Extract the classes of `todo` in parallel; stop starting new ones once the disk is full.
    replace: the classes on disk are written again, hashed, and kept only where the same."""
    train_dir, records = os.path.join(cfg.root, "train"), os.path.join(cfg.state, "train")
    full: list[str] = []

    def jobs() -> Iterator[Job]:
        for tar in todo:
            if full:
                return
            yield Job(archive, train_dir, records, tar, cfg.manifest or replace, replace)

    t0, done, images, nbytes = time.monotonic(), 0, 0, 0
    bar = Progress("train", len(todo), "classes")
    for job, result, exitcode in run_parallel(extract_class, jobs(), cfg.jobs):
        done += 1
        if result is None:
            errors.add("%s: the worker extracting it died (exit code %s: killed, or out of memory?); "
                       "a rerun extracts it again" % (job.tar.wnid, exitcode))
        elif result[0] == "full":
            if not full:
                errors.add(result[2])
            full.append(result[1])
        elif result[0] == "error":
            errors.add(result[2])
        elif result[0] == "ok":
            images += result[2]["images"]
            nbytes += result[2]["bytes"]
        bar.update(done, "%d images, %s, %s" % (images, human(nbytes), bar.rate(nbytes)))
    bar.close()
    if full:
        errors.add("train: the disk filled up: %d class(es) failed, %d not started"
                   % (len(full), len(todo) - done))
    dt = time.monotonic() - t0
    log.info("train: this run wrote %d images, %s in %.1f s (%.1f MiB/s)",
             images, human(nbytes), dt, nbytes / max(dt, 1e-6) / (1 << 20))


def do_train(cfg: Config) -> int:
    resolve_final(cfg.root, "train")                   # a link to a missing folder: said
    train_dir, records = os.path.join(cfg.root, "train"), os.path.join(cfg.state, "train")
    doc = train_done(cfg)
    if doc:
        log.info("train: already done (%d classes, %d images, %s in %s); nothing to do",
                 len(doc["classes"]), doc["images"], human(doc["bytes"]), train_dir)
        clear_split_leftovers(cfg, "train", train_dir)
        maybe_remove(cfg, "train", None, doc)
        return 0
    archive = find_archive(cfg, "train")
    check_archive(archive, "train")
    label = os.path.basename(archive)
    with Lock(os.path.join(cfg.state, "train.shard-%d-of-%d.lock" % (cfg.k, cfg.n)),
              "another 01_unzip.sh is extracting train shard %d/%d into this ROOT; let it finish, or "
              "stop it, then run again" % (cfg.k, cfg.n)):
        os.makedirs(records, exist_ok=True)
        os.makedirs(train_dir, exist_ok=True)
        classes, refused, broken = index_outer(archive)
        classes.sort(key=lambda c: c.wnid)
        if not classes and not refused and not broken:
            raise PrepError("%s holds no class tars (WNID.tar members); is it the right file? "
                            "download it again" % archive)
        log.info("train: %s holds %d class tars (%s)", archive, len(classes),
                 human(os.path.getsize(archive)))
        errors = ErrorList()
        if refused:
            errors.add(refused_text(label, refused))
        if broken:
            errors.add(broken)
        share = [c for i, c in enumerate(classes) if i % cfg.n == cfg.k]
        clear_share_leftovers(train_dir, records, {c.wnid for c in share})
        check_class_folders(train_dir, records, [c.wnid for c in share])
        on_disk = [c for c in share if os.path.isdir(os.path.join(train_dir, c.wnid))]
        unproven = on_disk and os.path.lexists(cfg.unproven("train"))
        todo = share if unproven else [c for c in share if c not in on_disk]
        preflight(cfg.root, sum(c.size for c in share if c not in on_disk)
                  + sum(sorted((c.size for c in on_disk), reverse=True)[:cfg.jobs]
                        if unproven else ()), "train")
        if unproven:
            log.info("train: %d classes on disk were written by a 01_unzip.sh --stream that did not "
                     "finish (%s), so their bytes were never checked against the archive's MD5: "
                     "they are written again from %s and kept only where the same",
                     len(on_disk), cfg.unproven("train"), label)
        log.info("train: shard %d/%d: %d classes, %d already complete, %d to extract with %d "
                 "workers", cfg.k, cfg.n, len(share), len(share) - len(todo), len(todo), cfg.jobs)
        if todo:
            extract_share(cfg, archive, todo, errors, bool(unproven))
    if errors:
        log.error("error: train: %s; complete classes are kept, a rerun retries the rest",
                  errors.summary())
        return 1
    if finish_train(cfg, label, os.path.getsize(archive), [c.wnid for c in classes]):
        maybe_remove(cfg, "train", archive)
    return 0


# ----------------------------------------------------------------------------- the whole split

def finish_train(cfg: Config, archive_name: str, archive_size: int, wnids: list[str]) -> bool:
    """Once every class of the archive is there (other shards' too): verify the split, write its
    manifest and done marker. False while other shards are still at work."""
    train_dir = os.path.join(cfg.root, "train")
    with Lock(cfg.marker("train") + ".lock", "another 01_unzip.sh is checking train", wait=True):
        if train_done(cfg):
            log.info("train: already verified by another shard")
            return False
        missing = [w for w in wnids if not os.path.isdir(os.path.join(train_dir, w))]
        if missing:
            log.info("train: shard %d/%d complete; %d classes of other shards are not there yet "
                     "(e.g. %s); the last shard to finish verifies the whole split",
                     cfg.k, cfg.n, len(missing), missing[0])
            return False
        for e in os.scandir(train_dir):        # leftovers of runs that died after another finished
            if temp_of(e.name):
                clear_leftover(e.path)
        doc, sums = verify_train(cfg, wnids, archive_size)
        if sums is not None:
            manifest.write(cfg.root, "train", sums)
        doc.update(archive=archive_name, archive_size=archive_size, manifest=sums is not None,
                   official=is_official("train", archive_size, cfg.copy))
        write_json(cfg.marker("train"), doc)
        cfg.forget_stream("train")
        log.info("train: complete: %d classes, %d images, %s in %s%s", len(wnids), doc["images"],
                 human(doc["bytes"]), train_dir, ", manifest meta/SHA256SUMS.train" if sums else "")
    return True


def verify_train(cfg: Config, wnids: list[str],
                 archive_size: int) -> tuple[dict, Optional[list[tuple[str, str]]]]:
    """Every class as recorded, nothing else in train/, the official counts; the manifest's
    entries (None when some class was written without hashes)."""
    train_dir, records = os.path.join(cfg.root, "train"), os.path.join(cfg.state, "train")
    total_images = total_bytes = 0
    special, per_class = {}, {}
    sums: Optional[list[tuple[str, str]]] = []
    for w in wnids:
        folder = os.path.join(train_dir, w)
        rec = read_record(records, w)
        why = foreign_reason(folder, rec, sizes=True)
        if why:
            raise PrepError("train: %s holds %s; delete that folder and run again to extract the "
                            "class anew" % (folder, why))
        per_class[w] = rec["images"]
        total_images += rec["images"]
        total_bytes += rec["bytes"]
        for name, kind in rec["special"].items():
            special[w + "/" + name] = kind
        if sums is not None and rec.get("files") and all(f[2] for f in rec["files"]):
            sums.extend(("train/%s/%s" % (w, f[0]), f[2]) for f in rec["files"])
        else:
            sums = None
    strays = sorted(e.name for e in os.scandir(train_dir)
                    if e.is_dir() and not e.name.startswith(".") and e.name not in per_class)
    if strays:
        ours = [w for w in strays if read_record(records, w) is not None]
        if ours:
            raise PrepError(
                "train: %s holds %d class folder(s) that 01_unzip.sh wrote from another archive "
                "than this one (e.g. the file behind the link changed during an earlier --stream): "
                "%s; they are not classes of this archive: delete each with its record (rm -r %s "
                "%s), and run again" % (train_dir, len(ours), some(ours),
                                        os.path.join(train_dir, ours[0]),
                                        os.path.join(records, ours[0] + ".json")))
        raise PrepError("train: %s holds %d folder(s) that are not classes of the archive (a class "
                        "loader would take them for classes): %s; move them elsewhere and run again"
                        % (train_dir, len(strays), some(strays)))
    log.info("train: checked %d classes, %d images, %s: names and sizes as 01_unzip.sh wrote them "
             "(every byte: 04_verify.py --full train)", len(wnids), total_images, human(total_bytes))
    official_counts("train", archive_size, len(wnids), total_images, cfg.copy)
    warnings = compare_with_synsets(cfg.root, per_class)
    report_specials(special)
    return ({"classes": wnids, "images": total_images, "bytes": total_bytes, "special": special,
             "warnings": warnings}, sums)


def compare_with_synsets(root: str, per_class: dict[str, int]) -> list[str]:
    """Warnings where the classes differ from num_train_images in meta/synsets.csv (from 02)."""
    synsets = read_synsets(root)
    if synsets is None:
        return []
    wnids = list(per_class)
    diff = ["%s: %d images, meta/synsets.csv says %d" % (w, per_class[w], synsets[w])
            for w in wnids if w in synsets and synsets[w] != per_class[w]]
    missing = sorted(set(synsets) - set(wnids))
    extra = sorted(set(wnids) - set(synsets))
    warnings = []
    if diff:
        warnings.append("%d classes differ from meta/synsets.csv: %s"
                        % (len(diff), "; ".join(diff[:10])))
    if missing:
        warnings.append("%d classes of meta/synsets.csv are not in the archive: %s"
                        % (len(missing), " ".join(missing[:10])))
    if extra:
        warnings.append("%d classes of the archive are not in meta/synsets.csv: %s"
                        % (len(extra), " ".join(extra[:10])))
    if not warnings:
        log.info("train: every class matches num_train_images in meta/synsets.csv")
    for w in warnings:
        log.warning("train: warning: %s", w)
    return warnings


def read_synsets(root: str) -> Optional[dict[str, int]]:
    """{wnid: num_train_images} from meta/synsets.csv (02's output), or None if it is not there
    (yet); a damaged one is a warning here (01 does not need it)."""
    path = Path(root) / "meta" / "synsets.csv"
    if not path.is_file():
        return None
    try:
        return {w: c.num_train_images for w, c in valfolders.read_synsets(path).items()}
    except PrepError as e:
        log.warning("warning: not comparing class sizes with meta/synsets.csv: %s", e)
        return None


def report_specials(special: dict[str, str]) -> None:
    if not special:
        log.info("train: every image is a plain JPEG (no PNG or CMYK files)")
        return
    log.info("train: %d files are not plain RGB/grayscale JPEGs (decoders may need care; the real "
             "release has %d CMYK JPEGs and 1 PNG, %s):", len(special), facts.CMYK_FILES,
             facts.PNG_FILE)
    for name in sorted(special)[:50]:
        log.info("  %s: %s", name, special[name])
    if len(special) > 50:
        log.info("  ... and %d more (all listed in the train done marker)", len(special) - 50)
