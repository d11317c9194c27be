#!/usr/bin/env python3
"""A loopback fake of the Kaggle API for the competition imagenet-object-localization-challenge.

Used by the tests (started and stopped by a fixture) and the demo; also runs on its own:

    python3 tests/fakekaggle.py OUT [--port 8001] [--shape nested]   # a miniature release in OUT

It answers on 127.0.0.1 what the real API answers:

    GET|HEAD /api/v1/competitions/data/download-all/imagenet-object-localization-challenge
        with HTTP Basic (username:key) or Authorization: Bearer (an API token). No or bad
        credentials: 401; a user who has not accepted the competition's rules: 403 "You must
        accept this competition's rules before you'll be able to download files."; the first
        `quota` requests: 429 with Retry-After; else 302 to a signed link on the storage
        (tests/fakestorage.py, another port) that expires after `link_ttl` seconds or
        `link_uses` requests, so that a resume must ask the API for a fresh one.

Every request is recorded in `calls` (method, path, which auth it carried, the user, status).
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from fakestorage import Call, Storage, auth_kind

COMPETITION = "imagenet-object-localization-challenge"
DOWNLOAD_PATH = "/api/v1/competitions/data/download-all/" + COMPETITION
ZIP_NAME = COMPETITION + ".zip"
USER, KEY = "imagenet-fan", "0123456789abcdef0123456789abcdef"
TOKEN = "KGAT_fake0123456789abcdef"
RULES = "https://www.kaggle.com/competitions/%s/rules" % COMPETITION


class FakeKaggle(ThreadingHTTPServer):
    """The API on 127.0.0.1:port. users: name -> key; tokens: token -> user; accepted: the users
    who accepted the rules."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, storage: Storage, port: int = 0, users: Optional[dict[str, str]] = None,
                 tokens: Optional[dict[str, str]] = None, accepted: Optional[set[str]] = None,
                 link_ttl: Optional[float] = None, link_uses: Optional[int] = None) -> None:
        super().__init__(("127.0.0.1", port), KaggleHandler)
        self.storage = storage
        self.users = dict(users) if users is not None else {USER: KEY, "no-rules": KEY}
        self.tokens = dict(tokens) if tokens is not None else {TOKEN: USER}
        self.accepted = set(accepted) if accepted is not None else {USER}
        self.link_ttl, self.link_uses = link_ttl, link_uses
        self.blob: Optional[str] = None
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.quota = 0                     # the next N download requests get 429
        self.retry_after = 1
        self.thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def endpoint(self) -> str:
        """What KAGGLE_API_ENDPOINT is set to."""
        return "http://127.0.0.1:%d" % self.port

    @property
    def download_url(self) -> str:
        return self.endpoint + DOWNLOAD_PATH

    def set_zip(self, path: Path) -> str:
        """Serve the zip at `path` (copied to the storage); its blob name."""
        self.blob = self.storage.add(Path(path))
        return self.blob

    def get_calls(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def start(self) -> "FakeKaggle":
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self.thread:
            self.thread.join(timeout=5)

    def __enter__(self) -> "FakeKaggle":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class KaggleHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeKaggle

    def log_message(self, fmt, *args) -> None:     # quiet: the log is server.calls
        pass

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _send(self, status: int, doc: Optional[dict], headers: Optional[dict] = None) -> None:
        body = json.dumps(doc).encode() if doc is not None else b""
        self.call.status = status
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _user(self, auth: Optional[str]) -> Optional[str]:
        """The user the credentials are of, or None."""
        srv = self.server
        if not auth:
            return None
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return srv.tokens.get(value.strip())
        if scheme.lower() == "basic":
            try:
                user, _, key = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return user if user in srv.users and srv.users[user] == key else None
        return None

    def _route(self) -> None:
        srv = self.server
        path = unquote(urlsplit(self.path).path)
        auth = self.headers.get("Authorization")
        self.call = Call(self.command, path, auth_kind(auth))
        with srv.lock:
            srv.calls.append(self.call)
        if path != DOWNLOAD_PATH:
            self._send(404, {"code": 404, "message": "Not found"})
            return
        user = self._user(auth)
        self.call.who = user
        if user is None:
            self._send(401, {"code": 401, "message": "Unauthenticated"},
                       {"WWW-Authenticate": 'Basic realm="kaggle"'})
            return
        if user not in srv.accepted:
            self._send(403, {"code": 403, "message": "You must accept this competition's rules before "
                             "you'll be able to download files."})
            return
        with srv.lock:
            limited = srv.quota > 0
            if limited:
                srv.quota -= 1
        if limited:
            self._send(429, {"code": 429, "message": "Too many requests"},
                       {"Retry-After": str(srv.retry_after)})
            return
        if srv.blob is None:
            self._send(404, {"code": 404, "message": "Competition data not found"})
            return
        link = srv.storage.sign(srv.blob, srv.link_ttl, srv.link_uses, ZIP_NAME)
        self._send(302, None, {"Location": link})


# ----------------------------------------------------------------------------- on its own

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out", type=Path, nargs="?", help="folder for the miniature release (default: "
                   "a temporary one)")
    p.add_argument("--port", type=int, default=8001, help="the API's port on 127.0.0.1 (0: any)")
    p.add_argument("--storage-port", type=int, default=0, help="the storage's port (0: any)")
    p.add_argument("--classes", type=int, default=12, help="classes of the miniature release")
    p.add_argument("--shape", choices=("inline", "nested"), default="inline",
                   help="the tree in the zip, or in the tar.gz inside it")
    p.add_argument("--zip64", action="store_true", help="Zip64 extra fields in every local header")
    p.add_argument("--rate", type=float, default=0.0, help="the storage's cap per connection, "
                   "bytes per second (0: none)")
    p.add_argument("--quota", type=int, default=0, help="answer the first N downloads 429")
    p.add_argument("--link-ttl", type=float, help="signed links expire after this many seconds")
    p.add_argument("--link-uses", type=int, help="signed links expire after this many requests")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    import minirelease
    import sourcerelease
    a = build_parser().parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="fakekaggle-"))
    rel = minirelease.make_release(out / "release", classes=a.classes)
    z = sourcerelease.make_kaggle_zip(rel, out / "kaggle", a.shape, a.zip64)
    storage = Storage(out / "storage", a.storage_port, rate=a.rate).start()
    api = FakeKaggle(storage, a.port, link_ttl=a.link_ttl, link_uses=a.link_uses)
    api.quota = a.quota
    api.set_zip(z.file.local)
    api.start()
    print("KAGGLE_API_ENDPOINT=%s  KAGGLE_USERNAME=%s KAGGLE_KEY=%s (or KAGGLE_API_TOKEN=%s)\n"
          "zip: %d bytes, %s shape; storage on port %d" % (api.endpoint, USER, KEY, TOKEN, z.file.size,
                                                           a.shape, storage.port), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
