#!/usr/bin/env python3
"""Run the benchmarks of 00 to 06 on generated data and print one table of ratios.

    python3 bench/benchmark.py [--quick] [--only download,unzip,val,stream,verify,squashfs,webdataset]
                               [--json FILE] [-- BENCH-OPTIONS]

Each benchmark (bench/bench_*.py, also runnable alone) measures its baseline in the same run
(download: one connection; extraction: the two-pass recipe and one flat tar; val: one `mv` per
file; stream: 00 then 01; verify: sha256sum -c; squashfs: 01's tree; webdataset: 01's tree then
webdataset.ShardWriter) and writes its rows as JSON;
this runner collects them into one table. Timing never appears
in the tests: it lives here. --quick runs every benchmark with its own --quick (small data, a smoke
run whose numbers are not the ones to report).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
BENCHES = {
    "download": HERE / "bench_download.py",
    "unzip": HERE / "bench_unzip.py",
    "val": HERE / "bench_val.py",
    "stream": HERE / "bench_stream.py",
    "verify": HERE / "bench_verify.py",
    "squashfs": HERE / "bench_squashfs.py",
    "webdataset": HERE / "bench_webdataset.py",
}


def fmt(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return "%.3g" % v if abs(v) < 1000 else "%.0f" % v
    return str(v)


def drop_caches() -> bool:
    """sync, then drop the page cache (root only): True if the next timing starts cold."""
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def print_table(rows: list[dict]) -> None:
    cols = ["benchmark", "measure", "value", "unit", "baseline", "ratio", "goal"]
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")


def report(rows: list[dict], json_path: Optional[Path], rounds: Optional[dict] = None) -> None:
    """The table on stdout (after the times of every round, when given) and, for --json, the rows
    in that file, as this runner reads them."""
    if rounds:
        print("rounds: " + "; ".join("%s %s" % (k, " ".join("%.2f" % t for t in v))
                                     for k, v in rounds.items()))
    print_table(rows)
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1) + "\n")


def remove_work(generated: list[Path], work: Path, own_work: bool) -> None:
    """Delete the releases a benchmark generated, and its work folder if it made that too."""
    for g in generated:
        shutil.rmtree(g, ignore_errors=True)
    if own_work:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated benchmarks to run")
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (smoke run)")
    p.add_argument("--json", type=Path, help="also write all rows to this file")
    p.add_argument("extra", nargs=argparse.REMAINDER,
                   help="after --, options passed to every benchmark script")
    args = p.parse_args(argv)
    extra = [a for a in args.extra if a != "--"] + (["--quick"] if args.quick else [])
    unknown = [n for n in args.only.split(",") if n not in BENCHES]
    if unknown:
        p.error("unknown benchmark %s (choose from %s)" % (", ".join(unknown), ",".join(BENCHES)))
    rows: list[dict] = []
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            script = BENCHES[name]
            out = Path(tmp) / (name + ".json")
            print("== %s (%s)" % (name, script.name), file=sys.stderr, flush=True)
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, str(script), "--json", str(out), *extra])
            print("== %s finished in %.0f s, exit %d" % (name, time.monotonic() - t0, r.returncode),
                  file=sys.stderr, flush=True)
            if r.returncode != 0 or not out.exists():
                failed.append(name)
                continue
            rows.extend(json.loads(out.read_text()))
    print()
    report(rows, args.json)
    if failed:
        print("benchmarks that failed: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
