"""The storage host that the fake Hub and the fake Kaggle API redirect to (tests/fakehub.py,
tests/fakekaggle.py): files by blob name, reached only through signed links, on 127.0.0.1.

It is tests/httpserver.py's FaultServer (ranges: 206, Content-Range, 416; an ETag and If-Range;
every fault of that server: a rate cap per connection, cuts, stalls, a flipped byte, ...) with a
handler in front that does what an object store does:

- a request that carries an Authorization header is refused (400, "Only one auth mechanism
  allowed", as S3 says) and counted in `auth_refused`: a client must drop its credentials on the
  redirect, and a test asserts that none came;
- the link's signature must be one this storage made for that blob (else 403
  SignatureDoesNotMatch), not expired in time (`ttl` seconds) nor in uses (`uses` requests,
  HEAD or GET; else 403 "Request has expired").

Every request is recorded in `calls` (method, path, which auth it carried, Range, status).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpserver


@dataclass
class Call:
    """One request as a fake saw it."""
    method: str
    path: str
    auth: str                     # "none", "bearer", "basic" or "other"
    status: int = 0
    range: Optional[str] = None
    who: Optional[str] = None     # the user or token it was taken for (fakes with accounts)


def request(url: str, method: str = "GET", headers: Optional[dict] = None,
            body: Optional[bytes] = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request; redirects not followed."""
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        c.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def banner(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The first line a fake run by hand prints (its endpoint), waited for at most `timeout`
    seconds: a fake that dies or hangs before it fails the test instead of hanging it."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise AssertionError("the fake printed nothing in %d s (exit code %s)" % (timeout, proc.poll()))
    return line


def auth_kind(header: Optional[str]) -> str:
    if not header:
        return "none"
    scheme = header.split(" ", 1)[0].lower()
    return scheme if scheme in ("bearer", "basic") else "other"


class Loopback(ThreadingHTTPServer):
    """A fake's HTTP server on 127.0.0.1 with a request log (`calls`); started, stopped and used
    as a context manager as tests/httpserver.py's FaultServer is (its very methods)."""

    daemon_threads = True
    allow_reuse_address = True
    port = httpserver.FaultServer.port
    start = httpserver.FaultServer.start
    stop = httpserver.FaultServer.stop
    __enter__ = httpserver.FaultServer.__enter__
    __exit__ = httpserver.FaultServer.__exit__

    def __init__(self, port: int, handler) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.calls: list[Call] = []

    @property
    def endpoint(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def get_calls(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def record(self, call: Call) -> Call:
        with self.lock:
            self.calls.append(call)
        return call


class FakeHandler(BaseHTTPRequestHandler):
    """What the fakes' handlers share: HTTP/1.1, quiet (the log is server.calls), every method
    to _route(), and send() for an answer with a body, whose status goes to the call's record."""

    protocol_version = "HTTP/1.1"
    call: Call

    def log_message(self, fmt, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        raise NotImplementedError

    def send(self, status: int, body: bytes = b"", headers: Optional[dict] = None,
             ctype: str = "application/json") -> None:
        self.call.status = status
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def fake_parser(doc: str, what: str, port: int) -> argparse.ArgumentParser:
    """The options both fakes take when run by hand: where the miniature release goes, the two
    ports, its size, the storage's rate cap."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", type=Path, nargs="?", help="folder for the miniature release (default: "
                   "a temporary one)")
    p.add_argument("--port", type=int, default=port, help="the %s's port on 127.0.0.1 (0: any)" % what)
    p.add_argument("--storage-port", type=int, default=0, help="the storage's port (0: any)")
    p.add_argument("--classes", type=int, default=12, help="classes of the miniature release")
    p.add_argument("--rate", type=float, default=0.0, help="the storage's cap per connection, "
                   "bytes per second (0: none)")
    return p


def serve_until_stopped(api: Loopback, storage: "Storage", banner: str) -> None:
    """A fake run by hand: print `banner` (once SIGTERM is caught: a caller may stop it as soon as
    it reads it), serve until Ctrl-C or SIGTERM, then stop both servers and say what was served."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(banner, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
        storage.stop()
        print("served %d requests (%d to the storage, %d of them refused for an Authorization "
              "header)" % (len(api.calls), len(storage.calls), storage.auth_refused), file=sys.stderr)


@dataclass
class Signed:
    blob: str
    expires: Optional[float]      # time.monotonic() after which it is refused
    uses_left: Optional[int]


class Storage(httpserver.FaultServer):
    """The storage: add() a file, sign() a link to it. Faults: set_faults(...) as FaultServer."""

    def __init__(self, root: Path, port: int = 0, **faults) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        super().__init__(root, port, **faults)
        self.RequestHandlerClass = StorageHandler
        self.links: dict[str, Signed] = {}
        self.calls: list[Call] = []
        self.auth_refused = 0
        self.link_lock = threading.Lock()

    def add(self, source: Union[bytes, Path], name: Optional[str] = None) -> str:
        """Store a file (its bytes or a path, copied) under `name` (default: its SHA-256, as an
        LFS store keeps objects); the blob's name."""
        if isinstance(source, bytes):
            name = name or hashlib.sha256(source).hexdigest()
            (self.root / name).write_bytes(source)
        else:
            if name is None:
                h = hashlib.sha256()
                with open(source, "rb") as f:
                    for part in iter(lambda: f.read(1 << 20), b""):
                        h.update(part)
                name = h.hexdigest()
            shutil.copyfile(source, self.root / name)
        return name

    def sign(self, blob: str, ttl: Optional[float] = None, uses: Optional[int] = None,
             filename: Optional[str] = None) -> str:
        """A signed link to `blob`, valid for `ttl` seconds and `uses` requests (None: no limit)."""
        token = secrets.token_hex(12)
        with self.link_lock:
            self.links[token] = Signed(blob, None if ttl is None else time.monotonic() + ttl, uses)
        query = "X-Signature=%s&X-Expires=%d" % (token, int(time.time() + (ttl or 3600)))
        if filename:
            query += "&response-content-disposition=%s" % quote("attachment; filename=%s" % filename)
        return "http://127.0.0.1:%d/%s?%s" % (self.port, blob, query)

    def get_calls(self) -> list[Call]:
        with self.lock:
            return list(self.calls)


class StorageHandler(httpserver.Handler):
    server: Storage
    served: Optional[httpserver.Request] = None

    def do_GET(self) -> None:
        self._storage(head=False)

    def do_HEAD(self) -> None:
        self._storage(head=True)

    def _reply(self, call: Call, status: int, code: str, message: str) -> None:
        body = json.dumps({"Code": code, "Message": message}).encode()
        call.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _storage(self, head: bool) -> None:
        srv = self.server
        url = urlsplit(self.path)
        name = unquote(url.path).lstrip("/")
        auth = self.headers.get("Authorization")
        call = Call(self.command, name, auth_kind(auth), range=self.headers.get("Range"))
        with srv.lock:
            srv.calls.append(call)
        if auth:
            with srv.lock:
                srv.auth_refused += 1
            self._reply(call, 400, "InvalidArgument", "Only one auth mechanism allowed; only the "
                        "X-Signature query parameter or the Authorization header should be specified")
            return
        token = (parse_qs(url.query).get("X-Signature") or [""])[0]
        with srv.link_lock:
            link = srv.links.get(token)
            if link is None or link.blob != name:
                reason = ("SignatureDoesNotMatch", "The request signature we calculated does not "
                          "match the signature you provided")
            elif (link.expires is not None and time.monotonic() > link.expires) or \
                    (link.uses_left is not None and link.uses_left <= 0):
                reason = ("AccessDenied", "Request has expired")
            else:
                reason = None
                if link.uses_left is not None:
                    link.uses_left -= 1
        if reason:
            self._reply(call, 403, *reason)
            return
        self.served = None
        self.serve(head)
        call.status = self.served.status if self.served is not None else 0

    def _record(self, req: httpserver.Request) -> httpserver.Request:
        self.served = req                       # its status is set as it is answered
        return super()._record(req)
