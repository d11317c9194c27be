#!/usr/bin/env python3
"""Benchmark of 00_download.sh against the loopback server (tests/httpserver.py); not a test.

    python3 bench/bench_download.py [--size-mb 240] [--rate-mb 20] [--connections 4] [--json FILE]
    python3 bench/bench_download.py --tail-only [--tail-size-mb 2000] [--tail-rate-mb 100]

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
  still running after a few seconds is killed and said), else late writes would count as saved;
* the tail of a download (issue 14): on a separate, larger file (default 2000 MB, served at
  --tail-rate-mb per connection), the time from the last byte received to "MD5 verified", from the
  script's own log line, the old way (DOWNLOAD_MD5_FOLLOW=0: md5sum reads NAME.part again) and the
  new one (the follower hashed NAME.part while it grew, over 1 and N connections), next to the time
  of the final fsync and rename alone (goal: no MD5 work left after the last byte; the tail is the
  fsync and the rename). The old way reads a file that is still in the page cache here; on a real
  147 GB archive it comes from the disk and takes longer.
"""
from __future__ import annotations

import argparse
import contextlib
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
import benchmark
from httpserver import FaultServer

SCRIPT = REPO / "00_download.sh"
NAME = "ILSVRC2012_img_val.tar"
FETCHED_RE = re.compile(r"fetched (\d+) bytes in ([\d.]+) s")
VERIFIED_RE = re.compile(r"MD5 verified ([\d.]+) s after the last byte \(([^)]*)\)")
LEFT_RE = re.compile(r"; ([\d.]+) (B|KiB|MiB|GiB) left to hash at the end")
SYNC_RE = re.compile(r"fsync and rename ([\d.]+) s")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
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


