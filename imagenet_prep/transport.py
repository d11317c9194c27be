"""The fetch engine: every byte the project takes from a link comes through here.

00_download.sh (imagenet_prep/download.py: into NAME.part) and 01_unzip.sh --stream (stream.py:
into the tree) read a remote file with the same code:

- Remote: what to fetch. A static link, or resolve(): a callable that returns a fresh direct link
  and the request headers it needs (a Hub or Kaggle API answering 302 to a signed storage link);
  the expected size and digest (MD5 or SHA-256); a label for messages. A link is never printed.
- curl is started here and nowhere else (start_curl): its options on the command line, the link
  and any request header on its standard input (-K -), never on a command line that `ps` shows.
  Headers go to the first host only: for a link with headers, curl follows no redirect; the
  Location is fetched here, without them. A curl never outlives a kill -9 of this process
  (PR_SET_PDEATHSIG, set in the child).
- RangeReader: bytes [start, end) of a remote as one stream, over as many curl attempts as it
  takes, under the Policy (stalls, broken connections and 5xx retried with backoff; a permanent
  failure said at once); 206/200/416, Content-Range, ETag and If-Range checked, so that bytes of
  two different files are never joined. Numbers from a server are checked before any use.
- Windows: bytes [start, total) fetched ahead over N connections, one window at a time per
  connection, each window in a piece file of its own (00: NAME.part.START-END beside NAME.part;
  --stream: a spool folder); the consumer reads them back in order while they grow. Prefetcher:
  one connection read ahead in a thread. LocalReader: a file:// link, read directly.
- probe: the size, byte-range support and ETag of a remote, from a HEAD or a one-byte GET.

The policy: curl stops a transfer slower than DOWNLOAD_SPEED_LIMIT B/s for DOWNLOAD_SPEED_TIME s
(a stall); a failed attempt is retried after DOWNLOAD_RETRY_DELAY s, doubling up to
DOWNLOAD_RETRY_DELAY_MAX (or what Retry-After asks), until DOWNLOAD_RETRIES (00: --retries)
attempts in a row brought no real progress (fewer bytes than a stall's worth, LIMIT x TIME, or a
quarter of what was left); some
failures are permanent (a login needed, a missing file, a TLS problem) and stop at once.
"""
from __future__ import annotations

import collections
import ctypes
import fcntl
import io
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional
from urllib.parse import unquote, urljoin, urlsplit

from .console import PrepError, log, scrub_links
from .files import remove_tree

# environment variable: (default, kind); kinds: count (whole >= 1), seconds (e.g. 5 or 0.5),
# percent (1 to 100)
KNOBS = {
    "DOWNLOAD_SPEED_LIMIT": ("1024", "count"),
    "DOWNLOAD_SPEED_TIME": ("60", "count"),
    "DOWNLOAD_CONNECT_TIMEOUT": ("30", "seconds"),
    "DOWNLOAD_RETRY_DELAY": ("5", "seconds"),
    "DOWNLOAD_RETRY_DELAY_MAX": ("300", "seconds"),
    "DOWNLOAD_RETRIES": ("10", "count"),
}
KIND_RE = {"count": re.compile(r"[1-9][0-9]{0,8}\Z"), "seconds": re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?\Z"),
           "percent": re.compile(r"[1-9][0-9]?\Z|100\Z")}
KIND_TEXT = {"count": "a whole number of at least 1 (no leading zero)",
             "seconds": "a number of seconds such as 5 or 0.5", "percent": "a whole number from 1 to 100"}
STOP_SIGNALS = (-signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP)   # curl killed by one (as Popen says)
MAX_DOUBLINGS = 64                 # the pause stops doubling long before; no huge powers of two
RETRY_HTTP = {408, 425, 429}
TLS = {51, 58, 59, 60, 77, 83, 90, 91}
MAX_FILE_SIZE = 1 << 50            # 1 PiB: no file of any source comes near; larger sizes are refused
MAX_RETRY_AFTER = 3600             # the longest Retry-After honoured (seconds)
NUMBER = re.compile(r"[0-9]{1,18}\Z")         # a number from outside: digits only, below 2**63
CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)\Z")   # */: size not said
UNSATISFIED_RANGE = re.compile(r"bytes \*/([0-9]{1,18})\Z")
ETAG_RE = re.compile(r'(W/)?"[\x21\x23-\x7e]{0,200}"\Z')      # what an ETag may be (RFC 9110)
HEADER_LINE = 65536                # longest response header line read
HEADER_LINES = 400                 # most header lines of one answer, redirects included
MAX_REDIRECTS = 10                 # a redirect followed here (links with headers)
CHUNK = 1 << 20                    # bytes read from curl at a time
PIPE_SIZE = 1 << 20                # asked of the kernel for curl's output pipe (fewer wake-ups)
HTML_SNIFF = 512                   # the first bytes of a body that tell a web page
HTML_RE = re.compile(rb"\s*<(!doctype\s+html|html|head|body|!--|\?xml|title|meta)")


# ----------------------------------------------------------------------------- settings and policy

def knob(name: str, default: str, kind: str, env: Mapping[str, str] = os.environ) -> float:
    """A DOWNLOAD_* setting from the environment, checked before use; a bad one is a PrepError
    naming it (never its value in arithmetic, nor in the message)."""
    text = env.get(name) or default
    if not KIND_RE[kind].match(text):
        raise PrepError("%s in the environment must be %s; fix it, or unset it to use the default "
                        "(%s)" % (name, KIND_TEXT[kind], default))
    return float(text) if kind == "seconds" else int(text)


@dataclass(frozen=True)
class Policy:
    speed_limit: int
    speed_time: int
    connect_timeout: float
    retry_delay: float
    retry_delay_max: float
    retries: int

    def delay(self, fails: int) -> float:
        """Seconds to pause after `fails` attempts in a row without progress."""
        return min(self.retry_delay * 2 ** min(max(fails - 1, 0), MAX_DOUBLINGS), self.retry_delay_max)

    @property
    def progress(self) -> int:
        """Bytes an attempt must bring to count as progress: a stall's worth (or a quarter of what
        was left, near the end). A server that sends a few bytes and stalls on every attempt is
        given up on like one that sends none."""
        return self.speed_limit * self.speed_time


