"""Calls to a web API (the Hugging Face Hub's, Kaggle's), through the fetch engine's curl.

A call is one GET whose answer is small and read whole (a JSON listing, a 302 to a signed storage
link, classes.py). Like every transfer of the package it goes through transport.Attempt: the link
and the request headers (the credentials) reach curl on its standard input only. A redirect is
never followed here: the caller decides where the Location leads, and no credential is ever sent
to the host it names. 429, 408, 425, 5xx and broken connections are retried under the engine's
policy (the pause doubling, or what Retry-After asks, up to an hour); any other answer is handed
back for the caller to word: 401, 403 and 404 mean different things to each API.
"""
from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urljoin

from .console import PrepError, log
from .transport import (MAX_RETRY_AFTER, RETRY_HTTP, Attempt, BadHeader, Policy, Target, decide,
                        seconds_text)

BODY_MAX = 8 << 20          # the longest answer read (a tree listing of a few hundred files is ~100 KiB)
CALL_SECONDS = 120          # an API call's longest time (curl --max-time)
ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,59}\Z")    # an X-Error-Code as the Hub sends them
STOPPING = threading.Event()      # set by a stop signal: a pause before another attempt ends at once
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_pauses_on_signals() -> None:
    """From now on, Ctrl-C, SIGTERM and SIGHUP also end the pause of a call waiting in another
    thread (a fetch-engine thread asking an API for a fresh link, told to wait by a 429): the
    handler already set runs as before, in the main thread."""
    for sig in STOP_SIGNALS:
        old = signal.getsignal(sig)
        if callable(old) and not getattr(old, "sets_stopping", False):
            def handler(signum, frame, old=old):
                STOPPING.set()
                old(signum, frame)
            handler.sets_stopping = True           # type: ignore[attr-defined]
            signal.signal(sig, handler)


@dataclass
class Reply:
    """An API's answer: its status, headers (lower-case names), body (b"" unless asked for), and
    for a 3xx the absolute http(s) link it names (None if it names none usable)."""
    status: int
    headers: dict
    body: bytes = b""
    location: Optional[str] = None

    def error_code(self) -> str:
        """X-Error-Code (the Hub's GatedRepo, RevisionNotFound, ...) when it is a plain word, else
        "" (a server's text is never printed unchecked)."""
        code = self.headers.get("x-error-code", "")
        return code if ERROR_CODE.match(code) else ""


def call_args(policy: Policy) -> list[str]:
    return ["--connect-timeout", seconds_text(policy.connect_timeout), "--max-time",
            str(CALL_SECONDS), "-D", "-"]


def call(url: str, headers: tuple[str, ...], policy: Policy, what: str,
         on_wait: Optional[Callable[[str], None]] = None, body: bool = True,
         limit: int = BODY_MAX) -> Reply:
    """GET `url` with `headers` (never shown; `what` names the call in messages: "asking the Hub
    for revision main"); the first answer that is not to be retried. `body`: read the body of a
    2xx answer (at most `limit` bytes, else a PrepError), else end the transfer after the headers.
    Attempts without an answer (or answered 429, 408, 425, 5xx) are retried under the policy; when
    they are used up, a PrepError says so."""
    on_wait = on_wait or (lambda text: log.info("%s", text))
    fails = 0
    while True:
        if STOPPING.is_set():
            raise PrepError("%s: stopped" % what)
        attempt = Attempt(Target(url, headers), call_args(policy))
        data = b""
        try:
            resp = attempt.headers(stop_at_redirect=True)
            if resp is not None and body and 200 <= resp.status < 300:
                data = attempt.proc.stdout.read(limit + 1)
                if len(data) > limit:
                    raise PrepError("%s: the answer is longer than %d bytes, more than any such "
                                    "answer is; a broken or hostile server?" % (what, limit))
        except BadHeader as e:
            attempt.kill()
            attempt.end()
            raise PrepError("%s: the server %s" % (what, e)) from None
        except BaseException:
            attempt.kill()
            attempt.end()
            raise
        read = resp is not None and body and 200 <= resp.status < 300
        if not read:
            attempt.kill()                           # (a body read to its end: curl ends itself)
        rc, msg = attempt.end()
        code = resp.status if resp is not None else 0
        if resp is not None and code not in RETRY_HTTP and not 500 <= code <= 599 \
                and not (read and rc != 0):          # a body cut short is asked for again
            location = None
            if 300 <= code < 400 and resp.location:
                location = urljoin(url, resp.location)
                if not location.startswith(("http://", "https://")):
                    location = None
            return Reply(code, resp.headers, data, location)
        fails += 1
        if resp is None and rc <= 0:
            rc = 56                                  # ended without a word: a broken connection
        action, wait, why = decide(policy, rc, code, fails)
        said = msg or ("HTTP %d" % code if code else "curl exit code %d" % rc)
        if action == "stop":
            raise PrepError("%s: %s (%s)" % (what, why, said))
        if action == "give-up":
            raise PrepError("%s: no answer after %d attempts in a row: %s (%s). Rerun later"
                            % (what, policy.retries, why, said))
        if resp is not None and resp.retry_after is not None:
            wait = max(wait, min(resp.retry_after, MAX_RETRY_AFTER))
        on_wait("%s: %s; retrying in %ss (%d of %d attempts)" % (what, said, seconds_text(wait),
                                                               fails, policy.retries))
        STOPPING.wait(wait)
