"""tests/fakehub.py and tests/fakestorage.py answer as the Hub and its storage do: the gate, the
redirect to a storage that refuses credentials, the tree API, both layouts, and with curl."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

import sourcerelease
from conftest import TESTS
from fakehub import (GOOD_TOKEN, NO_ACCESS_TOKEN, PARQUET_REVISION, REPO, TARGZ_REVISION, FakeHub,
                     git_blob_id)
from fakestorage import Storage, banner, request


BEARER = {"Authorization": "Bearer " + GOOD_TOKEN}


@pytest.fixture(scope="module")
def layouts(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub")
    images = sourcerelease.release_images(release)
    return (sourcerelease.make_hf_targz(release, out / "targz", images=images),
            sourcerelease.make_hf_parquet(release, out / "parquet", images=images))


@pytest.fixture
def hub(layouts, tmp_path):
    with Storage(tmp_path / "storage") as storage, FakeHub(storage) as hub:
        hub.add_revision(layouts[0], TARGZ_REVISION, ("targz",))
        hub.add_revision(layouts[1], PARQUET_REVISION, ("main",))
        yield hub


def test_the_gate(hub):
    url = hub.resolve_url("main", "classes.py")
    for headers, status, code in (({}, 401, "GatedRepo"),
                                  ({"Authorization": "Bearer " + NO_ACCESS_TOKEN}, 403, "GatedRepo"),
                                  ({"Authorization": "Bearer hf_unknown"}, 401, None),
                                  ({"Authorization": "Basic eDp5"}, 401, None)):
        got, h, body = request(url, headers=headers)
        assert (got, h.get("x-error-code")) == (status, code)
        assert json.loads(body)["error"]
    body = request(url, headers={"Authorization": "Bearer " + NO_ACCESS_TOKEN})[2]
    assert "ask for access" in json.loads(body)["error"]
    assert [c.auth for c in hub.get_calls()] == ["none", "bearer", "bearer", "basic", "bearer"]


def test_not_found(hub):
    for url, code in ((hub.resolve_url("nope", "classes.py"), "RevisionNotFound"),
                      (hub.resolve_url("main", "data/nope.parquet"), "EntryNotFound"),
                      (hub.endpoint + "/datasets/ILSVRC/other/resolve/main/x", "RepoNotFound")):
        status, h, _ = request(url, headers=BEARER)
        assert (status, h["x-error-code"]) == (404, code)


def test_small_files_directly_large_ones_through_the_storage(hub, layouts):
    status, h, body = request(hub.resolve_url("main", "classes.py"), headers=BEARER)
    assert status == 200 and body == layouts[1].classes_py.read_bytes()
    assert h["etag"] == '"%s"' % git_blob_id(body) and h["x-repo-commit"] == PARQUET_REVISION
    f = layouts[0].files[0]
    for rev in ("targz", TARGZ_REVISION):
        status, h, _ = request(hub.resolve_url(rev, f.path), "HEAD", BEARER)
        assert status == 302 and h["x-repo-commit"] == TARGZ_REVISION
        assert (h["x-linked-etag"], h["x-linked-size"]) == ('"%s"' % f.sha256, str(f.size))
    link = h["location"]
    assert urlsplit(link).port == hub.storage.port != hub.port
    status, h, body = request(link)
    assert status == 200 and hashlib.sha256(body).hexdigest() == f.sha256 and "etag" in h
    status, h, body = request(link, headers={"Range": "bytes=100-199"})
    assert (status, h["content-range"]) == (206, "bytes 100-199/%d" % f.size)
    assert body == f.local.read_bytes()[100:200]
    assert request(link, headers={"Range": "bytes=%d-" % f.size})[0] == 416
    assert hub.storage.auth_refused == 0
    status, _, body = request(link, headers=BEARER)
    assert status == 400 and b"Only one auth mechanism allowed" in body
    assert hub.storage.auth_refused == 1 and hub.storage.get_calls()[-1].auth == "bearer"
    assert request(link.replace("X-Signature=", "X-Signature=0"))[0] == 403
    assert request(link.replace(f.sha256, layouts[0].files[1].sha256))[0] == 403


def test_the_tree_api_and_paths_info(hub, layouts):
    status, _, body = request(hub.endpoint + "/api/datasets/%s/tree/main/data" % REPO, headers=BEARER)
    tree = json.loads(body)
    assert status == 200 and [e["path"] for e in tree] == sorted(f.path for f in layouts[1].files)
    want = {f.path: (f.size, f.sha256) for f in layouts[1].files}
    assert {e["path"]: (e["size"], e["lfs"]["oid"]) for e in tree} == want
    assert all(e["type"] == "file" and e["lfs"]["size"] == e["size"] for e in tree)
    top = json.loads(request(hub.endpoint + "/api/datasets/%s/tree/%s" % (REPO, TARGZ_REVISION),
                             headers=BEARER)[2])
    assert [(e["type"], e["path"]) for e in top] == [("directory", "data"), ("file", "README.md"),
                                                     ("file", "classes.py")]
    assert "lfs" not in top[2]
    assert request(hub.endpoint + "/api/datasets/%s/tree/main/data" % REPO)[0] == 401
    assert request(hub.endpoint + "/api/datasets/%s/tree/main/nope" % REPO, headers=BEARER)[0] == 404
    paths = [layouts[0].files[0].path, "classes.py", "data/missing.tar.gz"]
    status, _, body = request(hub.endpoint + "/api/datasets/%s/paths-info/targz" % REPO, "POST",
                              dict(BEARER, **{"Content-Type": "application/json"}),
                              json.dumps({"paths": paths}).encode())
    assert status == 200 and [e["path"] for e in json.loads(body)] == paths[:2]
    info = json.loads(request(hub.endpoint + "/api/datasets/%s/revision/main" % REPO, headers=BEARER)[2])
    assert info["sha"] == PARQUET_REVISION and {"rfilename": "classes.py"} in info["siblings"]


def test_rate_limits_and_links_that_expire(hub, layouts):
    hub.rate_limit = 2
    url = hub.resolve_url("main", layouts[1].files[0].path)
    for _ in range(2):
        status, h, _ = request(url, headers=BEARER)
        assert (status, h["retry-after"]) == (429, "1")
    assert request(url, headers=BEARER)[0] == 302
    hub.link_uses = 1
    link = request(url, headers=BEARER)[1]["location"]
    assert request(link)[0] == 200
    status, _, body = request(link)
    assert status == 403 and b"Request has expired" in body
    hub.link_uses, hub.link_ttl = None, 0.2
    link = request(url, headers=BEARER)[1]["location"]
    time.sleep(0.4)
    assert request(link)[0] == 403


def test_curl_follows_the_redirect_and_leaves_the_token_behind(hub, layouts, tmp_path):
    """What the fetch engine does: the token on curl's stdin, -L to the storage on another port;
    curl drops the Authorization header there (the storage would refuse it and count it)."""
    f = layouts[0].files[1]
    out = tmp_path / "file"
    config = 'header = "Authorization: Bearer %s"\n' % GOOD_TOKEN
    r = subprocess.run(["curl", "-sS", "-f", "-L", "-K", "-", "-o", str(out),
                        hub.resolve_url(TARGZ_REVISION, f.path)],
                       input=config, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == f.sha256
    assert hub.storage.auth_refused == 0
    assert [(c.auth, c.status) for c in hub.storage.get_calls()] == [("none", 200)]
    assert [(c.auth, c.status, c.who) for c in hub.get_calls()] == [("bearer", 302, GOOD_TOKEN)]


def test_the_storage_keeps_the_faults_of_the_fault_server(hub, layouts):
    f = layouts[0].files[0]
    hub.storage.set_faults(flip_at=10)
    link = request(hub.resolve_url("targz", f.path), headers=BEARER)[1]["location"]
    body = request(link)[2]
    assert body[10] != f.local.read_bytes()[10] and body[11:] == f.local.read_bytes()[11:]


def test_it_runs_on_its_own(tmp_path):
    proc = subprocess.Popen([sys.executable, str(TESTS / "fakehub.py"), str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = banner(proc).split()[0].split("=", 1)[1]
        status, h, _ = request("%s/datasets/%s/resolve/main/data/test-00000-of-00002.parquet"
                               % (endpoint, REPO), headers=BEARER)
        assert status == 302 and request(h["location"])[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "served 1 requests (1 to the storage, 0 of them refused" in err
    assert os.path.isdir(tmp_path / "hf-targz")
