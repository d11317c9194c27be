"""Repository-level checks: layout, CI runs the README's test command, shell and Python lint clean."""
from __future__ import annotations

import os
import re
import shutil
import sys

import pytest

from conftest import REPO, run

SCRIPTS = ["00_download.sh", "01_unzip.sh", "02_convert_meta_clsloc.py", "03_build_val_class_folders.py",
           "04_verify.py", "05_pack_squashfs.py", "06_pack_webdataset.py"]
# The top level: the numbered scripts over the package they share, the settings example, the project
# files, and one folder each for tests, benchmarks and the SLURM job scripts (docs/ is to come).
TOP = [*SCRIPTS, "imagenet_prep/__init__.py", "urls.sh.example", "README.md", "LICENSE",
       "requirements.txt", "pyproject.toml", ".gitignore", ".ci/run", "tests/conftest.py",
       "bench/benchmark.py", "examples/slurm/imagenet_prep.sbatch",
       "examples/slurm/imagenet_prep_local.sbatch"]
# Moved out of tests/: the benchmarks to bench/, the job scripts to examples/slurm/.
MOVED = ["tests/benchmark.py", "tests/bench_download.py", "tests/bench_unzip.py", "tests/bench_val.py",
         "tests/slurm/imagenet_prep.sbatch", "tests/slurm/imagenet_prep_local.sbatch"]
SHELL_SHEBANG = re.compile(r"#!\s*(/usr/bin/env\s+)?(/usr)?(/bin/)?(ba)?sh\b")


def repo_files() -> list[str]:
    """The files of the repository: tracked by git, or new and not ignored (so that a file being
    added is checked before its commit); outside a git checkout, every file but .git/ and caches."""
    if shutil.which("git"):
        r = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        if r.returncode == 0 and r.stdout:
            return sorted(f for f in r.stdout.split("\0") if f and (REPO / f).is_file())
    skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
    return sorted(str(p.relative_to(REPO)) for p in REPO.rglob("*")
                  if p.is_file() and not skip & set(p.relative_to(REPO).parts))


def shell_files() -> list[str]:
    """Every *.sh and *.sbatch file, and any other file that starts with a sh/bash shebang."""
    out = []
    for name in repo_files():
        if name.endswith((".sh", ".sbatch")):
            out.append(name)
            continue
        try:
            with open(REPO / name, encoding="utf-8") as f:
                first = f.readline()
        except (OSError, UnicodeDecodeError):
            continue
        if SHELL_SHEBANG.match(first):
            out.append(name)
    return out


def test_top_level_layout():
    missing = [name for name in TOP if not (REPO / name).exists()]
    assert not missing, "missing from the repository: %s" % missing
    left = [name for name in MOVED if (REPO / name).exists()]
    assert not left, "moved to bench/ or examples/slurm/, still in tests/: %s" % left


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    m = re.search(r"^(bash tests/run\.sh)\s", readme, re.M)
    assert m, "README must show the test command"
    assert re.search(r"^%s \|\| status" % re.escape(m.group(1)), ci, re.M)
    assert re.search(r"^  exec python3 -m pytest \"\$@\"$", (REPO / "tests" / "run.sh").read_text(),
                     re.M)
    # ruff goes where the tests run: .venv/ where python3 lacks the packages
    assert ci.index("python3 -m imagenet_prep.bootstrap") < ci.index('"ruff==')


def test_the_set_up_installs_what_the_scripts_and_tests_import():
    """imagenet_prep/bootstrap.py checks the packages of requirements.txt by their import names:
    the two lists must name the same packages, the scripts' ones first."""
    from imagenet_prep import bootstrap
    names = [re.split(r"[<>=!~; \[]", line, maxsplit=1)[0]
             for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    imports = ["PIL" if n == "Pillow" else n.lower() for n in names]
    assert imports == list(bootstrap.TESTS)
    assert imports[:len(bootstrap.SCRIPTS)] == list(bootstrap.SCRIPTS)


def test_gitignore_keeps_urls_and_data_out():
    lines = (REPO / ".gitignore").read_text().split()
    for pat in ("urls.sh", "*.part", "/train/", "/val/", "/downloads/", "/.venv/"):
        assert pat in lines


def test_the_shell_files_are_all_found():
    found = shell_files()
    for name in ("00_download.sh", "01_unzip.sh", "tests/demo.sh", "tests/run.sh", ".ci/run",
                 "examples/slurm/imagenet_prep.sbatch", "examples/slurm/imagenet_prep_local.sbatch"):
        assert name in found, (name, found)


def need_tool(tool: str, how: str) -> None:
    """Skip where a linter is missing, except in CI (.ci/run sets IMAGENET_PREP_CI): there it fails."""
    if shutil.which(tool):
        return
    if os.environ.get("IMAGENET_PREP_CI"):
        pytest.fail("%s is not installed in CI (%s): .ci/run must install it" % (tool, how))
    pytest.skip("%s not installed (%s)" % (tool, how))


@pytest.mark.parametrize("name", shell_files())
def test_shellcheck_clean(name):
    need_tool("shellcheck", "Debian package shellcheck")
    r = run(["shellcheck", "-x", name], cwd=REPO)
    assert r.returncode == 0, r.stdout


def test_ruff_clean():
    need_tool("ruff", "pip install ruff")
    r = run(["ruff", "check", "--no-cache", "."], cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


PYTHON_SCRIPT = re.compile(r"(?<![\w/.$-])0[2-5]_[a-z_]+\.py\b")


def test_examples_run_the_python_scripts_with_python3():
    """README, docs and the --help texts show a Python script as it is run, `python3 0N_....py`
    (log lines, which name the script, aside)."""
    bad = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        inside = False
        for n, line in enumerate(doc.read_text().splitlines(), start=1):
            if line.startswith("```"):
                inside = not inside
            elif inside and not re.search(r"\b[0-9]{2}:[0-9]{2}:[0-9]{2}\b", line):
                bad += ["%s:%d: %s" % (doc.name, n, line) for m in PYTHON_SCRIPT.finditer(line)
                        if not line[:m.start()].endswith("python3 ")]
    for name in SCRIPTS:
        if name.endswith(".py"):
            r = run([sys.executable, REPO / name, "--help"])
            assert r.returncode == 0, r.stderr
            example = r.stdout[r.stdout.index("Example:"):]
            bad += ["%s --help: %s" % (name, m.group()) for m in PYTHON_SCRIPT.finditer(example)
                    if not example[:m.start()].endswith("python3 ")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("args, said", [
    (["--dir", "MISSING"], "--dir MISSING is not a folder"),
    (["--repeat", "0"], "--repeat wants a number from 1 to 1000"),
    (["--classes", "0"], "--classes wants a number from 1 to 100000"),
])
def test_the_val_benchmark_refuses_bad_options_without_a_traceback(tmp_path, args, said):
    r = run([sys.executable, REPO / "bench" / "bench_val.py", *args], cwd=tmp_path)
    assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