def policy_from_env(env: Mapping[str, str] = os.environ, retries: Optional[int] = None) -> Policy:
    """The policy, from the environment's DOWNLOAD_* settings; a bad value is an error naming it
    (never a number that reaches arithmetic unchecked). `retries` (--retries N) wins."""
    v = {name: knob(name, default, kind, env) for name, (default, kind) in KNOBS.items()}
    return Policy(v["DOWNLOAD_SPEED_LIMIT"], v["DOWNLOAD_SPEED_TIME"], v["DOWNLOAD_CONNECT_TIMEOUT"],
                  v["DOWNLOAD_RETRY_DELAY"], v["DOWNLOAD_RETRY_DELAY_MAX"],
                  retries or v["DOWNLOAD_RETRIES"])


def http_hint(code: int) -> str:
    """What an HTTP error status means for an image-net.org link (a Remote may bring its own)."""
    if code in (401, 403):
        return "the link may have expired or needs a login: get a fresh link from image-net.org"
    if code in (404, 410):
        return "the link may have expired or is wrong: get a fresh link from image-net.org"
    return "check the link"


def permanent(rc: int, code: int, hint: Callable[[int], str] = http_hint) -> Optional[str]:
    """Why a failed attempt (curl's exit code rc, the HTTP status code) is not worth another; None
    if it is."""
    if code >= 400:
        if code in RETRY_HTTP or 500 <= code <= 599:
            return None
        return "HTTP %d: %s" % (code, hint(code))
    if rc in (1, 3):
        return "curl cannot use the link"
    if rc == 37:
        return "cannot read the local file of the link"
    if rc in TLS:
        return "TLS/certificate problem"
    return None


def give_up_hint(rc: int, code: int, policy: Policy) -> str:
    if code >= 400:
        return "the server keeps answering HTTP %d" % code
    return {6: "cannot resolve the host name: check the link and your network",
            7: "cannot connect: the host is unreachable or refuses connections",
            28: "timed out or stalled (slower than %d B/s for %ds)" % (policy.speed_limit,
                                                                      policy.speed_time),
            }.get(rc, "curl exit code %d" % rc)


def decide(policy: Policy, rc: int, code: int, fails: int,
           hint: Callable[[int], str] = http_hint) -> tuple[str, float, str]:
    """After a failed attempt (fails: attempts in a row without progress, this one included):
    ("retry", seconds to wait, ""), ("stop", 0, why) for a permanent failure, or
    ("give-up", 0, why) when the attempts are used up."""
    why = permanent(rc, code, hint)
    if why:
        return "stop", 0.0, why
    if fails >= policy.retries:
        return "give-up", 0.0, give_up_hint(rc, code, policy)
    return "retry", policy.delay(fails), ""


def seconds_text(value: float) -> str:
    """Seconds in plain decimals ('5', '0.05'; never '1e-06')."""
    return ("%.6f" % value).rstrip("0").rstrip(".")


# ----------------------------------------------------------------------------- what to fetch

@dataclass(frozen=True)
class Target:
    """A direct link and the request headers it needs (e.g. 'Authorization: Bearer ...'). Neither
    is ever printed; both reach curl on its standard input only."""
    url: str = field(repr=False)
    headers: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Digest:
    """The expected digest of a remote file: algorithm ("md5" or "sha256"), lowercase hex, and
    where it comes from (for messages: "the official checksum", "MD5_val in urls.sh", ...)."""
    algo: str
    hex: str
    source: str

    @property
    def name(self) -> str:
        return {"md5": "MD5", "sha256": "SHA-256"}[self.algo]


class Remote:
    """A remote file: how to get a direct link (a static `url`, or `resolve`, called for a fresh
    Target at the first use and again after a 401/403 from the host a redirect led to), its
    expected size and digest (None when unknown), a label for messages ("NAME from HOST"), and
    `hint`: what an HTTP error status means for this source."""

    def __init__(self, label: str, url: Optional[str] = None,
                 resolve: Optional[Callable[[], Target]] = None, size: Optional[int] = None,
                 digest: Optional[Digest] = None, hint: Callable[[int], str] = http_hint) -> None:
        if (url is None) == (resolve is None):
            raise ValueError("a Remote has a url or a resolve(), not both")
        self.label, self.url, self.resolve, self.size, self.digest = label, url, resolve, size, digest
        self.hint = hint
        self._target: Optional[Target] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<Remote %s>" % self.label

    def target(self, fresh: bool = False) -> Target:
        """The direct link to use now; `fresh`: ask resolve() again (the last one was refused)."""
        if self.url is not None:
            return Target(self.url)
        with self._lock:
            if self._target is None or fresh:
                self._target = self.resolve()
            return self._target

    @property
    def refreshable(self) -> bool:
        return self.resolve is not None

    @property
    def local(self) -> Optional[str]:
        """The path of a file:// link, else None."""
        return local_path(self.url) if self.url is not None else None


def local_path(url: str) -> Optional[str]:
    if not url.startswith("file://"):
        return None
    return unquote(urlsplit(url).path)


def looks_like_html(head: bytes) -> bool:
    """The first bytes of a body are a web page (or XML), not an archive."""
    start = head[:HTML_SNIFF].replace(b"\0", b"").lower()
    return bool(HTML_RE.match(start.removeprefix(b"\xef\xbb\xbf")))


# ----------------------------------------------------------------------------- errors

class FileChanged(PrepError):
    """The server now serves another file (another size, or a changed ETag) than the one begun."""


class WebPage(PrepError):
    """The link answered with a web page (an expired link, a login) instead of the file. `head`:
    the first bytes of the page, when a body came."""

    def __init__(self, text: str, head: bytes = b"") -> None:
        super().__init__(text)
        self.head = head


class BadHeader(PrepError):
    """A header the server sent is not what it must be (a number that is none, ...)."""


class IgnoredRange(PrepError):
    """A request for bytes from `at` was answered 200 with the whole file: the server ignores byte
    ranges. `response`: that answer; `head`: its first (up to 512) bytes, what a fresh start would
    bring. Nothing of it was delivered."""

    def __init__(self, text: str, at: int, response: "Response", head: bytes) -> None:
        super().__init__(text)
        self.at, self.response, self.head = at, response, head


