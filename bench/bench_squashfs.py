#!/usr/bin/env python3
"""Benchmark 05_pack_squashfs.py train: the image against the tree 01_unzip.sh makes.

    python3 bench/bench_squashfs.py [--release DIR] [--work DIR] [--jobs 2] [--repeat 3]
                                    [--quick] [--files] [--json FILE] [--keep]

On one generated release (`minirelease.py --preset bench`, ~2 GB, 1,000 classes x ~20 images of
~110 KiB), from the same archive, in one run and in rotating order:

  * build      05_pack_squashfs.py train (archive -> ROOT/squashfs/train.sqfs, checked) against
               01_unzip.sh --jobs N train (archive -> ROOT/train/WNID/, verified)
  * inodes     what each result takes from a file-count quota: the image file (and its marker)
               against every folder and file of the tree
  * size       allocated bytes (du) of the image against the tree's
  * staging    copying the result to another folder, as a job does to a node's local disk: `cp` of
               the image against `cp -r` of the tree, both followed by `sync`

--files repeats it once on the file-count release (`--preset files`: 1,281,167 files of ~100
bytes, the real per-class counts), where every per-file cost shows: slow (generating it alone
takes minutes).

Each timing starts with the page cache dropped when the machine allows it (`sync; echo 3 >
/proc/sys/vm/drop_caches`, as root) and includes a final `sync`; the median over --repeat rounds is
reported. The scripts and imagenet_prep/ are copied into the scratch folder and run from there.
Both "disks" are folders of one file system here: on a cluster, the staging copy goes from shared
storage (where many small files are slowest) to a node's local disk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from benchpaths import copy_scripts
from benchmark import drop_caches, remove_work, report
from bench_unzip import generate, timed

SCRIPTS = ("01_unzip.sh", "05_pack_squashfs.py")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
QUICK_CLASSES = 50


def make_root(work: Path, release: Path) -> Path:
    """A ROOT whose downloads/ links to the release's train archive."""
    root = work / "root"
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    link = root / "downloads" / TRAIN_TAR
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to((release / TRAIN_TAR).resolve())
    return root


def run_pack(work: Path, root: Path, jobs: int) -> float:
    return timed([sys.executable, work / "05_pack_squashfs.py", "--root", root, "train"])


def run_unzip(work: Path, root: Path, jobs: int) -> float:
    return timed(["bash", work / "01_unzip.sh", "--root", root, "--jobs", jobs, "train"])


def clear(root: Path) -> None:
    for name in ("train", "squashfs", ".01_unzip", "meta"):
        shutil.rmtree(root / name, ignore_errors=True)


def bench_builds(work: Path, root: Path, jobs: int, repeat: int) -> tuple[dict, dict, bool]:
    """Median seconds of each build; the last round's results are left in ROOT."""
    methods: list[tuple[str, Callable[[Path, Path, int], float]]] = [
        ("05_pack_squashfs.py", run_pack), ("01_unzip.sh", run_unzip)]
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    cold = True
    for r in range(repeat):
        clear(root)
        for name, fn in methods[r % 2:] + methods[:r % 2]:
            cold = drop_caches() and cold
            times[name].append(fn(work, root, jobs))
            print("  round %d  %-20s %7.2f s" % (r + 1, name, times[name][-1]), file=sys.stderr)
    return {k: statistics.median(v) for k, v in times.items()}, times, cold


def usage(path: Path) -> tuple[int, int, int]:
    """(inodes, allocated bytes, bytes of its files) of one file or a whole tree."""
    paths = [path] + (list(path.rglob("*")) if path.is_dir() else [])
    stats = [p.lstat() for p in paths]
    return (len(stats), sum(s.st_blocks * 512 for s in stats),
            sum(s.st_size for p, s in zip(paths, stats) if p.is_file()))


