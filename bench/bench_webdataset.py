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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", type=Path, help="reuse this bench release (else generate one)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temp dir under /var/tmp)")
    p.add_argument("--classes", type=int, default=150, help="classes of the generated release")
    p.add_argument("--shards", type=int, default=64, help="shards written by both routes")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="--jobs of 06_pack_webdataset.py and 01_unzip.sh")
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
