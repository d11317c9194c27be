"""The Hugging Face Hub's side of `--source hf`: the gated dataset ILSVRC/imagenet-1k.

- Which files, and how they are checked (pin): the default revision is the package's tar.gz
  revision, whose files, sizes and SHA-256 ship in hf_release.tsv (facts.hf_release). Another
  revision (--hf-revision REV: a commit hash, a branch or a tag) is turned into the commit the Hub
  names for it (the revision API), and that commit is used for every request of the run; its
  data/ files, sizes and SHA-256 come from the tree API (lfs.oid). A data/ of Parquet files is the
  Parquet layout; tar.gz files the tar.gz layout; anything else is refused by name.
- Each file as a fetch-engine Remote (remote): its resolve() GETs
  {endpoint}/datasets/ILSVRC/imagenet-1k/resolve/{commit}/{path} with the token and follows no
  redirect: the Hub's 302 names a signed storage link (X-Linked-Size and X-Linked-Etag are checked
  against the expected size and SHA-256, X-Repo-Commit against the commit), which the engine
  fetches without the token. A storage link refused later (expired) is asked for again.
- classes.py (the class list 02 reads as data, never runs): answered 200 by the Hub itself; its
  bytes are checked against the git blob id the tree API gives for it at the commit.

The token (credentials.hf_credentials) goes to curl on its standard input only, to the Hub only;
it is never printed, also not in an error. Errors name the dataset, its page, and what to check.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional
from urllib.parse import quote

from . import credentials, facts, webapi
from .console import PrepError, human, log, shown, thousands
from .credentials import Credentials
from .files import atomic_write, parse_json, read_regular
from .sourcenames import hf_data_file
from .transport import MAX_FILE_SIZE, Digest, Policy, Remote, Target, looks_like_html

REPO = facts.HF_REPO
PAGE = "https://huggingface.co/datasets/" + REPO
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
CLASSES = "classes.py"
CLASSES_MAX = 1 << 20               # classes.py is about 40 KiB
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,255}\Z")   # what --hf-revision may be
COMMIT_RE = re.compile(r"[0-9a-f]{40}\Z")
ETAG_SHA256 = re.compile(r'(?:W/)?"?([0-9a-f]{64})"?\Z')
TREE_PAGES = 100                    # pages of a tree listing followed at most
LAYOUTS = {"tar.gz": "tar", "parquet": "parquet"}    # sourcenames' words -> source.json's
PACKAGE, API = "package", "the Hub's API"            # where the sizes and SHA-256 come from


def revision_error(rev: str) -> Optional[str]:
    """Why `rev` cannot be a --hf-revision (None if it can): a commit hash, a branch or a tag."""
    if REVISION_RE.match(rev) and ".." not in rev and not rev.endswith(("/", ".")):
        return None
    return ("--hf-revision takes a commit hash, a branch or a tag of %s (letters, digits and . _ / + "
            "-, at most 256), not '%s'" % (REPO, shown(rev[:60])))


@dataclass(frozen=True)
class Pin:
    """The revision of a run: the commit every request names, the revision as asked, the layout
    ("tar" or "parquet"), where the sizes and SHA-256 come from (PACKAGE or API), and the data/
    files with them."""
    commit: str
    asked: str
    layout: str
    hashes_from: str
    files: tuple[facts.HubFile, ...]

    @property
    def short(self) -> str:
        return self.commit[:8]

    def of(self, split: str) -> list[facts.HubFile]:
        return [f for f in self.files if f.split == split]

    def checked_by(self) -> str:
        """Where the expected size and SHA-256 of its files come from, for messages."""
        if self.hashes_from == PACKAGE:
            return "the package's facts of revision %s (imagenet_prep/hf_release.tsv)" % self.short
        return "the Hub's tree API for revision %s (lfs.oid)" % self.short


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's bytes (what the tree API gives as a small file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def storage_hint(code: int) -> str:
    """What an HTTP error of the storage the Hub redirects to means."""
    if code in (401, 403):
        return "the storage refused the signed link the Hub gave (expired?): rerun, a fresh one is asked"
    if code in (404, 410):
        return "the storage does not have the file the Hub named: rerun later"
    return "rerun later"


class Hub:
    """The Hub at HF_ENDPOINT, with the token found as huggingface_hub finds it (looked for at the
    first request, not before: a run with nothing to fetch needs none)."""

    def __init__(self, policy: Policy, env: Mapping[str, str] = os.environ,
                 on_wait: Optional[Callable[[str], None]] = None) -> None:
        self.policy, self.env, self.on_wait = policy, env, on_wait
        self.endpoint = credentials.hf_endpoint(env)
        self._creds: Optional[Credentials] = None

    # -- the token and the words of a refusal
    def creds(self) -> Credentials:
        if self._creds is None:
            found = credentials.hf_credentials(self.env)
            if found is None:
                places = [name for name, _ in credentials.hf_token_places(self.env)]
                raise PrepError(
                    "no Hugging Face token found (looked at %s). %s is gated: accept its terms on %s "
                    "(logged in), create a token with read access on %s, and set HF_TOKEN to it (or "
                    "run `hf auth login`, which saves it where this script looks)"
                    % (", ".join(places), REPO, PAGE, TOKENS_PAGE))
            self._creds = found
        return self._creds

    def refused(self, reply: webapi.Reply, what: str) -> PrepError:
        """The error for an answer that is not what `what` asked for (401, 403, 404, ...)."""
        code, creds = reply.error_code(), self._creds
        status = "HTTP %d%s" % (reply.status, ", " + code if code else "")
        where = "the token from %s" % creds.source if creds else "the token"
        others = ", ".join(t for t in creds.tried if t != creds.source) if creds else ""
        if reply.status == 401:
            return PrepError(
                "%s: the Hub does not accept %s (%s): it is not a valid token (mistyped, revoked, "
                "expired?). Check it, or create a new one with read access on %s, with the account "
                "that accepted the terms of %s on %s; the token is taken from HF_TOKEN, else "
                "HF_TOKEN_PATH, else $HF_HOME/token%s"
                % (what, where, status, TOKENS_PAGE, REPO, PAGE,
                   " (also looked at: %s)" % others if others else ""))
        if reply.status == 403:
            return PrepError(
                "%s: %s has no access to %s (%s). The dataset is gated: on %s, logged in with the "
                "account the token belongs to, accept its terms; check that the token is of that "
                "account and may read gated repositories (a fine-grained token needs that "
                "permission), then rerun" % (what, where, REPO, status, PAGE))
        if reply.status == 404 and code == "RevisionNotFound":
            return PrepError("%s: %s has no such revision (%s); give --hf-revision a commit hash, a "
                             "branch or a tag of the dataset (see %s/commits/main)"
                             % (what, REPO, status, PAGE))
        if reply.status == 404 and code == "EntryNotFound":
            return PrepError("%s: no such file in %s at that revision (%s); pick another revision "
                             "with --hf-revision" % (what, REPO, status))
        if reply.status == 404:
            return PrepError("%s: the Hub at %s answers %s for %s: check HF_ENDPOINT"
                             % (what, self.endpoint, status, REPO))
        return PrepError("%s: the Hub answered %s, not what was asked; rerun later" % (what, status))

    def get(self, url: str, what: str, body: bool = True, limit: int = webapi.BODY_MAX) -> webapi.Reply:
        """An API call with the token; an answer other than 2xx or 3xx is raised, worded."""
        reply = webapi.call(url, (self.creds().header(),), self.policy, what, self.on_wait, body,
                            limit)
        if not 200 <= reply.status < 400:
            raise self.refused(reply, what)
        return reply

    def api_url(self, kind: str, commit: str, path: str = "") -> str:
        return "%s/api/datasets/%s/%s/%s%s" % (self.endpoint, REPO, kind, quote(commit, safe=""),
                                               "/" + quote(path) if path else "")

    def json(self, url: str, what: str):
        reply = self.get(url, what)
        if reply.status != 200:
            raise PrepError("%s: the Hub answered HTTP %d, not the listing asked for; rerun later"
                            % (what, reply.status))
        try:
            return parse_json(reply.body.decode("utf-8")), reply
        except (UnicodeDecodeError, ValueError):
            raise PrepError("%s: the Hub's answer is not JSON (%s); rerun later, or check HF_ENDPOINT"
                            % (what, human(len(reply.body)))) from None

    # -- which revision, which files
    def pin(self, rev: Optional[str]) -> Pin:
        """The revision of this run: the package's tar.gz revision (rev None, or a name of it), or
        the commit the Hub names for `rev`, with its files."""
        package, files = facts.hf_release()
        if rev is None:
            return Pin(package, package, "tar", PACKAGE, files)
        what = "asking the Hub which commit revision '%s' of %s is" % (rev, REPO)
        doc, reply = self.json(self.api_url("revision", rev), what)
        commit = doc.get("sha") if isinstance(doc, dict) else None
        said = reply.headers.get("x-repo-commit")
        if not (isinstance(commit, str) and COMMIT_RE.match(commit)) or \
                (said is not None and said != commit):
            raise PrepError("%s: the Hub's answer names no commit (a 40-hex-digit sha)%s; rerun "
                            "later, or check HF_ENDPOINT" % (what, ", or two different ones"
                                                             if said and said != commit else ""))
        log.info("hf: revision '%s' of %s is commit %s", rev, REPO, commit)
        if commit == package:
            return Pin(commit, rev, "tar", PACKAGE, files)
        layout, found = self.tree_files(commit)
        return Pin(commit, rev, layout, API, found)

    def tree(self, commit: str, path: str, what: str) -> list[dict]:
        """The entries of folder `path` at `commit` (the tree API, page after page)."""
        url, out = self.api_url("tree", commit, path), []
        prefix = self.api_url("tree", commit)
        for _ in range(TREE_PAGES):
            doc, reply = self.json(url, what)
            if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
                raise PrepError("%s: the Hub's listing is not a list of entries; rerun later" % what)
            out += doc
            url = next_page(reply.headers.get("link", ""), prefix)
            if url is None:
                return out
        raise PrepError("%s: the listing goes on for more than %d pages; refused" % (what, TREE_PAGES))

    def tree_files(self, commit: str) -> tuple[str, tuple[facts.HubFile, ...]]:
        """The layout and the data/ files of `commit`, with their sizes and SHA-256 (lfs.oid)."""
        what = "listing data/ of %s at %s" % (REPO, commit[:8])
        files, layouts = [], set()
        for e in self.tree(commit, "data", what):
            path = e.get("path")
            if not isinstance(path, str):
                raise PrepError("%s: an entry without a path; rerun later" % what)
            if e.get("type") != "file":
                raise PrepError("%s: %s is a %s; data/ holds only files in the layouts this script "
                                "knows: pick another revision with --hf-revision"
                                % (what, shown(path), shown(str(e.get("type")))))
            layout, split = hf_data_file(path)
            if any(f.path == path for f in files):
                raise PrepError("%s: %s is listed twice; refused" % (what, path))
            layouts.add(layout)
            lfs = e.get("lfs")
            size = e.get("size")
            sha = lfs.get("oid") if isinstance(lfs, dict) else None
            if not (type(size) is int and 0 < size <= MAX_FILE_SIZE and isinstance(sha, str)
                    and facts.SHA256_RE.match(sha) and lfs.get("size") == size):
                raise PrepError("%s: %s comes without a usable size and SHA-256 (lfs.oid, lfs.size); "
                                "without them it cannot be checked: pick another revision with "
                                "--hf-revision" % (what, shown(path)))
            files.append(facts.HubFile(split, path, size, sha))
        if not files:
            raise PrepError("%s: data/ holds no files at this revision: pick another with --hf-revision"
                            % what)
        if len(layouts) > 1:
            raise PrepError("%s: data/ holds both tar.gz and Parquet files; this script takes one "
                            "layout at a time: pick another revision with --hf-revision" % what)
        layout = layouts.pop()
        if layout == "parquet":
            complete_shards(files, what)
        return LAYOUTS[layout], tuple(sorted(files, key=lambda f: f.path))

    # -- the files
    def resolve_url(self, commit: str, path: str) -> str:
        return "%s/datasets/%s/resolve/%s/%s" % (self.endpoint, REPO, commit, quote(path))

    def remote(self, pin: Pin, f: facts.HubFile) -> Remote:
        """The file as the fetch engine's Remote: resolved through the Hub, checked as it says."""
        url = self.resolve_url(pin.commit, f.path)
        label = "%s of %s" % (f.path, REPO)
        what = "%s: asking the Hub for %s at %s" % (f.split, f.path, pin.short)

        def resolve() -> Target:
            reply = self.get(url, what, body=False)
            self.check_commit(reply, pin, what)
            if reply.status == 200:                  # served by the Hub itself: with the token
                return Target(url, (self.creds().header(),))
            if reply.location is None:
                raise PrepError("%s: the Hub answered HTTP %d without a usable link to the file; "
                                "rerun later" % (what, reply.status))
            check_linked(reply.headers, f, pin, what)
            return Target(reply.location)

        return Remote(label, resolve=resolve, size=f.size,
                      digest=Digest("sha256", f.sha256, pin.checked_by()), hint=storage_hint)

    def check_commit(self, reply: webapi.Reply, pin: Pin, what: str) -> None:
        said = reply.headers.get("x-repo-commit")
        if said is not None and said != pin.commit:
            raise PrepError("%s: the Hub answered for commit %s, not %s; rerun later"
                            % (what, shown(said[:40]), pin.commit))

    def classes_py(self, pin: Pin, dest: str) -> bool:
        """classes.py of the revision as `dest`, its bytes checked against the git blob id the tree
        API gives at the commit; left alone when it is that already. True if it was written."""
        what = "hf: %s of %s at %s" % (CLASSES, REPO, pin.short)
        entry = next((e for e in self.tree(pin.commit, "", what)
                      if isinstance(e, dict) and e.get("path") == CLASSES), None)
        oid = entry.get("oid") if entry else None
        if entry is None or entry.get("type") != "file" or not (isinstance(oid, str)
                                                              and re.fullmatch(r"[0-9a-f]{40}", oid)):
            raise PrepError("%s: the revision has no %s (or the Hub gives no id for it), the class "
                            "list 01 and 02 read with the images; pick another revision with "
                            "--hf-revision" % (what, CLASSES))
        try:
            if git_blob_id(read_regular(dest, "it is the class list of %s" % REPO,
                                        limit=CLASSES_MAX)) == oid:
                return False
        except (OSError, PrepError):
            pass                                  # none, or not that file: written anew
        reply = self.get(self.resolve_url(pin.commit, CLASSES), what, limit=CLASSES_MAX)
        self.check_commit(reply, pin, what)
        if reply.status != 200:
            raise PrepError("%s: the Hub answered HTTP %d, not the file (it is a small file the Hub "
                            "serves itself); rerun later" % (what, reply.status))
        data = reply.body
        if git_blob_id(data) != oid:
            why = "a web page" if looks_like_html(data) else "%s" % human(len(data))
            raise PrepError("%s: what came (%s) is not the file the revision holds (its git blob id "
                            "differs from the tree API's %s); nothing was written, rerun later"
                            % (what, why, oid))
        atomic_write(dest, data)
        return True


