"""Fetching bytes with curl: one retry, stall and backoff policy for 00_download.sh and 01 --stream.

The policy: curl stops a transfer slower than DOWNLOAD_SPEED_LIMIT B/s for DOWNLOAD_SPEED_TIME s
(a stall); a failed attempt is retried after DOWNLOAD_RETRY_DELAY s, doubling up to
DOWNLOAD_RETRY_DELAY_MAX, until DOWNLOAD_RETRIES (00_download.sh: --retries) attempts in a row
brought no byte; some failures are permanent (a login needed, a missing file, a full disk, a TLS
problem) and stop at once. 00_download.sh asks this module (see main: `settings` once at the
start, `decide RC HTTP_CODE FAILS` after each failed attempt) and adds its own context to the
reasons (split, host, variable, urls file); RangeReader (01_unzip.sh --stream) uses it to read a
byte range of a link as one stream, reconnecting where it broke.

The link goes to curl on its standard input (-K -), never on a command line that `ps` shows.
"""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from .console import PrepError, log, scrub_links

# environment variable: (default, kind); kinds: count (whole >= 1), seconds (e.g. 5 or 0.5)
KNOBS = {
    "DOWNLOAD_SPEED_LIMIT": ("1024", "count"),
    "DOWNLOAD_SPEED_TIME": ("60", "count"),
    "DOWNLOAD_CONNECT_TIMEOUT": ("30", "seconds"),
    "DOWNLOAD_RETRY_DELAY": ("5", "seconds"),
    "DOWNLOAD_RETRY_DELAY_MAX": ("300", "seconds"),
    "DOWNLOAD_RETRIES": ("10", "count"),
}
KIND_RE = {"count": re.compile(r"[1-9][0-9]{0,8}\Z"), "seconds": re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?\Z")}
KIND_TEXT = {"count": "a whole number of at least 1 (no leading zero)",
             "seconds": "a number of seconds such as 5 or 0.5"}
STOP_SIGNALS = (-signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP)   # curl killed by one (as Popen says)
MAX_DOUBLINGS = 64                 # the pause stops doubling long before; no huge powers of two
RETRY_HTTP = {408, 425, 429}
TLS = {51, 58, 59, 60, 77, 83, 90, 91}


@dataclass(frozen=True)
class Policy:
    speed_limit: int
    speed_time: int
    connect_timeout: float
    retry_delay: float
    retry_delay_max: float
    retries: int

    def curl_args(self) -> list[str]:
        return ["-L", "-f", "--connect-timeout", "%g" % self.connect_timeout,
                "--speed-limit", str(self.speed_limit), "--speed-time", str(self.speed_time)]

    def delay(self, fails: int) -> float:
        """Seconds to pause after `fails` attempts in a row without progress."""
        return min(self.retry_delay * 2 ** min(max(fails - 1, 0), MAX_DOUBLINGS), self.retry_delay_max)


def policy_from_env(env: Mapping[str, str] = os.environ, retries: Optional[int] = None) -> Policy:
    """The policy, from the environment's DOWNLOAD_* settings; a bad value is an error naming it
    (never a number that reaches arithmetic unchecked)."""
    values = {}
    for name, (default, kind) in KNOBS.items():
        text = env.get(name) or default
        if not KIND_RE[kind].match(text):
            raise PrepError("%s in the environment must be %s; fix it, or unset it to use the default "
                            "(%s)" % (name, KIND_TEXT[kind], default))
        values[name] = float(text) if kind == "seconds" else int(text)
    return Policy(values["DOWNLOAD_SPEED_LIMIT"], values["DOWNLOAD_SPEED_TIME"],
                  values["DOWNLOAD_CONNECT_TIMEOUT"], values["DOWNLOAD_RETRY_DELAY"],
                  values["DOWNLOAD_RETRY_DELAY_MAX"], retries or values["DOWNLOAD_RETRIES"])


def http_hint(code: int) -> str:
    if code in (401, 403):
        return "the link may have expired or needs a login: get a fresh one from image-net.org"
    if code in (404, 410):
        return "the link may have expired or is wrong: get a fresh one from image-net.org"
    return "check the link"


def permanent(rc: int, code: int) -> Optional[str]:
    """Why a failed curl (exit code rc, last HTTP status code) is not worth another attempt; None
    if it is."""
    if rc == 22:
        if code in RETRY_HTTP or 500 <= code <= 599:
            return None
        return "HTTP %d: %s" % (code, http_hint(code))
    if rc == 23:
        return "cannot write what arrives (disk full?)"
    if rc in (1, 3):
        return "curl cannot use the link"
    if rc == 37:
        return "cannot read the local file of the link"
    if rc in TLS:
        return "TLS/certificate problem"
    return None


def give_up_hint(rc: int, code: int, policy: Policy) -> str:
    return {6: "cannot resolve the host name: check the link and your network",
            7: "cannot connect: the host is unreachable or refuses connections",
            28: "timed out or stalled (slower than %d B/s for %ds)" % (policy.speed_limit,
                                                                      policy.speed_time),
            22: "the server keeps answering HTTP %d" % code}.get(rc, "curl exit code %d" % rc)


def decide(policy: Policy, rc: int, code: int, fails: int) -> tuple[str, float, str]:
    """After a failed attempt (fails: attempts in a row without progress, this one included):
    ("retry", seconds to wait, ""), ("stop", 0, why) for a permanent failure, or
    ("give-up", 0, why) when the attempts are used up."""
    why = permanent(rc, code)
    if why:
        return "stop", 0.0, why
    if fails >= policy.retries:
        return "give-up", 0.0, give_up_hint(rc, code, policy)
    return "retry", policy.delay(fails), ""


# ----------------------------------------------------------------------------- a byte range as a stream

class FileChanged(PrepError):
    """The server now serves another file (another size, or a changed ETag) than the one begun."""


@dataclass
class Response:
    status: int
    total: Optional[int]           # the file's size, from Content-Range or Content-Length
    start: int                     # where the body starts in the file
    etag: Optional[str]
    html: bool                     # Content-Type says it is a web page


CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,15})-([0-9]{1,15})/([0-9]{1,15}|\*)\Z")   # */: size not said


