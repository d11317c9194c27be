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
import sys
import tempfile
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from fakestorage import (Call, FakeHandler, Loopback, Storage, auth_kind, fake_parser,
                         serve_until_stopped)

COMPETITION = "imagenet-object-localization-challenge"
DOWNLOAD_PATH = "/api/v1/competitions/data/download-all/" + COMPETITION
ZIP_NAME = COMPETITION + ".zip"
USER, KEY = "imagenet-fan", "0123456789abcdef0123456789abcdef"
TOKEN = "KGAT_fake0123456789abcdef"
RULES = "https://www.kaggle.com/competitions/%s/rules" % COMPETITION


class FakeKaggle(Loopback):
    """The API on 127.0.0.1:port (`endpoint` is what KAGGLE_API_ENDPOINT is set to). users: name
    -> key; tokens: token -> user; accepted: the users who accepted the rules."""

    def __init__(self, storage: Storage, port: int = 0, users: Optional[dict[str, str]] = None,
                 tokens: Optional[dict[str, str]] = None, accepted: Optional[set[str]] = None,
                 link_ttl: Optional[float] = None, link_uses: Optional[int] = None) -> None:
        super().__init__(port, KaggleHandler)
        self.storage = storage
        self.users = dict(users) if users is not None else {USER: KEY, "no-rules": KEY}
        self.tokens = dict(tokens) if tokens is not None else {TOKEN: USER}
        self.accepted = set(accepted) if accepted is not None else {USER}
        self.link_ttl, self.link_uses = link_ttl, link_uses
        self.blob: Optional[str] = None
        self.quota = 0                     # the next N download requests get 429
        self.retry_after = 1

    @property
    def download_url(self) -> str:
        return self.endpoint + DOWNLOAD_PATH

    def set_zip(self, path: Path) -> str:
        """Serve the zip at `path` (copied to the storage); its blob name."""
        self.blob = self.storage.add(Path(path))
        return self.blob


class KaggleHandler(FakeHandler):
    server: FakeKaggle

    def _send(self, status: int, doc: Optional[dict], headers: Optional[dict] = None) -> None:
        self.send(status, json.dumps(doc).encode() if doc is not None else b"", headers)

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
        self.call = srv.record(Call(self.command, path, auth_kind(auth)))
        if path != DOWNLOAD_PATH or self.command == "POST":
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
    p = fake_parser(__doc__, "API", 8001)
    p.add_argument("--shape", choices=("inline", "nested"), default="inline",
                   help="the tree in the zip, or in the tar.gz inside it")
    p.add_argument("--zip64", action="store_true", help="Zip64 extra fields in every local header")
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
    serve_until_stopped(api, storage, "KAGGLE_API_ENDPOINT=%s  KAGGLE_USERNAME=%s KAGGLE_KEY=%s (or "
                        "KAGGLE_API_TOKEN=%s)\nzip: %d bytes, %s shape; storage on port %d"
                        % (api.endpoint, USER, KEY, TOKEN, z.file.size, a.shape, storage.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
