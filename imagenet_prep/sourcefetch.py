"""00_download.sh --source hf|kaggle: the files of another official copy of ILSVRC2012, with 00's
guarantees (resumable, verified, locked, a kill at any moment costs nothing).

What it leaves for 01_unzip.sh --source (which reads exactly this):

    ROOT/downloads/hf/data/...              the Hub's files, under the Hub's paths
    ROOT/downloads/hf/classes.py            the class list (data for 02, never run)
    ROOT/downloads/hf/source.json           {"source": "hf", "repo", "revision" (the commit),
                                             "asked", "layout" ("tar" | "parquet"), "hashes_from"
                                             ("package" | "the Hub's API"), "files": [{"path",
                                             "split", "size", "sha256", "verified"}, ...]}
    ROOT/downloads/kaggle/imagenet-object-localization-challenge.zip
    ROOT/downloads/kaggle/source.json       {"source": "kaggle", "competition", "files": [{"path":
                                             the zip, "split": "all", "size", "sha256": null,
                                             "verified"}]}

source.json is written atomically (under a lock on its folder, so that runs for different splits
add to one record) when a run starts and again as each file is verified: "verified" is true only
for a file under its final name whose size and SHA-256 (Kaggle: size, every byte received) were
checked. Each file is a download.FileJob over the fetch engine, as an image-net.org archive is,
with the source's Remote (hub.py, kaggle.py) and its words; beside it NAME.part,
NAME.part.sha256state (the SHA-256 so far, resumable), NAME.lock, and at the end NAME.sha256.

A split that 01_unzip.sh extracted from the same source (its done marker names "hf:REPO@COMMIT"
with the size of the split's files, or "kaggle:ZIP") is "already done", also after 01 removed the
files (--remove-archive).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

from . import download, transport, webapi
from .console import PrepError, human, log, preflight, thousands
from .extract import Config, read_marker
from .files import Lock, read_json, read_regular, write_json
from .hub import PACKAGE, PAGE as HF_PAGE, REPO, Hub, Pin, revision_error
from .kaggle import NO_CHECKSUM, RULES, ZIP, Kaggle
from .sourcenames import KAGGLE_COMPETITION, SPLITS, marker_archive

RECORD = "source.json"
NAMES = {"hf": "the Hugging Face Hub", "kaggle": "Kaggle"}
NO_DEVKIT = {"hf": "its classes.py", "kaggle": "LOC_synset_mapping.txt in its zip"}


# ----------------------------------------------------------------------------- the command line

def source_splits(parser, source: str, names: list[str]) -> list[str]:
    """The splits of `names` for `source` (hf: at least one; kaggle: none means all); devkit is a
    usage error saying there is none and where 02 takes the classes from."""
    if "devkit" in names:
        parser.error("there is no devkit with --source %s: 02_convert_meta_clsloc.py takes the classes "
                     "from %s and the devkit IDs from the package's class table; leave devkit out"
                     % (source, NO_DEVKIT[source]))
    if not names and source == "hf":
        parser.error("no SPLIT given (one or more of: %s all)" % " ".join(SPLITS))
    out: list[str] = []
    for s in names or ["all"]:
        if s not in SPLITS + ("all",):
            shown = s if s.isidentifier() and len(s) <= 40 else "(not shown)"
            parser.error("unknown split: %s (with --source %s: %s all)" % (shown, source, " ".join(SPLITS)))
        out += [one for one in (SPLITS if s == "all" else (s,)) if one not in out]
    return out


def check_options(parser, args) -> None:
    """--source and the options that go with it, or not."""
    if args.source is None:
        if args.hf_revision is not None:
            parser.error("--hf-revision goes with --source hf")
        return
    if args.urls is not None:
        parser.error("--urls is for your image-net.org links; --source %s needs none" % args.source)
    if not args.verify:
        parser.error("--no-verify is for image-net.org links without a known checksum; with --source "
                     "%s every file is checked as the source allows" % args.source)
    if args.hf_revision is not None:
        if args.source != "hf":
            parser.error("--hf-revision goes with --source hf")
        why = revision_error(args.hf_revision)
        if why:
            parser.error(why)


# ----------------------------------------------------------------------------- one file

@dataclass(frozen=True)
class SourceLink:
    """A file of a source, in the shape download.FileJob reads a link in (urls.Link)."""
    split: str                    # train, val, test; "kaggle" for the zip (it holds them all)
    name: str                     # its file name, in `folder`
    host: str                     # who serves it, for messages
    size: Optional[int]
    size_from: str
    url: str                      # the API request behind it (never printed)
    made: transport.Remote = field(repr=False)
    variable: str = ""
    url_from: str = ""
    urls_from: str = ""
    suffix: str = ""

    @property
    def shown(self) -> str:
        return self.made.label

    def remote(self) -> transport.Remote:
        return self.made


class SourceJob(download.FileJob):
    """download.FileJob for a file of a source: in `folder` (ROOT/downloads/hf/data, ...), named
    `path` in messages (data/val_images.tar.gz), with the source's words for what to do."""

    def __init__(self, settings: download.Settings, link: SourceLink, folder: str, path: str,
                 source: str, trust: str = "") -> None:
        here = copy.copy(settings)
        here.dl = folder
        super().__init__(here, link)
        self.name, self.source, self.trust = path, source, trust
        if self.digest is None:
            self.unchecked = "its size and every byte checked: Kaggle publishes no checksum"

    def check_link(self) -> str:
        return "Rerun later: each run asks %s for a fresh link" % NAMES[self.source]

    def retry_advice(self) -> str:
        return "Rerun later (each run asks %s for a fresh link)" % NAMES[self.source]

    def web_page_error(self, saved: bool = False, kept: bool = False) -> PrepError:
        return PrepError(
            "%s: the storage link %s gave answered with a web page (HTML), not with %s%s.%s %s; if it "
            "happens again, see whether %s is reachable in a browser."
            % (self.split, NAMES[self.source], self.name,
               " (it was saved as %s.html)" % self.final if saved else "",
               " " + self.kept() + "." if kept else "", self.check_link(),
               HF_PAGE if self.source == "hf" else RULES))

    def failed(self, e: transport.TransferFailed) -> PrepError:
        if e.action == "give-up":
            return PrepError("%s: %s" % (self.split, e))
        return PrepError("%s: %s. %s." % (self.split, e, self.check_link()))

    def trust_hint(self, actual: str) -> str:
        return self.trust

    def have(self) -> int:
        """Bytes of the file already here: the file, or its .part and pieces."""
        if os.path.isfile(self.final):
            return os.path.getsize(self.final)
        return self.part_size() + sum(p.have for p in self.list_pieces())

    def extracted_by_01(self) -> bool:
        return False                              # (said per split, before the files)

    def check_final(self) -> None:
        """A file under its final name: one of another size, or checked earlier as another file
        (NAME.sha256), is said to be that (a file of another revision?), not hashed again. A zip
        of unknown size that no record vouches for (a run killed between the rename and the
        record): its size against what the storage gives now."""
        if self.digest is not None and self.link.size is not None:
            size = os.path.getsize(self.final)
            try:                                  # (a record older than the file says nothing)
                was = None
                if os.path.getmtime(self.final) <= os.path.getmtime(self.marker):
                    text = read_regular(self.marker, "it is 00_download.sh's record of a check",
                                        limit=4096)
                    was = text.split(b" ", 1)[0].decode("ascii", "replace")
            except (OSError, PrepError):
                was = None
            if size != self.link.size or was not in (None, self.digest.hex):
                raise PrepError(
                    "%s: %s is there already, but it is not this revision's file (%s bytes%s; this "
                    "one is %s bytes, SHA-256 %s): a file of another revision? It was left as it is: "
                    "move it away (or delete it) and rerun to download this one."
                    % (self.split, self.final, thousands(size), ", SHA-256 %s as checked" % was
                       if was else "", thousands(self.link.size), self.digest.hex))
        if self.digest is not None or self.link.size is not None:
            return super().check_final()
        pr = self.ask(transport.probe, self.remote, self.s.policy, on_wait=self.wait_note)
        size = os.path.getsize(self.final)
        if pr.total != size:
            raise PrepError("%s: %s exists but is %s bytes, and %s's storage gives %s. It was left as it "
                            "is; move it away (mv %s %s.bad) and rerun to download it again."
                            % (self.split, self.final, thousands(size), NAMES[self.source],
                               "no size" if pr.total is None else "%s bytes" % thousands(pr.total),
                               self.final, self.final))
        self.total = size
        self.tidy()
        log.info("%s: already done: %s (%s, the size %s's storage gives; %s)", self.split, self.final,
                 human(size), NAMES[self.source], self.unchecked)