class TransferFailed(PrepError):
    """The attempts ended: `action` "stop" (a permanent failure) or "give-up" (too many in a row
    without progress); `code` the last HTTP status (0 none), `rc` curl's exit code."""

    def __init__(self, text: str, action: str, code: int, rc: int) -> None:
        super().__init__(text)
        self.action, self.code, self.rc = action, code, rc


class Unsatisfiable(PrepError):
    """416 (range not satisfiable) before the end of a file whose size the server reported."""


# ----------------------------------------------------------------------------- one curl process

_LIVE: set = set()         # curl processes running, for signal_children (Ctrl-Z)
_LIVE_LOCK = threading.Lock()
_PRCTL: list = []          # libc's prctl, looked up once in the parent (not in a forked child)
PR_SET_PDEATHSIG = 1


def _prctl():
    if not _PRCTL:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _PRCTL.append(getattr(libc, "prctl", None))
        except OSError:
            _PRCTL.append(None)
    return _PRCTL[0]


def _child_setup(parent: int, prctl) -> Callable[[], None]:
    """What runs in curl's process before exec: die with this process (SIGKILL when the thread
    that started it ends: the threads that start curl live as long as its transfer), and take
    signals as a fresh process does."""
    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if os.getppid() != parent:            # this process died before the prctl took effect
            os._exit(1)
    return setup


