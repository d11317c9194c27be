"""tests/fakekaggle.py answers as the Kaggle API does: Basic and Bearer credentials, the rules, the
quota, a signed link that expires, and a storage that refuses credentials; also with curl."""
from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

import sourcerelease
from conftest import TESTS
from fakekaggle import KEY, RULES, TOKEN, USER, FakeKaggle
from fakestorage import Storage, banner, request
from imagenet_prep.tarstream import Source
from imagenet_prep.zipread import ZipDirectory


def basic(user: str, key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, key)).encode()).decode()}


@pytest.fixture(scope="module")
def kaggle_zip(release, tmp_path_factory):
    return sourcerelease.make_kaggle_zip(release, tmp_path_factory.mktemp("kaggle"))


@pytest.fixture
def api(kaggle_zip, tmp_path):
    with Storage(tmp_path / "storage") as storage, FakeKaggle(storage) as api:
        api.set_zip(kaggle_zip.file.local)
        yield api


def test_credentials_and_rules(api):
    url = api.download_url
    cases = [({}, 401), (basic(USER, "wrong"), 401), (basic("nobody", KEY), 401),
             ({"Authorization": "Basic !!!"}, 401), ({"Authorization": "Bearer KGAT_wrong"}, 401),
             (basic("no-rules", KEY), 403), (basic(USER, KEY), 302),
             ({"Authorization": "Bearer " + TOKEN}, 302)]
    for headers, want in cases:
        status, h, body = request(url, headers=headers)
        assert status == want, headers
        if status == 403:
            assert "You must accept this competition's rules" in json.loads(body)["message"]
    assert [(c.auth, c.who) for c in api.get_calls()][-3:] == [("basic", "no-rules"), ("basic", USER),
                                                               ("bearer", USER)]
    other = api.endpoint + "/api/v1/competitions/data/download-all/other"
    assert request(other, headers=basic(USER, KEY))[0] == 404
    assert RULES.endswith("/imagenet-object-localization-challenge/rules")


def test_the_link_gives_the_zip_with_ranges_and_refuses_credentials(api, kaggle_zip):
    link = request(api.download_url, headers=basic(USER, KEY))[1]["location"]
    assert urlsplit(link).port == api.storage.port != api.port
    data = kaggle_zip.file.local.read_bytes()
    status, h, body = request(link)
    assert status == 200 and body == data
    # what a streaming reader does: the end records and directory first, then the members
    size = len(data)
    d = ZipDirectory(size, lambda a, b: request(link, headers={"Range": "bytes=%d-%d" % (a, b - 1)})[2],
                     "k.zip")
    assert len(d) == len(kaggle_zip.names)
    assert request(link, headers=basic(USER, KEY))[0] == 400 and api.storage.auth_refused == 1
    assert all(c.auth == "none" for c in api.storage.get_calls()[:-1])
    names = [m.name for m in d.members(Source(open(kaggle_zip.file.local, "rb")))]
    assert sorted(names) == sorted(kaggle_zip.names)


def test_the_quota_and_links_that_expire(api):
    api.quota = 2
    for _ in range(2):
        status, h, _ = request(api.download_url, headers=basic(USER, KEY))
        assert (status, h["retry-after"]) == (429, "1")
    api.link_uses = 2
    link = request(api.download_url, headers=basic(USER, KEY))[1]["location"]
    assert request(link, "HEAD")[0] == 200 and request(link, headers={"Range": "bytes=0-9"})[0] == 206
    status, _, body = request(link)
    assert status == 403 and b"Request has expired" in body
    api.link_uses, api.link_ttl = None, 0.2
    link = request(api.download_url, headers={"Authorization": "Bearer " + TOKEN})[1]["location"]
    assert request(link, headers={"Range": "bytes=0-9"})[0] == 206
    time.sleep(0.4)
    assert request(link)[0] == 403
    fresh = request(api.download_url, headers=basic(USER, KEY))[1]["location"]
    assert fresh != link and request(fresh, headers={"Range": "bytes=0-9"})[0] == 206


def test_curl_with_the_key_on_stdin_sends_it_to_the_api_only(api, kaggle_zip, tmp_path):
    out = tmp_path / "k.zip"
    r = subprocess.run(["curl", "-sS", "-f", "-L", "-K", "-", "-o", str(out), api.download_url],
                       input='user = "%s:%s"\n' % (USER, KEY), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == kaggle_zip.file.sha256
    assert [(c.auth, c.status) for c in api.get_calls()] == [("basic", 302)]
    assert [(c.auth, c.status) for c in api.storage.get_calls()] == [("none", 200)]


def test_it_runs_on_its_own(tmp_path):
    proc = subprocess.Popen([sys.executable, str(TESTS / "fakekaggle.py"), str(tmp_path), "--port", "0",
                             "--shape", "nested", "--quota", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = banner(proc).split()[0].split("=", 1)[1]
        url = endpoint + "/api/v1/competitions/data/download-all/imagenet-object-localization-challenge"
        assert request(url, headers=basic(USER, KEY))[0] == 429
        status, h, _ = request(url, headers=basic(USER, KEY))
        assert status == 302 and request(h["location"], "HEAD")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "served 2 requests (1 to the storage" in err