def parse_headers(blocks: list[list[str]], asked_from: int) -> Response:
    """The last response of `curl -D -` (after redirects); numbers are checked before use."""
    if not blocks:
        raise PrepError("the server sent no HTTP response")
    lines = blocks[-1]
    m = re.match(r"HTTP/[0-9.]+ ([0-9]{3})", lines[0]) if lines else None
    if not m:
        raise PrepError("the server's answer is not HTTP (%r)" % (lines[0][:40] if lines else ""))
    head = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        head[k.strip().lower()] = v.strip()
    status, total, start = int(m.group(1)), None, 0
    if "content-length" in head and not re.fullmatch(r"[0-9]{1,15}", head["content-length"]):
        raise PrepError("the server sent a Content-Length that is not a number (%d characters): a "
                        "broken or hostile server; check the link" % len(head["content-length"]))
    if status == 206:
        cr = CONTENT_RANGE.match(head.get("content-range", ""))
        if not cr:
            raise PrepError("the server answered a byte range without a usable Content-Range")
        start, total = int(cr.group(1)), None if cr.group(3) == "*" else int(cr.group(3))
    elif re.fullmatch(r"[0-9]{1,15}", head.get("content-length", "")):
        total = int(head["content-length"])
    return Response(status, total, start, head.get("etag"),
                    head.get("content-type", "").lower().startswith(("text/html", "application/xhtml")))


