"""What every stage says and how it ends: log lines, the one error type, exit codes, sizes, options.

Every script logs to stderr as ``PROG HH:MM:SS message`` and ends with one of the exit codes
below; a PrepError is a problem the user can fix, printed without a traceback.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import signal
import sys
import time
from typing import Callable, Iterable, Optional, Sequence

from . import bootstrap

OK, FAILURE, USAGE, INTERRUPTED, TERMINATED, HUNG_UP = 0, 1, 2, 130, 143, 129
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

log = logging.getLogger("imagenet_prep")


class PrepError(Exception):
    """A problem with the input, the disk or the tree that the user can fix; the message says what
    is wrong and what to do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a SLURM time limit, `kill`): unwinds like Ctrl-C, ends with exit code 143."""


class HangUp(KeyboardInterrupt):
    """SIGHUP (the terminal closed, an ssh session ended): unwinds like Ctrl-C, exit code 129."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _on_sighup(signum, frame):
    raise HangUp()


def setup_logging(prog: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True, datefmt="%H:%M:%S",
                        format=prog + " %(asctime)s %(message)s")


def run(prog: str, argv: Sequence[str], body: Callable[[], int], interrupted: str) -> int:
    """Run a stage: log its command line and elapsed time, turn every way it can end into a
    message and an exit code. `interrupted` says what state Ctrl-C / SIGTERM leave behind."""
    setup_logging(prog)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:      # (nohup: it stays ignored)
        signal.signal(signal.SIGHUP, _on_sighup)
    if bootstrap.quiet_interrupt_installed():       # from now on Ctrl-C unwinds, with a message
        signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.monotonic()
    log.info("%s %s", prog, scrub_links(" ".join(argv)))
    try:
        rc = body()
    except PrepError as e:
        log.error("error: %s", e)
        rc = FAILURE
    except Terminated:
        log.error("stopped by SIGTERM; %s", interrupted)
        return TERMINATED
    except HangUp:
        log.error("stopped by SIGHUP; %s", interrupted)
        return HUNG_UP
    except KeyboardInterrupt:
        log.error("stopped by Ctrl-C; %s", interrupted)
        return INTERRUPTED
    except OSError as e:
        if e.errno in DISK_FULL:
            log.error("error: %s", disk_full_text(e.filename or "."))
        else:
            log.error("error: %s; fix it and run the same command again", e)
        rc = FAILURE
    log.info("finished in %.1f s (exit %d)", time.monotonic() - start, rc)
    return rc


# ----------------------------------------------------------------------------- words and numbers

LINK = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")    # to the next space: a token may hold anything


def scrub_links(text: str) -> str:
    """`text` (an argument, a message of curl's) with every link replaced by <link>: a link may
    carry a token, never printed."""
    return LINK.sub("<link>", text)


def shown(name: str) -> str:
    """A name from an archive or a folder as it may be printed: control characters (a newline,
    an escape sequence) written as escapes, so that no name can forge a log line or a terminal."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)

def human(n: float) -> str:
    """Bytes in binary units: '512 B', '53.8 KiB', '138.0 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    raise AssertionError("unreachable")


def thousands(n: int) -> str:
    return "{:,}".format(n)


def some(items: Sequence, limit: int = 5) -> str:
    """'a, b, c, ... and N more': the first few of a list that may be long."""
    text = ", ".join(shown(str(x)) for x in items[:limit])
    return text + (", ... and %d more" % (len(items) - limit) if len(items) > limit else "")


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def disk_full_text(path: str, need: Optional[int] = None) -> str:
    """The message for ENOSPC / EDQUOT while writing at `path`."""
    folder = str(path)
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        st = os.statvfs(folder or ".")
        free = human(st.f_bavail * st.f_frsize)
        if st.f_files and (st.f_favail < 1000 or st.f_favail * 100 < st.f_files):
            return ("no more files can be created in %s: the file system (or your quota) has "
                    "almost no free inodes left (%d), though %s are free; delete files there, or "
                    "use --root on a file system that allows more files (a split's tree of images "
                    "also fits in one file: 05_pack_squashfs.py), and run again: complete work is "
                    "kept"
                    % (folder, st.f_favail, free))
    except OSError:
        free = "?"
    return ("the disk is full (or the quota is used up): cannot write to %s, %s free%s; free some "
            "space there, or use --root on a bigger disk, and run again: complete work is kept"
            % (folder, free, ", about %s needed" % human(need) if need else ""))


