#!/usr/bin/env python3
"""Benchmark 03_build_val_class_folders.py against a valprep-style one-`mv`-per-file script

    python3 bench/bench_val.py [--files 50000] [--classes 1000] [--quick] [--json FILE]

Both sides start from the same freshly written flat ROOT/val (small files; a rename costs the same
whatever the size) in the same run. Baseline: the widely copied valprep.sh form, a bash script of
`mkdir -p WNID` lines and then one `mv FILE WNID/` line (one process) per image. Contender: this
project's script as a user runs it (a new python3 process, labels found under ROOT/devkit/), timed
wall-clock including interpreter start, median of --repeat runs with --undo in between. Peak memory
is the child's ru_maxrss from os.wait4. Prints a table; --json writes the rows for
bench/benchmark.py.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

from benchpaths import REPO
from benchmark import report

SCRIPT = REPO / "03_build_val_class_folders.py"
VAL = "ILSVRC2012_val_%08d.JPEG"
GOAL_RATIO = 30.0
GOAL_SECONDS = 2.0


def make_root(root: Path, files: int, classes: int, seed: int = 0) -> Tuple[List[str], List[int]]:
    """Flat ROOT/val, ROOT/meta/synsets.csv and devkit ground truth; returns (wnids, ids)."""
    rng = random.Random(seed)
    wnids: List[str] = []
    seen = set()
    while len(wnids) < classes:
        w = "n%08d" % rng.randrange(1_000_000, 15_000_000)
        if w not in seen:
            seen.add(w)
            wnids.append(w)
    ids = [1 + i % classes for i in range(files)]
    rng.shuffle(ids)
    (root / "val").mkdir(parents=True)
    data = b"\xff\xd8" + b"\0" * 14
    for k in range(1, files + 1):
        with open(root / "val" / (VAL % k), "wb") as f:
            f.write(data)
    order = sorted(wnids)
    (root / "meta").mkdir()
    with open(root / "meta" / "synsets.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ilsvrc_id", "class_index", "wnid", "words", "description", "num_train_images"])
        for i, wnid in enumerate(wnids, start=1):
            w.writerow([i, order.index(wnid), wnid, "class %d" % i, "", 0])
    gt = root / "devkit" / "ILSVRC2012_devkit_t12" / "data"
    gt.mkdir(parents=True)
    (gt / "ILSVRC2012_validation_ground_truth.txt").write_text("".join("%d\n" % i for i in ids))
    return wnids, ids


def timed(cmd: List[str], cwd: Optional[Path] = None) -> Tuple[float, float]:
    """Run cmd; return (wall seconds, peak RSS in MiB of the child and its waited-for children)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("benchmark command failed (exit %d): %s\n%s" % (
            proc.returncode, " ".join(cmd), proc.stderr.read().decode(errors="replace")))
    proc.stderr.close()
    return wall, usage.ru_maxrss / 1024.0


def tree(root: Path) -> set:
    out = set()
    for d in os.scandir(root / "val"):
        if d.is_dir():
            out.update("%s/%s" % (d.name, f) for f in os.listdir(d.path))
        else:
            out.add(d.name)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--files", type=int, default=50_000, help="validation images")
    p.add_argument("--classes", type=int, default=1000, help="classes")
    p.add_argument("--repeat", type=int, default=3, help="contender runs (median reported)")
    p.add_argument("--quick", action="store_true", help="5,000 files, 100 classes")
    p.add_argument("--dir", type=Path, default=None,
                   help="work folder (default: a temporary folder in $TMPDIR)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.files, args.classes = 5_000, 100
    if args.dir is not None and not args.dir.is_dir():
        p.error("--dir %s is not a folder: create it, or leave --dir out (a temporary folder in "
                "$TMPDIR is used)" % args.dir)
    for name, value, low, high in (("--files", args.files, 1, 10_000_000),
                                   ("--classes", args.classes, 1, 100_000),
                                   ("--repeat", args.repeat, 1, 1000)):
        if not low <= value <= high:
            p.error("%s wants a number from %d to %d (got %d)" % (name, low, high, value))
    try:
        work = Path(tempfile.mkdtemp(prefix="bench_val.", dir=args.dir))
    except OSError as e:
        p.error("cannot make a work folder in %s (%s): pass --dir DIR where you can write"
                % (args.dir or tempfile.gettempdir(), e.strerror or e))
    try:
        print("writing 2 x %d flat files under %s ..." % (args.files, work), file=sys.stderr)
        ours, theirs = work / "ours", work / "valprep"
        wnids, ids = make_root(ours, args.files, args.classes)
        make_root(theirs, args.files, args.classes)
        want = {"%s/%s" % (wnids[i - 1], VAL % k) for k, i in enumerate(ids, start=1)}

        # baseline: valprep.sh style, one mv process per image
        script = theirs / "valprep.sh"
        script.write_text("".join("mkdir -p %s\n" % w for w in wnids) + "".join(
            "mv %s %s/\n" % (VAL % k, wnids[i - 1]) for k, i in enumerate(ids, start=1)))
        print("baseline: bash valprep.sh (%d mv processes) ..." % args.files, file=sys.stderr)
        t_base, rss_base = timed(["bash", str(script)], cwd=theirs / "val")
        assert tree(theirs) == want, "baseline produced a different tree"

        # contender: median of --repeat runs, flattened back with --undo in between
        cmd = [sys.executable, str(SCRIPT), "--root", str(ours)]
        runs, undos, rss = [], [], 0.0
        for i in range(args.repeat):
            if i:
                undos.append(timed(cmd + ["--undo"])[0])
                assert len(tree(ours)) == args.files
            wall, peak = timed(cmd)
            runs.append(wall)
            rss = max(rss, peak)
            assert tree(ours) == want, "03 produced a different tree"
        t_rerun, _ = timed(cmd)
        t_ours = statistics.median(runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = "%d files" % args.files
    goal = "<%g s, >=%gx" % (GOAL_SECONDS, GOAL_RATIO)
    rows = [
        {"benchmark": "val", "measure": "sort %s into %d folders (wall, median of %d)"
         % (n, args.classes, len(runs)), "value": round(t_ours, 3), "unit": "s",
         "baseline": round(t_base, 3), "ratio": round(t_base / t_ours, 1), "goal": goal},
        {"benchmark": "val", "measure": "peak memory (ru_maxrss of the child)",
         "value": round(rss, 1), "unit": "MiB", "baseline": round(rss_base, 1),
         "ratio": None, "goal": ""},
        {"benchmark": "val", "measure": "rerun of the finished job ('already done')",
         "value": round(t_rerun, 3), "unit": "s", "baseline": None, "ratio": None, "goal": ""},
    ]
    if undos:
        rows.append({"benchmark": "val", "measure": "--undo (flatten back, median)",
                     "value": round(statistics.median(undos), 3), "unit": "s",
                     "baseline": None, "ratio": None, "goal": ""})
    print("contender runs: %s s; baseline %.2f s" % (", ".join("%.3f" % r for r in runs), t_base),
          file=sys.stderr)
    report(rows, args.json)
    met = t_ours < GOAL_SECONDS and t_base / t_ours >= GOAL_RATIO
    print("goal (%s): %s" % (goal, "met" if met else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