class RangeReader(io.RawIOBase):
    """Bytes [start, end) of a link as one readable stream, over as many curl attempts as it takes.

    Each attempt asks for the bytes not yet delivered (Range, with If-Range when an ETag is
    known) and must get exactly them: a 206 starting there, or a 200 for the whole file from
    which the bytes already delivered are skipped again. Another total size or ETag is
    FileChanged; never are bytes of two different files joined. Stalls and broken connections
    are retried under the policy; a permanent failure is a PrepError.
    """

    def __init__(self, url: str, start: int, end: Optional[int], policy: Policy, label: str,
                 etag: Optional[str] = None, total: Optional[int] = None,
                 on_wait: Optional[Callable[[str], None]] = None) -> None:
        super().__init__()
        self.url, self.pos, self.end, self.policy, self.label = url, start, end, policy, label
        self.etag, self.total, self.on_wait = etag, total, on_wait or (lambda text: log.info("%s", text))
        self.proc: Optional[subprocess.Popen] = None
        self.fails = 0
        self.first: Optional[Response] = None
        # close() may come from another thread while one reads: it sets `stop` (which ends a
        # retry pause at once and forbids a new attempt), kills curl, then waits for `busy`,
        # held by the reading thread, before it tidies up
        self.stop, self.busy = threading.Event(), threading.Lock()

    def readable(self) -> bool:
        return True

    # -- one attempt
    def _connect(self) -> None:
        args = ["curl", "-sS", *self.policy.curl_args(), "-D", "-", "-o", "-", "-K", "-"]
        # always a range, "bytes=0-" too: a 206 or a 200 to it says whether the server honours them
        args += ["-r", "%d-%s" % (self.pos, "" if self.end is None else self.end - 1)]
        if self.etag:
            args += ["-H", "If-Range: " + self.etag]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        if self.stop.is_set():                      # closed while it started: close() may not
            self.proc.kill()                        # have seen it; its output ends at once
        url = self.url.replace("\\", "\\\\").replace('"', '\\"')
        self.proc.stdin.write(('url = "%s"\n' % url).encode())
        self.proc.stdin.close()
        try:
            resp = self._read_headers()
        except PrepError as e:
            self._kill()
            raise PrepError("%s: %s" % (self.label, e)) from None
        if resp is None:
            return                                  # failed before an answer: _attempt_ended says
        self._accept(resp)

    def _read_headers(self) -> Optional[Response]:
        blocks: list[list[str]] = []
        block: list[str] = []
        while True:
            line = self.proc.stdout.readline(65536)
            if not line:
                return None
            text = line.decode("latin-1").rstrip("\r\n")
            if text:
                block.append(text)
                continue
            if not block:
                continue
            blocks.append(block)
            status = block[0].split(" ", 2)[1] if len(block[0].split(" ")) > 1 else ""
            block = []
            if not (status.startswith(("1", "3"))):
                return parse_headers(blocks, self.pos)

    def _accept(self, resp: Response) -> None:
        if resp.status >= 400:
            return                          # curl -f ends the attempt: _attempt_ended decides
        if resp.html:
            self._kill()
            raise PrepError("%s: the link answered with a web page, not the archive: it has expired, "
                            "or it needs you to be logged in; get a fresh link from image-net.org"
                            % self.label)
        if self.total is not None and resp.total is not None and resp.total != self.total:
            self._kill()
            raise FileChanged("%s: the server now reports %d bytes for the file, not %d: it serves "
                              "another file than the one begun" % (self.label, resp.total, self.total))
        if self.etag and resp.etag and resp.etag != self.etag:
            self._kill()
            raise FileChanged("%s: the file behind the link changed (its ETag was %s, now %s)"
                              % (self.label, self.etag, resp.etag))
        self.total = self.total if self.total is not None else resp.total
        self.etag = self.etag or resp.etag
        self.first = self.first or resp
        if resp.status == 206 and resp.start != self.pos:
            self._kill()
            raise PrepError("%s: asked for bytes from %d, the server sent them from %d; it cannot be "
                            "trusted with byte ranges" % (self.label, self.pos, resp.start))
        if resp.status == 200 and self.end is not None:
            self._kill()                    # a window of many: the whole file for each is no way
            raise PrepError("%s: the server ignores byte ranges (it sent the whole file for bytes "
                            "%d-%d); run without --connections" % (self.label, self.pos, self.end - 1))
        if resp.status == 200 and self.pos > 0:
            self.on_wait("%s: the server ignores byte ranges: reading %d bytes again to resume"
                         % (self.label, self.pos))
            left = self.pos
            while left:
                got = self.proc.stdout.read(min(left, 1 << 20))
                if not got:
                    return
                left -= len(got)

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()
            self.proc = None

    def _attempt_ended(self, progressed: bool) -> None:
        """curl ended before `end`: decide whether to retry (and wait), or raise. Nothing of
        this when the reader is being closed: curl was ended on purpose."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        rc = proc.wait()
        err = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        proc.stdout.close()
        proc.stderr.close()
        if rc in STOP_SIGNALS and not self.stop.is_set():
            # curl was stopped by a signal: most often a Ctrl-C, scancel or timeout sent to the whole
            # process group, which this process is about to act on; a moment to see it
            self.stop.wait(1.0)
        if self.stop.is_set():
            return
        code = 0
        m = re.search(r"error: ([0-9]{3})", err[-1]) if err else None
        if m:
            code = int(m.group(1))
        self.fails = 0 if progressed else self.fails + 1
        if rc == 0:
            rc = 18                                  # ended early without an error: a short body
        action, wait, why = decide(self.policy, rc, code, max(self.fails, 1))
        if action != "retry":
            raise PrepError("%s: %s at byte %d (%s)%s" % (
                self.label, why, self.pos, scrub_links(err[-1]) if err else "curl exit code %d" % rc,
                "; rerun later: the work done is kept" if action == "give-up" else ""))
        self.on_wait("%s: %s; retrying in %gs from byte %d" % (
            self.label, scrub_links(err[-1]) if err else "the connection ended early", wait, self.pos))
        self.stop.wait(wait)                 # a close() ends the pause

    # -- reading
    def readinto(self, b) -> int:
        with self.busy:
            return self._readinto(b)

    def _readinto(self, b) -> int:
        want = len(b) if self.end is None else min(len(b), self.end - self.pos)
        if want <= 0:
            self._kill()
            return 0
        while True:
            if self.stop.is_set():           # closed from another thread: no new attempt
                return 0
            if self.proc is None:
                self._connect()
                if self.proc is None:
                    continue
            n = self.proc.stdout.readinto1(memoryview(b)[:want])   # what has come: no waiting to fill b
            if n:
                self.pos += n
                self.fails = 0
                return n
            if self.end is None and self.total is not None and self.pos >= self.total:
                self._kill()
                return 0
            self._attempt_ended(progressed=False)

    def close(self) -> None:
        """Safe from any thread, also while another one reads: that read returns 0 bytes."""
        self.stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        with self.busy:
            self._kill()
        super().close()


# ----------------------------------------------------------------------------- 00_download.sh asks

def seconds_text(value: float) -> str:
    """Seconds as plain decimals that bash, sleep and curl all read ('5', '0.05'; never '1e-06')."""
    return ("%.6f" % value).rstrip("0").rstrip(".")


def main(argv: list[str]) -> int:
    """For 00_download.sh:

    settings              the policy, one NAME=VALUE line per DOWNLOAD_* setting (whole numbers
                          and seconds in plain decimals), from the environment with its defaults
    decide RC CODE FAILS  after a failed curl (exit code RC, last HTTP status CODE, 000 for none;
                          FAILS attempts in a row without progress, this one included):
                          'retry SECONDS', 'stop WHY' (permanent) or 'give-up WHY' (attempts used up)

    A bad value in the environment: the message, naming the setting, on stderr; exit 2."""
    try:
        policy = policy_from_env()
        if argv[:1] == ["settings"] and len(argv) == 1:
            values = (policy.speed_limit, policy.speed_time, policy.connect_timeout, policy.retry_delay,
                      policy.retry_delay_max, policy.retries)
            for name, value in zip(KNOBS, values):
                kind = KNOBS[name][1]
                print("%s=%s" % (name, seconds_text(value) if kind == "seconds" else "%d" % value))
            return 0
        if argv[:1] == ["decide"] and len(argv) == 4 and re.fullmatch(r"[0-9]{1,3}", argv[1]) \
                and re.fullmatch(r"[0-9]{1,3}", argv[2]) and re.fullmatch(r"[0-9]{1,9}", argv[3]):
            action, wait, why = decide(policy, int(argv[1]), int(argv[2]), int(argv[3]))
            print("%s %s" % (action, seconds_text(wait) if action == "retry" else why))
            return 0
    except PrepError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("usage: python3 -m imagenet_prep.transport settings | decide RC HTTP_CODE FAILS",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
