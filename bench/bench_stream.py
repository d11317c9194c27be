#!/usr/bin/env python3
"""Benchmark 01_unzip.sh --stream against 00_download.sh followed by 01_unzip.sh.

    python3 bench/bench_stream.py [--release DIR] [--work DIR] [--quick] [--json FILE]

On one generated release (`minirelease.py --preset bench`, ~2 GB, 1,000 classes), served by the
loopback server (tests/httpserver.py) capped per connection, as image-net.org caps one connection.
Each run starts from an empty ROOT and ends with `sync`; disk use under ROOT is sampled every
0.2 s. In one run:

  * extraction alone: 01_unzip.sh train from the archive on disk (sets the "fast mirror" cap:
    the cap at which downloading the archive takes as long as extracting it)
  * at that cap, and at a cap 4x lower: `00 train` then `01 train` vs `01 --stream train`,
    one connection: time to a complete, verified tree; peak disk used under ROOT
  * at the lower cap: `01 --stream --connections 4` vs one connection
  * the MD5's cost: CPU seconds per GiB of ResumableMD5 over the archive

Timing lives here, never in the tests.
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

import benchpaths  # noqa: F401  (puts the repository and tests/ on sys.path)
from benchmark import drop_caches, report
from benchpaths import REPO

import minirelease
from httpserver import FaultServer
from imagenet_prep.console import human
from imagenet_prep.md5state import ResumableMD5

NAME = minirelease.TRAIN_TAR
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


def timed(cmds: list[list[str]], root: Path) -> tuple[float, int]:
    """Run the commands one after the other from an empty ROOT, then sync: (seconds, peak disk)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    drop_caches()
    with Sampler(root) as s:
        t0 = time.monotonic()
        for cmd in cmds:
            r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("failed: %s\n%s" % (" ".join(cmd), r.stderr[-3000:]))
        subprocess.run(["sync"])
        dt = time.monotonic() - t0
    return dt, s.peak


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
    return [{"measure": "--stream --connections 4 vs 1, %g MiB/s per connection (%s)"
             % (mib_s, human(rel.sizes["train"])), "value": round(four[0], 1), "unit": "s",
             "baseline": round(one[0], 1), "ratio": round(one[0] / four[0], 2),
             "goal": ">= 3x faster"}]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--release", type=Path, help="a release made by minirelease.py (default: make "
                   "the bench preset in the scratch folder)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--jobs", type=int, default=2, help="01_unzip.sh --jobs")
    p.add_argument("--quick", action="store_true", help="100 classes (~0.2 GB), for a smoke run")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        rel_dir = a.release
        if rel_dir is None:
            rel_dir = work / "release"
            opts = dict(minirelease.PRESETS["bench"])
            if a.quick:
                opts["classes"] = 100
            minirelease.make_release(rel_dir, **opts)
        rows = run_all(work, rel_dir, a.jobs)
    print("\n01_unzip.sh --stream benchmark: %s, %d cores" % (rel_dir, os.cpu_count() or 0))
    report([dict(benchmark="stream", **r) for r in rows], a.json)
    return 0


def run_all(work: Path, rel_dir: Path, jobs: int) -> list[dict]:
    archive = rel_dir / NAME
    size = archive.stat().st_size
    md5 = next(line.split()[0] for line in (rel_dir / "checksums.md5").read_text().splitlines()
               if line.split()[-1] == NAME)
    dl, unzip = str(REPO / "00_download.sh"), str(REPO / "01_unzip.sh")
    root = work / "root"
    # extraction alone, the archive on disk (copied in untimed)
    shutil.rmtree(root, ignore_errors=True)
    (root / "downloads").mkdir(parents=True)
    shutil.copy(archive, root / "downloads" / NAME)
    drop_caches()
    t0 = time.monotonic()
    subprocess.run([unzip, "--root", str(root), "--jobs", str(jobs), "train"], env=ENV, check=True,
                   capture_output=True)
    subprocess.run(["sync"])
    t_extract = time.monotonic() - t0
    fast = size / t_extract                       # bytes/s: downloading takes as long as extracting
    rows = [{"measure": "01_unzip.sh train alone, archive on disk (%s)" % human(size),
             "value": round(t_extract, 1), "unit": "s", "baseline": None, "ratio": None,
             "goal": "sets the fast cap: %.0f MiB/s" % (fast / (1 << 20))}]
    srv = FaultServer(rel_dir).start()
    try:
        urls = work / "urls.sh"
        urls.write_text('DOWNLOAD_URL_train="%s?token=x"\nMD5_train=%s\n' % (srv.url(NAME), md5))
        base = [unzip, "--root", str(root), "--jobs", str(jobs)]
        results = {}
        for label, cap in (("fast", fast), ("slow", fast / 4)):
            srv.set_faults(rate=cap)
            pipe = timed([[dl, "--root", str(root), "--urls", str(urls), "train"], base + ["train"]],
                         root)
            one = timed([base + ["--stream", "--urls", str(urls), "train"]], root)
            results[label] = (pipe, one)
            goal = "<= 0.65x" if label == "fast" else "<= 0.9x"
            rows.append({"measure": "time to a verified tree, --stream vs 00 + 01, cap %.0f MiB/s"
                         % (cap / (1 << 20)), "value": round(one[0], 1), "unit": "s",
                         "baseline": round(pipe[0], 1), "ratio": round(one[0] / pipe[0], 2),
                         "goal": goal})
        pipe, one = results["slow"]
        rows.append({"measure": "peak disk under ROOT, --stream vs 00 + 01",
                     "value": round(one[1] / 2**20), "unit": "MiB", "baseline": round(pipe[1] / 2**20),
                     "ratio": round(one[1] / pipe[1], 2), "goal": "<= 0.55x"})
        four = timed([base + ["--stream", "--connections", "4", "--urls", str(urls), "train"]], root)
        rows.append({"measure": "--stream --connections 4 vs 1, cap %.0f MiB/s each"
                     % (fast / 4 / (1 << 20)), "value": round(four[0], 1), "unit": "s",
                     "baseline": round(one[0], 1), "ratio": round(one[0] / four[0], 2),
                     "goal": ">= 3x faster"})
    finally:
        srv.stop()
    rows += connections_at_a_real_cap(work, jobs)
    rows.append({"measure": "MD5 (ResumableMD5) CPU per GiB",
                 "value": round(md5_cpu_per_gib(archive), 2), "unit": "s/GiB", "baseline": None,
                 "ratio": None, "goal": "report"})
    return rows


if __name__ == "__main__":
    sys.exit(main())
