"""How a numbered script starts, and the one set-up step: the Python packages of requirements.txt.

- start(prog, needs): the first call of every Python entry point (02-05, and 01 through its
  python3 -c). A Ctrl-C from then until console.run() takes over ends the run quietly with exit
  code 130 (Python's own handler would print a traceback from inside an import). When the
  python3 that runs the script lacks a package of requirements.txt and the clone has a
  .venv/ beside the scripts, the same command is run again with .venv/bin/python; when it lacks one
  the script cannot do without (`needs`) and there is no .venv/, the run stops saying how to get
  them.
- setup(what, prog) / ``python3 -m imagenet_prep.bootstrap {scripts,tests}``, run by
  tests/demo.sh and tests/run.sh: returns at once when python3 has the packages; else makes (or
  completes) .venv/ with ``pip install -r requirements.txt`` and prints its bin/ folder, for the
  caller to put first on PATH. Debian and Ubuntu refuse ``pip install`` into their python3
  ("externally-managed-environment"); a virtual environment is their way, and needs the Debian
  package python3-venv.

Only the standard library is used here: this runs before anything else is known to be there.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
from typing import Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv")
REQUIREMENTS = os.path.join(REPO, "requirements.txt")
DONE = os.path.join(VENV, "imagenet-prep-requirements.txt")  # requirements.txt as installed
LOCK = "imagenet-prep.lock"                                  # in .venv/: one set-up at a time
# import names of requirements.txt's packages (tests/test_repo.py checks the two agree)
SCRIPTS = ("numpy", "scipy", "tqdm")           # what the numbered scripts import
TESTS = SCRIPTS + ("pytest", "PIL", "pyarrow", "webdataset")  # and the tests (PIL: Pillow;
#                                                 pyarrow: also the Hub's Parquet files)
SET_UP = "bash tests/demo.sh"                   # the README's command that makes .venv/
INTERRUPTED = 130                               # console.INTERRUPTED (console is not loaded yet)


def _quiet_interrupt(signum, frame):
    raise SystemExit(INTERRUPTED)


def quiet_interrupt_installed() -> bool:
    """True while start()'s Ctrl-C handler is in place (console.run replaces it)."""
    return signal.getsignal(signal.SIGINT) is _quiet_interrupt


