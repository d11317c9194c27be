"""The user's links: urls.sh, read (never run) so that no mistake in it can run a command or print
a link. Used by 00_download.sh and by 01_unzip.sh --stream.

urls.sh may hold NAME=value lines (the value in "..." or '...', or a word without spaces),
``export NAME=...``, comments and blank lines; DOWNLOAD_URL_<s>, MD5_<s> and SIZE_<s> for
s = train, val, test, devkit_t12. A setting already in the environment wins over the file.
Anything else stops the run with the line number and the variable's name, never the value: a
link may carry a token. A UTF-8 byte order mark before the first line is ignored; a space in a
file:// link is refused with a note to write it as %20. The file is looked for as --urls FILE,
else $IMAGENET_URLS, else ./urls.sh, else urls.sh in the repository folder (the one that holds
this package).

00_download.sh reads the links through ``python3 -m imagenet_prep.urls`` (see main); this is the
only parser of urls.sh.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Mapping, Optional

from . import facts
from .console import PrepError, log
from .transport import MAX_FILE_SIZE, Digest, Remote

ASSIGN = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z")
EXPORT_ONLY = re.compile(r"\s*export(\s+[A-Za-z_][A-Za-z0-9_]*)+\s*(#.*)?\Z")
BLANK = re.compile(r"\s*(#.*)?\Z")
SPACED = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s+=")
DOUBLE = re.compile(r'"((?:[^"\\]|\\.)*)"(.*)\Z')
SINGLE = re.compile(r"'([^']*)'(.*)\Z")
UNQUOTED_BAD = set("\"'`$;|<>()\\")
MD5_RE = re.compile(r"[0-9a-fA-F]{32}\Z")
FILE_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}\Z")   # the archive's name, as a link ends in it
SIZE_RE = re.compile(r"[0-9]+\Z|[0-9]{1,3}(,[0-9]{3})+\Z|[0-9]{1,3}(_[0-9]{3})+\Z")
MAX_DIGITS = 40                  # longest digit string read as a size (anything near is > 1 PiB)
ENVIRONMENT = "the environment"  # where a setting came from, when not from a file
TYPOGRAPHIC_QUOTES = "\u201c\u201d\u201e\u2018\u2019\u00ab\u00bb"    # curly and angle quotes
BOM = "\ufeff"                   # the UTF-8 byte order mark some Windows editors put first


def parse_size(text: str) -> Optional[int]:
    """A size in bytes as urls.sh may give it: digits, or digits grouped in threes by , or _
    (3,000,000); leading zeros are fine. None if not (or absurdly long); the caller refuses
    sizes over 1 PiB (transport.MAX_FILE_SIZE)."""
    if not SIZE_RE.match(text):
        return None
    digits = text.replace(",", "").replace("_", "").lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_DIGITS else None


def setting_names() -> list[str]:
    suffixes = dict.fromkeys(a.suffix for a in facts.archives())
    return [p + s for s in suffixes for p in ("DOWNLOAD_URL_", "MD5_", "SIZE_")]


def parse_value(name: str, text: str) -> tuple[str, str]:
    """What follows 'NAME=': (value, rest of the line); PrepError-free, ValueError says why."""
    if text.startswith('"'):
        m = DOUBLE.match(text)
        if not m:
            raise ValueError('the " after %s= is not closed on the same line' % name)
        out, q = [], m.group(1)
        i = 0
        while i < len(q):
            c = q[i]
            if c == "\\" and i + 1 < len(q):
                out.append(q[i + 1] if q[i + 1] in '"\\$`' else q[i:i + 2])
                i += 2
                continue
            if c in "$`":
                raise ValueError("%s has a $ or ` inside double quotes; the file is read, not run, so "
                                 "nothing is expanded: write the value out in full (or inside '...')"
                                 % name)
            out.append(c)
            i += 1
        return "".join(out), m.group(2)
    if text.startswith("'"):
        m = SINGLE.match(text)
        if not m:
            raise ValueError("the ' after %s= is not closed on the same line" % name)
        return m.group(1), m.group(2)
    if text == "" or text[0].isspace():
        if not BLANK.match(text):
            raise ValueError("a space after %s=: bash would run the rest of the line as a command. "
                             'Write %s="..." with no space after the =' % (name, name))
        return "", ""
    value = re.split(r"\s", text, maxsplit=1)[0]
    if value[:1] in TYPOGRAPHIC_QUOTES:
        raise ValueError("%s starts with a typographic quote (%s), as word processors and some web "
                         'pages write them: use plain quotes, %s="https://..."'
                         % (name, value[0], name))
    if "&" in value:
        raise ValueError('%s has an & outside quotes: a link with & in it must be quoted, '
                         '%s="https://..."' % (name, name))
    if set(value) & UNQUOTED_BAD:
        raise ValueError("%s has a quote, $, ;, |, <, >, ( ) or \\ outside quotes: put the whole value "
                         "in double quotes" % name)
    return value, text[len(value):]


def parse_line(line: str) -> Optional[tuple[str, str]]:
    """One line: (name, value), None for a blank, comment or bare export line; ValueError says
    what is wrong, naming the variable and never showing the value."""
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in line):
        raise ValueError("a control character (such as a carriage return) inside the line; save the "
                         "file as plain text")
    if BLANK.match(line) or EXPORT_ONLY.match(line):
        return None
    m = ASSIGN.match(line)
    if not m:
        spaced = SPACED.match(line)
        if spaced:
            raise ValueError('spaces around the = after %s; write %s="..." with no space on either side'
                             % (spaced.group(1), spaced.group(1)))
        if "://" in line:
            raise ValueError('a link that is not assigned to a variable; write DOWNLOAD_URL_<split>="..."'
                             " (see urls.sh.example)")
        raise ValueError('not a NAME="value" line. The file is read, not run: it may hold only such '
                         "lines, comments and blank lines (see urls.sh.example)")
    name = m.group(1)
    value, tail = parse_value(name, m.group(2))
    if tail and not re.match(r"\s+(#.*)?\Z", tail):
        raise ValueError('something after the value of %s on the same line: one NAME="value" per line '
                         "(a comment after a space and #)" % name)
    return name, value


def read_file(path: str, env: Mapping[str, str], prog: Optional[str] = None) -> dict[str, str]:
    """The settings of urls file `path`, under the environment's (which win). `prog` names the
    script in the warning about a name that is not a setting."""
    known = set(setting_names())
    out: dict[str, str] = {}
    crlf = False
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except OSError as e:
        raise PrepError("cannot read %s (%s); check its permissions" % (path, e.strerror)) from None
    lines = text.removeprefix(BOM).split("\n")  # an editor's UTF-8 byte order mark is not a line
    for n, line in enumerate(lines, start=1):
        if line.endswith("\r"):
            line, crlf = line[:-1], True
        try:
            parsed = parse_line(line)
        except ValueError as e:
            raise PrepError("%s, line %d: %s" % (path, n, e)) from None
        if parsed is None:
            continue
        name, value = parsed
        if name not in known:
            log.warning("warning: %s, line %d: %s is not a setting%s (ignored); the settings are "
                        "DOWNLOAD_URL_<s>, MD5_<s> and SIZE_<s> for s = train, val, test, devkit_t12",
                        path, n, name, " of " + prog if prog else "")
            continue
        out[name] = value
    if crlf:
        log.info("note: %s has Windows line endings (CR LF); read without the CRs (to convert it: "
                 "sed -i 's/\\r$//' %s)", path, path)
    out.update({k: env[k] for k in known if env.get(k)})
    return out


def find_file(urls_arg: Optional[str], env: Mapping[str, str], here: str) -> Optional[str]:
    """--urls FILE, else $IMAGENET_URLS, else ./urls.sh, else urls.sh in the repository folder."""
    for given, what in ((urls_arg, "--urls %s"), (env.get("IMAGENET_URLS"), "IMAGENET_URLS=%s")):
        if given:
            if not os.path.isfile(given):
                raise PrepError("%s: no such file; copy urls.sh.example to it and fill in your links"
                                % (what % given))
            return given
    for candidate in ("urls.sh", os.path.join(here, "urls.sh")):
        if os.path.isfile(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class Link:
    """A split's link and what its archive must be."""
    split: str
    url: str                      # never printed: it may carry a token
    name: str                     # the archive's file name: the last part of the link's path
    host: str                     # host[:port], or "local file"
    md5: Optional[str]            # expected MD5 (lower case), None if unknown
    md5_from: str                 # where the MD5 comes from, for messages
    size: Optional[int]           # expected size, None if unknown
    size_from: str
    urls_from: str                # the urls file, or "the environment" when there is none
    variable: str                 # DOWNLOAD_URL_<suffix>
    url_from: str = ""            # where the link itself came from: urls_from or "the environment"

    @property
    def shown(self) -> str:
        return "%s from %s" % (self.name, self.host)

    @property
    def suffix(self) -> str:
        """The split's suffix of the settings (DOWNLOAD_URL_<suffix>, MD5_<suffix>, SIZE_<suffix>)."""
        return facts.official(self.split).suffix

    def remote(self) -> Remote:
        """The file behind the link, for the fetch engine: its link, size and MD5."""
        return Remote(self.shown, url=self.url, size=self.size,
                      digest=Digest("md5", self.md5, self.md5_from) if self.md5 else None)


