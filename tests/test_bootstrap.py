"""How the scripts start (imagenet_prep/bootstrap.py): a Ctrl-C before a run is set up ends it
quietly, and where python3 lacks the packages of requirements.txt the scripts use .venv/ in the
clone, which the README's two commands (the demo, the tests) make on first use.

A python3 that lacks the packages is a virtual environment made here without them (as Debian's
python3 is: no numpy, no scipy); one that has them, a virtual environment over this python's
packages (--system-site-packages): both are made in a second, without pip and without a network.
The slow test does it all for real: a fresh clone, Debian's /usr/bin/python3 first on PATH, and the
README's two commands, which install requirements.txt with pip.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run



def command(name: str, root: Path) -> list:
    """Script `name` on a ROOT that is not there (it would stop at once, if it got that far)."""
    return {"01": ["bash", REPO / "01_unzip.sh", "--root", root, "val"],
            "02": [sys.executable, REPO / "02_convert_meta_clsloc.py", "--root", root],
            "03": [sys.executable, REPO / "03_build_val_class_folders.py", "--root", root],
            "04": [sys.executable, REPO / "04_verify.py", "--root", root, "all"],
            "05": [sys.executable, REPO / "05_pack_squashfs.py", "--root", root, "all"],
            "06": [sys.executable, REPO / "06_pack_webdataset.py", "--root", root, "train"]}[name]


# ----------------------------------------------------------------------------- an early Ctrl-C

IMPORTED = re.compile(r"^import time:.*\|\s+(\S+)$")     # Python's line as an import ends


def interrupt_while_importing(cmd: list) -> tuple[int, str, bool]:
    """Run `cmd` with PYTHONPROFILEIMPORTTIME (Python reports each import as it ends) and send it
    SIGINT at the first import that ends after imagenet_prep.bootstrap's, that is, once start()
    has run and while the script's own imports go on (where there is no bootstrap: once
    imagenet_prep.console is imported). (exit code, what it said but the import lines, whether
    SIGINT was sent)."""
    proc = subprocess.Popen([str(c) for c in cmd], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"),
                            start_new_session=True)
    lines, after, sent = [], False, False
    try:
        for line in proc.stderr:                      # ends when the process closes stderr
            lines.append(line)
            m = IMPORTED.match(line)
            if m and (after or m.group(1) == "imagenet_prep.console"):
                proc.send_signal(signal.SIGINT)
                sent = True
                break
            after = after or bool(m and m.group(1) == "imagenet_prep.bootstrap")
        lines += proc.stderr.read().splitlines(True)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return rc, "".join(x for x in lines if not x.startswith("import time:")), sent


@pytest.mark.parametrize("name", ["01", "02", "03", "04", "05", "06"])
def test_ctrl_c_while_the_script_is_still_importing_exits_130_without_a_traceback(tmp_path, name):
    """Before console.run() takes over, Ctrl-C must end a run as quietly as after it: no
    traceback from inside an import, exit code 130. On a busy machine the run may end before the
    signal arrives (it stops at once on a missing ROOT): then it is tried again."""
    for _ in range(5):
        rc, said, sent = interrupt_while_importing(command(name, tmp_path / "missing"))
        assert sent, said
        assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
        if rc == 130:
            return
        assert rc == 1 and "finished in" in said, (rc, said)       # it ended before the signal
    pytest.skip("the run ended before the signal arrived, 5 times in a row (a busy machine?)")


# ----------------------------------------------------------------------------- .venv/

def make_venv(where: Path, with_packages: bool) -> Path:
    """A virtual environment without pip: with this python's packages, or with none. This python
    may itself be one (tests/run.sh runs the tests in .venv/ where python3 lacks the packages):
    --system-site-packages then gives its base's packages, not its own, so its own folders of
    packages are added with a .pth file."""
    cmd = [sys.executable, "-m", "venv", "--without-pip", where]
    if with_packages:
        cmd.insert(-1, "--system-site-packages")
    r = run(cmd, timeout=120)
    if r.returncode != 0:
        pytest.skip("cannot make a virtual environment here: %s" % r.stderr[-500:])
    if with_packages:
        here = [p for p in site.getsitepackages() if os.path.isdir(p)]
        (where / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages" /
         "packages-of-the-tests-python.pth").write_text("".join(p + "\n" for p in here))
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """A python3 without numpy, scipy, tqdm (as Debian's)."""
    python = make_venv(tmp_path_factory.mktemp("bare") / "env", with_packages=False)
    assert run([python, "-c", "import numpy"]).returncode != 0
    return python


def clone(tmp_path: Path) -> Path:
    """The scripts, the package and requirements.txt, as a clone has them."""
    out = tmp_path / "clone"
    shutil.copytree(REPO / "imagenet_prep", out / "imagenet_prep",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("01_unzip.sh", "02_convert_meta_clsloc.py", "04_verify.py", "requirements.txt"):
        shutil.copy2(REPO / name, out / name)
    return out


def test_a_script_runs_under_the_venv_when_python3_lacks_the_packages(tmp_path, bare, release):
    repo = clone(tmp_path)
    make_venv(repo / ".venv", with_packages=True)
    out = tmp_path / "meta"
    r = run([bare, repo / "02_convert_meta_clsloc.py", "--devkit", release.archives["devkit"],
             "--out", out, "--expect-classes", len(release.classes)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "synsets.csv").is_file() and (out / "class_index.json").is_file()
    r = run([bare, repo / "02_convert_meta_clsloc.py", "--help"])
    assert r.returncode == 0 and "Example: python3 02_convert_meta_clsloc.py" in r.stdout, r.stderr


def test_without_a_venv_a_script_says_how_to_get_the_packages(tmp_path, bare):
    repo = clone(tmp_path)
    r = run([bare, repo / "02_convert_meta_clsloc.py", "--root", tmp_path], cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert re.match(r"02_convert_meta_clsloc\.py [0-9:]{8} error: needs the Python package\(s\) "
                    r"numpy, scipy, which \S+ \(Python 3\.[0-9]+\) does not have: run `bash "
                    r"tests/demo.sh` once in %s" % re.escape(str(repo)), r.stderr), r.stderr
    assert "python3-venv" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clone"]          # nothing written
    # 04 needs scipy only to read the devkit's .mat: the same advice, as a finding
    (tmp_path / "root" / "train").mkdir(parents=True)
    (tmp_path / "root" / "devkit").mkdir()
    r = run([bare, repo / "04_verify.py", "--root", tmp_path / "root", "train"])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs the Python package(s) numpy, which" in r.stderr and "bash tests/demo.sh" in r.stderr


def test_a_venv_without_the_packages_says_to_complete_it(tmp_path, bare):
    repo = clone(tmp_path)
    make_venv(repo / ".venv", with_packages=False)
    r = run([bare, repo / "02_convert_meta_clsloc.py", "--root", tmp_path])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "which %s does not have (its set-up did not finish?): run `bash tests/demo.sh`" \
        % (repo / ".venv") in r.stderr


def setup(python: Path, repo: Path, what: str) -> subprocess.CompletedProcess:
    return run([python, "-m", "imagenet_prep.bootstrap", "--prog", "test", what], cwd=repo)


def test_the_set_up_step_names_the_venv_only_where_python3_needs_it(tmp_path, bare):
    repo = clone(tmp_path)
    r = setup(Path(sys.executable), repo, "tests")           # this python has them all
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert not (repo / ".venv").exists()
    make_venv(repo / ".venv", with_packages=True)
    (repo / ".venv" / "imagenet-prep-requirements.txt").write_bytes(
        (repo / "requirements.txt").read_bytes())             # as a finished set-up leaves it
    r = setup(bare, repo, "scripts")
    assert r.returncode == 0 and r.stdout == "%s\n" % (repo / ".venv" / "bin"), r.stderr


def test_the_set_up_step_leaves_a_folder_that_is_not_a_venv_alone(tmp_path, bare):
    repo = clone(tmp_path)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "notes.txt").write_text("mine\n")
    r = setup(bare, repo, "scripts")
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert "%s is not a virtual environment (no pyvenv.cfg): move it away" % (repo / ".venv") \
        in r.stderr
    assert sorted(p.name for p in (repo / ".venv").iterdir()) == ["notes.txt"]


def test_a_venv_whose_making_was_stopped_before_pip_is_made_again(tmp_path, bare):
    """`python3 -m venv` stopped while it put pip in (a Ctrl-C in the set-up's first seconds)
    leaves a .venv/bin/python without pip: the next set-up makes the virtual environment again
    (pip then installs, here from no index at all: it fails, saying so), instead of failing on
    'No module named pip' with advice about the network, on every run."""
    if run([bare, "-c", "import ensurepip"]).returncode != 0:
        pytest.skip("this python has no ensurepip (Debian: python3-venv)")
    repo = clone(tmp_path)
    r = run([bare, "-m", "venv", "--without-pip", repo / ".venv"])   # as the stopped set-up left it
    assert r.returncode == 0, r.stderr
    (repo / ".venv" / "imagenet-prep.lock").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")      # no network, no local index
    r = run([bare, "-m", "imagenet_prep.bootstrap", "--prog", "test", "scripts"], cwd=repo,
            env=env, timeout=300)
    assert "%s is not complete (no pip: its set-up was stopped?): making it again" \
        % (repo / ".venv") in r.stderr, r.stderr
    assert "No module named pip" not in r.stderr
    assert run([repo / ".venv" / "bin" / "python", "-c", "import pip"]).returncode == 0
    assert r.returncode == 1 and "pip could not install requirements.txt" in r.stderr, r.stderr
    assert not (repo / ".venv" / "imagenet-prep-requirements.txt").exists()


# ----------------------------------------------------------------------------- the README's commands

DEBIAN_PYTHON = Path("/usr/bin/python3")


@pytest.mark.slow
def test_a_fresh_clone_runs_the_readme_commands_with_a_python3_that_refuses_pip(tmp_path):
    """A fresh clone, Debian's python3 first on PATH (no numpy, scipy, tqdm; `pip install`
    refused): the README's demo command makes .venv/ and runs the demo, its test command runs the
    tests in it, and the scripts run by themselves afterwards. pip installs from the index pip is
    configured with (a local one here and in CI)."""
    if not DEBIAN_PYTHON.is_file() or run([DEBIAN_PYTHON, "-c", "import numpy"]).returncode == 0:
        pytest.skip("needs a %s without numpy (Debian's, as installed)" % DEBIAN_PYTHON)
    if run(["git", "-C", REPO, "rev-parse", "HEAD"]).returncode != 0:
        pytest.skip("not a git checkout")
    readme = (REPO / "README.md").read_text()
    demo, tests = "bash tests/demo.sh", "bash tests/run.sh"
    assert re.search(r"^%s\s" % re.escape(demo), readme, re.M)
    assert re.search(r"^%s\s" % re.escape(tests), readme, re.M)
    repo, path = tmp_path / "imagenet-prep", tmp_path / "bin"
    assert run(["git", "clone", "--quiet", REPO, repo]).returncode == 0
    path.mkdir()
    (path / "python3").symlink_to(DEBIAN_PYTHON)
    env = dict(os.environ, PATH="%s:%s" % (path, os.environ["PATH"]))
    for k in [k for k in env if k.startswith(("PYTHON", "VIRTUAL_ENV", "IMAGENET_"))]:
        del env[k]

    r = run(demo.split(), cwd=repo, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "making the virtual environment %s" % (repo / ".venv") in r.stderr
    assert "demo finished" in r.stdout
    assert (repo / "demo" / "root" / "meta" / "synsets.csv").is_file()
    assert run(["git", "status", "--porcelain"], cwd=repo).stdout == ""    # .venv/, demo/ ignored

    r = run(tests.split() + ["tests/test_repo.py", "-k", "set_up or readme or gitignore", "-p",
                             "no:cacheprovider"], cwd=repo, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"\b3 passed\b", r.stdout), r.stdout[-2000:]
    r = run(tests.split() + ["tests/test_bootstrap.py", "-m", "not slow", "-p",
                             "no:cacheprovider"], cwd=repo, env=env, timeout=300)   # in .venv/
    assert r.returncode == 0 and " passed" in r.stdout and " failed" not in r.stdout, \
        r.stdout[-3000:] + r.stderr[-3000:]
    assert "making the virtual environment" not in r.stderr          # made once, by the demo

    for cmd in (["python3", "04_verify.py", "--root", "demo/root", "--full", "--decode", "all"],
                ["./01_unzip.sh", "--root", "demo/root", "all"]):
        r = run(cmd, cwd=repo, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
