#!/usr/bin/env python3
"""Benchmark 01_unzip.sh train against the common two-pass recipe and one flat `tar -x`.

    python3 bench/bench_unzip.py [--release DIR] [--work DIR] [--jobs 2] [--repeat 3]
                                 [--quick] [--files] [--json FILE] [--keep]

On one generated release (`minirelease.py --preset bench`, ~2 GB, 1,000 classes × ~20 images of
~110 KiB), in one run and in rotating order:

  * 01_unzip.sh      this script: one read of the outer tar, classes in parallel (--jobs)
  * two-pass         `tar -xf` the outer tar (writes the 1,000 inner tars), then `tar -xf` each inner
                     tar into its folder and delete it (the common recipe)
  * flat tar         one `tar -x` of a flat tar holding the same files (built once, untimed)

Each timing starts from an empty output folder with the page cache dropped when the machine allows
it (`sync; echo 3 > /proc/sys/vm/drop_caches`) and includes a final `sync`. The median over
--repeat rounds is reported. Peak memory is the largest resident set of any process of the run:
RUSAGE_CHILDREN of a parent whose only child is the run. 01_unzip.sh execs `python3 -m
imagenet_prep.unzip` (the same process, no bash left waiting) and that process forks the workers
and reaps them, so the figure covers the main process and every worker. It is measured on a
release with one big class (1,300 images × 110 KiB, a 143 MB class tar, as large as the real ones)
to show it does not grow with class size. --quick is a smoke run: 50 classes, one round, a
300-image big class. --files adds the file-count release (1,281,167 tiny files, `--preset files`):
time per file vs the 2 GB run (slow: generation alone takes minutes). 01_unzip.sh and
imagenet_prep/ are copied into the scratch folder and run from there, so that editing the checkout
cannot disturb a run. Generated data is deleted at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchpaths import REPO, TESTS, copy_scripts
from benchmark import drop_caches, remove_work, report
import minirelease

SCRIPT = REPO / "01_unzip.sh"
GOAL_RATIO = 0.50          # 01_unzip.sh / two-pass on 2 cores
GOAL_MEM_MIB = 256         # peak RSS per worker
TRAIN_TAR = "ILSVRC2012_img_train.tar"
QUICK_CLASSES = 50         # --quick: classes of the generated release (~110 MB instead of ~2 GB)
BIG_CLASS_IMAGES = 1300    # images of the one big class the peak memory is measured on
QUICK_BIG_CLASS_IMAGES = 300


def timed(cmd: list, cwd: Optional[Path] = None) -> float:
    """Run cmd, then sync; return the seconds taken by both."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    subprocess.run(["sync"], check=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit("benchmark command failed (exit %d): %s\n%s"
                         % (proc.returncode, cmd, proc.stderr.decode()[-2000:]))
    return dt


def run_ours(archive: Path, out: Path, jobs: int) -> float:
    return timed(["bash", out.parent / SCRIPT.name, "--root", out, "--archive", archive,
                  "--jobs", jobs, "train"])


def run_ours_no_manifest(archive: Path, out: Path, jobs: int) -> float:
    return timed(["bash", out.parent / SCRIPT.name, "--root", out, "--archive", archive,
                  "--jobs", jobs, "--no-manifest", "train"])


def run_two_pass(archive: Path, out: Path, jobs: int) -> float:
    script = ('set -e; mkdir -p train; cd train; tar -xf "$1"; '
              'for f in *.tar; do d=${f%.tar}; mkdir -p "$d"; tar -xf "$f" -C "$d"; rm -f "$f"; done')
    return timed(["bash", "-c", script, "two-pass", archive], cwd=out)


def run_flat(flat: Path, out: Path, jobs: int) -> float:
    return timed(["tar", "-xf", flat, "-C", out])


