#!/usr/bin/env python3
"""Benchmark 01_unzip.sh --stream against 00_download.sh followed by 01_unzip.sh.

    python3 bench/bench_stream.py [--release DIR] [--work DIR] [--jobs 2] [--repeat 3] [--quick]
                                  [--json FILE]

On one generated release (300 classes of 30 images of ~100 KiB: a 922 MB train archive; --quick:
60 classes), served by the loopback server (tests/httpserver.py). Every run starts from an empty
ROOT with a cold page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`, as root) and ends with
`sync`; disk use under ROOT is sampled every 0.2 s, and the CPU time (user + system) of the run's
processes is taken from the kernel. The routes take turns within each of --repeat rounds; the
median is reported. The rows:

  * the uncapped loopback link (a fast mirror, a campus cache: the link outruns the disk):
    `01 --stream train` against `00 train` then `01 train`, and against `01 train` alone with the
    archive already on disk (copied there untimed)
  * 40 MB/s per connection: time and peak disk under ROOT, `--stream` against `00` + `01`
  * uncapped: `--stream --jobs 1` (one writer thread) against --jobs writers; `--stream` from a
    local file (a file:// link: no curl, no pipe) against 01 from disk; the CPU time of each
  * the peak memory of `--stream` on a release with one class of ~148 MB (the largest real one)
  * 8 MiB/s per connection (image-net.org's order), a 100-class release: `--connections 4` vs 1
  * the MD5's cost: CPU seconds per GiB of ResumableMD5

Timing lives here, never in the tests.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import benchpaths  # noqa: F401  (puts the repository and tests/ on sys.path)
from benchmark import drop_caches, report
from benchpaths import REPO

import minirelease
from httpserver import FaultServer
from imagenet_prep.console import human
from imagenet_prep.md5state import ResumableMD5

NAME = minirelease.TRAIN_TAR
RELEASE = dict(classes=300, images=(30, 30), val_per_class=1, test=10, kib=100.0)
CAP = 40e6                            # B/s per connection: "40 MB/s"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("DOWNLOAD_", "MD5_", "IMAGENET_",
                                                                 "SLURM_"))}


def disk_used(folder: Path) -> int:
    """Bytes allocated under `folder` (st_blocks), walking it; 0 if it is gone."""
    total = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    total += e.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                pass
    return total


class Sampler:
    """The largest disk use under a folder while a run goes on (sampled every 0.2 s)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak, self.stop = folder, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, disk_used(self.folder))
            self.stop.wait(0.2)

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, disk_used(self.folder))


# runs a command and prints its exit code, CPU seconds and peak RSS (KiB): from a small process of
# its own, as a child forked from this one (large, after generating a release) would count this
# one's memory in its peak
MEASURE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL);"
           " _, status, u = os.wait4(p.pid, 0);"
           " print(os.waitstatus_to_exitcode(status), u.ru_utime + u.ru_stime, u.ru_maxrss)")


def run_one(cmd: list[str]) -> tuple[float, float]:
    """Run a command: (CPU seconds, user + system, and peak RSS in MiB of it and the processes it
    waited for)."""
    r = subprocess.run([sys.executable, "-c", MEASURE, *cmd], env=ENV, capture_output=True,
                       text=True)
    rc, cpu, rss = r.stdout.split()
    if rc != "0":
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), r.stderr[-3000:]))
    return float(cpu), int(rss) / 1024.0


