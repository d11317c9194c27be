#!/usr/bin/env python3
"""Benchmark 04_verify.py: the structural check, and --full against `sha256sum -c` on the same tree.

    python3 bench/bench_verify.py [--presets bench,files] [--classes K] [--jobs 2] [--repeat 3]
                                  [--cache cold|warm] [--quick] [--work DIR] [--keep] [--json FILE]

For each release (`minirelease.py --preset bench`: ~2 GB, 1,000 classes x ~20 images of ~110 KiB;
`--preset files`: 1,281,167 tiny files, the real per-class counts; --classes scales either down),
the tree is made by the pipeline (01_unzip.sh all, 02, 03; untimed), then timed, in rotating order,
median of --repeat rounds:

  * structure      04_verify.py all: class folders, names, counts, every file's first bytes
  * count by hand  `find train val test -type f | wc -l` (what people do today; baseline of the above)
  * --full         04_verify.py --full all: the structure, and every file's SHA-256 against the
                   manifests, in --jobs worker processes
  * sha256sum -c   `sha256sum -c --quiet meta/SHA256SUMS.{train,val,test}` (baseline of --full;
                   goal: --full <= 0.6x of it on 2 cores)

Each timing starts with the page cache dropped when the machine allows it (`sync; echo 3 >
/proc/sys/vm/drop_caches`), else (or with --cache warm) with a warm cache for every contender
alike; the table says which, and gives the CPU time (user + system) of --full and sha256sum too.
--quick is a smoke run: 50 classes of the bench preset, one round. Generated data is deleted at the
end unless --keep. Prints a table; --json writes the rows for bench/benchmark.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchpaths import REPO
from benchmark import drop_caches, report
import minirelease

VERIFY = REPO / "04_verify.py"
GOAL_FULL = 0.6              # 04_verify.py --full / sha256sum -c, on 2 cores
QUICK_CLASSES = 50
SPLITS = ("train", "val", "test")


def timed(cmd, cwd: Optional[Path] = None, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the command and every process it waited
    for) of a command, which must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd if shell else [str(c) for c in cmd], cwd=cwd, shell=shell,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit("benchmark command failed (exit %d): %s\n%s"
                         % (proc.returncode, cmd, err.decode(errors="replace")[-2000:]))
    return wall, usage.ru_utime + usage.ru_stime


def make_tree(preset: str, classes: Optional[int], work: Path, jobs: int) -> tuple[Path, int]:
    """Generate the release, run 01 all, 02 and 03 on it (untimed); (ROOT, files in the tree)."""
    opts = dict(minirelease.PRESETS[preset])
    if classes:
        opts["classes"] = classes
    print("generating the %s release (%d classes) in %s ..." % (preset, opts["classes"], work),
          file=sys.stderr, flush=True)
    rel = minirelease.make_release(work / "release", progress=True, **opts)
    root = work / "root"
    (root / "downloads").mkdir(parents=True)
    for split in ("train", "val", "test", "devkit"):
        src = rel.archives[split]
        try:
            os.link(src, root / "downloads" / src.name)
        except OSError:
            shutil.copy(src, root / "downloads" / src.name)
    print("making the tree: 01_unzip.sh all, 02, 03 ...", file=sys.stderr, flush=True)
    for cmd in (["bash", REPO / "01_unzip.sh", "--root", root, "--jobs", jobs, "all"],
                [sys.executable, REPO / "02_convert_meta_clsloc.py", "--root", root,
                 "--expect-classes", opts["classes"]],
                [sys.executable, REPO / "03_build_val_class_folders.py", "--root", root]):
        timed(cmd)
    shutil.rmtree(root / "downloads")
    shutil.rmtree(work / "release")
    n = sum(len(names) for split in SPLITS for _, _, names in os.walk(root / split))
    return root, n


def contenders(root: Path, jobs: int) -> dict:
    v = [sys.executable, VERIFY, "--root", root, "--jobs", jobs]
    sums = " ".join("meta/SHA256SUMS." + s for s in SPLITS)
    return {
        "structure": lambda: timed(v + ["all"]),
        "find": lambda: timed("find train val test -type f | wc -l", cwd=root, shell=True),
        "full": lambda: timed(v + ["--full", "all"]),
        "sha256sum": lambda: timed("sha256sum -c --quiet " + sums, cwd=root, shell=True),
    }


def measure(root: Path, jobs: int, repeat: int, cache: str) -> tuple[dict, dict, bool]:
    """{contender: median wall seconds}, {contender: median CPU seconds}, and whether the page
    cache was dropped before each timing (cache "cold", if the machine allows it)."""
    runs = contenders(root, jobs)
    walls: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    cold = cache == "cold" and drop_caches()
    if not cold:
        for run in runs.values():          # warm the cache alike for every contender
            run()
    names = list(runs)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if cold:
                drop_caches()
            wall, cpu = runs[name]()
            walls[name].append(wall)
            cpus[name].append(cpu)
            print("  %s: %.2f s (CPU %.2f s), load %s" % (name, wall, cpu, os.getloadavg()[0]),
                  file=sys.stderr, flush=True)
    return ({k: statistics.median(v) for k, v in walls.items()},
            {k: statistics.median(v) for k, v in cpus.items()}, cold)


def rows_for(preset: str, n: int, size: int, t: dict, cpu: dict, cold: bool, jobs: int,
             repeat: int) -> list:
    what = "%s release, %s files, %.2f GiB, %s cache, %d jobs, median of %d" % (
        preset, format(n, ","), size / (1 << 30), "cold" if cold else "warm", jobs, repeat)
    row = {"benchmark": "verify", "baseline": None, "ratio": None, "goal": ""}
    return [
        dict(row, measure="structure check (%s)" % what, value=round(t["structure"], 2),
             unit="s", baseline=round(t["find"], 2), ratio=round(t["structure"] / t["find"], 2)),
        dict(row, measure="structure check speed (%s release)" % preset,
             value=round(n / t["structure"]), unit="files/s"),
        dict(row, measure="--full vs sha256sum -c (%s)" % what, value=round(t["full"], 2),
             unit="s", baseline=round(t["sha256sum"], 2),
             ratio=round(t["full"] / t["sha256sum"], 2), goal="<=%gx" % GOAL_FULL),
        dict(row, measure="--full vs sha256sum -c, CPU time (user+sys, %s release)" % preset,
             value=round(cpu["full"], 2), unit="s", baseline=round(cpu["sha256sum"], 2),
             ratio=round(cpu["full"] / cpu["sha256sum"], 2)),
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--presets", default="bench",
                   help="comma-separated minirelease presets: bench (~2 GB), files (1,281,167 "
                        "files; generating takes minutes)")
    p.add_argument("--classes", type=int, default=None,
                   help="classes of each release (default: the preset's 1,000)")
    p.add_argument("--jobs", type=int, default=2, help="04_verify.py --jobs (and 01_unzip.sh's)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    p.add_argument("--cache", choices=("cold", "warm"), default="cold",
                   help="cold: drop the page cache before each timing (needs root; else warm); "
                        "warm: every contender reads from memory")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: %d classes of the bench preset, one round" % QUICK_CLASSES)
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder (default: a temporary folder in $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the generated trees")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    presets = args.presets.split(",")
    if args.quick:
        presets, args.classes, args.repeat = ["bench"], QUICK_CLASSES, 1
    bad = [p for p in presets if p not in minirelease.PRESETS or p == "unit"]
    if bad:
        sys.exit("unknown preset %s (bench, files)" % ", ".join(bad))
    rows = []
    for preset in presets:
        work = Path(tempfile.mkdtemp(prefix="bench_verify.%s." % preset, dir=args.work))
        try:
            root, n = make_tree(preset, args.classes, work, args.jobs)
            size = sum(os.path.getsize(os.path.join(d, f)) for split in SPLITS
                       for d, _, fs in os.walk(root / split) for f in fs)
            print("%s: %s files, %.2f GiB; timing ..." % (preset, format(n, ","), size / (1 << 30)),
                  file=sys.stderr, flush=True)
            t, cpu, cold = measure(root, args.jobs, args.repeat, args.cache)
            rows.extend(rows_for(preset, n, size, t, cpu, cold, args.jobs, args.repeat))
        finally:
            if args.keep:
                print("kept %s" % work, file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    report(rows, args.json)
    full = [r for r in rows if r["goal"]]
    print("goal (--full <= %gx sha256sum -c): %s" % (
        GOAL_FULL, "met" if all(r["ratio"] <= GOAL_FULL for r in full) else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