def next_page(link: str, prefix: str) -> Optional[str]:
    """The next page of a listing, from a Link header (rel="next"), only when it is a page of the
    same listing on the same endpoint (the token goes nowhere else)."""
    for part in link.split(","):
        m = re.match(r'\s*<([^<>\s]+)>\s*;\s*rel="?next"?\s*\Z', part)
        if m:
            url = m.group(1)
            if not url.startswith(prefix):
                raise PrepError("the Hub's listing names a next page elsewhere than %s; refused" % prefix)
            return url
    return None


def complete_shards(files: list[facts.HubFile], what: str) -> None:
    """Parquet files are numbered K-of-N: every split's N the same, each K from 0 to N-1 once."""
    by: dict[str, tuple[set, set]] = {}
    for f in files:
        m = re.search(r"-([0-9]{5})-of-([0-9]{5})\.parquet\Z", f.path)
        k, n = int(m.group(1)), int(m.group(2))
        seen, totals = by.setdefault(f.split, (set(), set()))
        seen.add(k)
        totals.add(n)
    for split, (seen, totals) in sorted(by.items()):
        n = max(totals)
        if len(totals) > 1 or seen != set(range(n)):
            raise PrepError("%s: the %s files are not a whole set (%s of %s numbered, or two "
                            "different counts); pick another revision with --hf-revision"
                            % (what, split, thousands(len(seen)), thousands(n)))


