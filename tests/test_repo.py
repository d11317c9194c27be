"""Repository-level checks: layout, CI runs the README's test command, shell scripts lint clean."""
from __future__ import annotations

import re
import shutil

import pytest

from conftest import REPO, run

TOP = ["00_download.sh", "01_unzip.sh", "02_convert_meta_clsloc.py", "03_build_val_class_folders.py",
       "urls.sh.example", "tests", "README.md", "LICENSE", "requirements.txt", ".gitignore", ".ci"]


def test_top_level_layout():
    for name in TOP:
        assert (REPO / name).exists(), name


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    m = re.search(r"^(python3 -m pytest tests)\s", readme, re.M)
    assert m, "README Quickstart must show the test command"
    assert re.search(r"^%s \|\| status" % re.escape(m.group(1)), ci, re.M)
    assert "pip install --quiet --disable-pip-version-check -r requirements.txt" in ci


def test_gitignore_keeps_urls_and_data_out():
    lines = (REPO / ".gitignore").read_text().split()
    for pat in ("urls.sh", "*.part", "/train/", "/val/", "/downloads/"):
        assert pat in lines


@pytest.mark.parametrize("name", ["00_download.sh", "01_unzip.sh"])
def test_shellcheck_clean(name):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    r = run(["shellcheck", "-x", REPO / name])
    assert r.returncode == 0, r.stdout
