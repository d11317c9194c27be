#!/usr/bin/env python3
"""Benchmark of 00_download.sh against the loopback server (tests/httpserver.py); not a test.

    python3 bench/bench_download.py [--size-mb 240] [--rate-mb 20] [--connections 4] [--json FILE]

The server caps every connection (default 20 MB/s), like a remote server that is slow per
connection. In the same run it measures:

* throughput of --connections N over --connections 1 (goal: at least 0.8*N, 3.2x for N = 4), from the
  script's own "fetched ... in ... s" line (transfer plus joining the ranges), and end to end (also
  the MD5 check, which is the same work for both);
* a SIGKILL in the middle of a download, then a rerun: bytes fetched twice, counted by the server
  as body bytes sent in the rerun minus the bytes that were missing on disk (goal: 0), for one and
  for N connections. The SIGKILL goes to the script's process group; 00_download.sh runs each split
  (curl and its helpers) in a process group of its own, which its watchdog stops once the main
  process is gone. The bytes on disk are counted only when no process of the run is left (what is
  still running after a few seconds is killed and said), else late writes would count as saved.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchpaths import REPO
from benchmark import print_table
from httpserver import FaultServer

SCRIPT = REPO / "00_download.sh"
NAME = "ILSVRC2012_img_val.tar"
FETCHED_RE = re.compile(r"fetched (\d+) bytes in ([\d.]+) s")
SETTLE_SECONDS = 10  # for the split's watchdog to stop what is left after the kill


def make_file(path: Path, size: int) -> str:
    import hashlib
    h = hashlib.md5()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            fh.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def env_for() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOWNLOAD_", "MD5_", "IMAGENET_"))}
    env["DOWNLOAD_RETRY_DELAY"] = "0.1"
    return env


def download(root: Path, urls: Path, connections: int) -> tuple[float, float]:
    """One full download; returns (transfer seconds from the script's log, wall seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([str(SCRIPT), "--root", str(root), "--urls", str(urls), "val",
                        "--connections", str(connections)],
                       capture_output=True, text=True, env=env_for(), timeout=600)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit("download failed:\n" + r.stderr)
    m = FETCHED_RE.search(r.stderr)
    if not m:
        raise SystemExit("no 'fetched ... in ... s' line in:\n" + r.stderr)
    return float(m.group(2)), wall


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(d))
    return out


def wait_session_gone(sid: int) -> None:
    """Wait until no process of the session is left; SIGKILL (and say) what outlives SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = session_processes(sid)
    if left:
        print("warning: %d process(es) of the killed run still there after %d s, killing them: %s"
              % (len(left), SETTLE_SECONDS, left), file=sys.stderr)
    while left:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
        left = session_processes(sid)


def killed_then_resumed(root: Path, urls: Path, srv: FaultServer, size: int,
                        connections: int) -> tuple[int, int]:
    """SIGKILL at about 40 %, rerun; returns (bytes on disk at the kill, bytes fetched twice)."""
    srv.reset_log()
    p = subprocess.Popen([str(SCRIPT), "--root", str(root), "--urls", str(urls), "val",
                          "--connections", str(connections)], env=env_for(),
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while srv.bytes_sent() < 0.4 * size and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    wait_session_gone(p.pid)  # start_new_session: the session id is the script's pid
    time.sleep(0.3)  # let the server notice the closed connections
    have = sum(f.stat().st_size for f in (root / "downloads").glob(NAME + ".part*"))
    srv.reset_log()
    r = subprocess.run([str(SCRIPT), "--root", str(root), "--urls", str(urls), "val",
                        "--connections", str(connections)],
                       capture_output=True, text=True, env=env_for(), timeout=600)
    if r.returncode != 0:
        raise SystemExit("resumed download failed:\n" + r.stderr)
    return have, srv.bytes_sent() - (size - have)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size-mb", type=float, default=240, help="size of the served file (MB)")
    p.add_argument("--rate-mb", type=float, default=20, help="per-connection cap (MB/s)")
    p.add_argument("--connections", type=int, default=4, help="N for the segmented runs")
    p.add_argument("--repeat", type=int, default=1, help="rounds (median reported)")
    p.add_argument("--quick", action="store_true", help="a 60 MB file, for a smoke run")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    size = int((60 if a.quick else a.size_mb) * 1e6)
    rate = a.rate_mb * 1e6
    n = a.connections
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        digest = make_file(src / NAME, size)
        srv = FaultServer(src, rate=rate).start()
        try:
            urls = work / "urls.sh"
            urls.write_text('DOWNLOAD_URL_val="%s?token=x"\nMD5_val="%s"\n' % (srv.url(NAME), digest))
            res: dict[int, list[tuple[float, float]]] = {1: [], n: []}
            for k in range(a.repeat):
                for c in (1, n):  # alternate, so drift in machine load hits both alike
                    root = work / ("r%d-%d" % (c, k))
                    srv.reset_log()
                    res[c].append(download(root, urls, c))
                    assert srv.bytes_sent() == size, "bytes served %d != %d" % (srv.bytes_sent(), size)
                    (root / "downloads" / NAME).unlink()
            resume = {c: killed_then_resumed(work / ("kill%d" % c), urls, srv, size, c) for c in (1, n)}
        finally:
            srv.stop()
    t1 = statistics.median(t for t, _ in res[1])
    tn = statistics.median(t for t, _ in res[n])
    w1 = statistics.median(w for _, w in res[1])
    wn = statistics.median(w for _, w in res[n])
    mb = size / 1e6
    goal = 0.8 * n
    rows = [
        {"measure": "throughput, 1 connection (cap %g MB/s each)" % a.rate_mb,
         "value": round(mb / t1, 1), "unit": "MB/s", "baseline": None, "ratio": None, "goal": ""},
        {"measure": "throughput, --connections %d" % n, "value": round(mb / tn, 1), "unit": "MB/s",
         "baseline": round(mb / t1, 1), "ratio": round(t1 / tn, 2), "goal": ">= %.1fx" % goal},
        {"measure": "end to end incl. MD5, --connections %d (%d MB)" % (n, mb),
         "value": round(wn, 2), "unit": "s", "baseline": round(w1, 2), "ratio": round(w1 / wn, 2),
         "goal": "report"},
    ]
    for c in (1, n):
        have, again = resume[c]
        rows.append({"measure": "bytes fetched twice after SIGKILL at %d%%, %d connection%s"
                     % (round(100 * have / size), c, "" if c == 1 else "s"),
                     "value": again, "unit": "B", "baseline": None, "ratio": None, "goal": "0"})
    print("\n00_download.sh benchmark: %d MB file, loopback server capped at %g MB/s per connection, "
          "%d round(s), %d cores" % (mb, a.rate_mb, a.repeat, os.cpu_count() or 0))
    rows = [dict(benchmark="download", **r) for r in rows]
    print_table(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    ok = t1 / tn >= goal and all(again == 0 for _, again in resume.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
