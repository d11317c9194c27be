#!/usr/bin/env python3
"""A loopback HTTP/1.1 file server with Range support and switchable faults, for 00_download.sh.

Used by tests/test_00_download.py and bench/bench_download.py; also runs on its own:

    python3 tests/httpserver.py DIR [--port 8000] [--rate 20e6] [--cut-after 100000] ...

It serves the files of DIR (flat, by name) on 127.0.0.1 only, answers HEAD and GET with a single
byte range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), 416 past the end, and counts every body byte
it sends. Faults (all off by default; each can be changed while the server runs):

    rate          cap each connection at this many bytes per second (0: no cap)
    cut_after     close the connection after sending this many body bytes (first cut_times GETs)
    cut_times     how many GETs cut_after cuts (the first ones)
    fail_status   answer the first fail_count GETs with this status (e.g. 500, 503)
    fail_count    how many GETs fail_status answers (the first ones)
    stall_after   stop sending for stall_seconds after this many bytes (first stall_times GETs)
    stall_seconds how long a stall_after stall lasts
    stall_times   how many GETs stall_after stalls (the first ones)
    ignore_range  always answer 200 with the whole file, whatever Range asks
    hide_length   no total size anywhere (HEAD without Content-Length, Content-Range a-b/*)
    extra_length  claim the file is this many bytes longer than it is, then close early
    status        answer every request (HEAD and GET) with this status (401, 403, 404)
    no_etag       send no ETag (by default one from the file's mtime and size, and If-Range honoured)
    flip_at       change the byte at this offset of the file in every body that holds it
    head_status   answer every HEAD with this status (e.g. 405: a link that allows only GET)
    head_length   answer HEAD with this Content-Length (e.g. 0), whatever the file's size
    content_length  send this text as the file's Content-Length (HEAD and GET), e.g. a hostile
                  "1000+0*BASH_VERSINFO[$(touch /tmp/x)]"; the body is the file as usual
    redirect      answer a request for NAME with 302 to /r/NAME, which serves NAME (faults included)
    login         a login page instead of the file: "page" (200 text/html), "redirect" (302 to
                  /login, a 200 text/html page), "disguised" (200 HTML labelled octet-stream)
    range_no_end  honour the start of a byte range but not its end: send to the end of the file
    get_200       answer every GET (with or without Range; HEAD is left alone, as with a link that
                  expires between the two) with 200 and: "page" the login page (text/html),
                  "padded-page" the login page padded with spaces to the file's size and labelled
                  application/octet-stream, "other" another file (half the size, octet-stream)
    overrun       GETs only: the file goes on for this many zero bytes past its end (counted in
                  Content-Length and Content-Range; a range's end is not honoured); HEAD tells the
                  real size
    close_random  close the connection at a random point of every answer to a GET (a seeded
                  choice per answer: this seed, the GET's number); with range_no_end, of an
                  answer longer than the range asked for
    need_auth     answer 401 to any request whose Authorization header is not exactly this
    redirect_to   answer a request for NAME with 302 to this base link + NAME (another server)
    refuse_auth   answer 400 to any request that carries an Authorization header (a storage host)
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024
LOGIN_PAGE = (b"<!DOCTYPE html>\n<html><head><title>Log in - ImageNet</title></head>\n<body>"
              b"<form method=\"post\" action=\"/login\"><input name=\"username\">"
              b"<input name=\"password\" type=\"password\"></form></body></html>\n" * 8)
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Request:
    """One request as the server saw it: what was asked and how many body bytes went out."""
    method: str
    name: str
    status: int
    range_header: Optional[str]
    start: int = 0
    sent: int = 0
    auth: bool = False              # an Authorization header came with it


@dataclass
class Faults:
    rate: float = 0.0
    cut_after: int = 0
    cut_times: int = 10 ** 9
    fail_status: int = 0
    fail_count: int = 0
    stall_after: int = -1
    stall_seconds: float = 0.0
    stall_times: int = 10 ** 9
    ignore_range: bool = False
    hide_length: bool = False
    extra_length: int = 0
    status: int = 0
    head_status: int = 0
    head_length: int = -1
    content_length: str = ""
    redirect: bool = False
    login: str = ""
    range_no_end: bool = False
    no_etag: bool = False
    flip_at: int = -1
    get_200: str = ""
    overrun: int = 0
    close_random: int = -1
    need_auth: str = ""
    redirect_to: str = ""
    refuse_auth: bool = False


class FaultServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over a directory with a Faults record and a request log."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, port: int = 0, **faults):
        super().__init__(("127.0.0.1", port), Handler)
        self.root = Path(root)
        self.faults = Faults(**faults)
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.gets = 0
        self.stopping = threading.Event()
        self.thread: Optional[threading.Thread] = None

    # -- helpers for tests ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, name: str) -> str:
        return "http://127.0.0.1:%d/%s" % (self.port, name)

    def bytes_sent(self) -> int:
        with self.lock:
            return sum(r.sent for r in self.requests)

    def get_requests(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "GET"]

    def reset_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def set_faults(self, **faults) -> None:
        with self.lock:
            self.faults = Faults(**faults)
            self.gets = 0

    def start(self) -> "FaultServer":
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        if self.thread:
            self.thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, fmt, *args) -> None:  # quiet: the request log is in server.requests
        pass

    def do_HEAD(self) -> None:
        self.serve(head=True)

    def do_GET(self) -> None:
        self.serve(head=False)

    # -------------------------------------------------------------------------------------------
    def _record(self, req: Request) -> Request:
        with self.server.lock:
            self.server.requests.append(req)
        return req

    def _plain(self, req: Request, status: int, text: str, extra: Optional[dict] = None) -> None:
        body = text.encode()
        req.status = status
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _redirect(self, req: Request, location: str) -> None:
        req.status = 302
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _login_page(self, req: Request, ctype: str = "text/html; charset=utf-8") -> None:
        req.status = 200
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(LOGIN_PAGE)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(LOGIN_PAGE)
            req.sent = len(LOGIN_PAGE)

    def _web_faults(self, req: Request, f: Faults, name: str) -> bool:
        """Login pages and redirects; True when the request was answered."""
        if name == "login":
            self._login_page(req)
        elif f.login == "redirect":
            self._redirect(req, "/login")
        elif f.login in ("page", "disguised"):
            self._login_page(req, "application/octet-stream" if f.login == "disguised"
                             else "text/html; charset=utf-8")
        elif f.redirect and not name.startswith("r/"):
            self._redirect(req, "/r/" + name)
        else:
            return False
        return True

    def serve(self, head: bool) -> None:
        srv = self.server
        name = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        auth = self.headers.get("Authorization")
        req = self._record(Request(self.command, name, 0, rng, auth=auth is not None))
        with srv.lock:
            f = srv.faults
            nth = srv.gets
            if not head:
                srv.gets += 1
        if f.status:
            self._plain(req, f.status, "fault: status %d\n" % f.status)
            return
        if f.refuse_auth and auth is not None:
            self._plain(req, 400, "fault: only one way to authenticate is allowed\n")
            return
        if f.need_auth and auth != f.need_auth:
            self._plain(req, 401, "fault: authorization needed\n")
            return
        if f.redirect_to:
            self._redirect(req, f.redirect_to.rstrip("/") + "/" + name)
            return
        if head and f.head_status:
            self._plain(req, f.head_status, "fault: HEAD status %d\n" % f.head_status)
            return
        if self._web_faults(req, f, name):
            return
        if name.startswith("r/"):  # the target of a redirect
            name = name[2:]
        if not head and nth < f.fail_count:
            self._plain(req, f.fail_status or 503, "fault: temporary failure\n",
                        {"Retry-After": "0"})
            return
        path = srv.root / name
        if "/" in name or not name or not path.is_file():
            self._plain(req, 404, "not found\n")
            return
        st = path.stat()
        real = st.st_size
        if f.get_200 and not head:
            self._get_200(req, f.get_200, real)
            return
        overrun = 0 if head else f.overrun
        claimed = real + f.extra_length + overrun
        start, end = 0, claimed - 1
        partial = False
        etag = None if f.no_etag else '"%x-%x"' % (st.st_mtime_ns, real)
        if_range = self.headers.get("If-Range")
        if rng and if_range and if_range != etag:
            rng = None                      # the file changed since: the whole file, 200
        if rng and not f.ignore_range:
            m = RANGE_RE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._plain(req, 400, "bad range\n")
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), claimed - 1) if m.group(2) else claimed - 1
                if f.range_no_end or overrun:
                    end = claimed - 1
            else:
                start, end = max(0, claimed - int(m.group(2))), claimed - 1
            if start >= real or start > end:
                total = "*" if f.hide_length else str(claimed)
                self._plain(req, 416, "range not satisfiable\n",
                            {"Content-Range": "bytes */%s" % total})
                return
            partial = True
        req.start = start
        length = end - start + 1
        req.status = 206 if partial else 200
        self.send_response(req.status)
        self.send_header("Content-Type", "application/octet-stream")
        if not f.ignore_range:  # a server that ignores Range usually says nothing about it
            self.send_header("Accept-Ranges", "bytes")
        if etag:
            self.send_header("ETag", etag)
        if partial:
            total = "*" if f.hide_length else str(claimed)
            self.send_header("Content-Range", "bytes %d-%d/%s" % (start, end, total))
        if f.content_length:
            self.send_header("Content-Length", f.content_length)
        elif head and f.head_length >= 0:
            self.send_header("Content-Length", str(f.head_length))
        elif not (f.hide_length and head):
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        self._send_body(req, path, start, min(end, real - 1), nth, f)
        if overrun and end >= real and req.sent == real - start:
            self._send_zeros(req, end - max(start, real) + 1)
        if req.sent < length:  # cut, stall or lie: the client must see a short body
            self.close_connection = True

    def _send_body(self, req: Request, path: Path, start: int, last: int, nth: int,
                   f: Faults) -> None:
        srv = self.server
        limit = last - start + 1
        if f.cut_after and nth < f.cut_times:
            limit = min(limit, f.cut_after)
        if f.close_random >= 0:
            limit = random.Random(f.close_random * 1_000_003 + nth).randint(1, limit)
        chunk = CHUNK if not f.rate else max(1024, min(4 * CHUNK, int(f.rate / 50)))
        stalled = not (f.stall_after >= 0 and nth < f.stall_times)
        if start <= f.flip_at <= last:
            self._send_flipped(req, path, start, limit, f.flip_at)
            return
        sock = self.connection.fileno()
        t0 = time.monotonic()
        with open(path, "rb") as fh:
            while req.sent < limit and not srv.stopping.is_set():
                if not stalled and req.sent >= f.stall_after:
                    stalled = True
                    srv.stopping.wait(f.stall_seconds)
                    t0 = time.monotonic() - (req.sent / f.rate if f.rate else 0)
                n = min(chunk, limit - req.sent)
                if not stalled:
                    n = min(n, max(1, f.stall_after - req.sent))
                try:  # zero-copy: the server must not be the bottleneck of a benchmark
                    k = os.sendfile(sock, fh.fileno(), start + req.sent, n)
                except OSError:
                    return
                if k == 0:
                    break
                with srv.lock:
                    req.sent += k
                if f.rate:
                    ahead = req.sent / f.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(min(ahead, 0.5))

    def _get_200(self, req: Request, kind: str, size: int) -> None:
        """A 200 to a GET that is not the file (see get_200); the body is written in full."""
        if kind == "page":
            body, ctype = LOGIN_PAGE, "text/html; charset=utf-8"
        elif kind == "padded-page":
            body, ctype = (LOGIN_PAGE + b" " * size)[:size], "application/octet-stream"
        else:
            body, ctype = bytes(size // 2), "application/octet-stream"
        req.status = 200
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True
            return
        with self.server.lock:
            req.sent += len(body)

    def _send_zeros(self, req: Request, count: int) -> None:
        """`count` zero bytes after the file's last byte (the overrun fault)."""
        try:
            self.wfile.write(bytes(count))
        except OSError:
            return
        with self.server.lock:
            req.sent += count

    def _send_flipped(self, req: Request, path: Path, start: int, limit: int, at: int) -> None:
        """The body with the byte at file offset `at` changed (a damaged transfer)."""
        with open(path, "rb") as fh:
            fh.seek(start)
            data = bytearray(fh.read(limit))
        if at - start < len(data):
            data[at - start] ^= 0x01
        try:
            self.wfile.write(data)
        except OSError:
            return
        with self.server.lock:
            req.sent += len(data)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, TimeoutError):
            self.close_connection = True


