"""imagenet_prep/transport.py, the one fetch engine, on its own: real curl against loopback servers.

What 00_download.sh and 01_unzip.sh --stream rely on is tested through them; here what the next
sources need: request headers that go to the first host only (a Hub's or Kaggle's API), the
redirect to a storage host followed without them, a fresh signed link asked for when the storage
host refuses an expired one, and a credential never on a command line.
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from httpserver import FaultServer
from imagenet_prep import transport
from imagenet_prep.console import PrepError

TOKEN = "hf_s3cr3tT0KEN"
POLICY = transport.Policy(speed_limit=1000, speed_time=2, connect_timeout=3, retry_delay=0.05,
                          retry_delay_max=0.2, retries=4)


@pytest.fixture
def blob(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    p = src / "data.bin"
    p.write_bytes(random.Random(3).randbytes(1_500_000))
    return p


@pytest.fixture
def servers(blob):
    """An API host that wants the token and answers 302 to a storage host that refuses it."""
    storage = FaultServer(blob.parent, refuse_auth=True).start()
    api = FaultServer(blob.parent, need_auth="Bearer " + TOKEN,
                      redirect_to="http://127.0.0.1:%d/" % storage.port).start()
    yield api, storage
    api.stop()
    storage.stop()


def remote_of(api: FaultServer, blob: Path, calls: list) -> transport.Remote:
    def resolve() -> transport.Target:
        calls.append(time.monotonic())
        return transport.Target(api.url(blob.name), ("Authorization: Bearer " + TOKEN,))
    return transport.Remote("data.bin from the API", resolve=resolve, size=blob.stat().st_size)


def read_all(reader) -> bytes:
    out = bytearray()
    while True:
        data = reader.read(1 << 20)
        if not data:
            return bytes(out)
        out += data


def command_lines() -> list[bytes]:
    out = []
    for proc in Path("/proc").iterdir():
        try:
            out.append((proc / "cmdline").read_bytes())
        except OSError:
            pass
    return out


def test_headers_go_to_the_first_host_only(blob, servers):
    api, storage = servers
    storage.set_faults(refuse_auth=True, rate=1_000_000)
    calls: list = []
    reader = transport.RangeReader(remote_of(api, blob, calls), 0, None, POLICY)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(c for c in command_lines() if c.startswith(b"curl\0"))
            time.sleep(0.02)
    t = threading.Thread(target=watch)
    t.start()
    try:
        data = read_all(reader)
    finally:
        stop.set()
        t.join()
        reader.close()
    assert data == blob.read_bytes()
    assert seen and not any(TOKEN.encode() in c for c in seen)      # never on a command line
    assert [r.auth for r in api.requests] == [True]
    assert storage.requests and not any(r.auth for r in storage.requests)
    assert len(calls) == 1


def test_a_ranged_resume_goes_through_the_api_again(blob, servers):
    """Each attempt asks the API (with the token) and the storage host (without) for the rest."""
    api, storage = servers
    storage.set_faults(refuse_auth=True, cut_after=400_000, cut_times=2)
    reader = transport.RangeReader(remote_of(api, blob, []), 0, None, POLICY,
                                   on_wait=lambda text: None)
    try:
        assert read_all(reader) == blob.read_bytes()
    finally:
        reader.close()
    assert [g.start for g in storage.get_requests()] == [0, 400_000, 800_000]
    assert all(r.auth for r in api.requests) and not any(r.auth for r in storage.requests)


def test_an_expired_signed_link_is_asked_for_again(blob, servers):
    """The storage host refuses the link (403: it expired): a fresh one is asked of the API."""
    api, storage = servers
    storage.set_faults(refuse_auth=True, fail_status=403, fail_count=1)
    calls: list = []
    reader = transport.RangeReader(remote_of(api, blob, calls), 0, None, POLICY,
                                   on_wait=lambda text: None)
    try:
        assert read_all(reader) == blob.read_bytes()
    finally:
        reader.close()
    assert len(calls) == 2
    assert [g.status for g in storage.get_requests()] == [403, 206]


def test_a_refused_token_is_a_permanent_failure_with_the_sources_words(blob, servers):
    api, _ = servers
    remote = transport.Remote("data.bin from the API", hint=lambda code: "accept the terms first",
                              resolve=lambda: transport.Target(api.url(blob.name),
                                                               ("Authorization: Bearer wrong",)))
    reader = transport.RangeReader(remote, 0, None, POLICY)
    with pytest.raises(transport.TransferFailed, match="HTTP 401: accept the terms first") as e:
        reader.read(10)
    reader.close()
    assert e.value.action == "stop" and TOKEN not in str(e.value)


def test_windows_in_piece_files_read_back_in_order(tmp_path, blob):
    """Four connections, windows in piece files, a server that sends past each window's end and
    closes at random points: each piece holds exactly its bytes, the reader gets the file."""
    srv = FaultServer(blob.parent, range_no_end=True, close_random=7, rate=3_000_000).start()
    try:
        remote = transport.Remote("data.bin", url=srv.url(blob.name))
        size = blob.stat().st_size
        pieces = [transport.Piece(a, min(a + 200_000, size), str(tmp_path / ("p.%d" % a)))
                  for a in range(0, size, 200_000)]
        w = transport.Windows(remote, pieces, POLICY, 4, on_wait=lambda text: None, keep=True)
        try:
            assert read_all(w) == blob.read_bytes()
            assert all(Path(p.path).stat().st_size == p.size for p in pieces)
            w.drop_consumed()
            assert not any(Path(p.path).exists() for p in pieces)
        finally:
            w.close()
    finally:
        srv.stop()


def test_a_window_the_server_answers_with_the_whole_file_stops_all(tmp_path, blob):
    srv = FaultServer(blob.parent, ignore_range=True).start()
    try:
        remote = transport.Remote("data.bin", url=srv.url(blob.name))
        pieces = [transport.Piece(a, a + 500_000, str(tmp_path / ("p.%d" % a)))
                  for a in (0, 500_000, 1_000_000)]
        w = transport.Windows(remote, pieces, POLICY, 3)
        with pytest.raises(transport.IgnoredRange, match="ignores byte ranges"):
            read_all(w)
        w.close()
        assert not any(Path(p.path).exists() and Path(p.path).stat().st_size for p in pieces[1:])
    finally:
        srv.stop()


@pytest.mark.parametrize("text", ["1000+0*BASH_VERSINFO[$(touch x)]", "12 34", "-5", "0x10", "1" * 19])
def test_numbers_from_a_server_are_checked(text):
    with pytest.raises(PrepError, match="Content-Length that is not a number"):
        transport.parse_response(["HTTP/1.1 200 OK", "Content-Length: " + text])


def test_a_content_range_that_does_not_add_up_is_refused():
    with pytest.raises(PrepError, match="does not add up"):
        transport.parse_response(["HTTP/1.1 206 Partial", "Content-Range: bytes 10-5/100"])
    with pytest.raises(PrepError, match="does not add up"):
        transport.parse_response(["HTTP/1.1 206 Partial", "Content-Range: bytes 0-99/100",
                                  "Content-Length: 50"])
    r = transport.parse_response(["HTTP/1.1 206 Partial", "Content-Range: bytes 5-9/*",
                                  "ETag: \"x y\"", "Retry-After: 7"])
    assert (r.start, r.total, r.etag, r.retry_after) == (5, None, None, 7)   # an ETag with a space


def test_a_link_or_header_with_a_control_character_never_reaches_curl():
    with pytest.raises(PrepError, match="control character"):
        transport.start_curl(transport.Target("http://127.0.0.1:9/x\nurl = http://evil/"), [])
    with pytest.raises(PrepError, match="control character"):
        transport.start_curl(transport.Target("http://127.0.0.1:9/x", ("A: b\r\nC: d",)), [])
