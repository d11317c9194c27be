#!/usr/bin/env python3
"""Benchmark 06_pack_webdataset.py train: shards straight from the archive against the anchor route.

    python3 bench/bench_webdataset.py [--release DIR] [--work DIR] [--classes 150] [--shards 64]
                                      [--jobs 2] [--quick] [--json FILE] [--keep]

On one generated release (`minirelease.py --preset bench --classes 150`: 150 classes x ~20
images of ~110 KiB, ~330 MB), from the same train archive, one run each, cold cache:

  * 06        06_pack_webdataset.py --shards 64 train: the archive's headers indexed, then 64
              shuffled shards written in parallel, reading the images where they lie
  * anchor    what one does without it: 01_unzip.sh --jobs N train (the tree), then a
              makeshards-style script (webdataset's example): list the tree, shuffle it with
              random.shuffle, write jpg/cls/json samples with webdataset.ShardWriter (maxcount:
              the same 64 shards), then delete the tree
  * disk      the peak of the bytes allocated under the work folder during each route (sampled
              every 50 ms), against the archive + the shards

With --source kaggle|hf-parquet|hf-targz, the release's train images are first made into that
source's files (tests/sourcerelease.py: the Kaggle zip inline, stored and deflated members; the
Hub's Parquet files, or 5 tar.gz files), and the routes are:

  * 06        06_pack_webdataset.py --source ... --shards 64 train: the zip's members read where
              they lie; the Hub's files read twice (index, then each image into its place)
  * anchor    what one does without --source: 01_unzip.sh --source ... train (the tree), then
              06_pack_webdataset.py --from-tree, then delete the tree; both routes' shards must
              be byte-identical

Each route starts with the page cache dropped when the machine allows it (`sync; echo 3 >
/proc/sys/vm/drop_caches`, as root) and its time includes a final `sync`. The scripts and
imagenet_prep/ are copied into the scratch folder and run from there.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from benchpaths import copy_scripts
from benchmark import drop_caches, remove_work, report
from bench_unzip import generate, timed

import minirelease
import sourcerelease

SCRIPTS = ("01_unzip.sh", "02_convert_meta_clsloc.py", "06_pack_webdataset.py")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
QUICK_CLASSES = 30

# The anchor's second half, as webdataset's makeshards.py does it (run as its own process).
ANCHOR = r'''
import json, os, random, sys
import webdataset as wds
tree, pattern, shards = sys.argv[1], sys.argv[2], int(sys.argv[3])
wnids = sorted(os.listdir(tree))
index = {w: i for i, w in enumerate(wnids)}
files = [(w, n) for w in wnids for n in sorted(os.listdir(os.path.join(tree, w)))]
random.Random(0).shuffle(files)
per = -(-len(files) // shards)
with wds.ShardWriter(pattern, maxcount=per, verbose=0) as sink:
    for w, n in files:
        with open(os.path.join(tree, w, n), "rb") as f:
            data = f.read()
        sink.write({"__key__": n.rsplit(".", 1)[0], "jpg": data, "cls": index[w],
                    "json": {"filename": "%s/%s" % (w, n), "label": index[w]}})
'''


class PeakDisk:
    """The most bytes allocated under `folder` at any sample, every `every` seconds."""

    def __init__(self, folder: Path, every: float = 0.05) -> None:
        self.folder, self.every, self.peak = folder, every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def used(self) -> int:
        total = 0
        for top, dirs, names in os.walk(self.folder):
            for n in names + dirs:
                try:
                    total += os.lstat(os.path.join(top, n)).st_blocks * 512
                except OSError:
                    pass
        return total

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.used())
            self.stop.wait(self.every)

    def __enter__(self) -> "PeakDisk":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.used())


def make_root(work: Path, release: Path, name: str) -> Path:
    """A ROOT holding a copy of the train archive (its bytes count in the peak) and the devkit,
    with 02's synsets.csv written (not timed: both routes need the class list)."""
    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "downloads").mkdir(parents=True)
    shutil.copy(release / TRAIN_TAR, root / "downloads" / TRAIN_TAR)
    return with_meta(work, release, root)