def run_job(job: SourceJob) -> bool:
    """Run one file's job as 00 runs a split's (Ctrl-Z sees it); False (said) if it failed."""
    download.ACTIVE[:] = [job]
    try:
        job.run()
        return True
    except PrepError as e:
        log.error("error: %s", e)
        return False
    finally:
        download.ACTIVE.clear()


def extracted(root: str, split: str, archive: str, size: Optional[int]) -> bool:
    """01_unzip.sh extracted and verified `split` from `archive` (of `size` bytes, when given)."""
    try:
        doc = read_marker(Config(root), split)
    except PrepError:
        return False
    return bool(doc) and doc.get("archive") == archive and \
        (size is None or doc.get("archive_size") == size) and os.path.isdir(os.path.join(root, split))


# ----------------------------------------------------------------------------- source.json

class Record:
    """ROOT/downloads/SOURCE/source.json: read and updated under an flock on its folder (runs for
    other splits may update it at the same time), written atomically. `head`: its fields but the
    files; the first `same` of them say whose files it lists (the source and revision)."""

    def __init__(self, folder: str, head: dict, same: int) -> None:
        self.folder, self.head, self.same = folder, head, list(head)[:same]
        self.path = os.path.join(folder, RECORD)
        self.noted = False

    def read(self) -> tuple[dict[str, dict], bool]:
        """The files the record lists when it is of the same source and revision (by path), and
        whether it listed files of another one."""
        doc = read_json(self.path, "it is 00_download.sh's record of the files it downloaded: "
                                   "remove it and rerun")
        items = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            return {}, False
        if any(doc.get(k) != self.head[k] for k in self.same):
            return {}, bool(items)
        return {f["path"]: f for f in items if isinstance(f, dict) and isinstance(f.get("path"), str)}, \
            False

    def files(self) -> dict[str, dict]:
        return self.read()[0]

    def update(self, entries: list[dict]) -> None:
        """The record with these files' entries (by path) added or replaced; the others kept when
        the record is of the same source and revision, else dropped (said once)."""
        with Lock(self.folder, "another 00_download.sh is updating %s" % self.path, wait=True):
            files, other = self.read()
            if other and not self.noted:
                log.info("note: %s listed the files of another revision; it now lists this run's",
                         self.path)
                self.noted = True
            files.update({e["path"]: e for e in entries})
            write_json(self.path, dict(self.head, files=[files[p] for p in sorted(files)]))