def missing(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that this python cannot import (found, not imported: fast)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def venv_python() -> str:
    return os.path.join(VENV, "bin", "python")


def in_venv() -> bool:
    """This process runs .venv/bin/python."""
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def lacking_text(modules: Sequence[str]) -> str:
    """What is wrong and what to do when this python lacks `modules`."""
    names = ", ".join("Pillow" if m == "PIL" else m for m in modules)
    if in_venv():
        return ("needs the Python package(s) %s, which %s does not have (its set-up did not "
                "finish?): run `%s` in %s to complete it, then run this command again"
                % (names, VENV, SET_UP, REPO))
    if os.path.lexists(venv_python()):
        return ("needs the Python package(s) %s, which %s lacks, and %s does not run: delete %s "
                "and run `%s` in %s to set it up again" % (names, sys.executable, venv_python(),
                                                           VENV, SET_UP, REPO))
    return ("needs the Python package(s) %s, which %s (Python %d.%d) does not have: run `%s` once "
            "in %s (it makes the virtual environment .venv/ there with requirements.txt, which "
            "every script then uses by itself; Debian and Ubuntu need the package python3-venv "
            "for it), or install them for this python3"
            % (names, sys.executable, sys.version_info[0], sys.version_info[1], SET_UP, REPO))


def start(prog: str, needs: Sequence[str] = ()) -> None:
    """The first call of a script run as a command (never at import by a test): a quiet Ctrl-C
    until console.run(), and the packages from .venv/ when this python lacks them (see above)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:   # not ignored (nohup, &)
        signal.signal(signal.SIGINT, _quiet_interrupt)
    lack = missing(tuple(SCRIPTS) + tuple(m for m in needs if m not in SCRIPTS))
    if not lack:
        return
    python = venv_python()
    if not in_venv() and os.access(python, os.X_OK):
        # the same command under .venv's python: sys.orig_argv (3.10+) holds all of it, -c CODE
        # (01's way in) included; 3.9 has only sys.argv, enough for a script run by its path
        argv = list(getattr(sys, "orig_argv", ()))[1:] or (
            sys.argv if sys.argv and sys.argv[0] not in ("-c", "-m", "") else [])
        if argv:
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                os.execv(python, [python] + argv)
            except OSError:
                pass                                 # said below, if a package is needed
    need = [m for m in needs if m in lack]
    if need:
        stop(prog, lacking_text(need))


def stop(prog: str, text: str) -> None:
    """End the run with an error line in the scripts' log format, exit code 1."""
    from .console import FAILURE, log, setup_logging
    setup_logging(prog)
    log.error("error: %s", text)
    sys.exit(FAILURE)


# ----------------------------------------------------------------------------- the set-up

def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def ours(entries: set) -> bool:
    """The entries of a .venv/ without pyvenv.cfg are those of one this set-up began (its lock
    file, and what `python3 -m venv` makes first) and may be made into one."""
    return not entries or LOCK in entries and entries <= {LOCK, "bin", "include", "lib", "lib64"}


def has_pip() -> bool:
    """.venv/bin/python runs and has pip: `python3 -m venv` finished (stopped while it put pip
    in, e.g. by a Ctrl-C in the set-up's first seconds, it leaves a python without pip)."""
    import subprocess
    python = venv_python()
    return os.access(python, os.X_OK) and subprocess.run(
        [python, "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('pip') is None)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def setup(what: str, prog: str) -> Optional[str]:
    """None when this python has the packages `what` needs ("scripts" or "tests"); else the bin/
    folder of .venv/, made or completed here (pip install -r requirements.txt)."""
    import fcntl
    import subprocess

    from .console import log, setup_logging
    from .files import atomic_write

    if not missing(TESTS if what == "tests" else SCRIPTS):
        return None
    setup_logging(prog)
    bin_dir = os.path.dirname(venv_python())
    wanted = _read(REQUIREMENTS)
    if wanted is None:
        stop(prog, "%s is missing (an incomplete copy?): copy or clone the whole repository "
                   "folder again" % REQUIREMENTS)
    if os.path.lexists(VENV) and not os.path.isdir(VENV):
        stop(prog, "%s is not a folder: move it away, then run again" % VENV)
    if os.path.isdir(VENV) and not os.path.isfile(os.path.join(VENV, "pyvenv.cfg")) and \
            not ours(set(os.listdir(VENV))):
        stop(prog, "%s is not a virtual environment (no pyvenv.cfg): move it away, then run "
                   "again" % VENV)
    os.makedirs(VENV, exist_ok=True)
    with open(os.path.join(VENV, LOCK), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)        # another set-up: wait for it
        if _read(DONE) == wanted and os.access(venv_python(), os.X_OK):
            return bin_dir
        if not has_pip():        # not made yet, or its making was stopped (before pip was in)
            if importlib.util.find_spec("ensurepip") is None:
                stop(prog, "%s (Python %d.%d) lacks numpy, scipy, tqdm or the test packages, and "
                           "cannot make a virtual environment: it has no ensurepip. On Debian and "
                           "Ubuntu, install the package python3-venv (sudo apt install "
                           "python3-venv), then run again" % ((sys.executable,)
                                                              + sys.version_info[:2]))
            if os.path.lexists(venv_python()):
                log.info("%s is not complete (no pip: its set-up was stopped?): making it again",
                         VENV)
            else:
                log.info("%s lacks some of requirements.txt: making the virtual environment %s "
                         "(once; every script then uses it)", sys.executable, VENV)
            if subprocess.run([sys.executable, "-m", "venv", VENV],
                              stdout=sys.stderr).returncode != 0:
                stop(prog, "python3 -m venv %s failed (its message is above); fix what it says, "
                           "or delete %s, then run again" % (VENV, VENV))
        log.info("installing requirements.txt into %s (pip; a minute or two the first time)", VENV)
        pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "-r",
               REQUIREMENTS]
        if subprocess.run(pip, stdout=sys.stderr).returncode != 0:
            stop(prog, "pip could not install requirements.txt into %s (its messages are above): "
                       "check the network, or pip's index settings (pip config list), then run "
                       "again" % VENV)
        check = [venv_python(), "-c", "import importlib.util as u, sys; "
                 "sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))", *TESTS]
        if subprocess.run(check).returncode != 0:
            stop(prog, "%s still lacks some of %s after pip install: delete %s and run again"
                 % (VENV, ", ".join(TESTS), VENV))
        atomic_write(DONE, wanted)
        log.info("%s is ready", VENV)
    return bin_dir


def main(argv: Optional[list[str]] = None) -> int:
    from .console import Parser
    p = Parser(prog="python3 -m imagenet_prep.bootstrap",
               description="Make sure the packages of requirements.txt are there: from python3, "
                           "else from .venv/ in the clone (made or completed here). Prints the "
                           "folder to put first on PATH (.venv/bin), or nothing when python3 has "
                           "them.")
    p.add_argument("what", choices=("scripts", "tests"),
                   help="scripts: numpy, scipy, tqdm; tests: also pytest, Pillow, pyarrow and "
                        "webdataset")
    p.add_argument("--prog", default="bootstrap", help="the name to log under")
    args = p.parse_args(argv)
    bin_dir = setup(args.what, args.prog)
    if bin_dir:
        print(bin_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