def url_name(url: str) -> str:
    """The last part of the link's path, without query string or fragment (one trailing / dropped)."""
    path = re.split(r"[?#]", url, maxsplit=1)[0]
    path = path[:-1] if path.endswith("/") else path
    return path.rsplit("/", 1)[-1] if "://" in path else ""


def url_host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    rest = re.split(r"[/?#]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    return rest or "local file"


def link_for(split: str, settings: Mapping[str, str], urls_from: str, verify: bool,
             origin: Optional[Mapping[str, str]] = None) -> Link:
    """The split's link, checked: a link, a file name at its end, a usable MD5 and size. `origin`
    says where a setting came from when not from `urls_from` (the environment wins over the file)."""
    suffix = facts.official(split).suffix
    var, md5v, sizev = "DOWNLOAD_URL_" + suffix, "MD5_" + suffix, "SIZE_" + suffix

    def where(name: str) -> str:
        return (origin or {}).get(name, urls_from)

    url = settings.get(var, "")
    if not url:
        raise PrepError("%s: %s is not set (or empty) in %s; add your link for it (see urls.sh.example)"
                        % (split, var, urls_from))
    if "://" not in url:
        raise PrepError("%s: %s in %s is not a link (expected https://..., http://... or file://...)"
                        % (split, var, where(var)))
    if url.startswith("file:") and " " in url and not re.search(r"[\x00-\x1f\x7f]", url):
        raise PrepError("%s: %s in %s is a file:// link with a space in its path; a link has none: "
                        "write each space as %%20 (file:///data/my%%20copy/%s)"
                        % (split, var, where(var), url_name(url) or "ILSVRC2012_img_val.tar"))
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise PrepError("%s: %s in %s holds a space or a control character (a Windows line ending?); "
                        "a link has none" % (split, var, where(var)))
    name = url_name(url)
    if name in ("", ".", ".."):
        raise PrepError("%s: cannot tell the file name from %s (host %s): the link's path must end in "
                        "the archive's name" % (split, var, url_host(url)))
    if not FILE_NAME_RE.match(name):
        raise PrepError("%s: the last part of the path of %s (host %s) is not a plain file name "
                        "(letters, digits, . _ - only; it is not shown: a link may carry a token "
                        "there, e.g. after %%3F or ;): the link's path must end in the archive's "
                        "name, such as .../ILSVRC2012_img_val.tar?token=..., with anything else "
                        "after a ?" % (split, var, url_host(url)))
    official = facts.by_name(name)
    md5, md5_from = settings.get(md5v), "%s in %s" % (md5v, where(md5v))
    if md5 and not MD5_RE.match(md5):
        raise PrepError("%s: %s in %s is not an MD5 (32 hex digits, as md5sum prints them)"
                        % (split, md5v, where(md5v)))
    if not md5:
        md5, md5_from = (official.md5 if official else None), "the official checksum"
    if verify and not md5:
        raise PrepError("%s: no checksum known for %s (not an official ILSVRC2012 file name): set "
                        "%s=<md5> in %s, or pass --no-verify to accept it with only a size check"
                        % (split, name, md5v, urls_from))
    size_text, size_from = settings.get(sizev), "%s in %s" % (sizev, where(sizev))
    if size_text:
        size = parse_size(size_text)
        if size is None:
            raise PrepError("%s: %s in %s is not a size in bytes (digits only, such as 6744924160 or "
                            "6,744,924,160; no units or decimals)" % (split, sizev, where(sizev)))
        if size == 0:
            raise PrepError("%s: %s in %s is 0: no archive is empty; give the size in bytes, or "
                            "remove the line to take the size the server reports"
                            % (split, sizev, where(sizev)))
        if size > MAX_FILE_SIZE:
            raise PrepError("%s: %s in %s is %d bytes, more than 1 PiB: no archive of the release is "
                            "near that; give the size in bytes, or remove the line to take the size "
                            "the server reports" % (split, sizev, where(sizev), size))
    else:
        size, size_from = (official.size if official and not settings.get(md5v) else None), "official size"
    return Link(split, url, name, url_host(url), md5.lower() if md5 else None, md5_from, size,
                size_from, urls_from, var, where(var))


def load(splits: list[str], urls_arg: Optional[str], verify: bool,
         env: Mapping[str, str] = os.environ, here: Optional[str] = None,
         prog: Optional[str] = None) -> list[Link]:
    """The links of `splits`, from the urls file and the environment, every one checked.
    `here`: the repository folder (default: the one that holds this package)."""
    here = here or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = find_file(urls_arg, env, here)
    if path is None:
        settings = {k: env[k] for k in setting_names() if env.get(k)}
        if any("DOWNLOAD_URL_" + facts.official(s).suffix not in settings for s in splits):
            raise PrepError("no urls.sh found (looked for ./urls.sh and %s/urls.sh). Copy the example "
                            "and paste your image-net.org links into it: cp %s/urls.sh.example urls.sh "
                            "&& chmod 600 urls.sh (or point --urls / IMAGENET_URLS at your file)"
                            % (here, here))
        urls_from = ENVIRONMENT
    else:
        settings, urls_from = read_file(path, env, prog), path
    origin = {k: ENVIRONMENT for k in setting_names() if env.get(k)}
    return [link_for(s, settings, urls_from, verify, origin) for s in splits]


FIELDS = ("split", "url", "name", "host", "md5", "md5_from", "size", "size_from", "urls_from",
          "url_from")


def main(argv: list[str]) -> int:
    """For 00_download.sh: `python3 -m imagenet_prep.urls [--urls FILE] [--no-verify] SPLIT...`
    writes, per split in the order given, the FIELDS above, each ended by a NUL, to stdout (a pipe
    the script reads, never a terminal): md5 and size are "" when unknown. Messages go to stderr
    as 00_download.sh's own; exit 1 when a setting is wrong, 2 for a wrong call."""
    from .console import setup_logging
    prog = "00_download.sh"
    setup_logging(prog)
    urls_arg, verify, splits = None, True, []
    args = iter(argv)
    for a in args:
        if a == "--urls":
            urls_arg = next(args, None)
            if urls_arg is None:
                log.error("error: --urls needs a file")
                return 2
        elif a == "--no-verify":
            verify = False
        elif a in facts.SPLITS:
            splits.append(a)
        else:
            log.error("error: unknown split or option for imagenet_prep.urls: %s", a)
            return 2
    if sys.stdout.isatty():
        log.error("error: this prints links (which may carry a token): read it from a pipe")
        return 2
    try:
        links = load(splits, urls_arg, verify, prog=prog)
    except PrepError as e:
        log.error("error: %s", e)
        return 1
    for k in links:
        for field in (k.split, k.url, k.name, k.host, k.md5 or "", k.md5_from,
                      "" if k.size is None else str(k.size), k.size_from, k.urls_from, k.url_from):
            sys.stdout.write(field + "\0")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