def preflight(folder: str, need: int, what: str) -> None:
    """Refuse to start when `need` bytes (plus 5 % for file system overhead) do not fit."""
    free = free_bytes(folder)
    need = int(need * 1.05)
    if need > free:
        raise PrepError("%s: not enough free space in %s: about %s to write, %s free; free some "
                        "space or use --root on a bigger disk" % (what, folder, human(need),
                                                                  human(free)))


def each_split(splits: Iterable[str], do: Callable[[str], int], where: str) -> int:
    """do(split) for every split, going on with the others after a failure; the worst exit code.
    A PrepError is logged as it says; a full disk as disk_full_text (`where`: the folder written
    to when the error names none)."""
    rc = OK
    for split in splits:
        try:
            rc = max(rc, do(split))
        except PrepError as e:
            log.error("error: %s", e)
            rc = FAILURE
        except OSError as e:
            log.error("error: %s: %s", split, disk_full_text(e.filename or where)
                      if e.errno in DISK_FULL else e)
            rc = FAILURE
    return rc


class ErrorList:
    """Errors as they come: the first few logged in full, then only counted."""

    SHOWN = 10

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, text: str) -> None:
        self.errors.append(text)
        if len(self.errors) <= self.SHOWN:
            log.error("error: %s", text)
        elif len(self.errors) == self.SHOWN + 1:
            log.error("error: more errors follow; only their number is given at the end")

    def summary(self) -> str:
        n = len(self.errors)
        return "%d problem(s)%s" % (n, ", listed above" if n <= self.SHOWN
                                    else " (the first %d listed above)" % self.SHOWN)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __iter__(self) -> Iterable[str]:
        return iter(self.errors)


# ----------------------------------------------------------------------------- options

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None and on/off ones: their help says what happens instead. The
    description and epilog are printed as written (tables of splits and files)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) \
                or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action) or ""

    def add_usage(self, usage, actions, groups, prefix=None):
        return super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)


MAX_JOBS = 1024


def jobs_option(parser: argparse.ArgumentParser, text: Optional[str]) -> int:
    """--jobs N (1..MAX_JOBS), checked before use; by default the cores this process may use."""
    if text is None:
        return max(1, min(len(os.sched_getaffinity(0)), MAX_JOBS))
    if not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= MAX_JOBS:
        parser.error("--jobs wants a number from 1 to %d (got '%s')" % (MAX_JOBS, text))
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse with our help format. A usage error is two log lines, the error last (where it is
    seen): a one-line usage, then the message; exit code 2. --help prints the whole help."""

    def __init__(self, **kw) -> None:
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kw)

    def short_usage(self) -> str:
        """'PROG [options] SPLIT...': the arguments, without the options --help lists."""
        words = [self.prog]
        if any(a.option_strings and a.dest != "help" for a in self._actions):
            words.append("[options]")
        for a in self._get_positional_actions():
            name = a.metavar if isinstance(a.metavar, str) else a.dest.upper()
            words.append({"+": name + "...", "*": "[%s...]" % name, "?": "[%s]" % name}.get(
                a.nargs, name))
        return " ".join(words)

    def error(self, message: str):
        message = scrub_links(message)
        if "<link>" in message:
            message += " (a link belongs in urls.sh, as DOWNLOAD_URL_<split>: see urls.sh.example)"
        if message.startswith("unrecognized arguments: "):
            words = message.split(": ", 1)[1].split()
            message = "unknown option '%s'" % words[0] if words[0].startswith("-") else \
                "unexpected argument '%s'" % words[0]
        if message.startswith("the following arguments are required: "):
            message = "; ".join(self._missing_text(name) for name in
                                message.split(": ", 1)[1].split(", "))
        setup_logging(self.prog)
        log.error("usage: %s (--help lists the options)", self.short_usage())
        log.error("error: %s", message)
        self.exit(USAGE)

    def _missing_text(self, name: str) -> str:
        for a in self._get_positional_actions():
            if name in (a.metavar, a.dest):
                what = " (%s)" % a.help if a.help else ""
                return ("name at least one %s%s" if a.nargs == "+" else "name the %s%s") % (name,
                                                                                           what)
        return "%s is required" % name