def check_linked(headers: dict, f: facts.HubFile, pin: Pin, what: str) -> None:
    """The Hub's word on the file behind its 302 (X-Linked-Size, X-Linked-Etag) must be the
    expected size and SHA-256: else nothing is fetched, and the error names the file and the check."""
    size = headers.get("x-linked-size")
    if size is not None:
        if not re.fullmatch(r"[0-9]{1,18}", size):
            raise PrepError("%s: the Hub sent an X-Linked-Size that is not a number; rerun later" % what)
        if int(size) != f.size:
            raise PrepError(
                "%s: the Hub says %s is %s bytes (X-Linked-Size), but it should be %s bytes (%s): the "
                "Hub serves another file than the one expected. Nothing was fetched; pick another "
                "revision with --hf-revision, or report it" % (what, f.path, thousands(int(size)),
                                                                thousands(f.size), pin.checked_by()))
    etag = ETAG_SHA256.match(headers.get("x-linked-etag", ""))
    if etag and etag.group(1) != f.sha256:
        raise PrepError(
            "%s: the Hub says the SHA-256 of %s is %s (X-Linked-Etag), but it should be %s (%s): the "
            "Hub serves another file than the one expected. Nothing was fetched; pick another revision "
            "with --hf-revision, or report it" % (what, f.path, etag.group(1), f.sha256, pin.checked_by()))