def entry(path: str, split: str, size: int, sha256: Optional[str], verified: bool) -> dict:
    return {"path": path, "split": split, "size": size, "sha256": sha256, "verified": verified}


# ----------------------------------------------------------------------------- Hugging Face

def download_hf(settings: download.Settings, splits: list[str], revision: Optional[str],
                env: Mapping[str, str] = os.environ) -> int:
    webapi.stop_pauses_on_signals()
    folder = os.path.join(settings.dl, "hf")
    data = os.path.join(folder, "data")
    try:
        os.makedirs(data, exist_ok=True)
    except OSError as e:
        raise PrepError("cannot create %s (%s); check --root" % (data, e.strerror)) from None
    hub = Hub(settings.policy, env, lambda text: log.info("%s", text))
    pin = hub.pin(revision)
    say_pin(pin)
    record = Record(folder, {"source": "hf", "repo": REPO, "revision": pin.commit,
                             "layout": pin.layout, "asked": pin.asked,
                             "hashes_from": pin.hashes_from}, same=4)
    known = record.files()
    todo, state = [], {}
    for split in splits:
        files = pin.of(split)
        if not files:
            raise PrepError("%s: revision %s of %s has no files of this split in data/; pick another "
                            "revision with --hf-revision" % (split, pin.short, REPO))
        done = extracted(settings.root, split, marker_archive("hf", pin.commit), sum(f.size for f in files))
        if done:
            log.info("%s: already done (extracted into %s by 01_unzip.sh from revision %s; its files "
                     "are not needed)", split, os.path.join(settings.root, split), pin.short)
            tidy_extracted(folder, files)
        else:
            todo.append(split)
        for f in files:
            old = known.get(f.path, {})
            same = old.get("verified") is True and old.get("sha256") == f.sha256 and old.get("size") == f.size
            local = os.path.join(folder, *f.path.split("/"))
            state[f.path] = entry(f.path, split, f.size, f.sha256, same and (
                done or os.path.isfile(local) and os.path.getsize(local) == f.size))
    classes = os.path.join(folder, "classes.py")
    missing = [f for split in todo for f in pin.of(split)
               if not os.path.isfile(os.path.join(folder, *f.path.split("/")))]
    network = bool(missing) or not os.path.isfile(classes) or not known
    if network:
        hub.creds()                               # none: said before anything is written
    record.update(list(state.values()))
    if network:
        if hub.classes_py(pin, classes):
            log.info("hf: classes.py of revision %s -> %s (its git blob id checked; read as data by "
                     "01 and 02, never run)", pin.short, classes)
    failed = []
    for split in todo:
        jobs = [SourceJob(settings, hf_link(hub, pin, f), data, f.path, "hf", trust_text(pin))
                for f in pin.of(split)]
        need = sum(max(job.link.size - job.have(), 0) for job in jobs)
        if need:
            preflight(data, need, "%s: %d file(s) of %s (%s left to fetch)"
                      % (split, len(jobs), REPO, human(need)))
        for job, f in zip(jobs, pin.of(split)):
            ok = run_job(job)
            if ok != state[f.path]["verified"]:
                state[f.path]["verified"] = ok
                record.update([state[f.path]])
            if not ok and split not in failed:
                failed.append(split)
    return summary(splits, failed, folder, "revision %s of %s" % (pin.short, REPO))


