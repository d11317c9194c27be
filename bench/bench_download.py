#!/usr/bin/env python3
"""Benchmark of 00_download.sh (the one fetch engine) against the loopback server; not a test.

    python3 bench/bench_download.py [--size-mb 300] [--rate-mb 40] [--connections 4] [--repeat 3]
                                    [--fast-size-mb 1000] [--old-commit REV] [--json FILE]

The server (tests/httpserver.py, in this process) caps every connection, as image-net.org does.
In one run, alternating the two so that drift in the machine's load hits both alike, it measures:

* the new 00 against the last bash 00 of the repository's history (00_download.sh and the package
  of the newest commit whose 00_download.sh is the bash script, unpacked with `git archive` into a
  scratch folder; --old-commit picks another): on a SIZE-MB file at RATE-MB per connection over
  N connections, the median wall time and CPU time (user + system of every process of the run:
  resource.getrusage(RUSAGE_CHILDREN) around it). Goals: <= 1.10x the time, <= 1.25x the CPU;
* the tail: last byte -> "MD5 verified" (the script's own log line) next to its fsync and
  rename, with N connections and with one. Goal: no more than the fsync and rename + 0.2 s;
* an uncapped link (issue 23): FAST-SIZE-MB over one connection, the new 00 against `curl -o`
  of the same file followed by `sync`. Goals: <= 1.15x, and the MD5 verified <= 0.2 s after the
  last byte;
* a SIGKILL of the whole run at 40 % and a rerun: bytes fetched twice (the server's body bytes of
  the rerun minus the bytes missing on disk), 1 and N connections. Goal: 0.
The page cache stays warm (the served file is read by the server from memory, as a fast mirror's
would be); every download ends with the script's fsync.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchpaths import REPO, copy_scripts
import benchmark
from httpserver import FaultServer

NAME = "ILSVRC2012_img_val.tar"
VERIFIED_RE = re.compile(r"MD5 verified ([\d.]+) s after the last byte \(([^)]*)\)")
SYNC_RE = re.compile(r"fsync and rename ([\d.]+) s")
SETTLE_SECONDS = 10                   # for what is left of a killed run to be gone


def make_file(path: Path, size: int) -> str:
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


def timed(cmd: list, env: Optional[dict] = None, timeout: float = 3600) -> tuple:
    """(CompletedProcess, wall seconds, CPU seconds of every process it ran)."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env or env_for(),
                       timeout=timeout)
    wall, after = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return r, wall, cpu


def old_script(work: Path, rev: Optional[str]) -> Optional[Path]:
    """The last bash 00_download.sh of the history (or of REV), with its package, in work/old."""
    try:
        revs = [rev] if rev else subprocess.run(
            ["git", "-C", str(REPO), "rev-list", "--first-parent", "HEAD"], capture_output=True,
            text=True, check=True).stdout.split()
        for c in revs:
            text = subprocess.run(["git", "-C", str(REPO), "show", "%s:00_download.sh" % c],
                                  capture_output=True, text=True, check=True).stdout
            if len(text.splitlines()) > 100:             # the bash one, not the thin entry
                (work / "old").mkdir()
                archive = subprocess.run(["git", "-C", str(REPO), "archive", c, "00_download.sh",
                                          "imagenet_prep"], capture_output=True, check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(work / "old")], input=archive, check=True)
                print("old 00: 00_download.sh and imagenet_prep/ of commit %s" % c[:10],
                      file=sys.stderr)
                return work / "old" / "00_download.sh"
    except (OSError, subprocess.CalledProcessError) as e:
        print("warning: no bash 00 from git history (%s); its rows are left out" % e, file=sys.stderr)
    return None


def download(script: Path, root: Path, urls: Path, connections: int) -> dict:
    """One full download into an empty ROOT: wall and CPU time, the tail lines of the log."""
    r, wall, cpu = timed([script, "--root", root, "--urls", urls, "val", "--connections",
                          str(connections)])
    if r.returncode != 0:
        raise SystemExit("download failed (%s):\n%s" % (script, r.stderr))
    verified, synced = VERIFIED_RE.search(r.stderr), SYNC_RE.search(r.stderr)
    (root / "downloads" / NAME).unlink()
    return {"wall": wall, "cpu": cpu, "verify": float(verified.group(1)) if verified else None,
            "how": verified.group(2) if verified else "", "sync": float(synced.group(1)) if synced else None}