def _config_text(value: str, what: str) -> str:
    """A value for curl's config syntax ("...", backslash escapes); control characters refused."""
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise PrepError("%s holds a control character; refused" % what)
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def start_curl(target: Target, args: list[str]) -> subprocess.Popen:
    """curl with `args` (options only) on `target`: the link and the headers go in on its standard
    input, as a config file (-K -). The one place of the package that starts curl."""
    config = ["url = %s" % _config_text(target.url, "the link")]
    config += ["header = %s" % _config_text(h, "a request header") for h in target.headers]
    proc = subprocess.Popen(["curl", "-sS", "--proto", "=http,https", "--proto-redir", "=http,https",
                             *args, "-K", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_child_setup(os.getpid(), _prctl()))
    with _LIVE_LOCK:
        _LIVE.add(proc)
    try:
        fcntl.fcntl(proc.stdout.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass
    try:
        proc.stdin.write(("\n".join(config) + "\n").encode())
        proc.stdin.close()
    except OSError:                           # curl died at once: its exit code will say
        pass
    return proc


def signal_children(sig: int) -> None:
    """Send `sig` to every curl this process runs (SIGSTOP and SIGCONT for a Ctrl-Z)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except OSError:
                pass


def curl_args(policy: Policy, follow: bool) -> list[str]:
    """The options every transfer has: timeouts, the stall rule, the response headers on stdout
    before the body; -L only for a link without headers (see Remote)."""
    return (["-L"] if follow else []) + [
        "--connect-timeout", seconds_text(policy.connect_timeout),
        "--speed-limit", str(policy.speed_limit), "--speed-time", str(policy.speed_time),
        "-D", "-"]


@dataclass
class Response:
    status: int
    total: Optional[int]           # the file's size, from Content-Range or Content-Length
    start: int                     # where the body starts in the file
    length: Optional[int]          # Content-Length: the body's size
    etag: Optional[str]
    html: bool                     # Content-Type says it is a web page
    location: Optional[str] = None
    ranges: Optional[bool] = None  # Accept-Ranges: bytes (True), none (False), or not said
    retry_after: Optional[int] = None
    headers: dict = field(default_factory=dict, repr=False)   # lower-case names, last one wins
    redirected: bool = False       # it came from a host a redirect led to


def _number(head: dict, name: str) -> Optional[int]:
    value = head.get(name)
    if value is None:
        return None
    if not NUMBER.match(value):
        raise BadHeader("sent a %s that is not a number (%d characters; a broken or hostile server: "
                        "the value is not shown)" % (name.title(), len(value)))
    return int(value)


def parse_response(lines: list[str]) -> Response:
    """One response's status line and headers (of `curl -D -`); every number is checked before
    use, and the ETag is kept only when it looks like one."""
    m = re.match(r"HTTP/[0-9.]+ ([0-9]{3})", lines[0]) if lines else None
    if not m:
        raise BadHeader("sent an answer that is not HTTP")
    head: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        head[k.strip().lower()] = v.strip()
    status = int(m.group(1))
    length = _number(head, "content-length")
    total, start = (length if status == 200 else None), 0
    if status == 206:
        cr = CONTENT_RANGE.match(head.get("content-range", ""))
        if not cr:
            raise BadHeader("answered a byte range without a usable Content-Range")
        start, last = int(cr.group(1)), int(cr.group(2))
        total = None if cr.group(3) == "*" else int(cr.group(3))
        if last < start or (total is not None and last >= total) or \
                (length is not None and length != last - start + 1):
            raise BadHeader("sent a Content-Range that does not add up (bytes %d-%d of %s, %s in the "
                            "body)" % (start, last, "?" if total is None else total,
                                       "?" if length is None else length))
    elif status == 416:
        ur = UNSATISFIED_RANGE.match(head.get("content-range", ""))
        total = int(ur.group(1)) if ur else None
    retry = head.get("retry-after", "")
    etag = head.get("etag")
    ranges = {"bytes": True, "none": False}.get(head.get("accept-ranges", "").lower())
    return Response(status, total, start, length, etag if etag and ETAG_RE.match(etag) else None,
                    head.get("content-type", "").lower().startswith(("text/html", "application/xhtml")),
                    head.get("location"), ranges, int(retry) if re.fullmatch(r"[0-9]{1,6}", retry) else None,
                    head)


class Attempt:
    """One curl transfer: its process, the final response's headers, then its body from the pipe."""

    def __init__(self, target: Target, args: list[str]) -> None:
        self.proc: Optional[subprocess.Popen] = start_curl(target, args)
        self.lines = 0

    def headers(self, stop_at_redirect: bool) -> Optional[Response]:
        """The last response (after the redirects curl followed; with `stop_at_redirect`, a 3xx is
        returned as it is); None when curl ended before an answer."""
        block: list[str] = []
        while True:
            line = self.proc.stdout.readline(HEADER_LINE)
            if not line:
                return None
            self.lines += 1
            if self.lines > HEADER_LINES or not line.endswith(b"\n"):
                raise BadHeader("sent more or longer headers than any server does")
            text = line.decode("latin-1").rstrip("\r\n")
            if text:
                block.append(text)
                continue
            if not block:
                continue
            resp = parse_response(block)
            block = []
            if resp.status < 200 or (300 <= resp.status < 400 and not stop_at_redirect
                                     and resp.location):
                continue                      # an interim answer, or a redirect curl follows
            return resp

    def readinto(self, view) -> int:
        return self.proc.stdout.readinto1(view)

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def end(self) -> tuple[int, str]:
        """Wait for curl; its exit code and its last message line (links replaced by <link>)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0, ""
        rc = proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        err = proc.stderr.read(65536).decode("utf-8", "replace").strip().splitlines()
        proc.stdout.close()
        proc.stderr.close()
        return rc, scrub_links(err[-1]) if err else ""


# ----------------------------------------------------------------------------- a byte range as a stream

SKIP, RAISE = "skip", "raise"        # what to do when a resume is answered with the whole file


class Validator:
    """What identifies the file begun: its size and ETag, shared by every connection of a run (and
    handed on by a checkpoint). The first answer that says one sets it; one that differs is
    FileChanged, never a join of two files."""

    def __init__(self, total: Optional[int] = None, etag: Optional[str] = None) -> None:
        self.total, self.etag = total, etag
        self.lock = threading.Lock()

    def check(self, resp: Response, label: str, more_ok: bool = False) -> bool:
        """Check and learn; True when the answer claims a larger file than known and `more_ok`
        (00 writes the known size and then says the server sent more)."""
        with self.lock:
            if self.etag and resp.etag and resp.etag != self.etag:
                raise FileChanged("%s: the file behind the link changed (its ETag was %s, now %s)"
                                  % (label, self.etag, resp.etag))
            more = False
            if self.total is not None and resp.total is not None and resp.total != self.total:
                if not (more_ok and resp.total > self.total):
                    raise FileChanged("%s: the server now reports %d bytes for the file, not %d: it "
                                      "serves another file than the one begun"
                                      % (label, resp.total, self.total))
                more = True
            if resp.total is not None and resp.total > MAX_FILE_SIZE:
                raise BadHeader("%s: the server reports %d bytes, more than 1 PiB: no file is near "
                                "that; it misreports the size" % (label, resp.total))
            if self.total is None and resp.total is not None:
                self.total = resp.total
            if self.etag is None and resp.etag and not resp.etag.startswith("W/"):
                self.etag = resp.etag
            return more



def open_attempt(remote: Remote, fresh: bool, args: Callable[[bool], list[str]],
                 extra: tuple[str, ...] = (), started: Optional[Callable[[Attempt], None]] = None
                 ) -> tuple[Attempt, Optional[Response]]:
    """Start a transfer of `remote` with curl options args(follow) and request headers `extra`
    (e.g. If-Range); its Attempt and final answer (None when curl ended before one). A link with
    headers is not followed by curl: its redirect is followed here, to a link without them. A
    link that resolve() hands out without headers is a redirect's target too (a signed storage
    link a Hub or Kaggle API answered with): a 401/403 from it asks resolve() for a fresh one."""
    target = remote.target(fresh)
    redirected = remote.refreshable and not target.headers
    for _ in range(MAX_REDIRECTS + 1):
        attempt = Attempt(Target(target.url, target.headers + extra), args(not target.headers))
        if started is not None:
            started(attempt)
        try:
            resp = attempt.headers(stop_at_redirect=bool(target.headers))
        except PrepError as e:
            attempt.kill()
            attempt.end()
            raise type(e)("%s: %s" % (remote.label, e)) from None
        if resp is not None:
            resp.redirected = redirected
        if resp is None or not (target.headers and 300 <= resp.status < 400):
            return attempt, resp
        attempt.kill()
        attempt.end()
        location = urljoin(target.url, resp.location or "")
        if not resp.location or not location.startswith(("http://", "https://")):
            raise TransferFailed("%s: HTTP %d without a usable Location to go to"
                                 % (remote.label, resp.status), "stop", resp.status, 0)
        target, redirected = Target(location), True
    raise TransferFailed("%s: more than %d redirects" % (remote.label, MAX_REDIRECTS), "stop", 0, 47)


class RangeReader(io.RawIOBase):
    """Bytes [start, end) of a remote as one readable stream (end None: to the end of the file).

    Each attempt asks for the bytes not yet delivered (Range, and If-Range when a strong ETag is
    known) and must get exactly them: a 206 that starts there, or a 200 for the whole file: with
    resume_200=SKIP the bytes already delivered are read again and skipped; with RAISE (and always
    for a window with an end) it is an IgnoredRange for the caller to decide (00 starts over
    rather than read 138 GB twice). Another size or ETag is FileChanged. Stalls, broken connections
    and 5xx are retried under the policy; a permanent failure or the attempts used up are
    TransferFailed. Nothing past `end` is ever delivered, whatever the server sends; with
    `whole_file` (00: end is the file's size) a server that announces or sends more is noted in
    `sent_more`.
    """

    def __init__(self, remote: Remote, start: int, end: Optional[int], policy: Policy,
                 validator: Optional[Validator] = None,
                 on_wait: Optional[Callable[[str], None]] = None, resume_200: str = SKIP,
                 whole_file: bool = False) -> None:
        super().__init__()
        self.remote, self.pos, self.end, self.policy = remote, start, end, policy
        self.label = remote.label
        self.validator = validator or Validator(remote.size)
        self.on_wait = on_wait or (lambda text: log.info("%s", text))
        self.resume_200, self.whole_file = resume_200, whole_file
        self.attempt: Optional[Attempt] = None
        self.resp: Optional[Response] = None           # the answer being read
        self.first: Optional[Response] = None          # the first answer accepted
        self.fails = 0
        self.attempt_start = start
        self.refresh = False
        self.sent_more: Optional[str] = None
        self.done_at: Optional[float] = None            # when the last byte came
        # close() may come from another thread while one reads: it sets `stop` (which ends a
        # retry pause at once and forbids a new attempt), kills curl, then waits for `busy`,
        # held by the reading thread, before it tidies up
        self.stop, self.busy = threading.Event(), threading.Lock()

    @property
    def total(self) -> Optional[int]:
        return self.validator.total

    @property
    def etag(self) -> Optional[str]:
        return self.validator.etag

    def readable(self) -> bool:
        return True

    # -- one attempt
    def _args(self, follow: bool) -> list[str]:
        return curl_args(self.policy, follow) + [
            "-r", "%d-%s" % (self.pos, "" if self.end is None else self.end - 1)]

    def _started(self, attempt: Attempt) -> None:
        self.attempt = attempt
        if self.stop.is_set():                      # closed while it started: close() may not
            attempt.kill()                          # have seen it; its output ends at once

    def _connect(self) -> None:
        """Start an attempt from self.pos: self.attempt is set, self.resp is its accepted answer
        (None when curl ended before one)."""
        fresh, self.refresh = self.refresh, False
        self.attempt_start = self.pos
        extra = ("If-Range: " + self.validator.etag,) if self.validator.etag else ()
        self.attempt, self.resp = open_attempt(self.remote, fresh, self._args, extra, self._started)
        if self.resp is not None:
            self._accept(self.resp)

    def _accept(self, resp: Response) -> None:
        if resp.status >= 400:
            return                              # _attempt_ended decides, by the status
        if resp.status not in (200, 206):
            self._kill()
            raise TransferFailed("%s: HTTP %d, an answer that is not the file; check the link"
                                 % (self.label, resp.status), "stop", resp.status, 0)
        if resp.html:
            self._kill()
            raise WebPage("%s: the link answered with a web page (HTML), not with the file: it has "
                          "expired, or the site wants you to log in (%s)"
                          % (self.label, self.remote.hint(401)))
        if resp.status == 200 and self.pos > 0 and (self.resume_200 == RAISE or self.end is not None):
            head = self._peek(HTML_SNIFF)      # the caller judges this answer (00: start over?)
            self._kill()
            raise IgnoredRange("%s: the server ignores byte ranges (it answered a request for bytes "
                               "from %d with the whole file)" % (self.label, self.pos), self.pos, resp,
                               head)
        more = self.validator.check(resp, self.label, more_ok=self.whole_file)
        if more and self.sent_more is None:
            self.sent_more = "it announced a file of %d bytes" % resp.total
        self.first = self.first or resp
        if resp.status == 206 and resp.start != self.pos:
            self._kill()
            raise PrepError("%s: asked for bytes from %d, the server sent them from %d; it cannot be "
                            "trusted with byte ranges" % (self.label, self.pos, resp.start))
        if resp.status == 200 and self.pos > 0:
            self.on_wait("%s: the server ignores byte ranges: reading %d bytes again to resume"
                         % (self.label, self.pos))
            left = self.pos
            while left:
                got = self.attempt.proc.stdout.read(min(left, CHUNK))
                if not got:
                    return
                left -= len(got)

    def _peek(self, n: int) -> bytes:
        """Up to n bytes of the body of the current answer (not delivered)."""
        out = b""
        while len(out) < n and self.attempt is not None and self.attempt.proc is not None:
            got = self.attempt.proc.stdout.read1(n - len(out))
            if not got:
                break
            out += got
        return out

    def _kill(self) -> None:
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.kill()
            attempt.end()

    def _attempt_ended(self) -> None:
        """The attempt ended before `end`: decide whether to retry (and wait), or raise. Nothing of
        this when the reader is being closed: curl was ended on purpose."""
        attempt, self.attempt = self.attempt, None
        resp, self.resp = self.resp, None
        if attempt is None:
            return
        if resp is not None and resp.status >= 400:
            attempt.kill()                           # its error page is of no use
        rc, msg = attempt.end()
        if rc in STOP_SIGNALS and not self.stop.is_set():
            # curl was stopped by a signal: most often a Ctrl-C, scancel or timeout sent to the whole
            # process group, which this process is about to act on; a moment to see it
            self.stop.wait(1.0)
        if self.stop.is_set():
            return
        code = resp.status if resp is not None and resp.status >= 400 else 0
        if code == 416 and self.validator.total is not None:
            raise Unsatisfiable("%s: the server answers 416 (range not satisfiable) at byte %d although "
                                "it reported %d bytes: it misreports the file's length"
                                % (self.label, self.pos, self.validator.total))
        brought = self.pos - self.attempt_start
        left = (self.end if self.end is not None else self.validator.total or 0) - self.attempt_start
        # progress is a stall's worth of bytes, or a good part of what was left: never a few bytes
        progressed = brought > 0 and brought >= min(self.policy.progress, max(left // 4, 1))
        self.fails = 0 if progressed else self.fails + 1
        if rc == 0 and code == 0:
            rc = 18                                  # ended early without an error: a short body
        if rc < 0 and code == 0:
            rc = 56                                  # killed by a signal not ours: a broken transfer
        hint = self.remote.hint
        if code in (401, 403) and resp is not None and resp.redirected and self.remote.refreshable:
            self.refresh = True                      # the signed link expired: ask for a fresh one
            action, wait, why = decide(self.policy, rc, 503, max(self.fails, 1), hint)
        else:
            action, wait, why = decide(self.policy, rc, code, max(self.fails, 1), hint)
        if resp is not None and resp.retry_after is not None and action == "retry":
            wait = max(wait, min(resp.retry_after, MAX_RETRY_AFTER))
        said = msg or ("HTTP %d" % code if code else "curl exit code %d" % rc)
        if action == "stop":
            raise TransferFailed("%s: %s, at byte %d (%s)" % (self.label, why, self.pos, said),
                                 action, code, rc)
        if action == "give-up":
            raise TransferFailed("giving up on %s after %d attempts in a row without progress, at byte "
                                 "%d: %s (%s). Rerun later: it continues where it stopped"
                                 % (self.label, self.policy.retries, self.pos, why, said),
                                 action, code, rc)
        count = " (%d of %d attempts in a row without progress)" % (self.fails, self.policy.retries) \
            if self.fails else ""
        self.on_wait("%s: %s; retrying in %ss from byte %d%s" % (
            self.label, msg or ("HTTP %d" % code if code else "the connection ended early"),
            seconds_text(wait), self.pos, count))
        self.stop.wait(wait)                 # a close() ends the pause

    # -- reading
    def readinto(self, b) -> int:
        with self.busy:
            view = memoryview(b)
            return self._pull(len(b), lambda want: self.attempt.readinto(view[:want]))

    def read1(self, n: int = CHUNK) -> bytes:
        """Up to n bytes, as they come from curl (no buffer to fill, or to zero, first); b"" at
        the end. What the Prefetcher reads with: a fast link brings many small pieces."""
        with self.busy:
            got: list = []

            def take(want: int) -> int:
                got.append(self.attempt.proc.stdout.read1(want))
                return len(got[-1])
            return got[-1] if self._pull(n, take) else b""

    def _pull(self, size: int, take: Callable[[int], int]) -> int:
        """Deliver up to `size` bytes with take(want) (which reads from the current attempt and
        says how many it got), over as many attempts as it takes; 0 at the end."""
        while True:
            want = size if self.end is None else min(size, self.end - self.pos)
            if want <= 0:
                self._at_end()
                return 0
            if self.stop.is_set():           # closed from another thread: no new attempt
                return 0
            if self.attempt is None:
                self._connect()
                if self.attempt is None:     # (closed meanwhile)
                    continue
            resp = self.resp
            if resp is not None and resp.status == 416 and self.end is None \
                    and self.validator.total is None:
                self.resp = None             # a file whose size is not said: nothing is left
                self._at_end()
                return 0
            if resp is not None and resp.status < 400:
                n = take(want)
                if n:
                    self.pos += n
                    return n
                if self.end is None and self.validator.total is not None \
                        and self.pos >= self.validator.total:
                    self._at_end()
                    return 0
            self._attempt_ended()

    def _at_end(self) -> None:
        """All bytes asked for came: note a server that sends more than the file has (whole_file),
        then end the transfer."""
        if self.done_at is None:
            self.done_at = time.monotonic()
        resp = self.resp
        if self.whole_file and self.attempt is not None and resp is not None and resp.status < 400 \
                and self.sent_more is None and self.end is not None:
            if resp.length is not None and resp.start + resp.length > self.end:
                self.sent_more = "it announced %d bytes from byte %d, %d more than the file has" % (
                    resp.length, resp.start, resp.start + resp.length - self.end)
            elif resp.length is None and self._peek(1):
                self.sent_more = "it went on sending after the last byte"
        self.resp = None
        self._kill()

    def close(self) -> None:
        """Safe from any thread, also while another one reads: that read returns 0 bytes."""
        self.stop.set()
        attempt = self.attempt
        if attempt is not None:
            attempt.kill()
        with self.busy:
            self._kill()
        super().close()


class LocalReader(io.RawIOBase):
    """Bytes [start, end) of a file:// link's file, read directly (no curl, no retries)."""

    def __init__(self, remote: Remote, start: int, end: Optional[int],
                 validator: Optional[Validator] = None) -> None:
        super().__init__()
        self.label, self.pos = remote.label, start
        path = remote.local
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise TransferFailed("%s: cannot read the local file of the link (%s)"
                                 % (remote.label, e.strerror), "stop", 0, 37) from None
        self.validator = validator or Validator(remote.size)
        size = os.fstat(self.fd).st_size
        resp = Response(200, size, 0, size, None, False)
        try:
            self.validator.check(resp, remote.label)
        except PrepError:
            os.close(self.fd)
            raise
        self.end = size if end is None else min(end, size)
        self.first, self.sent_more, self.done_at = resp, None, None

    @property
    def total(self) -> Optional[int]:
        return self.validator.total

    etag = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        want = min(len(b), self.end - self.pos)
        if want <= 0 or self.fd < 0:
            self.done_at = self.done_at or time.monotonic()
            return 0
        return self._got(os.preadv(self.fd, [memoryview(b)[:want]], self.pos))

    def read1(self, n: int = CHUNK) -> bytes:
        want = min(n, self.end - self.pos)
        if want <= 0 or self.fd < 0:
            self.done_at = self.done_at or time.monotonic()
            return b""
        data = os.pread(self.fd, want, self.pos)
        self._got(len(data))
        return data

    def _got(self, n: int) -> int:
        self.pos += n
        if n == 0:
            raise TransferFailed("%s: the local file of the link ended at byte %d, before its %d bytes"
                                 % (self.label, self.pos, self.end), "stop", 0, 18)
        return n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


def open_range(remote: Remote, start: int, end: Optional[int], policy: Policy,
               validator: Optional[Validator] = None, on_wait: Optional[Callable[[str], None]] = None,
               resume_200: str = SKIP, whole_file: bool = False):
    """A reader of bytes [start, end) of `remote`: LocalReader for a file:// link, else RangeReader."""
    if remote.local is not None:
        return LocalReader(remote, start, end, validator)
    return RangeReader(remote, start, end, policy, validator, on_wait, resume_200, whole_file)


# ----------------------------------------------------------------------------- reading ahead

class Prefetcher:
    """Reads `reader` ahead of its consumer, in a thread of its own and up to AHEAD bytes, so that
    the transfer goes on while the consumer writes (curl's pipe holds little). `head`: bytes
    already taken from the reader, put back in front. The thread is the one that starts curl for
    every attempt after the first, and it lives as long as the transfer."""

    AHEAD = 16 << 20

    def __init__(self, reader, head: bytes = b"") -> None:
        self.reader, self.buf, self.at = reader, head, 0
        self.items: collections.deque = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.stopping = False
        self.received = len(head)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def done_at(self) -> Optional[float]:
        return self.reader.done_at

    @property
    def sent_more(self) -> Optional[str]:
        return self.reader.sent_more

    def _put(self, item) -> None:
        with self.cond:
            while self.queued >= self.AHEAD and not self.stopping:
                self.cond.wait(0.5)
            self.items.append(item)
            self.queued += len(item) if isinstance(item, bytes) else 0
            self.cond.notify_all()

    def _run(self) -> None:
        try:
            while not self.stopping:
                data = self.reader.read1(CHUNK)
                self.received += len(data)
                self._put(data)
                if not data:
                    return
        except BaseException as e:                     # raised in the consumer at its next read
            self._put(e)

    def read(self, n: int, timeout: Optional[float] = None) -> Optional[bytes]:
        """Up to n bytes; b"" at the end; None when nothing came within `timeout` seconds."""
        if self.at >= len(self.buf):
            item = self.chunk(timeout)
            if item is None or not item:
                return item
            self.buf, self.at = item, 0
        out = self.buf[self.at:self.at + n]
        self.at += len(out)
        return out

    def chunk(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next piece as it came; b"" at the end; None when nothing came within `timeout`
        seconds. After a read(), first the rest of the piece it began."""
        if self.at < len(self.buf):
            out, self.at = self.buf[self.at:], len(self.buf)
            return out
        with self.cond:
            if not self.items and not self.cond.wait_for(lambda: self.items, timeout):
                return None
            item = self.items[0]
            if isinstance(item, BaseException):
                raise item                             # (left there: every later read says it)
            if not item:
                return b""                             # the end, for later reads too
            self.items.popleft()
            self.queued -= len(item)
            self.cond.notify_all()
            return item

    def close(self) -> None:
        self.stopping = True
        with self.cond:
            self.cond.notify_all()
        self.reader.close()                            # ends curl: the thread's read returns
        self.thread.join()


@dataclass
class Piece:
    """A window [start, end) of the file, fetched into the file `path` (which holds its first
    `have` bytes); the consumer already has its first `skip` bytes (an interrupted join)."""
    start: int
    end: int
    path: str
    have: int = 0
    skip: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def complete(self) -> bool:
        return self.have >= self.size


class Windows:
    """Bytes over `n` connections, window by window: each connection takes the next piece not yet
    complete, fetches the rest of it into the piece's file, then takes another; at most `ahead`
    pieces past the one being read (None: no bound). read() hands the bytes back in order, the
    current piece's while it grows. A piece the consumer is done with is deleted at once, or, with
    keep, by drop_consumed(): once the consumer has stored its bytes elsewhere (00 writes them to
    NAME.part first). The first failure of any connection stops them all and is raised by read().
    A piece file is written only by the one connection that holds the piece, one attempt at a
    time: the attempt has ended (its curl waited for) before the next one starts."""

    def __init__(self, remote: Remote, pieces: list[Piece], policy: Policy, n: int,
                 validator: Optional[Validator] = None, ahead: Optional[int] = None,
                 on_wait: Optional[Callable[[str], None]] = None, keep: bool = False,
                 folder: Optional[str] = None) -> None:
        self.remote, self.pieces, self.policy, self.folder = remote, pieces, policy, folder
        self.validator = validator or Validator(remote.size)
        self.ahead, self.on_wait, self.keep = ahead, on_wait, keep
        self.cond = threading.Condition()
        self.cur, self.next = 0, 0                   # the piece being read; the next to take
        self.consumed = pieces[0].skip if pieces else 0
        self.rfd = -1
        self.finished: list[Piece] = []              # read through, not yet dropped (keep)
        self.error: Optional[BaseException] = None
        self.stopping = False
        self.readers: set = set()
        self.received = 0
        self.done_at: Optional[float] = time.monotonic() if all(p.complete for p in pieces) else None
        # nothing is handed on, not even bytes of earlier runs' pieces, until the server has sent
        # good bytes: a run against a server gone wrong changes nothing on disk
        self.answered = self.done_at is not None
        self.sent_more = None
        self.held, self.writing = False, 0           # hold(): no piece file is written meanwhile
        self.threads = [threading.Thread(target=self._fetcher, daemon=True)
                        for _ in range(max(1, min(n, len(pieces))))]
        for t in self.threads:
            t.start()

    def _take(self) -> Optional[Piece]:
        with self.cond:
            while not self.stopping and self.next < len(self.pieces) and self.ahead is not None \
                    and self.next - self.cur >= self.ahead:
                self.cond.wait(0.5)
            while self.next < len(self.pieces) and self.pieces[self.next].complete:
                self.next += 1
            if self.stopping or self.next >= len(self.pieces):
                return None
            self.next += 1
            return self.pieces[self.next - 1]

    def _fetcher(self) -> None:
        while True:
            p = self._take()
            if p is None:
                return
            try:
                self._fetch(p)
            except BaseException as e:                 # handed to the consumer
                with self.cond:
                    if self.error is None and not self.stopping:
                        self.error = e
                    self.cond.notify_all()
                self._stop()
                return

    def _fetch(self, p: Piece) -> None:
        fd = os.open(p.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            reader = open_range(self.remote, p.start + p.have, p.end, self.policy, self.validator,
                                self.on_wait, RAISE)
            with self.cond:
                if self.stopping:
                    reader.close()
                    return
                self.readers.add(reader)               # _stop() ends it, even mid-pause
            buf = bytearray(CHUNK)
            try:
                while p.have < p.size and not self.stopping:
                    n = reader.readinto(buf)
                    if not n:
                        break
                    with self.cond:
                        while self.held and not self.stopping:
                            self.cond.wait(0.5)
                        if self.stopping:
                            break
                        self.writing += 1
                    try:
                        write_all(fd, memoryview(buf)[:n])
                    finally:
                        with self.cond:
                            self.writing -= 1
                            p.have += n
                            self.received += n
                            self.answered = True
                            if self.done_at is None and all(q.complete for q in self.pieces):
                                self.done_at = time.monotonic()     # before a reader sees the end
                            self.cond.notify_all()
            finally:
                reader.close()
                with self.cond:
                    self.readers.discard(reader)
            if p.have < p.size and not self.stopping:
                raise PrepError("%s: bytes %d-%d came out short (%d of %d)"
                                % (self.remote.label, p.start, p.end - 1, p.have, p.size))
        finally:
            os.close(fd)
        with self.cond:
            if all(q.complete for q in self.pieces) and self.done_at is None:
                self.done_at = time.monotonic()

    def read(self, n: int, timeout: Optional[float] = None) -> Optional[bytes]:
        """Up to n bytes, in order; b"" at the end; None when nothing came within `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                if self.error is not None:
                    raise self.error
                if self.cur >= len(self.pieces):
                    return b""
                p = self.pieces[self.cur]
                if self.consumed < p.have and self.answered:
                    break
                if p.complete and self.consumed >= p.size and self.answered:
                    self._done_with(p)                 # read through: on to the next piece
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(0.5 if left is None else min(left, 0.5))
            avail = p.have - self.consumed
        if self.rfd < 0:
            self.rfd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(self.rfd, min(n, avail), self.consumed)
        if not data:
            raise PrepError("%s shrank while being read (another program changed it?)" % p.path)
        self.consumed += len(data)
        return data

    def _done_with(self, p: Piece) -> None:
        """(under the lock) The consumer has read piece p through."""
        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1
        self.cur += 1
        self.consumed = self.pieces[self.cur].skip if self.cur < len(self.pieces) else 0
        if self.keep:
            self.finished.append(p)
        else:
            remove_file(p.path)
        self.cond.notify_all()

    def drop_consumed(self) -> None:
        """Delete the files of the pieces read through (keep: once their bytes are stored)."""
        with self.cond:
            done, self.finished = self.finished, []
        for p in done:
            remove_file(p.path)

    def hold(self) -> None:
        """No piece file is written from now until release(): the writes under way end first."""
        with self.cond:
            self.held = True
            while self.writing:
                self.cond.wait(0.1)

    def release(self) -> None:
        with self.cond:
            self.held = False
            self.cond.notify_all()

    def abort(self) -> None:
        """Stop without writing another byte (another run has the file now)."""
        self._stop()

    def _stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
            readers = list(self.readers)
        for reader in readers:
            reader.close()                            # ends its curl and any retry pause

    def close(self) -> None:
        self._stop()
        for t in self.threads:
            t.join(timeout=60)
        if self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1
        if self.folder is not None:
            remove_tree(self.folder)


def spool(remote: Remote, start: int, total: int, policy: Policy, n: int, folder: str,
          validator: Optional[Validator] = None, window: int = 64 << 20) -> Windows:
    """Bytes [start, total) over n connections in windows of `window` bytes, kept in `folder`
    (emptied first; removed on close) while they wait to be read, at most 2n at once."""
    os.makedirs(folder, exist_ok=True)
    for e in os.scandir(folder):                       # windows of an earlier run: fetched again
        remove_file(e.path)
    pieces = [Piece(a, min(a + window, total), os.path.join(folder, "%d-%d" % (a, min(a + window, total))))
              for a in range(start, total, window)]
    return Windows(remote, pieces, policy, n, validator, ahead=2 * n, folder=folder)


def write_all(fd: int, data) -> None:
    """Write every byte of `data` (a buffer, or a list of buffers: one writev) to fd; a write may
    take fewer bytes than given, so it goes on where the last one stopped."""
    views = [memoryview(b).cast("B") for b in (data if isinstance(data, list) else [data])]
    views = [v for v in views if v.nbytes]
    while views:
        done = os.writev(fd, views[:1024])
        while done and views:
            if done >= views[0].nbytes:
                done -= views.pop(0).nbytes
            else:
                views[0], done = views[0][done:], 0


def remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------- asking for the size

@dataclass
class Probe:
    """What the server says of a file before its bytes are asked for: its size (None: not said),
    whether it serves byte ranges (None: not said), its ETag, and, when a ranged GET was answered
    with the whole file, the first bytes of that answer (what a fresh start would bring)."""
    total: Optional[int]
    ranges: Optional[bool]
    etag: Optional[str] = None
    sample: bytes = b""


def probe(remote: Remote, policy: Policy, ranged: bool = False,
          on_wait: Optional[Callable[[str], None]] = None) -> Probe:
    """Ask for the size with a HEAD (a link that allows only GET, or a HEAD that says 0 bytes:
    with a one-byte ranged GET, which `ranged` asks for at once). A web page, a number that is
    none, a permanent failure: raised; other failures retried under the policy."""
    on_wait = on_wait or (lambda text: log.info("%s", text))
    fails, fresh = 0, False
    while True:
        if not ranged:
            attempt, resp = open_attempt(remote, fresh, lambda follow: head_args(policy, follow))
        else:
            attempt, resp = open_attempt(remote, fresh, lambda follow: curl_args(policy, follow)
                                         + ["-r", "0-0"])
        fresh = False
        code = resp.status if resp is not None else 0
        try:
            if resp is not None and code in (200, 206):
                if resp.html:
                    raise WebPage("%s: the link answered with a web page (HTML), not with the file: "
                                  "it has expired, or the site wants you to log in (%s)"
                                  % (remote.label, remote.hint(401)))
                if resp.total is not None and resp.total > MAX_FILE_SIZE:
                    raise BadHeader("%s: the server reports %d bytes, more than 1 PiB: no file is "
                                    "near that; it misreports the size" % (remote.label, resp.total))
                if not ranged:
                    if resp.length == 0:
                        ranged = True                  # "0 bytes" to a HEAD: ask with a GET
                        continue
                    return Probe(resp.length, resp.ranges, resp.etag)
                if code == 206:
                    return Probe(resp.total, True, resp.etag)
                sample = b""
                while len(sample) < HTML_SNIFF:
                    got = attempt.proc.stdout.read1(HTML_SNIFF - len(sample))
                    if not got:
                        break
                    sample += got
                return Probe(resp.length, False, resp.etag, sample)
            if resp is not None and code == 416 and ranged:
                return Probe(None, None)               # an empty file, or a size not said
            if resp is not None and not ranged and 400 <= code < 500 and code not in RETRY_HTTP:
                ranged = True                          # some signed links allow only GET
                continue
        finally:
            attempt.kill()
        rc, msg = attempt.end()
        if resp is not None and not (code >= 400 or 200 <= code < 300):
            code = 502                                 # a final 3xx: not an answer about the file
        fails += 1
        if code in (401, 403) and resp is not None and resp.redirected and remote.refreshable:
            fresh, code = True, 503
        action, wait, why = decide(policy, rc if rc > 0 else 56, code, fails, remote.hint)
        said = msg or ("HTTP %d" % code if code else "curl exit code %d" % rc)
        if action == "stop":
            raise TransferFailed("%s: %s, asking for its size (%s)" % (remote.label, why, said),
                                 action, code, rc)
        if action == "give-up":
            raise TransferFailed("giving up on %s after %d attempts in a row without an answer, asking "
                                 "for its size: %s (%s). Rerun later" % (remote.label, policy.retries,
                                                                        why, said), action, code, rc)
        if resp is not None and resp.retry_after is not None:
            wait = max(wait, min(resp.retry_after, MAX_RETRY_AFTER))
        on_wait("%s: %s; retrying in %ss (%d of %d attempts)" % (remote.label, said, seconds_text(wait),
                                                               fails, policy.retries))
        time.sleep(wait)


def head_args(policy: Policy, follow: bool) -> list[str]:
    """A HEAD request: curl prints the answers' headers on stdout."""
    return (["-L"] if follow else []) + [
        "--connect-timeout", seconds_text(policy.connect_timeout), "--max-time", "300", "-I"]
