"""Kaggle's side of `--source kaggle`: the competition imagenet-object-localization-challenge.

Its data is one zip, imagenet-object-localization-challenge.zip (over 150 GiB), behind
GET {endpoint}/api/v1/competitions/data/download-all/imagenet-object-localization-challenge, which
answers with a 302 to a signed storage link that expires. So the zip is a fetch-engine Remote whose
resolve() asks the API for a fresh link at the first request of every run, and again whenever the
storage refuses the link (401/403: expired); the link is fetched without credentials, with byte
ranges (resume). Kaggle publishes no checksum of the zip: what 00 can check is its size, as the
storage link gives it, and that every byte came; 01_unzip.sh checks the CRC-32 of every member.

The credentials (credentials.kaggle_credentials: an API token as Bearer, else username and key as
HTTP Basic) go to curl on its standard input only, to the API only, and are never printed.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Optional

from . import credentials, webapi
from .console import PrepError
from .credentials import Credentials
from .facts import KAGGLE_COMPETITION, KAGGLE_ZIP
from .transport import Policy, Remote, Target

ZIP = KAGGLE_ZIP
PAGE = "https://www.kaggle.com/competitions/" + KAGGLE_COMPETITION
RULES = PAGE + "/rules"
SETTINGS_PAGE = "https://www.kaggle.com/settings"
NO_CHECKSUM = ("Kaggle publishes no checksum of the zip: its size (as the storage link gives it) "
               "and that every byte came are checked here, and 01_unzip.sh checks the CRC-32 of "
               "every member")


def storage_hint(code: int) -> str:
    """What an HTTP error of the storage Kaggle's API redirects to means."""
    if code in (401, 403):
        return "the storage refused the signed link (expired?): rerun, a fresh one is asked of Kaggle"
    return "rerun later"


class Kaggle:
    """Kaggle's API at KAGGLE_API_ENDPOINT, with the credentials found as the Kaggle tools find
    them (looked for at the first request)."""

    def __init__(self, policy: Policy, env: Mapping[str, str] = os.environ,
                 on_wait: Optional[Callable[[str], None]] = None) -> None:
        self.policy, self.env, self.on_wait = policy, env, on_wait
        self.endpoint = credentials.kaggle_endpoint(env)
        self.url = "%s/api/v1/competitions/data/download-all/%s" % (self.endpoint, KAGGLE_COMPETITION)
        self._creds: Optional[Credentials] = None

    def creds(self) -> Credentials:
        if self._creds is None:
            found = credentials.kaggle_credentials(self.env)
            if found is None:
                raise PrepError(
                    "no Kaggle credentials found (looked at KAGGLE_API_TOKEN, %s/access_token, "
                    "KAGGLE_USERNAME + KAGGLE_KEY, %s/kaggle.json). %s" % (
                        credentials.kaggle_config_dir(self.env), credentials.kaggle_config_dir(self.env),
                        self.how_to_set()))
            self._creds = found
        return self._creds

    def how_to_set(self) -> str:
        return ("Create an API token on %s (API, Create New Token) and put the kaggle.json it gives "
                "in %s (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN); "
                "accept the competition's rules on %s too"
                % (SETTINGS_PAGE, credentials.kaggle_config_dir(self.env), RULES))

    def refused(self, reply: webapi.Reply, what: str) -> PrepError:
        creds = self.creds()
        if reply.status == 401:
            return PrepError(
                "%s: Kaggle does not accept the %s (HTTP 401): wrong, revoked or expired? Tried, in "
                "this order: %s (the first one found is used). %s"
                % (what, creds, ", ".join(creds.tried), self.how_to_set()))
        if reply.status == 403:
            return PrepError(
                "%s: Kaggle refuses the download (HTTP 403) to the account of the %s: accept this "
                "competition's rules on %s (logged in with that account), then rerun"
                % (what, creds, RULES))
        if reply.status == 404:
            return PrepError("%s: Kaggle answers HTTP 404 (no such competition data); check "
                             "KAGGLE_API_ENDPOINT (now %s) and %s" % (what, self.endpoint, PAGE))
        return PrepError("%s: Kaggle answered HTTP %d, not a link to the zip; rerun later"
                         % (what, reply.status))

    def resolve(self) -> Target:
        """A fresh link to the zip (the API's 302), for the engine to fetch without credentials."""
        what = "kaggle: asking Kaggle for a link to %s" % ZIP
        reply = webapi.call(self.url, (self.creds().header(),), self.policy, what, self.on_wait,
                            body=False)
        if not 200 <= reply.status < 400:
            raise self.refused(reply, what)
        if reply.status == 200:                      # served by the API itself: with credentials
            return Target(self.url, (self.creds().header(),))
        if reply.location is None:
            raise PrepError("%s: Kaggle answered HTTP %d without a usable link; rerun later"
                            % (what, reply.status))
        return Target(reply.location)

    def remote(self) -> Remote:
        return Remote("%s from Kaggle" % ZIP, resolve=self.resolve, hint=storage_hint)