def session_processes(sid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(d))
    return out


def killed_then_resumed(script: Path, root: Path, urls: Path, srv: FaultServer, size: int,
                        connections: int) -> tuple[int, int]:
    """SIGKILL at about 40 %, rerun; (bytes on disk at the kill, bytes fetched twice)."""
    srv.reset_log()
    p = subprocess.Popen([str(script), "--root", str(root), "--urls", str(urls), "val",
                          "--connections", str(connections)], env=env_for(), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while srv.bytes_sent() < 0.4 * size and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + SETTLE_SECONDS
    while session_processes(p.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)                      # let the server notice the closed connections
    dl = root / "downloads"
    pieces = [(int(m.group(1)), f.stat().st_size) for f in dl.glob(NAME + ".part.*")
              for m in [re.search(r"\.([0-9]+)-[0-9]+$", f.name)] if m]
    part = (dl / (NAME + ".part")).stat().st_size if (dl / (NAME + ".part")).exists() else 0
    have = min([part] + [a for a, _ in pieces]) + sum(n for _, n in pieces)
    srv.reset_log()
    r = subprocess.run([str(script), "--root", str(root), "--urls", str(urls), "val",
                        "--connections", str(connections)], capture_output=True, text=True,
                       env=env_for(), timeout=600)
    if r.returncode != 0:
        raise SystemExit("resumed download failed:\n" + r.stderr)
    return have, srv.bytes_sent() - (size - have)


@contextlib.contextmanager
def served(work: Path, prefix: str, size: int, rate: float):
    """(server, urls.sh): a file of `size` random bytes under the val name, served by the loopback
    server capped at `rate` B/s per connection (0: no cap), and a urls.sh for it."""
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


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs if r[key] is not None)


def capped_rows(a, work: Path, new: Path, old: Optional[Path], size: int) -> tuple[list, bool]:
    n, ok, rows = a.connections, True, []
    with served(work, "", size, a.rate_mb * 1e6) as (srv, urls):
        runs: dict[str, list] = {"new": [], "old": [], "new1": []}
        for k in range(a.repeat):
            for who, script in (("old", old), ("new", new)):
                if script is not None:
                    runs[who].append(download(script, work / ("%s%d" % (who, k)), urls, n))
        runs["new1"].append(download(new, work / "one", urls, 1))
        resume = {c: killed_then_resumed(new, work / ("kill%d" % c), urls, srv, size, c)
                  for c in (1, n)}
    mb, what = size / 1e6, "%d MB at %g MB/s per connection, %d connections" % (size / 1e6,
                                                                                   a.rate_mb, n)
    new_t, new_c = median(runs["new"], "wall"), median(runs["new"], "cpu")
    if runs["old"]:
        old_t, old_c = median(runs["old"], "wall"), median(runs["old"], "cpu")
        rows += [{"measure": "time, new 00 vs the bash 00 (%s)" % what, "value": round(new_t, 2),
                  "unit": "s", "baseline": round(old_t, 2), "ratio": round(new_t / old_t, 2),
                  "goal": "<= 1.10x"},
                 {"measure": "CPU (user+sys of all processes), new vs bash 00", "value": round(new_c, 2),
                  "unit": "s", "baseline": round(old_c, 2), "ratio": round(new_c / old_c, 2),
                  "goal": "<= 1.25x"}]
        ok &= new_t / old_t <= 1.10 and new_c / old_c <= 1.25
        old_v = median(runs["old"], "verify")
        rows.append({"measure": "bash 00: last byte -> MD5 verified, %d connections" % n,
                     "value": round(old_v, 2), "unit": "s", "baseline": None, "ratio": None,
                     "goal": "report"})
    for key, c in (("new", n), ("new1", 1)):
        v, s = median(runs[key], "verify"), median(runs[key], "sync")
        rows.append({"measure": "new 00: last byte -> MD5 verified, %d connection%s (%s)"
                     % (c, "" if c == 1 else "s", runs[key][-1]["how"].split("; ")[-1]),
                     "value": round(v, 2), "unit": "s", "baseline": round(s, 2), "ratio": None,
                     "goal": "<= fsync+rename (baseline) + 0.2 s"})
        ok &= v <= s + 0.2
    for c in (1, n):
        have, again = resume[c]
        rows.append({"measure": "bytes fetched twice after SIGKILL at %d%%, %d connection%s"
                     % (round(100 * have / size), c, "" if c == 1 else "s"),
                     "value": again, "unit": "B", "baseline": None, "ratio": None, "goal": "0"})
        ok &= again == 0
    walls = {k: " ".join("%.2f" % r["wall"] for r in v) for k, v in runs.items()}
    print("capped file: %g MB; rounds new %s, old %s" % (mb, walls["new"], walls["old"]),
          file=sys.stderr)
    return rows, ok