CLI_DEFAULTS = {"fail_status": 503}     # on the command line, --fail-count N alone fails with 503


def fault_help() -> dict[str, str]:
    """What each fault does, from the table in the docstring above (the one description)."""
    out: dict[str, str] = {}
    name = None
    for line in __doc__.split("Faults (all off by default", 1)[1].splitlines()[1:]:
        m = re.match(r"    ([a-z_0-9]+)\s+(\S.*)", line) if not line.startswith(" " * 18) else None
        if m:
            name, out[m.group(1)] = m.group(1), m.group(2)
        elif name and line.startswith(" " * 18) and line.strip():
            out[name] += " " + line.strip()
    return {k: v.replace("%", "%%") for k, v in out.items()}


def build_parser() -> argparse.ArgumentParser:
    """Every fault of Faults as an option (--cut-after N, --ignore-range, --login page, ...), each
    with its description from the docstring above."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dir", type=Path, help="folder whose files are served by name")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    helps = fault_help()
    for f in fields(Faults):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", help=helps[f.name])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            default = CLI_DEFAULTS.get(f.name, f.default)
            p.add_argument(flag, type=kind, default=default, help=helps[f.name])
    return p


def main(argv: Optional[list[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    if not a.dir.is_dir():
        print("error: %s is not a folder" % a.dir, file=sys.stderr)
        return 2
    srv = FaultServer(a.dir, a.port, **{f.name: getattr(a, f.name) for f in fields(Faults)})
    print("serving %s on http://127.0.0.1:%d/" % (a.dir, srv.port), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    srv.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        print("served %d requests, %d body bytes" % (len(srv.requests), srv.bytes_sent()),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