def bench_staging(work: Path, image: Path, tree: Path, repeat: int) -> dict[str, float]:
    """Median seconds to copy the image (cp) and the tree (cp -r) to another folder, with sync."""
    dest = work / "staged"
    times: dict[str, list[float]] = {"image": [], "tree": []}
    for r in range(repeat):
        for what in (("image", "tree") if r % 2 == 0 else ("tree", "image")):
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            drop_caches()
            src = image if what == "image" else tree
            times[what].append(timed(["cp", "-r", src, dest / src.name]))
            print("  round %d  staging %-6s %7.2f s" % (r + 1, what, times[what][-1]), file=sys.stderr)
    shutil.rmtree(dest, ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(work: Path, rel: Path, jobs: int, repeat: int) -> tuple[list[dict], bool, dict]:
    """Every row for one release; whether the cache could be dropped; the rounds' times."""
    root = make_root(work, rel)
    size = (rel / TRAIN_TAR).stat().st_size
    build, allt, cold = bench_builds(work, root, jobs, repeat)
    image = root / "squashfs" / "train.sqfs"
    image_use = usage(image)
    image_use = (image_use[0] + 1,) + image_use[1:]          # + train.sqfs.json
    tree_use = usage(root / "train")
    files = json.loads((root / "squashfs" / "train.sqfs.json").read_text())["files"]
    stage = bench_staging(work, image, root / "train", repeat)
    clear(root)
    return rows_for(size, files, jobs, build, image_use, tree_use, stage), cold, allt


def rows_for(size: int, files: int, jobs: int, build: dict, image: tuple, tree: tuple,
             stage: dict) -> list[dict]:
    pack, unzip = build["05_pack_squashfs.py"], build["01_unzip.sh"]
    gib = 1 << 30
    return [
        {"measure": "train %.1f GB, %d files: build 05_pack_squashfs.py (image, checked)"
                    % (size / 1e9, files),
         "value": round(pack, 2), "unit": "s", "baseline": round(unzip, 2),
         "ratio": round(pack / unzip, 3), "goal": "report (baseline: 01_unzip.sh --jobs %d)" % jobs},
        {"measure": "throughput 05_pack_squashfs.py (baseline 01_unzip.sh)",
         "value": round(size / pack / 1e6, 1), "unit": "MB/s", "baseline": round(size / unzip / 1e6, 1),
         "ratio": round(unzip / pack, 3), "goal": ""},
        {"measure": "inodes: image + marker vs tree", "value": image[0], "unit": "inodes",
         "baseline": tree[0], "ratio": round(image[0] / tree[0], 6), "goal": "2 (one file + .json)"},
        {"measure": "allocated size: image vs tree (du)", "value": round(image[1] / gib, 3),
         "unit": "GiB", "baseline": round(tree[1] / gib, 3), "ratio": round(image[1] / tree[1], 3),
         "goal": "report"},
        {"measure": "apparent size: image vs sum of file sizes", "value": round(image[2] / gib, 3),
         "unit": "GiB", "baseline": round(tree[2] / gib, 3), "ratio": round(image[2] / tree[2], 3),
         "goal": "report"},
        {"measure": "staging: cp image + sync vs cp -r tree + sync", "value": round(stage["image"], 2),
         "unit": "s", "baseline": round(stage["tree"], 2),
         "ratio": round(stage["image"] / stage["tree"], 3), "goal": "< 1"},
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", type=Path, help="reuse this bench release (else generate one)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temp dir under /var/tmp)")
    p.add_argument("--jobs", type=int, default=2, help="--jobs for 01_unzip.sh")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: %d classes, 1 round" % QUICK_CLASSES)
    p.add_argument("--files", action="store_true",
                   help="also run the 1,281,167-file release, one round (slow)")
    p.add_argument("--files-release", type=Path, help="reuse this files release (with --files)")
    p.add_argument("--json", type=Path, help="write result rows to this file")
    p.add_argument("--keep", action="store_true", help="keep the generated release and results")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeat = 1
    if not shutil.which("sqfstar") and not shutil.which("tar2sqfs"):
        raise SystemExit("bench_squashfs: needs sqfstar (Debian package squashfs-tools >= 4.5.1)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-squashfs-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    copy_scripts(work, *SCRIPTS)
    generated = []
    try:
        rel = args.release
        if rel is None:
            extra = ("--classes", str(QUICK_CLASSES)) if args.quick else ()
            rel = generate(work / "bench-release", "bench", *extra)
            generated.append(rel)
        rows, cold, allt = measure(work, rel, args.jobs, args.repeat)
        if args.files:
            frel = args.files_release
            if frel is None:
                frel = generate(work / "files-release", "files")
                generated.append(frel)
            shutil.rmtree(work / "root", ignore_errors=True)
            more, _, _ = measure(work, frel, args.jobs, 1)
            rows += [dict(r, measure="files release: " + r["measure"]) for r in more]
        rows = [dict(benchmark="squashfs", **r) for r in rows]
        print("\n05_pack_squashfs.py benchmark (%s, %d cores, median of %d rounds; every time "
              "includes sync)" % ("cold cache" if cold else "warm cache (could not drop caches)",
                                  os.cpu_count() or 0, args.repeat))
        report(rows, args.json, allt)
    finally:
        if not args.keep:
            remove_work(generated, work, args.work is None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