def build_flat(archive: Path, flat: Path) -> None:
    """The same files as one flat tar: train/WNID/WNID_N.JPEG (untimed)."""
    with tarfile.open(archive) as outer, tarfile.open(flat, "w", format=tarfile.GNU_FORMAT) as out:
        for m in outer:
            inner = tarfile.open(fileobj=outer.extractfile(m))
            wnid = m.name[:-4]
            for im in inner:
                data = inner.extractfile(im)
                im.name = "train/%s/%s" % (wnid, im.name)
                out.addfile(im, data)


def largest_member(archive: Path) -> int:
    with tarfile.open(archive) as outer:
        return max(m.size for m in outer)


def measure_peak_memory(work: Path, jobs: int, images: int) -> tuple[float, int]:
    """(peak RSS in MiB, bytes of the class tar) of a 01_unzip.sh run in a fresh process on a
    release with one big class of `images` images (a second one of the same size beside it)."""
    rel = minirelease.make_release(work / "bigclass-rel", classes=2, images=(images, images),
                                   val_per_class=1, test=1, kib=110.0)
    class_bytes = largest_member(rel.archives["train"])
    out = work / "bigclass-out"
    out.mkdir()
    code = ("import resource,subprocess,sys;"
            "subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", code, "bash", str(work / SCRIPT.name), "--root", str(out),
                        "--archive", str(rel.archives["train"]), "--jobs", str(jobs), "train"],
                       capture_output=True, text=True, check=True)
    shutil.rmtree(work / "bigclass-rel")
    shutil.rmtree(out)
    return int(r.stdout.strip()) / 1024.0, class_bytes


def bench_release(rel_dir: Path, work: Path, jobs: int, repeat: int, flat_too: bool = True):
    archive = rel_dir / TRAIN_TAR
    n_files = 0
    with tarfile.open(archive) as outer:
        for m in outer:
            n_files += sum(1 for _ in tarfile.open(fileobj=outer.extractfile(m)))
    flat = work / "flat.tar"
    if flat_too:
        print("building the flat tar of the same files (untimed) ...", file=sys.stderr)
        build_flat(archive, flat)
    methods = [("01_unzip.sh", run_ours, archive), ("two-pass", run_two_pass, archive),
               ("no manifest", run_ours_no_manifest, archive)]
    if flat_too:
        methods.append(("flat tar", run_flat, flat))
    times: dict[str, list[float]] = {name: [] for name, _, _ in methods}
    cold = True
    for r in range(repeat):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for name, fn, src in order:
            out = work / "out"
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            cold = drop_caches() and cold
            dt = fn(src, out, jobs)
            times[name].append(dt)
            print("  round %d  %-12s %7.2f s" % (r + 1, name, dt), file=sys.stderr)
            if name == "01_unzip.sh":
                check_tree(out / "train", rel_dir)
            shutil.rmtree(out)
    if flat.exists():
        flat.unlink()
    return {k: statistics.median(v) for k, v in times.items()}, times, n_files, cold


def check_tree(train: Path, rel_dir: Path) -> None:
    expected = json.loads((rel_dir / "expected.json").read_text())["train"]
    got = {d.name: sorted(p.name for p in d.iterdir()) for d in train.iterdir()
           if not d.name.startswith(".")}
    if got != expected:
        raise SystemExit("01_unzip.sh produced a different tree than expected.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", type=Path, help="reuse this bench release (else generate one)")
    p.add_argument("--files-release", type=Path, help="reuse this files release (with --files)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temp dir under /var/tmp)")
    p.add_argument("--jobs", type=int, default=2, help="--jobs for 01_unzip.sh")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: %d classes, 1 round, a %d-image big class"
                   % (QUICK_CLASSES, QUICK_BIG_CLASS_IMAGES))
    p.add_argument("--files", action="store_true", help="also run the 1,281,167-file release (slow)")
    p.add_argument("--json", type=Path, help="write result rows to this file")
    p.add_argument("--keep", action="store_true", help="keep generated releases")
    return p