def uncapped_rows(a, work: Path, new: Path, size: int) -> tuple[list, bool]:
    runs: dict[str, list] = {"new": [], "curl": []}
    with served(work, "fast-", size, 0) as (srv, urls):
        for k in range(a.repeat):
            out = work / ("curl%d" % k)
            out.mkdir()
            r, wall, cpu = timed(["sh", "-c", 'curl -sS -o "$1" "$2" && sync "$1"', "-", out / NAME,
                                  srv.url(NAME)])
            if r.returncode != 0:
                raise SystemExit("curl failed:\n" + r.stderr)
            (out / NAME).unlink()
            runs["curl"].append({"wall": wall, "cpu": cpu})
            runs["new"].append(download(new, work / ("fast%d" % k), urls, 1))
    t, base, v = median(runs["new"], "wall"), median(runs["curl"], "wall"), median(runs["new"], "verify")
    print("uncapped file: %d MB; rounds new %s, curl %s" % (
        size / 1e6, " ".join("%.2f" % r["wall"] for r in runs["new"]),
        " ".join("%.2f" % r["wall"] for r in runs["curl"])), file=sys.stderr)
    return [{"measure": "uncapped link, %d MB, 1 connection: new 00 vs curl -o + sync" % (size / 1e6),
             "value": round(t, 2), "unit": "s", "baseline": round(base, 2), "ratio": round(t / base, 2),
             "goal": "<= 1.15x"},
            {"measure": "uncapped link: last byte -> MD5 verified (%s)"
             % runs["new"][-1]["how"].split("; ")[-1], "value": round(v, 2), "unit": "s",
             "baseline": None, "ratio": None, "goal": "<= 0.2 s"}], t / base <= 1.15 and v <= 0.2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size-mb", type=float, default=300, help="size of the capped file (MB)")
    p.add_argument("--rate-mb", type=float, default=40, help="per-connection cap (MB/s)")
    p.add_argument("--connections", type=int, default=4, help="N for the capped runs")
    p.add_argument("--fast-size-mb", type=float, default=1000, help="size of the uncapped file (MB)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (medians reported)")
    p.add_argument("--old-commit", metavar="REV", help="the commit whose bash 00 is the baseline "
                   "(default: the last one in the history)")
    p.add_argument("--quick", action="store_true", help="small files and one round, for a smoke run")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if a.quick:
        a.size_mb, a.fast_size_mb, a.repeat = 60, 200, 1
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        (work / "new").mkdir()
        copy_scripts(work / "new", "00_download.sh")
        new, old = work / "new" / "00_download.sh", old_script(work, a.old_commit)
        rows, ok = capped_rows(a, work, new, old, int(a.size_mb * 1e6))
        more, ok2 = uncapped_rows(a, work, new, int(a.fast_size_mb * 1e6))
    print("\n00_download.sh benchmark: %d cores, %d round(s)" % (os.cpu_count() or 0, a.repeat))
    benchmark.report([dict(benchmark="download", **r) for r in rows + more], a.json)
    if not (ok and ok2):
        print("goal not met (see the table)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
