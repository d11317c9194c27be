"""imagenet_prep.credentials: where the Hub's token and Kaggle's credentials are found, and how
hostile or careless files are treated. Every secret file here is a real file in tmp_path."""
from __future__ import annotations

import base64
import logging
import os

import pytest

from imagenet_prep import credentials as cr
from imagenet_prep.console import PrepError

TOKEN = "hf_abcdefghijklmnopqrstuvwxyz012345"


def secret(path, text, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_hf_token_from_the_variable_first(tmp_path):
    env = {"HOME": str(tmp_path), "HF_TOKEN": TOKEN}
    secret(tmp_path / ".cache" / "huggingface" / "token", "hf_other_token_xxxxxxxx")
    c = cr.hf_credentials(env)
    assert c.header() == "Authorization: Bearer " + TOKEN
    assert c.source == "HF_TOKEN"
    assert TOKEN not in str(c) and TOKEN not in repr(c)


def test_hf_token_path_then_hf_home(tmp_path):
    path = secret(tmp_path / "elsewhere" / "tok", TOKEN + "\n")
    c = cr.hf_credentials({"HOME": str(tmp_path), "HF_TOKEN_PATH": str(path)})
    assert (c.secret, c.source) == (TOKEN, "HF_TOKEN_PATH=%s" % path)
    hf_home = tmp_path / "hfhome"
    secret(hf_home / "token", TOKEN)
    c = cr.hf_credentials({"HOME": str(tmp_path), "HF_HOME": str(hf_home)})
    assert c.source == str(hf_home / "token")
    secret(tmp_path / ".cache" / "huggingface" / "token", TOKEN)
    assert cr.hf_credentials({"HOME": str(tmp_path)}).source.endswith(".cache/huggingface/token")


def test_no_hf_token_anywhere_is_none(tmp_path):
    assert cr.hf_credentials({"HOME": str(tmp_path)}) is None
    assert cr.hf_credentials({"HOME": str(tmp_path), "HF_TOKEN": "  "}) is None


@pytest.mark.parametrize("text", ["two words", "tok\nsecond-line", 'quote"inside"xx', "short"])
def test_a_token_that_could_break_a_header_is_refused_unshown(tmp_path, text):
    with pytest.raises(PrepError) as e:
        cr.hf_credentials({"HOME": str(tmp_path), "HF_TOKEN": text})
    assert "HF_TOKEN" in str(e.value) and text not in str(e.value)


def test_a_fifo_as_token_file_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / ".cache" / "huggingface" / "token"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    with pytest.raises(PrepError, match="not a regular file"):
        cr.hf_credentials({"HOME": str(tmp_path)})


def test_a_huge_token_file_is_not_read(tmp_path):
    path = tmp_path / "tok"
    with open(path, "wb") as f:
        f.truncate(1 << 30)                       # sparse: 1 GiB of nothing
    with pytest.raises(PrepError, match="more than"):
        cr.hf_credentials({"HOME": str(tmp_path), "HF_TOKEN_PATH": str(path)})


def test_kaggle_order_bearer_env_then_token_file_then_basic(tmp_path):
    folder = tmp_path / ".kaggle"
    secret(folder / "kaggle.json", '{"username": "alice", "key": "0123456789abcdef"}')
    env = {"HOME": str(tmp_path)}
    c = cr.kaggle_credentials(env)
    assert c.scheme == "Basic" and c.source == str(folder / "kaggle.json")
    assert base64.b64decode(c.secret) == b"alice:0123456789abcdef"
    c = cr.kaggle_credentials(dict(env, KAGGLE_USERNAME="bob", KAGGLE_KEY="fedcba9876543210"))
    assert c.source == "KAGGLE_USERNAME + KAGGLE_KEY"
    assert base64.b64decode(c.secret) == b"bob:fedcba9876543210"
    secret(folder / "access_token", "KGAT_tokenfromfile0001")
    c = cr.kaggle_credentials(dict(env, KAGGLE_USERNAME="bob", KAGGLE_KEY="fedcba9876543210"))
    assert (c.scheme, c.secret) == ("Bearer", "KGAT_tokenfromfile0001")
    c = cr.kaggle_credentials(dict(env, KAGGLE_API_TOKEN="KGAT_tokenfromenv0001"))
    assert (c.scheme, c.source) == ("Bearer", "KAGGLE_API_TOKEN")
    assert c.tried == ("KAGGLE_API_TOKEN", str(folder / "access_token"),
                       "KAGGLE_USERNAME + KAGGLE_KEY", str(folder / "kaggle.json"))


def test_kaggle_config_dir_is_honoured_and_none_when_empty(tmp_path):
    assert cr.kaggle_credentials({"HOME": str(tmp_path)}) is None
    other = tmp_path / "cfg"
    secret(other / "kaggle.json", '{"username": "carol", "key": "0123456789abcdef"}')
    c = cr.kaggle_credentials({"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(other)})
    assert c.source == str(other / "kaggle.json")


def test_kaggle_json_readable_by_others_warns(tmp_path, caplog):
    secret(tmp_path / ".kaggle" / "kaggle.json", '{"username": "alice", "key": "0123456789abcdef"}',
           mode=0o644)
    with caplog.at_level(logging.WARNING, logger="imagenet_prep"):
        cr.kaggle_credentials({"HOME": str(tmp_path)})
    assert "chmod 600" in caplog.text and "0123456789abcdef" not in caplog.text


@pytest.mark.parametrize("text", ["not json", pytest.param("[" * 4000, id="nested"),
                                  '{"username": "alice"}', '["alice", "key"]',
                                  '{"username": "a b", "key": "0123456789abcdef"}'])
def test_a_damaged_kaggle_json_is_named_and_not_shown(tmp_path, text):
    secret(tmp_path / ".kaggle" / "kaggle.json", text)
    with pytest.raises(PrepError) as e:
        cr.kaggle_credentials({"HOME": str(tmp_path)})
    assert "kaggle.json" in str(e.value) and "0123456789abcdef" not in str(e.value)


def test_only_half_of_the_kaggle_variables_warns_and_looks_further(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="imagenet_prep"):
        assert cr.kaggle_credentials({"HOME": str(tmp_path), "KAGGLE_USERNAME": "alice"}) is None
    assert "both are needed" in caplog.text


@pytest.mark.parametrize("value", ["ftp://example.org", "https://user:pw@example.org",
                                   "https://example.org/?x=1", "https://exa mple.org", "example.org"])
def test_endpoints_are_checked(value):
    with pytest.raises(PrepError, match="HF_ENDPOINT"):
        cr.hf_endpoint({"HF_ENDPOINT": value})
    with pytest.raises(PrepError, match="KAGGLE_API_ENDPOINT"):
        cr.kaggle_endpoint({"KAGGLE_API_ENDPOINT": value})


def test_endpoint_defaults_and_trailing_slash():
    assert cr.hf_endpoint({}) == "https://huggingface.co"
    assert cr.kaggle_endpoint({}) == "https://www.kaggle.com"
    assert cr.hf_endpoint({"HF_ENDPOINT": "http://127.0.0.1:8080/"}) == "http://127.0.0.1:8080"