def timed(cmds: list[list[str]], root: Path,
          prepare: Optional[Callable[[Path], None]] = None) -> tuple[float, int, float]:
    """Run the commands one after the other from an empty ROOT (`prepare` fills it, untimed), then
    sync: (seconds, peak disk under ROOT, CPU seconds of the processes)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if prepare:
        prepare(root)
    drop_caches()
    cpu = 0.0
    with Sampler(root) as s:
        t0 = time.monotonic()
        for cmd in cmds:
            cpu += run_one(cmd)[0]
        subprocess.run(["sync"])
        dt = time.monotonic() - t0
    return dt, s.peak, cpu


def peak_memory(work: Path, jobs: int, images: int = 1350) -> dict:
    """Peak RSS of `01 --stream train` from a local file (the link outruns the writers: the most
    is held in memory) on a release with one big class of `images` images of ~110 KiB (~148 MB, the
    size of the largest real class) and a second one of the same size."""
    rel = minirelease.make_release(work / "bigclass-rel", classes=2, images=(images, images),
                                   val_per_class=1, test=1, kib=110.0)
    urls = work / "urls-bigclass.sh"
    urls.write_text('DOWNLOAD_URL_train="file://%s"\nMD5_train=%s\n'
                    % (rel.archives["train"], rel.md5["train"]))
    root = work / "root-bigclass"
    root.mkdir()
    try:
        _, rss = run_one([str(REPO / "01_unzip.sh"), "--root", str(root), "--jobs", str(jobs),
                          "--stream", "--urls", str(urls), "train"])
    finally:
        shutil.rmtree(rel.out, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return {"measure": "peak RSS of --stream, one class of %s (--in-flight 64)"
            % human(rel.sizes["train"] // 2), "value": round(rss), "unit": "MiB", "baseline": None,
            "ratio": None, "goal": "< 256 MiB"}


def md5_cpu_per_gib(path: Path) -> float:
    """CPU seconds of ResumableMD5.update per GiB of the archive (reading it is not counted)."""
    h, cpu = ResumableMD5(), 0.0
    with open(path, "rb") as f:
        while True:
            buf = f.read(4 << 20)
            if not buf:
                break
            t0 = time.process_time()
            h.update(buf)
            cpu += time.process_time() - t0
    return cpu / (path.stat().st_size / (1 << 30))


def connections_at_a_real_cap(work: Path, jobs: int, mib_s: float = 8.0) -> list[dict]:
    """--connections 4 vs 1 where the link, not this machine, is the limit: 8 MiB/s per
    connection (image-net.org's order of magnitude), on a 100-class release (~220 MiB)."""
    opts = dict(minirelease.PRESETS["bench"], classes=100)
    rel = minirelease.make_release(work / "small-release", **opts)
    srv = FaultServer(rel.out, rate=mib_s * (1 << 20)).start()
    try:
        urls = work / "urls-small.sh"
        urls.write_text('DOWNLOAD_URL_train="%s?token=x"\nMD5_train=%s\n'
                        % (srv.url(NAME), rel.md5["train"]))
        root = work / "root-small"
        base = [str(REPO / "01_unzip.sh"), "--root", str(root), "--jobs", str(jobs), "--stream",
                "--urls", str(urls)]
        one = timed([base + ["train"]], root)
        four = timed([base + ["--connections", "4", "train"]], root)
    finally:
        srv.stop()
        shutil.rmtree(rel.out, ignore_errors=True)
    return [{"measure": "--stream --connections 4 vs 1, %g MiB/s per connection (%s)"
             % (mib_s, human(rel.sizes["train"])), "value": round(four[0], 1), "unit": "s",
             "baseline": round(one[0], 1), "ratio": round(four[0] / one[0], 2),
             "goal": "<= 0.33x"}]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", type=Path, help="a release made by minirelease.py (default: make "
                   "300 classes of 30 images of ~100 KiB in the scratch folder)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--jobs", type=int, default=2, help="01_unzip.sh --jobs (writer threads)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    p.add_argument("--quick", action="store_true", help="60 classes and one round, for a smoke run")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.quick:
        a.repeat = 1
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        rel_dir = a.release
        if rel_dir is None:
            rel_dir = work / "release"
            minirelease.make_release(rel_dir, **dict(RELEASE, classes=60 if a.quick else 300))
        rows, rounds = run_all(work, rel_dir, a.jobs, a.repeat, a.quick)
    print("\n01_unzip.sh --stream benchmark: %s, %d cores, median of %d rounds, cold cache, every "
          "time includes sync" % (rel_dir, os.cpu_count() or 0, a.repeat))
    report([dict(benchmark="stream", **r) for r in rows], a.json, rounds)
    return 0


def row(measure: str, got: float, base: float, unit: str, goal: str, digits: int = 1) -> dict:
    return {"measure": measure, "value": round(got, digits), "unit": unit,
            "baseline": round(base, digits), "ratio": round(got / base, 2), "goal": goal}


def run_all(work: Path, rel_dir: Path, jobs: int, repeat: int,
            quick: bool) -> tuple[list[dict], dict]:
    archive = rel_dir / NAME
    size = archive.stat().st_size
    md5 = next(line.split()[0] for line in (rel_dir / "checksums.md5").read_text().splitlines()
               if line.split()[-1] == NAME)
    dl, unzip = str(REPO / "00_download.sh"), str(REPO / "01_unzip.sh")
    root = work / "root"

    def on_disk(r: Path) -> None:
        (r / "downloads").mkdir()
        shutil.copy(archive, r / "downloads" / NAME)

    srv = FaultServer(rel_dir).start()
    runs: dict[str, list[tuple[float, int, float]]] = {}
    try:
        urls = work / "urls.sh"
        urls.write_text('DOWNLOAD_URL_train="%s?token=x"\nMD5_train=%s\n' % (srv.url(NAME), md5))
        local = work / "urls-file.sh"
        local.write_text('DOWNLOAD_URL_train="file://%s"\nMD5_train=%s\n' % (archive, md5))
        base = [unzip, "--root", str(root), "--jobs", str(jobs)]
        stream = base + ["--stream", "--urls", str(urls), "train"]
        pipe = [[dl, "--root", str(root), "--urls", str(urls), "train"], base + ["train"]]
        routes = {"00 + 01": (0, pipe, None), "01 from disk": (0, [base + ["train"]], on_disk),
                  "--stream": (0, [stream], None),
                  "--stream --jobs 1": (0, [base[:3] + ["--jobs", "1"] + stream[5:]], None),
                  "--stream, file link": (0, [base + ["--stream", "--urls", str(local), "train"]],
                                          None),
                  "00 + 01, 40 MB/s": (CAP, pipe, None), "--stream, 40 MB/s": (CAP, [stream], None)}
        for _ in range(repeat):
            for name, (cap, cmds, prepare) in routes.items():
                srv.set_faults(rate=cap)
                dt, disk, cpu = timed(cmds, root, prepare)
                runs.setdefault(name, []).append((dt, disk, cpu))
                print("%s: %.2f s, peak disk %s, CPU %.1f s" % (name, dt, human(disk), cpu),
                      file=sys.stderr, flush=True)
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    t = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    peak = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r[2] for r in v) for k, v in runs.items()}
    what = "%s, uncapped loopback" % human(size)
    rows = [
        row("time to a verified tree, --stream vs 00 + 01 (%s)" % what, t["--stream"], t["00 + 01"],
            "s", "<= 0.60x", 2),
        row("time to a verified tree, --stream vs 01 from disk (%s)" % what, t["--stream"],
            t["01 from disk"], "s", "<= 1.30x", 2),
        row("time to a verified tree, --stream vs 00 + 01, 40 MB/s per connection",
            t["--stream, 40 MB/s"], t["00 + 01, 40 MB/s"], "s", "<= 0.90x", 2),
        row("peak disk under ROOT, --stream vs 00 + 01, 40 MB/s", peak["--stream, 40 MB/s"] / 2**20,
            peak["00 + 01, 40 MB/s"] / 2**20, "MiB", "<= 0.60x", 0),
        row("--stream, %d writer threads vs 1 (uncapped)" % jobs, t["--stream"],
            t["--stream --jobs 1"], "s", "report", 2),
        row("--stream from a local file (file:// link, no curl) vs 01 from disk", t["--stream, file link"],
            t["01 from disk"], "s", "report", 2),
        row("CPU (user + sys) of --stream vs 01 from disk (uncapped)", cpu["--stream"],
            cpu["01 from disk"], "s", "report"),
        row("CPU (user + sys) of --stream from a local file vs 01 from disk", cpu["--stream, file link"],
            cpu["01 from disk"], "s", "report"),
    ]
    if not quick:
        rows.append(peak_memory(work, jobs))
        rows += connections_at_a_real_cap(work, jobs)
    rows.append({"measure": "MD5 (ResumableMD5) CPU per GiB",
                 "value": round(md5_cpu_per_gib(archive), 2), "unit": "s/GiB", "baseline": None,
                 "ratio": None, "goal": "report"})
    return rows, {k: [r[0] for r in v] for k, v in runs.items()}


if __name__ == "__main__":
    sys.exit(main())
