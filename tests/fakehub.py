#!/usr/bin/env python3
"""A loopback fake of the Hugging Face Hub for the gated dataset ILSVRC/imagenet-1k.

Used by the tests (started and stopped by a fixture) and the demo; also runs on its own:

    python3 tests/fakehub.py OUT [--port 8000] [--rate 20e6]   # builds a miniature release in OUT

It answers on 127.0.0.1 what the real Hub answers:

    GET|HEAD /datasets/ILSVRC/imagenet-1k/resolve/{rev}/{path}
        needs Authorization: Bearer TOKEN. No token: 401; a token without access: 403 (both with
        a JSON "error" and X-Error-Code: GatedRepo); a token it does not know: 401. An unknown
        revision: 404 RevisionNotFound; an unknown file: 404 EntryNotFound. Large (LFS) files:
        302 to a signed link on the storage (tests/fakestorage.py, another port) with
        X-Linked-Etag (the file's SHA-256, quoted), X-Linked-Size and X-Repo-Commit; small
        files (classes.py, README.md): 200 with the bytes, ETag (git blob id) and X-Repo-Commit.
    GET  /api/datasets/ILSVRC/imagenet-1k/tree/{rev}[/{path}][?recursive=true]
    POST /api/datasets/ILSVRC/imagenet-1k/paths-info/{rev}      ({"paths": [...]}, JSON or form)
        what the folder / the paths hold: {"type", "oid", "size", "path", "lfs": {"oid" (SHA-256),
        "size", "pointerSize"}}; the same token needed
    GET  /api/datasets/ILSVRC/imagenet-1k/revision/{rev}
        {"id", "sha", "siblings": [{"rfilename"}]}

Revisions (add_revision) hold the files of a sourcerelease.HubLayout (tar.gz or Parquet) and are
reachable by their commit hash and by branch names. Faults: rate_limit (the first N requests
answered 429 with Retry-After), and the storage's own (rate, cut, stall, flipped byte, ...).
Every request is recorded in `calls` (method, path, which auth it carried, status).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

from fakestorage import (Call, FakeHandler, Loopback, Storage, auth_kind, fake_parser,
                         serve_until_stopped)

REPO = "ILSVRC/imagenet-1k"
TARGZ_REVISION = "1500f8c59b214ce459c0a593fa1c87993aeb7700"     # the real revisions' hashes
PARQUET_REVISION = "49e2ee26f3810fb5a7536bbf732a7b07389a47b5"
GOOD_TOKEN, NO_ACCESS_TOKEN = "hf_fakeAccessToken0123456789", "hf_fakeNoAccessToken0123456789"
README = b"---\nlicense: other\ntask_categories:\n- image-classification\n---\n# ImageNet (fake)\n"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
            % (sha256, size)).encode()


@dataclass
class HubFile:
    """A file of a revision: LFS (in the storage, by blob) or small (its bytes here)."""
    path: str
    size: int
    sha256: str
    oid: str                          # git blob id (of the LFS pointer for an LFS file)
    blob: Optional[str] = None        # the storage's name for an LFS file
    data: Optional[bytes] = None      # a small file's bytes

    def entry(self) -> dict:
        doc = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.blob is not None:
            doc["lfs"] = {"oid": self.sha256, "size": self.size,
                          "pointerSize": len(lfs_pointer(self.sha256, self.size))}
        return doc


@dataclass
class Revision:
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)

    def folders(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return out


class FakeHub(Loopback):
    """The Hub on 127.0.0.1:port (`endpoint` is what HF_ENDPOINT is set to), its LFS files on
    `storage`. tokens: token -> has access."""

    def __init__(self, storage: Storage, port: int = 0, tokens: Optional[dict[str, bool]] = None,
                 link_ttl: Optional[float] = None, link_uses: Optional[int] = None) -> None:
        super().__init__(port, HubHandler)
        self.storage = storage
        self.tokens = dict(tokens) if tokens is not None else {GOOD_TOKEN: True, NO_ACCESS_TOKEN: False}
        self.revisions: dict[str, Revision] = {}        # commit hash -> revision
        self.branches: dict[str, str] = {}              # branch or tag -> commit hash
        self.rate_limit = 0                             # the next N requests get 429
        self.retry_after = 1
        self.link_ttl, self.link_uses = link_ttl, link_uses

    def resolve_url(self, rev: str, path: str) -> str:
        return "%s/datasets/%s/resolve/%s/%s" % (self.endpoint, REPO, rev, path)

    def add_revision(self, layout, commit: Optional[str] = None, branches: tuple = ()) -> str:
        """A revision holding `layout`'s files (a sourcerelease.HubLayout) under data/, its
        classes.py and a README.md; reachable by `commit` (default: one made from the files)
        and by each of `branches`. Returns the commit hash."""
        rev = Revision("")
        for f in layout.files:
            blob = self.storage.add(Path(f.local), f.sha256)
            rev.files[f.path] = HubFile(f.path, f.size, f.sha256,
                                        git_blob_id(lfs_pointer(f.sha256, f.size)), blob=blob)
        for path, data in (("classes.py", Path(layout.classes_py).read_bytes()), ("README.md", README)):
            rev.files[path] = HubFile(path, len(data), hashlib.sha256(data).hexdigest(),
                                      git_blob_id(data), data=data)
        rev.commit = commit or hashlib.sha1("".join(sorted(
            f.oid for f in rev.files.values())).encode()).hexdigest()
        with self.lock:
            self.revisions[rev.commit] = rev
            for b in branches:
                self.branches[b] = rev.commit
        return rev.commit

    def revision(self, name: str) -> Optional[Revision]:
        with self.lock:
            return self.revisions.get(self.branches.get(name, name))


class HubHandler(FakeHandler):
    server: FakeHub

    # -- answers --------------------------------------------------------------------------------
    def _error(self, status: int, code: Optional[str], message: str, extra: Optional[dict] = None) -> None:
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self.send(status, json.dumps({"error": message}).encode(), headers)

    def _json(self, doc, commit: Optional[str] = None) -> None:
        self.send(200, json.dumps(doc).encode(), {"X-Repo-Commit": commit} if commit else None)

    # -- the routes -----------------------------------------------------------------------------
    def _route(self) -> None:
        srv = self.server
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        auth = self.headers.get("Authorization")
        self.call = srv.record(Call(self.command, unquote(url.path), auth_kind(auth)))
        with srv.lock:
            limited = srv.rate_limit > 0
            if limited:
                srv.rate_limit -= 1
        body = b""
        if self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(n, 1 << 20))
        if limited:
            self._error(429, None, "You have been rate-limited; you can retry this action in about 1 "
                        "second", {"Retry-After": str(srv.retry_after)})
            return
        repo = "/".join(parts[1:3]) if len(parts) > 2 else ""
        if parts[:1] == ["datasets"] and len(parts) >= 5 and parts[3] == "resolve":
            kind, rev, rest = "resolve", parts[4], "/".join(parts[5:])
        elif parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] in ("tree", "paths-info",
                                                                                   "revision"):
            repo = "/".join(parts[2:4])
            kind, rev, rest = parts[4], parts[5], "/".join(parts[6:])
        else:
            self._error(404, None, "Sorry, we can't find the page you are looking for.")
            return
        if repo != REPO:
            self._error(404, "RepoNotFound", "Repository Not Found for url: %s." % url.path)
            return
        if not self._authorized(auth):
            return
        revision = srv.revision(rev)
        if revision is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: %s" % rev)
            return
        if kind == "resolve" and self.command in ("GET", "HEAD"):
            self._resolve(revision, rest)
        elif kind == "tree" and self.command == "GET":
            self._tree(revision, rest, parse_qs(url.query).get("recursive") == ["true"])
        elif kind == "paths-info" and self.command == "POST":
            self._paths_info(revision, body)
        elif kind == "revision" and self.command == "GET":
            self._json({"id": REPO, "sha": revision.commit, "private": False, "gated": "manual",
                        "siblings": [{"rfilename": p} for p in sorted(revision.files)]}, revision.commit)
        else:
            self._error(405, None, "Method not allowed")

    def _authorized(self, auth: Optional[str]) -> bool:
        srv = self.server
        page = "https://huggingface.co/datasets/%s" % REPO
        if not auth:
            self._error(401, "GatedRepo", "Access to dataset %s is restricted. You must have access to "
                        "it and be authenticated to access it. Please log in." % REPO)
            return False
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        access = srv.tokens.get(token) if token else None
        self.call.who = token if access is not None else None
        if access is None:
            self._error(401, None, "Invalid credentials in Authorization header")
            return False
        if not access:
            self._error(403, "GatedRepo", "Access to dataset %s is restricted and you are not in the "
                        "authorized list. Visit %s to ask for access." % (REPO, page))
            return False
        return True

    def _resolve(self, rev: Revision, path: str) -> None:
        f = rev.files.get(path)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found")
            return
        if f.blob is None:
            self.send(200, f.data, {"ETag": '"%s"' % f.oid, "X-Repo-Commit": rev.commit,
                                     "Accept-Ranges": "bytes"}, "text/plain; charset=utf-8")
            return
        link = self.server.storage.sign(f.blob, self.server.link_ttl, self.server.link_uses,
                                        path.rsplit("/", 1)[-1])
        self.send(302, ("Found. Redirecting to %s" % link).encode(), {
            "Location": link, "ETag": '"%s"' % f.sha256, "X-Linked-Etag": '"%s"' % f.sha256,
            "X-Linked-Size": str(f.size), "X-Repo-Commit": rev.commit}, "text/plain; charset=utf-8")

    def _tree(self, rev: Revision, path: str, recursive: bool) -> None:
        path = path.strip("/")
        folders = rev.folders()
        if path and path not in folders:
            self._error(404, "EntryNotFound", "%s does not exist on \"%s\"" % (path, rev.commit))
            return
        prefix = path + "/" if path else ""
        out = []
        for d in sorted(folders):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix):]):
                out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                            "path": d})
        for p, f in sorted(rev.files.items()):
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):]):
                out.append(f.entry())
        self._json(out)

    def _paths_info(self, rev: Revision, body: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/json"):
                paths = json.loads(body or b"{}").get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
        except (ValueError, AttributeError):
            self._error(400, None, "Invalid request body")
            return
        folders = rev.folders()
        out = []
        for p in paths if isinstance(paths, list) else []:
            if p in rev.files:
                out.append(rev.files[p].entry())
            elif p in folders:
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0,
                            "path": p})
        self._json(out)


# ----------------------------------------------------------------------------- on its own

def build_parser() -> argparse.ArgumentParser:
    p = fake_parser(__doc__, "Hub", 8000)
    p.add_argument("--prefix", default="", help="a folder in front of the tar.gz members")
    p.add_argument("--rate-limit", type=int, default=0, help="answer the first N requests 429")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    import minirelease
    import sourcerelease
    a = build_parser().parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="fakehub-"))
    rel = minirelease.make_release(out / "release", classes=a.classes)
    images = sourcerelease.release_images(rel)
    targz = sourcerelease.make_hf_targz(rel, out / "hf-targz", prefix=a.prefix, images=images)
    parquet = sourcerelease.make_hf_parquet(rel, out / "hf-parquet", images=images)
    storage = Storage(out / "storage", a.storage_port, rate=a.rate).start()
    hub = FakeHub(storage, a.port)
    hub.rate_limit = a.rate_limit
    hub.add_revision(targz, TARGZ_REVISION, ("targz",))
    hub.add_revision(parquet, PARQUET_REVISION, ("main",))
    hub.start()
    serve_until_stopped(hub, storage, "HF_ENDPOINT=%s  HF_TOKEN=%s (no access: %s)\nrevisions: %s "
                        "(tar.gz), %s = main (Parquet); storage on port %d"
                        % (hub.endpoint, GOOD_TOKEN, NO_ACCESS_TOKEN, TARGZ_REVISION, PARQUET_REVISION,
                           storage.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