def tidy_extracted(folder: str, files: list) -> None:
    """The files of a split 01 extracted: the record of a check of a file 01 removed goes; a
    download left unfinished is named (it is not needed)."""
    for f in files:
        local = os.path.join(folder, *f.path.split("/"))
        if not os.path.exists(local):
            transport.remove_file(local + ".sha256")
        if os.path.exists(local + ".part"):
            log.info("%s: %s.part (%s) is not needed: delete it (and %s.part.*) to free the space",
                     f.split, local, human(os.path.getsize(local + ".part")), f.path)


def hf_link(hub: Hub, pin: Pin, f) -> SourceLink:
    return SourceLink(f.split, f.path.rsplit("/", 1)[1], "the Hub", f.size, pin.checked_by(),
                      hub.resolve_url(pin.commit, f.path), hub.remote(pin, f))


def say_pin(pin: Pin) -> None:
    if pin.hashes_from == PACKAGE:
        log.info("hf: %s at revision %s (the tar.gz layout the package knows): sizes and SHA-256 from "
                 "the package (imagenet_prep/hf_release.tsv)", REPO, pin.commit)
    else:
        log.info("hf: %s at commit %s (%s layout, %d file(s)): sizes and SHA-256 from the Hub's API "
                 "(the tree's lfs.oid), not from the package: they show that the bytes are the "
                 "Hub's at that commit, not that they are the release", REPO, pin.commit,
                 "Parquet" if pin.layout == "parquet" else "tar.gz", len(pin.files))


def trust_text(pin: Pin) -> str:
    return ("; if it happens again, the Hub's file at revision %s is not the one %s says: report it, "
            "or pick another revision with --hf-revision" % (pin.short, pin.checked_by()))


# ----------------------------------------------------------------------------- Kaggle

def download_kaggle(settings: download.Settings, splits: list[str],
                    env: Mapping[str, str] = os.environ) -> int:
    webapi.stop_pauses_on_signals()
    folder = os.path.join(settings.dl, "kaggle")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise PrepError("cannot create %s (%s); check --root" % (folder, e.strerror)) from None
    if all(extracted(settings.root, s, marker_archive("kaggle"), None) for s in splits):
        log.info("%s: already done (extracted by 01_unzip.sh from %s; the zip is not needed)",
                 " ".join(splits), ZIP)
        return 0
    kaggle = Kaggle(settings.policy, env, lambda text: log.info("%s", text))
    record = Record(folder, {"source": "kaggle", "competition": KAGGLE_COMPETITION}, same=2)
    old = record.files().get(ZIP, {})
    final = os.path.join(folder, ZIP)
    size = old.get("size") if old.get("verified") is True and type(old.get("size")) is int \
        and os.path.isfile(final) and os.path.getsize(final) == old.get("size") else None
    log.info("kaggle: %s (%s); %s", ZIP, " ".join(splits), NO_CHECKSUM)
    if size is None:
        kaggle.creds()                            # none: said before anything is written
    link = SourceLink("kaggle", ZIP, "Kaggle's storage", size, "the size recorded in %s" % RECORD,
                      kaggle.url, kaggle.remote())
    job = SourceJob(settings, link, folder, ZIP, "kaggle")
    ok = run_job(job)
    total = job.total if job.total is not None else old.get("size")
    if type(total) is int:
        record.update([entry(ZIP, "all", total, None, ok and os.path.isfile(final))])
    return summary(splits, [] if ok else ["kaggle"], folder, "the zip of %s" % KAGGLE_COMPETITION)


def summary(splits: list[str], failed: list[str], folder: str, what: str) -> int:
    if failed:
        log.error("failed: %s (messages above). Rerun the same command to retry; finished files are "
                  "kept, and so are the bytes of the others.", " ".join(failed))
        return 1
    log.info("all done: %s, %s in %s", " ".join(splits), what, folder)
    return 0