def env_for(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOWNLOAD_", "MD5_", "IMAGENET_"))}
    env["DOWNLOAD_RETRY_DELAY"] = "0.1"
    env.update(extra)
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
    have = sum(f.stat().st_size for f in (root / "downloads").glob(NAME + ".part*")
               if not f.name.endswith(".md5state"))  # NAME.part and its pieces, not the MD5 state
    srv.reset_log()
    r = subprocess.run([str(SCRIPT), "--root", str(root), "--urls", str(urls), "val",
                        "--connections", str(connections)],
                       capture_output=True, text=True, env=env_for(), timeout=600)
    if r.returncode != 0:
        raise SystemExit("resumed download failed:\n" + r.stderr)
    return have, srv.bytes_sent() - (size - have)


def tail(root: Path, urls: Path, connections: int, follow: bool) -> dict:
    """One download of the tail file; what the script says about its last seconds: MD5 verified
    this long after the last byte (and how much was left to hash then), fsync and rename."""
    r = subprocess.run([str(SCRIPT), "--root", str(root), "--urls", str(urls), "val",
                        "--connections", str(connections)], capture_output=True, text=True,
                       env=env_for(DOWNLOAD_MD5_FOLLOW="1" if follow else "0"), timeout=3600)
    if r.returncode != 0:
        raise SystemExit("download failed:\n" + r.stderr)
    verified, synced = VERIFIED_RE.search(r.stderr), SYNC_RE.search(r.stderr)
    if not verified or not synced:
        raise SystemExit("no 'MD5 verified ... after the last byte' or 'fsync' line in:\n" + r.stderr)
    left = LEFT_RE.search(verified.group(0))
    fetched = FETCHED_RE.search(r.stderr)
    (root / "downloads" / NAME).unlink()
    return {"verify": float(verified.group(1)), "how": verified.group(2), "sync": float(synced.group(1)),
            "left": round(float(left.group(1)) * UNITS[left.group(2)]) if left else None,
            "fetch": float(fetched.group(2)) if fetched else None}


@contextlib.contextmanager
def served(work: Path, prefix: str, size: int, rate: float):
    """(server, urls.sh): a file of `size` random bytes under the val name in work/PREFIXsrc,
    served by the loopback server capped at `rate` B/s per connection, and a urls.sh for it."""
    src = work / (prefix + "src")
    src.mkdir()
    digest = make_file(src / NAME, size)
    srv = FaultServer(src, rate=rate).start()
    try:
        urls = work / (prefix + "urls.sh")
        urls.write_text('DOWNLOAD_URL_val="%s?token=x"\nMD5_val="%s"\n' % (srv.url(NAME), digest))
        yield srv, urls
    finally:
        srv.stop()


def tail_rows(work: Path, size: int, rate: float, n: int) -> list[dict]:
    """The tail measurement (see the module's docstring) on a file of `size` bytes."""
    with served(work, "tail-", size, rate) as (_, urls):
        old = tail(work / "tail-old", urls, 1, follow=False)
        new = tail(work / "tail-new", urls, 1, follow=True)
        many = tail(work / ("tail-new%d" % n), urls, n, follow=True)
    mb = size / 1e6
    rows = [{"measure": "last byte -> MD5 verified, old way: md5sum reads %d MB again" % mb,
             "value": old["verify"], "unit": "s", "baseline": None, "ratio": None, "goal": "report"}]
    for c, res in ((1, new), (n, many)):
        rows.append({"measure": "last byte -> MD5 verified, followed while downloading, %d connection%s "
                     "(%s left to hash)" % (c, "" if c == 1 else "s",
                                            "?" if res["left"] is None else "%d B" % res["left"]),
                     "value": res["verify"], "unit": "s", "baseline": old["verify"],
                     "ratio": round(old["verify"] / max(res["verify"], 0.005), 1),
                     "goal": "no MD5 work after the last byte"})
    rows.append({"measure": "final fsync and rename alone (%d MB, followed run)" % mb,
                 "value": new["sync"], "unit": "s", "baseline": None, "ratio": None, "goal": "report"})
    print("tail file: %d MB at %g MB/s per connection; fetch %.1f s (1 connection), %.1f s (%d); "
          "old way: %s" % (mb, rate / 1e6, new["fetch"] or 0, many["fetch"] or 0, n, old["how"]),
          file=sys.stderr)
    return rows


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
    p.add_argument("--tail-size-mb", type=float, default=2000,
                   help="size of the file for the last-byte-to-verified measurement (MB)")
    p.add_argument("--tail-rate-mb", type=float, default=40,
                   help="per-connection cap for that measurement (MB/s)")
    p.add_argument("--tail-only", action="store_true", help="only the last-byte-to-verified measurement")
    p.add_argument("--no-tail", action="store_true", help="skip the last-byte-to-verified measurement")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    size = int((60 if a.quick else a.size_mb) * 1e6)
    rate = a.rate_mb * 1e6
    n = a.connections
    tail_size = int((200 if a.quick else a.tail_size_mb) * 1e6)
    if a.tail_only:
        with tempfile.TemporaryDirectory(dir=a.work) as tmp:
            rows = tail_rows(Path(tmp), tail_size, a.tail_rate_mb * 1e6, n)
        return report(a, rows, "last byte to verified, %d MB file" % (tail_size / 1e6), True)
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        with served(work, "", size, rate) as (srv, urls):
            res: dict[int, list[tuple[float, float]]] = {1: [], n: []}
            for k in range(a.repeat):
                for c in (1, n):  # alternate, so drift in machine load hits both alike
                    root = work / ("r%d-%d" % (c, k))
                    srv.reset_log()
                    res[c].append(download(root, urls, c))
                    assert srv.bytes_sent() == size, "bytes served %d != %d" % (srv.bytes_sent(), size)
                    (root / "downloads" / NAME).unlink()
            resume = {c: killed_then_resumed(work / ("kill%d" % c), urls, srv, size, c) for c in (1, n)}
        tail = [] if a.no_tail else tail_rows(work, tail_size, a.tail_rate_mb * 1e6, n)
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
    ok = t1 / tn >= goal and all(again == 0 for _, again in resume.values())
    return report(a, rows + tail, "%d MB file, loopback server capped at %g MB/s per connection, "
                  "%d round(s)" % (mb, a.rate_mb, a.repeat), ok)


def report(a, rows: list[dict], what: str, ok: bool) -> int:
    print("\n00_download.sh benchmark: %s, %d cores" % (what, os.cpu_count() or 0))
    benchmark.report([dict(benchmark="download", **r) for r in rows], a.json)
    if not ok:
        print("goal not met (see the table)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
