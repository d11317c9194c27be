"""Credentials and endpoints of the Hugging Face Hub and of Kaggle, found as their own tools find them.

Hugging Face (huggingface_hub's conventions): a token in $HF_TOKEN, else in the file $HF_TOKEN_PATH,
else in $HF_HOME/token (HF_HOME defaults to ~/.cache/huggingface; `hf auth login` writes it there);
sent as `Authorization: Bearer TOKEN`. Endpoint $HF_ENDPOINT (default https://huggingface.co).

Kaggle (the Kaggle tools' conventions): an API token (KGAT_...) in $KAGGLE_API_TOKEN or the file
$KAGGLE_CONFIG_DIR/access_token, sent as a Bearer token; else a username and key from
$KAGGLE_USERNAME + $KAGGLE_KEY, else from $KAGGLE_CONFIG_DIR/kaggle.json ({"username": ..., "key":
...}), sent as HTTP Basic. KAGGLE_CONFIG_DIR defaults to ~/.kaggle. Endpoint $KAGGLE_API_ENDPOINT
(default https://www.kaggle.com).

A secret is never printed, logged or put on a command line: a Credentials object names where it
came from (`source`) and what else was looked at (`tried`), and gives the header line only to the
fetch engine, which hands it to curl on its standard input. Files are read only if they are regular
files of a few KiB; a file that others may read gets a warning, as the Kaggle tools give.
"""
from __future__ import annotations

import base64
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .console import PrepError, log
from .files import parse_json, read_regular_text

SECRET_MAX = 4096                               # bytes of a token file or kaggle.json read at most
TOKEN_RE = re.compile(r"[A-Za-z0-9_.~+/=-]{8,1024}\Z")   # what a token may hold: no space, no quote
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
ENDPOINT_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?\Z")

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
KAGGLE_DEFAULT_ENDPOINT = "https://www.kaggle.com"


@dataclass(frozen=True)
class Credentials:
    """An Authorization header's value (never shown), where it came from, and what was looked at."""
    scheme: str                                  # "Bearer" or "Basic"
    secret: str = field(repr=False)              # the token, or base64(username:key)
    source: str                                  # e.g. "HF_TOKEN", "/home/me/.kaggle/kaggle.json"
    tried: tuple[str, ...] = ()

    def header(self) -> str:
        """The request header line, for curl's standard input only."""
        return "Authorization: %s %s" % (self.scheme, self.secret)

    def __str__(self) -> str:
        return "%s credentials from %s" % (self.scheme, self.source)


def home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def endpoint(env: Mapping[str, str], name: str, default: str) -> str:
    """$NAME, checked to be a plain http(s) address (no user, query or space), without a final /."""
    value = env.get(name) or default
    if not ENDPOINT_RE.match(value):
        raise PrepError("%s in the environment is not an http(s) address such as %s (no spaces, "
                        "user names or query strings); fix it, or unset it to use that default"
                        % (name, default))
    return value.rstrip("/")