def with_meta(work: Path, release: Path, root: Path) -> Path:
    """ROOT with the release's devkit extracted and 02's synsets.csv written."""
    shutil.copy(release / DEVKIT, root / "downloads" / DEVKIT)
    subprocess.run(["bash", str(work / "01_unzip.sh"), "--root", str(root), "devkit"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(work / "02_convert_meta_clsloc.py"), "--root", str(root),
                    "--expect-classes", str(len(tar_names(release / TRAIN_TAR)))], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return root


def tar_names(path: Path) -> list[str]:
    import tarfile
    with tarfile.open(path) as t:
        return t.getnames()


def route_06(work: Path, root: Path, shards: int, jobs: int) -> float:
    return timed([sys.executable, work / "06_pack_webdataset.py", "--root", root, "--shards",
                  shards, "--jobs", jobs, "train"])


def route_anchor(work: Path, root: Path, shards: int, jobs: int) -> float:
    t = timed(["bash", work / "01_unzip.sh", "--root", root, "--jobs", jobs, "train"])
    out = root / "anchor"
    out.mkdir()
    script = work / "makeshards.py"
    script.write_text(ANCHOR)
    t += timed([sys.executable, script, root / "train", str(out / "imagenet1k-train-%04d.tar"),
                shards])
    t0 = time.perf_counter()
    shutil.rmtree(root / "train")
    return t + time.perf_counter() - t0


def measure(work: Path, release: Path, shards: int, jobs: int) -> tuple[list[dict], bool]:
    archive = (release / TRAIN_TAR).stat().st_size
    results = {}
    cold = True
    for name, route in (("06", route_06), ("anchor", route_anchor)):
        root = make_root(work, release, "root-" + name)
        base = PeakDisk(root).used()
        cold = drop_caches() and cold
        with PeakDisk(root) as disk:
            seconds = route(work, root, shards, jobs)
        out = root / ("webdataset" if name == "06" else "anchor")
        made = sum(p.stat().st_blocks * 512 for p in out.glob("*.tar"))
        results[name] = (seconds, disk.peak - base + archive, made)
        print("  %-7s %7.2f s, peak %s MiB" % (name, seconds, (disk.peak - base + archive) >> 20),
              file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    (t06, peak06, shards06), (tanchor, peakanchor, _) = results["06"], results["anchor"]
    mib = 1 << 20
    return [
        {"measure": "train %.0f MB, %d shards: 06_pack_webdataset.py vs 01_unzip.sh + ShardWriter"
                    % (archive / 1e6, shards),
         "value": round(t06, 2), "unit": "s", "baseline": round(tanchor, 2),
         "ratio": round(t06 / tanchor, 3), "goal": "<= 0.6"},
        {"measure": "throughput (archive MB/s)", "value": round(archive / t06 / 1e6, 1),
         "unit": "MB/s", "baseline": round(archive / tanchor / 1e6, 1),
         "ratio": round(tanchor / t06, 3), "goal": ""},
        {"measure": "peak disk: 06 vs anchor (archive included)", "value": round(peak06 / mib),
         "unit": "MiB", "baseline": round(peakanchor / mib), "ratio": round(peak06 / peakanchor, 3),
         "goal": "report"},
        {"measure": "peak disk: 06 vs archive + shards", "value": round(peak06 / mib), "unit": "MiB",
         "baseline": round((archive + shards06) / mib),
         "ratio": round(peak06 / (archive + shards06), 3), "goal": "<= 1"},
    ], cold


# ----------------------------------------------------------------------------- --source

SOURCES = ("kaggle", "hf-parquet", "hf-targz")


def make_source(work: Path, classes: int, source: str) -> tuple[Path, object]:
    """A bench release (made here: its image bytes are needed) and its train images as the
    source's files. (the release folder, the layout made)"""
    opts = dict(minirelease.PRESETS["bench"], classes=classes, val_per_class=1, test=1)
    print("generating the bench release (%d classes) and its %s files in %s ..."
          % (classes, source, work), file=sys.stderr)
    rel = minirelease.make_release(work / "bench-release", **opts)
    images = {p: b for p, b in sourcerelease.release_images(rel).items() if p.startswith("train/")}
    out = work / ("source-" + source)
    if source == "kaggle":
        made = sourcerelease.make_kaggle_zip(rel, out, images=images)
    elif source == "hf-parquet":
        made = sourcerelease.make_hf_parquet(rel, out, {"train": 5, "validation": 1, "test": 1},
                                             row_group=100, images=images)
    else:
        made = sourcerelease.make_hf_targz(rel, out, train_files=5, images=images)
    return work / "bench-release", made


def source_root(work: Path, release: Path, made, name: str) -> Path:
    """ROOT as 00_download.sh --source leaves it, with 02's synsets.csv (from the devkit)."""
    hub = isinstance(made, sourcerelease.HubLayout)
    root = (sourcerelease.hub_root if hub else sourcerelease.kaggle_root)(work, made, name)
    if hub:                                       # only train: its files alone in the record
        doc = sourcerelease.hub_record(made)
        doc["files"] = [f for f in doc["files"] if f["split"] == "train"]
        sourcerelease.write_record(root, "hf", doc)
    return with_meta(work, release, root)


def measure_source(work: Path, release: Path, made, source: str, shards: int,
                   jobs: int) -> tuple[list[dict], bool]:
    flag = source.split("-")[0]
    files = made.file.size if source == "kaggle" else \
        sum(f.size for f in made.files if f.split == "train")
    results, shard_bytes, cold = {}, {}, True
    for name in ("06", "anchor"):
        root = source_root(work, release, made, "root-" + name)
        base = PeakDisk(root).used()
        cold = drop_caches() and cold
        with PeakDisk(root) as disk:
            if name == "06":
                seconds = timed([sys.executable, work / "06_pack_webdataset.py", "--root", root,
                                 "--source", flag, "--shards", shards, "--jobs", jobs, "train"])
            else:
                seconds = timed(["bash", work / "01_unzip.sh", "--root", root, "--source", flag,
                                 "--jobs", jobs, "train"])
                seconds += timed([sys.executable, work / "06_pack_webdataset.py", "--root", root,
                                  "--from-tree", "--shards", shards, "--jobs", jobs, "train"])
                t0 = time.perf_counter()
                shutil.rmtree(root / "train")
                seconds += time.perf_counter() - t0
        out = sorted((root / "webdataset").glob("*.tar"))
        shard_bytes[name] = [p.read_bytes() for p in out]
        made_bytes = sum(p.stat().st_blocks * 512 for p in out)
        results[name] = (seconds, disk.peak - base + files, made_bytes)
        print("  %-7s %7.2f s, peak %s MiB" % (name, seconds, (disk.peak - base + files) >> 20),
              file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    if shard_bytes["06"] != shard_bytes["anchor"]:
        raise SystemExit("bench_webdataset: the shards of 06 --source %s and of the anchor differ"
                         % flag)
    (t06, peak06, shards06), (tanchor, peakanchor, _) = results["06"], results["anchor"]
    mib = 1 << 20
    return [
        {"measure": "train %.0f MB of %s files, %d shards: 06 --source vs 01 --source + "
                    "06 --from-tree" % (files / 1e6, source, shards),
         "value": round(t06, 2), "unit": "s", "baseline": round(tanchor, 2),
         "ratio": round(t06 / tanchor, 3), "goal": "report"},
        {"measure": "peak disk: 06 --source vs anchor (files included)", "value": round(peak06 / mib),
         "unit": "MiB", "baseline": round(peakanchor / mib), "ratio": round(peak06 / peakanchor, 3),
         "goal": "report"},
        {"measure": "peak disk: 06 --source vs files + shards", "value": round(peak06 / mib),
         "unit": "MiB", "baseline": round((files + shards06) / mib),
         "ratio": round(peak06 / (files + shards06), 3), "goal": "<= 1"},
    ], cold


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", type=Path, help="reuse this bench release (else generate one)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temp dir under /var/tmp)")
    p.add_argument("--classes", type=int, default=150, help="classes of the generated release")
    p.add_argument("--shards", type=int, default=64, help="shards written by both routes")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="--jobs of 06_pack_webdataset.py and 01_unzip.sh")
    p.add_argument("--source", choices=SOURCES, default=None,
                   help="measure 06 --source on this source's files instead (see above)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: %d classes, 8 shards" % QUICK_CLASSES)
    p.add_argument("--repeat", type=int, default=1, help="ignored: one run of each route")
    p.add_argument("--json", type=Path, help="write result rows to this file")
    p.add_argument("--keep", action="store_true", help="keep the generated release")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import webdataset  # noqa: F401  (the anchor's ShardWriter)
    except ImportError:
        raise SystemExit("bench_webdataset: the anchor needs the webdataset package "
                         "(python3 -m pip install -r requirements.txt)") from None
    if args.quick:
        args.classes, args.shards = QUICK_CLASSES, 8
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-webdataset-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    copy_scripts(work, *SCRIPTS)
    generated = []
    try:
        rel = args.release
        if args.source:
            rel, made = make_source(work, args.classes, args.source)
            generated += [rel, made.root if isinstance(made, sourcerelease.HubLayout)
                          else made.file.local.parent]
            rows, cold = measure_source(work, rel, made, args.source, args.shards, args.jobs)
        else:
            if rel is None:
                rel = generate(work / "bench-release", "bench", "--classes", str(args.classes))
                generated.append(rel)
            rows, cold = measure(work, rel, args.shards, args.jobs)
        rows = [dict(benchmark="webdataset", **r) for r in rows]
        print("\n06_pack_webdataset.py benchmark (%s, %d cores, one run of each route; every time "
              "includes sync)" % ("cold cache" if cold else "warm cache (could not drop caches)",
                                  os.cpu_count() or 0))
        report(rows, args.json)
    finally:
        if not args.keep:
            remove_work(generated, work, args.work is None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
