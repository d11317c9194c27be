"""Where the benchmarks find the repository: import this first in every bench/ script.

The benchmarks run the numbered scripts at the repository root and share two test fixtures with
the tests (tests/minirelease.py, the generated release; tests/httpserver.py, the loopback server).
Importing this module puts the repository root and tests/ on sys.path, right after bench/ itself,
so that `import minirelease`, `import httpserver` and `import imagenet_prep` work from here.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TESTS = REPO / "tests"
PACKAGE = REPO / "imagenet_prep"     # the numbered scripts need it beside them

for _p in (str(TESTS), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(1, _p)  # after bench/ (sys.path[0] when a bench script runs)


def copy_scripts(work: Path, *names: str) -> None:
    """The numbered scripts `names` and their package into the scratch folder `work`, to be run
    from there: editing the checkout during a benchmark cannot disturb it."""
    for name in names:
        shutil.copy(REPO / name, work / name)
    shutil.copytree(PACKAGE, work / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True)