def generate(out: Path, preset: str, *extra: str) -> Path:
    print("generating the %s release %sin %s ..." % (preset, " ".join(extra) + " " if extra else "", out),
          file=sys.stderr)
    subprocess.run([sys.executable, str(TESTS / "minirelease.py"), str(out), "--preset", preset, *extra],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeat = 1
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-unzip-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    copy_scripts(work, SCRIPT.name)
    generated = []
    rows = []
    try:
        rel = args.release
        if rel is None:
            extra = ("--classes", str(QUICK_CLASSES)) if args.quick else ()
            rel = generate(work / "bench-release", "bench", *extra)
            generated.append(rel)
        size = (rel / TRAIN_TAR).stat().st_size
        med, allt, n_files, cold = bench_release(rel, work, args.jobs, args.repeat)
        ours, two, flat = med["01_unzip.sh"], med["two-pass"], med["flat tar"]
        mem, big_class = measure_peak_memory(
            work, args.jobs, QUICK_BIG_CLASS_IMAGES if args.quick else BIG_CLASS_IMAGES)
        note = "cold cache" if cold else "warm cache (could not drop caches)"
        rows += [
            {"measure": "train %s, %d files: 01_unzip.sh --jobs %d" % (_gb(size), n_files, args.jobs),
             "value": round(ours, 2), "unit": "s", "baseline": round(two, 2),
             "ratio": round(ours / two, 3), "goal": "<= %.2f x two-pass" % GOAL_RATIO},
            {"measure": "01_unzip.sh --no-manifest (no SHA-256 of the files)",
             "value": round(med["no manifest"], 2), "unit": "s", "baseline": round(two, 2),
             "ratio": round(med["no manifest"] / two, 3), "goal": "report"},
            {"measure": "two-pass tar (baseline)", "value": round(two, 2), "unit": "s",
             "baseline": round(two, 2), "ratio": 1.0, "goal": ""},
            {"measure": "01_unzip.sh vs one flat tar -x", "value": round(ours, 2), "unit": "s",
             "baseline": round(flat, 2), "ratio": round(ours / flat, 3), "goal": "report"},
            {"measure": "throughput 01_unzip.sh", "value": round(size / ours / 1e6, 1), "unit": "MB/s",
             "baseline": round(size / two / 1e6, 1), "ratio": round(two / ours, 3), "goal": ""},
            {"measure": "peak RSS of any process (one %.0f MB class)" % (big_class / 1e6),
             "value": round(mem, 1),
             "unit": "MiB", "baseline": None, "ratio": None, "goal": "< %d MiB" % GOAL_MEM_MIB},
        ]
        if args.files:
            frel = args.files_release
            if frel is None:
                frel = generate(work / "files-release", "files")
                generated.append(frel)
            fmed, _, f_files, _ = bench_release(frel, work, args.jobs, 1, flat_too=False)
            per_file = fmed["01_unzip.sh"] / f_files * 1e6
            per_file_bench = ours / n_files * 1e6
            rows += [
                {"measure": "files release, %d files: 01_unzip.sh" % f_files,
                 "value": round(fmed["01_unzip.sh"], 1), "unit": "s",
                 "baseline": round(fmed["two-pass"], 1),
                 "ratio": round(fmed["01_unzip.sh"] / fmed["two-pass"], 3), "goal": "report"},
                {"measure": "time per file, files release vs 2 GB run", "value": round(per_file, 1),
                 "unit": "us/file", "baseline": round(per_file_bench, 1),
                 "ratio": round(per_file / per_file_bench, 3), "goal": "report"},
            ]
        print("\n01_unzip.sh benchmark (%s, %d cores, median of %d rounds; every time includes sync)"
              % (note, os.cpu_count() or 0, args.repeat))
        report([dict(benchmark="unzip", **r) for r in rows], args.json, allt)
    finally:
        if not args.keep:
            remove_work(generated, work, args.work is None)
    return 0


def _gb(n: int) -> str:
    return "%.1f GB" % (n / 1e9)


if __name__ == "__main__":
    sys.exit(main())