def warn_if_readable(path: str, what: str) -> None:
    """A secret file that the group or others may read: a warning, as the Kaggle tools give."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_IMODE(mode) & 0o077:
        log.warning("warning: %s (%s) can be read by other users of this machine; make it yours "
                    "alone: chmod 600 %s", path, what, path)


def read_secret_file(path: str, what: str) -> Optional[str]:
    """The text of a secret file, stripped; None if there is no such file. Read only if it is a
    regular file of at most SECRET_MAX bytes (anything else is a PrepError naming it)."""
    if not os.path.lexists(path):
        return None
    text = read_regular_text(path, "it should hold %s; fix or remove it" % what, limit=SECRET_MAX,
                             follow=True)
    warn_if_readable(path, what)
    return text.strip()


def checked_token(text: str, where: str) -> str:
    if not TOKEN_RE.match(text):
        raise PrepError("%s does not hold a usable token (one line of letters, digits and -_.~+/=, "
                        "8 to 1024 characters; it is not shown); put the token there again"
                        % where)
    return text


# ----------------------------------------------------------------------------- Hugging Face

def hf_endpoint(env: Mapping[str, str] = os.environ) -> str:
    return endpoint(env, "HF_ENDPOINT", HF_DEFAULT_ENDPOINT)


def hf_token_places(env: Mapping[str, str]) -> list[tuple[str, Optional[str]]]:
    """Where a Hub token is looked for, in order: (description, file or None for the variable)."""
    places: list[tuple[str, Optional[str]]] = [("HF_TOKEN", None)]
    if env.get("HF_TOKEN_PATH"):
        places.append(("HF_TOKEN_PATH=%s" % env["HF_TOKEN_PATH"], env["HF_TOKEN_PATH"]))
    hf_home = env.get("HF_HOME") or os.path.join(home(env), ".cache", "huggingface")
    places.append((os.path.join(hf_home, "token"), os.path.join(hf_home, "token")))
    return places


def hf_credentials(env: Mapping[str, str] = os.environ) -> Optional[Credentials]:
    """The Hub token as a Bearer credential, or None when there is none anywhere."""
    places = hf_token_places(env)
    tried = tuple(name for name, _ in places)
    for name, path in places:
        text = env.get("HF_TOKEN", "").strip() if path is None else read_secret_file(path, "a token")
        if text:
            return Credentials("Bearer", checked_token(text, name), name, tried)
    return None


# ----------------------------------------------------------------------------- Kaggle

def kaggle_endpoint(env: Mapping[str, str] = os.environ) -> str:
    return endpoint(env, "KAGGLE_API_ENDPOINT", KAGGLE_DEFAULT_ENDPOINT)


def kaggle_config_dir(env: Mapping[str, str]) -> str:
    return env.get("KAGGLE_CONFIG_DIR") or os.path.join(home(env), ".kaggle")


def basic(username: str, key: str, where: str) -> str:
    if not USERNAME_RE.match(username):
        raise PrepError("%s: the username is not a Kaggle username (letters, digits, - _ .); fix it"
                        % where)
    checked_token(key, where + " (the key)")
    return base64.b64encode(("%s:%s" % (username, key)).encode()).decode()


def read_kaggle_json(path: str) -> Optional[tuple[str, str]]:
    text = read_secret_file(path, "your Kaggle username and key")
    if text is None:
        return None
    try:
        doc = parse_json(text)
    except ValueError:
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("username"), str)
            and isinstance(doc.get("key"), str)):
        raise PrepError('%s is not a kaggle.json ({"username": "...", "key": "..."}, as kaggle.com '
                        "gives it under Settings > API); download it again" % path)
    return doc["username"], doc["key"]


def kaggle_credentials(env: Mapping[str, str] = os.environ) -> Optional[Credentials]:
    """The first credentials found, in the order of the module's docstring; None if none."""
    folder = kaggle_config_dir(env)
    token_file, json_file = os.path.join(folder, "access_token"), os.path.join(folder, "kaggle.json")
    tried = ("KAGGLE_API_TOKEN", token_file, "KAGGLE_USERNAME + KAGGLE_KEY", json_file)
    token = env.get("KAGGLE_API_TOKEN", "").strip()
    if token:
        return Credentials("Bearer", checked_token(token, "KAGGLE_API_TOKEN"), "KAGGLE_API_TOKEN",
                           tried)
    token = read_secret_file(token_file, "a Kaggle API token")
    if token:
        return Credentials("Bearer", checked_token(token, token_file), token_file, tried)
    user, key = env.get("KAGGLE_USERNAME", "").strip(), env.get("KAGGLE_KEY", "").strip()
    if user and key:
        return Credentials("Basic", basic(user, key, "KAGGLE_USERNAME + KAGGLE_KEY"),
                           "KAGGLE_USERNAME + KAGGLE_KEY", tried)
    if user or key:
        log.warning("warning: only one of KAGGLE_USERNAME and KAGGLE_KEY is set; both are needed "
                    "(looking further)")
    pair = read_kaggle_json(json_file)
    if pair:
        return Credentials("Basic", basic(pair[0], pair[1], json_file), json_file, tried)
    return None
