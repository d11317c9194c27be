"""The README's demo command: the whole pipeline on a generated release, then a rerun."""
from __future__ import annotations

import json

from conftest import TESTS, run


def test_demo_runs_then_reports_already_done(tmp_path):
    first = run(["bash", TESTS / "demo.sh", tmp_path], timeout=170)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    root = tmp_path / "root"
    expected = json.loads((tmp_path / "release" / "expected.json").read_text())
    train = {d.name: sorted(f.name for f in d.iterdir()) for d in (root / "train").iterdir()
             if d.is_dir() and not d.name.startswith(".")}
    assert train == expected["train"]
    val = {f.name: d.name for d in (root / "val").iterdir() if d.is_dir() for f in d.iterdir()}
    assert val == expected["val"]
    assert sorted(f.name for f in (root / "test").iterdir()) == expected["test"]
    assert (root / "meta" / "synsets.csv").is_file()
    assert "result in %s" % root in first.stdout

    second = run(["bash", TESTS / "demo.sh", tmp_path], timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    for stage in ("00_download", "01_unzip", "03_build_val"):
        assert stage in out
    assert out.lower().count("already done") >= 3, out[-3000:]
