"""01_unzip.sh's extraction: train class by class from the outer tar, val/test/devkit atomically."""
import contextlib, csv, errno, gzip, itertools, json, multiprocessing, multiprocessing.connection, os, re
import shutil, signal
import socket, sys, tarfile, time, zlib
import fcntl

PROG = "01_unzip.sh"
BLOCK = 512
ZERO = bytes(BLOCK)
MIB = 1 << 20
CHUNK = 4 << 20                      # largest read of one member's data; bounds worker memory
STATE = ".01_unzip"                  # ROOT/.01_unzip/: locks, class records, done markers
NAMES = {
    "train": ["ILSVRC2012_img_train.tar"],
    "val": ["ILSVRC2012_img_val.tar"],
    "test": ["ILSVRC2012_img_test_v10102019.tar", "ILSVRC2012_img_test.tar"],
    "devkit": ["ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_devkit_t12.tar", "ILSVRC2017_devkit.tar.gz"],
}
OFFICIAL_SIZE = {"train": 147_897_477_120, "val": 6_744_924_160}
OFFICIAL_CLASSES = 1000
OFFICIAL_IMAGES = {"train": 1_281_167, "val": 50_000, "test": 100_000}
RE_OUTER = re.compile(r"n\d{8}\.tar\Z")
RE_FLAT = {"val": re.compile(r"(ILSVRC2012_val_\d{8}\.JPEG)\Z"),
           "test": re.compile(r"(?:test/)?(ILSVRC2012_test_\d{8}\.JPEG)\Z")}
PATTERN_TEXT = {"val": "ILSVRC2012_val_<8 digits>.JPEG",
                "test": "[test/]ILSVRC2012_test_<8 digits>.JPEG"}
SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
PNG_SIG = b"\x89PNG\r\n\x1a\n"
TAG = "%s.%d" % (socket.gethostname().split(".")[0] or "host", os.getpid())
TTY = sys.stderr.isatty()
NO_FLOCK = []                        # set when the filesystem refuses flock
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
UMASK = os.umask(0o022)
os.umask(UMASK)


class Fail(Exception):
    """An error with a message for the user."""


def log(fmt, *args):
    sys.stderr.write("%s %s %s\n" % (PROG, time.strftime("%H:%M:%S"), fmt % args if args else fmt))
    sys.stderr.flush()


def human(n):
    """Bytes in binary units: "53.8 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


# ----------------------------------------------------------------------------- tar reading

class Member:
    __slots__ = ("name", "type", "size", "offset", "linkname", "header", "mode", "mtime")

    def __init__(self, name, typ, size, offset, linkname, header, mode=0o644, mtime=0.0):
        self.name, self.type, self.size, self.offset = name, typ, size, offset
        self.linkname, self.header, self.mode, self.mtime = linkname, header, mode, mtime

    def kind(self):
        return {b"0": "file", b"\0": "file", b"7": "file", b"5": "folder", b"1": "hard link",
                b"2": "symbolic link", b"3": "character device", b"4": "block device",
                b"6": "FIFO"}.get(self.type, "entry of type %r" % self.type.decode("latin-1"))


OCTAL = re.compile(rb"[0-7]{1,12}\Z")
PAX_SIZE = re.compile(r"[0-9]{1,20}\Z")
PAX_TIME = re.compile(r"-?[0-9]{1,12}(\.[0-9]{0,9})?\Z")
TAIL_MAX = (1 << 20) + 2 * BLOCK   # zeros allowed after the end-of-archive blocks: one record


def _num(field, where):
    """A number field of a tar header: octal text, or GNU base-256 (positive only)."""
    if field[:1] and field[0] & 0x80:                  # GNU base-256 for big numbers
        if field[0] != 0x80:
            raise Fail("%s: corrupt tar header (negative base-256 number)" % where)
        return int.from_bytes(field[1:], "big")
    s = field.split(b"\0", 1)[0].strip(b" ")
    if not s:
        return 0
    if not OCTAL.match(s):
        raise Fail("%s: corrupt tar header (bad number %r)" % (where, s))
    return int(s, 8)


def _text(b):
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def check_tail(f, pos, end, label):
    """The end-of-archive blocks start at `pos`: what follows up to `end` (the file's size) must
    be zeros, and no more than one record of padding."""
    tail = end - pos
    if tail > TAIL_MAX:
        raise Fail("%s: the archive's members end at byte %s, but the file goes on for %s more: an "
                   "unfinished download (a preallocated file not filled in yet?) or something "
                   "appended to it; download it again (00_download.sh resumes and checks the MD5)"
                   % (label, "{:,}".format(pos), human(tail)))
    f.seek(pos)
    if f.read(tail).strip(b"\0"):
        raise Fail("%s: data after the end-of-archive marker at byte %s; the file is damaged or "
                   "two files were joined: download it again" % (label, "{:,}".format(pos)))


def iter_tar(f, start, end, label, need_eof):
    """Yield the Members of the tar stored between byte `start` and `end` of file `f`.

    Only headers are read; the caller may seek to m.offset and read m.size bytes of data.
    need_eof: the tar fills [start, end) exactly: it must end with its end-of-archive blocks,
    followed by zeros up to `end` and nothing else (a whole archive file). Without it the reading
    stops at the end-of-archive blocks or at `end` (a tar inside a member).
    Raises Fail naming the member where the archive breaks.
    """
    pos, prev = start, None
    longname = longlink = None
    pax = {}

    def after():
        return (" (after member %s)" % prev) if prev else " (at its first member)"

    while True:
        if pos >= end and not need_eof:
            return
        f.seek(pos)
        h = f.read(BLOCK)
        if len(h) < BLOCK or pos + BLOCK > end:
            raise Fail("%s: truncated: the archive ends at byte %d, inside or before a tar header%s; "
                       "the download is incomplete: download it again" % (label, min(end, pos + len(h)), after()))
        if h == ZERO:
            if need_eof:
                check_tail(f, pos, end, label)
            return
        where = "%s: byte %d%s" % (label, pos, after())
        chk = _num(h[148:156], where)
        if chk != sum(h) - sum(h[148:156]) + 256:
            raise Fail("%s: not a tar header (bad checksum); the archive is corrupt: download it again"
                       % where)
        typ = h[156:157]
        size = _num(h[124:136], where)
        mode = _num(h[100:108], where)
        mtime = float(_num(h[136:148], where))
        name = _text(h[0:100])
        if h[257:263] == b"ustar\0" and h[345] != 0:   # POSIX ustar name prefix
            name = _text(h[345:500]) + "/" + name
        data = pos + BLOCK
        if "size" in pax:
            size = int(pax["size"])
        if "mtime" in pax:
            mtime = float(pax["mtime"])
        if data + size > end:
            raise Fail("%s: truncated inside member %s (needs bytes up to %d, the archive ends at %d); "
                       "the download is incomplete: download it again"
                       % (label, longname or pax.get("path") or name, data + size, end))
        nxt = data + (size + BLOCK - 1) // BLOCK * BLOCK
        if typ in (b"L", b"K", b"x", b"g"):
            if size > (1 << 20):
                raise Fail("%s: oversized extended header" % where)
            f.seek(data)
            payload = f.read(size)
            if typ == b"L":
                longname = _text(payload)
            elif typ == b"K":
                longlink = _text(payload)
            elif typ == b"x":
                pax = _parse_pax(payload, where)
            else:
                _parse_pax(payload, where)             # global: checked, not used
            pos = nxt
            continue
        m = Member(longname or pax.get("path") or name, typ, size, data,
                   longlink or pax.get("linkpath") or _text(h[157:257]), pos, mode, mtime)
        longname = longlink = None
        pax = {}
        yield m
        prev = m.name
        pos = nxt


def _parse_pax(payload, where):
    """Records "LENGTH key=value\n"; every record must move forward and every number is checked."""
    out, i, n = {}, 0, len(payload)
    while i < n:
        if not payload[i:].strip(b"\0"):
            break                                       # NUL padding after the last record
        sp = payload.find(b" ", i, i + 21)
        length = payload[i:sp] if sp > i else b""
        if not (length.isdigit() and len(length) <= 20):
            raise Fail("%s: corrupt pax header (record at offset %d has no length)" % (where, i))
        size = int(length)
        if size <= sp - i + 2 or i + size > n or payload[i + size - 1] != 0x0A:
            raise Fail("%s: corrupt pax header (record at offset %d claims %d bytes)" % (where, i, size))
        k, eq, v = payload[sp + 1:i + size - 1].partition(b"=")
        if not eq:
            raise Fail("%s: corrupt pax header (record at offset %d has no '=')" % (where, i))
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "surrogateescape")
        i += size
    if "size" in out and not PAX_SIZE.match(out["size"]):
        raise Fail("%s: corrupt pax header (size=%r is not a number)" % (where, out["size"][:40]))
    if "mtime" in out and not PAX_TIME.match(out["mtime"]):
        raise Fail("%s: corrupt pax header (mtime=%r is not a time)" % (where, out["mtime"][:40]))
    return out


def header_ok(h):
    try:
        return h != ZERO and _num(h[148:156], "") == sum(h) - sum(h[148:156]) + 256
    except Fail:
        return False


def check_archive(path, split):
    """Refuse an empty, HTML, compressed (for the plain-tar splits) or non-tar file up front."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    redo = "download it again (00_download.sh resumes and checks it)"
    if size == 0:
        raise Fail("%s is empty; %s" % (path, redo))
    low = head[:1024].lstrip().lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in low:
        raise Fail("%s is an HTML page, not a tar archive (a login or error page was saved instead of "
                   "the data?); check your download link and %s" % (path, redo))
    if head[:2] == b"\x1f\x8b":
        if split == "devkit":
            return "gz"
        raise Fail("%s is gzip-compressed, but the %s archive is a plain tar; is it the right file?"
                   % (path, split))
    if head[:BLOCK] == ZERO:
        raise Fail("%s holds no members (an empty tar, or zeros); is it the right file? %s" % (path, redo))
    if len(head) < BLOCK or not header_ok(head[:BLOCK]):
        raise Fail("%s is not a tar archive (no tar header at its start); %s" % (path, redo))
    return "tar"


# ----------------------------------------------------------------------------- writing

def image_kind(data):
    """None for a plain JPEG (1 or 3 components); else 'PNG', 'CMYK JPEG' or 'not a JPEG'."""
    if data[:8] == PNG_SIG:
        return "PNG"
    if data[:2] != b"\xff\xd8":
        return "not a JPEG"
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None                      # lost sync: leave it to the decoder
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in SOF:
            if i + 9 < n and data[i + 9] == 4:
                return "CMYK JPEG"
            return None
        if marker in (0xD9, 0xDA):
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


@contextlib.contextmanager
def open_dir(path):
    """A file descriptor of folder `path`, to create files in it without walking the path again."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def write_member(f, m, folder_fd, name, label):
    """Copy member m's data from f into a new file `name` of the folder; return its image_kind."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=folder_fd)
    except FileExistsError:
        raise Fail("%s: member %s appears twice; refused" % (label, m.name)) from None
    kind = None
    try:
        f.seek(m.offset)
        left, first = m.size, True
        while left:
            buf = f.read(min(left, CHUNK))
            if not buf:
                raise Fail("%s: truncated inside member %s; download it again" % (label, m.name))
            if first:
                kind = image_kind(buf)       # stops at the frame header (SOF)
                first = False
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view):]
            left -= len(buf)
        keep_attributes(fd, m)
    finally:
        os.close(fd)
    return kind


def safe_mode(mode):
    """The member's permission bits as tar applies them for a user: no set-id or sticky bits,
    the umask applied, and always readable and writable by the owner."""
    return (mode & 0o777 | 0o600) & ~UMASK


def keep_attributes(fd, m):
    """The member's modification time and (safe) permission bits, as tar and torchvision keep them."""
    os.fchmod(fd, safe_mode(m.mode))
    os.utime(fd, (m.mtime, m.mtime))


def refuse_unless_file(m, label, pattern_text):
    if m.type not in (b"0", b"\0", b"7"):
        extra = (" -> %s" % m.linkname) if m.linkname else ""
        raise Fail("%s: member %s%s is a %s; refused (only %s files belong here)"
                   % (label, m.name, extra, m.kind(), pattern_text))


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


def write_json(path, doc, sync=True):
    tmp = "%s.tmp-%s" % (path, TAG)
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def try_flock(fd):
    """True if we now hold an exclusive flock on fd, False if another process holds one.

    Where the filesystem has no flock (Lustre mounted without -o flock) we go on without it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if not NO_FLOCK:
            NO_FLOCK.append(e)
            log("warning: this filesystem does not support flock (%s); do not start two runs of the "
                "same split or shard at once", e)
    return True


class Lock:
    """An flock on ROOT/.01_unzip/NAME.lock; released when the process ends, even by SIGKILL."""

    def __init__(self, state, name, wait, what):
        self.path = os.path.join(state, name + ".lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not try_flock(self.fd):
            if not wait:
                os.close(self.fd)
                raise Fail("another 01_unzip.sh is extracting %s into this ROOT (it holds %s); let it "
                           "finish, or stop it, then run again" % (what, self.path)) from None
            log("%s: another 01_unzip.sh holds %s; waiting for it", what, self.path)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        os.close(self.fd)


class Progress:
    """A live line on a terminal; in a log, one line every 5%."""

    def __init__(self, what, total, unit):
        self.what, self.total, self.unit = what, max(total, 1), unit
        self.t0 = time.time()
        self.next_pct, self.last, self.printed = 5, 0.0, None

    def update(self, done, images, nbytes, force=False):
        pct = 100.0 * done / self.total
        dt = max(time.time() - self.t0, 1e-6)
        line = "%s: %d/%d %s (%d%%), %d images, %s, %.1f MiB/s" % (
            self.what, done, self.total, self.unit, pct, images, human(nbytes), nbytes / dt / MIB)
        if TTY:
            if force or time.time() - self.last > 0.5:
                sys.stderr.write("\r" + line + "   ")
                sys.stderr.flush()
                self.last = time.time()
            if force:
                sys.stderr.write("\n")
        elif pct >= self.next_pct or (force and self.printed != done):
            log("%s", line)
            self.printed = done
            while self.next_pct <= pct:
                self.next_pct += 5


# ----------------------------------------------------------------------------- train

def extract_class(job):
    """Worker: write the members of one class tar to train/.WNID.tmp-TAG, then rename to train/WNID.

    Returns (status, wnid, count or message, bytes, special) with status "ok", "skip", "error" or
    "full" (the disk is full: no point in starting more classes)."""
    archive, train_dir, records, wnid, off, size, mtime = job
    label = "%s: %s.tar" % (os.path.basename(archive), wnid)
    final = os.path.join(train_dir, wnid)
    tmp = os.path.join(train_dir, ".%s.tmp-%s" % (wnid, TAG))
    pattern = re.compile(re.escape(wnid) + r"_\d+\.JPEG\Z")
    names, nbytes, special = [], 0, {}
    try:
        if os.path.isdir(final):
            return ("skip", wnid, 0, 0, {})
        os.mkdir(tmp, 0o755)
        # the flock on the folder is held until it has its final name: a rerun never clears it under us
        with open_dir(tmp) as folder:
            if not try_flock(folder):
                raise Fail("%s: another run is clearing %s; run again" % (label, tmp))
            with open(archive, "rb", buffering=1 << 20) as f:
                for m in iter_tar(f, off, off + size, label, need_eof=False):
                    refuse_unless_file(m, label, wnid + "_<number>.JPEG")
                    if not pattern.match(m.name):
                        raise Fail("%s: member %s refused: names in this class must look like "
                                   "%s_<number>.JPEG" % (label, m.name, wnid))
                    kind = write_member(f, m, folder, m.name, label)
                    if kind:
                        special[m.name] = kind
                    names.append(m.name)
                    nbytes += m.size
            if not names:
                raise Fail("%s: holds no images; the archive is damaged: download it again" % label)
            os.utime(folder, (mtime, mtime))
            write_json(os.path.join(records, wnid + ".json"),
                       {"wnid": wnid, "images": len(names), "bytes": nbytes, "special": special,
                        "files": sorted(names)}, sync=False)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isdir(final):
                    raise
                remove_tree(tmp)             # another process finished this class first
        return ("ok", wnid, len(names), nbytes, special)
    except Fail as e:
        remove_tree(tmp)
        return ("error", wnid, str(e), 0, {})
    except OSError as e:
        remove_tree(tmp)
        if e.errno in DISK_FULL:
            return ("full", wnid, "%s: %s" % (label, disk_full_text(train_dir)), 0, {})
        return ("error", wnid, "%s: %s" % (label, e), 0, {})
    except Exception as e:                   # a bug must fail this class, not kill the worker
        remove_tree(tmp)
        return ("error", wnid, "%s: unexpected %s: %s" % (label, type(e).__name__, e), 0, {})


def _worker(func, conn, inherited):
    """A worker process: runs the jobs it is sent until told to stop (None) or its parent is gone.
    Ctrl-C is left to the main process, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for c in inherited:                # the other workers' pipes: else they never see EOF
        c.close()
    try:
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(func(job))
    except (EOFError, OSError):        # the main process is gone
        return


def run_parallel(func, jobs, n):
    """Yield func(job) for every job, in up to n worker processes.

    Each worker has a pipe of its own to the main process and they share no queue or lock (as
    multiprocessing.Pool's do), so a worker killed by a signal or by the out-of-memory killer cannot
    wedge the others: its job is reported as an error and a new worker takes over. On any exit of
    the main process the workers still running are killed and reaped.
    """
    ctx = multiprocessing.get_context("fork")
    todo = iter(jobs)
    busy = {}                          # pipe -> (process, job it is working on)

    def send(conn, msg) -> bool:
        try:
            conn.send(msg)
            return True
        except OSError:                # it died right after answering
            return False

    def start(job):
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(func, child, list(busy) + [conn]), daemon=True)
        # A signal arriving between the fork and the worker's own handler setup would be lost
        # there (Python drops it once the handler is SIG_DFL): hold it back until then.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        conn.send(job)
        busy[conn] = (proc, job)

    try:
        for job in itertools.islice(todo, n):
            start(job)
        while busy:
            for conn in multiprocessing.connection.wait(list(busy)):
                proc, job = busy.pop(conn)
                try:
                    result = conn.recv()
                except (EOFError, OSError):    # died before answering (EOF, or a reset when it
                    result = None              # left a job unread)
                nxt = next(todo, None)
                if result is not None and nxt is not None and send(conn, nxt):
                    busy[conn] = (proc, nxt)   # same worker, next job
                else:                          # no more jobs, or the worker is dead
                    if result is not None:
                        send(conn, None)       # stop
                    conn.close()
                    proc.join()
                    if nxt is not None:
                        start(nxt)             # a new worker takes the job
                if result is None:
                    result = ("error", job[3], "%s: the worker extracting it died (exit code %s: "
                              "killed, or out of memory?); a rerun extracts it again"
                              % (job[3], proc.exitcode), 0, {})
                yield result
    finally:
        for proc, _ in busy.values():
            proc.kill()
        for proc, _ in busy.values():
            proc.join()


def on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def clear_leftover(path):
    """Remove a class's temporary folder unless a live run holds its flock (it is still writing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if try_flock(fd):
            remove_tree(path)
        else:
            log("train: %s is being written by another run; leaving it alone", path)
    finally:
        os.close(fd)


def index_outer(archive):
    """Read the outer tar's headers only: [(wnid, data offset, size, mtime)], plus the refused members
    and the error that ended the reading, if any."""
    label = os.path.basename(archive)
    size = os.path.getsize(archive)
    classes, refused, seen = [], [], set()
    with open(archive, "rb", buffering=BLOCK) as f:
        try:
            for m in iter_tar(f, 0, size, label, need_eof=True):
                if m.type not in (b"0", b"\0", b"7"):
                    refused.append("%s%s is a %s" % (m.name, (" -> " + m.linkname) if m.linkname else "",
                                                     m.kind()))
                elif not RE_OUTER.match(m.name):
                    refused.append(m.name)
                elif m.name in seen:
                    refused.append("%s (a second time)" % m.name)
                else:
                    seen.add(m.name)
                    classes.append((m.name[:-4], m.offset, m.size, m.mtime))
        except Fail as e:
            return classes, refused, str(e)
    return classes, refused, None


def refused_text(label, refused):
    """One line for every refused member of the outer tar: the first few, then a count."""
    hint = ""
    if RE_FLAT["val"].match(refused[0]) or RE_FLAT["test"].match(refused[0]):
        hint = " (this looks like the val or test archive, not the train archive)"
    return ("%s: %d member(s) refused, only WNID.tar files (e.g. n01440764.tar) belong here%s: %s"
            % (label, len(refused), hint, some(refused)))


def some(items, limit=5):
    """'a, b, c, ... and N more'."""
    text = ", ".join(str(x) for x in items[:limit])
    return text + (", ... and %d more" % (len(items) - limit) if len(items) > limit else "")


def read_synsets(root):
    path = os.path.join(root, "meta", "synsets.csv")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {r["wnid"]: int(r["num_train_images"]) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError) as e:
        log("warning: cannot read %s (%s); not comparing class sizes with it", path, e)
        return None


def read_record(records, wnid):
    """What 01_unzip.sh wrote into train/WNID, from its record; None if there is no usable one."""
    doc = read_json(os.path.join(records, wnid + ".json"))
    if not (isinstance(doc, dict) and isinstance(doc.get("images"), int)
            and isinstance(doc.get("bytes"), int) and isinstance(doc.get("special"), dict)):
        return None
    files = doc.get("files")
    if files is not None and not (isinstance(files, list) and len(files) == doc["images"]):
        return None
    return doc


def foreign_reason(folder, rec):
    """None if `folder` holds exactly what 01_unzip.sh recorded writing into it, else why not."""
    names = os.listdir(folder)
    if rec is None:
        return "%d files, not written by 01_unzip.sh" % len(names)
    if rec.get("files") is None:                         # a record of an older version: counts only
        same = len(names) == rec["images"]
    else:
        same = sorted(names) == rec["files"]
    if not same:
        return "%d files, but 01_unzip.sh wrote %d into it" % (len(names), rec["images"])
    return None


def check_class_folders(train_dir, records, wnids):
    """Refuse class folders that 01_unzip.sh did not write (another tool, an interrupted tar recipe,
    files added or removed since); an empty one is removed, to be extracted again."""
    foreign = []
    for w in wnids:
        folder = os.path.join(train_dir, w)
        if not os.path.isdir(folder):
            continue
        if not os.listdir(folder):
            os.rmdir(folder)
            log("train: %s was an empty folder; removed it, the class is extracted again", folder)
            continue
        why = foreign_reason(folder, read_record(records, w))
        if why:
            foreign.append("%s (%s)" % (w, why))
    if foreign:
        raise Fail("train: %d class folder(s) in %s are not as 01_unzip.sh left them: %s. Move them out "
                   "of %s (or delete them), then run again: the classes are extracted anew"
                   % (len(foreign), train_dir, some(foreign), train_dir))


def report_specials(special):
    if not special:
        log("train: every image is a plain JPEG (no PNG or CMYK files)")
        return
    log("train: %d files are not plain RGB/grayscale JPEGs (decoders may need care; the real release "
        "has 22 CMYK JPEGs and 1 PNG):", len(special))
    for name in sorted(special)[:50]:
        log("  %s: %s", name, special[name])
    if len(special) > 50:
        log("  ... and %d more (all listed in the train record in %s)", len(special) - 50, STATE)


def official_counts(split, archive_size, classes, images):
    """An error for an archive of the official size that does not hold the official counts."""
    if split not in OFFICIAL_SIZE:
        return
    if archive_size != OFFICIAL_SIZE[split]:
        log("%s: archive is not the official one (%s B, official %s B); official counts not checked",
            split, "{:,}".format(archive_size), "{:,}".format(OFFICIAL_SIZE[split]))
        return
    want_classes = OFFICIAL_CLASSES if classes is not None else None
    if images != OFFICIAL_IMAGES[split] or classes != want_classes:
        raise Fail("%s: the official archive holds %s images%s, this one %s%s: it is damaged; "
                   "download it again (00_download.sh checks its MD5)"
                   % (split, "{:,}".format(OFFICIAL_IMAGES[split]),
                      " in 1,000 classes" if classes is not None else "", "{:,}".format(images),
                      " in %d classes" % classes if classes is not None else ""))


def verify_train(root, train_dir, records, wnids, archive_size):
    """Totals over all classes; compare with the official counts and meta/synsets.csv."""
    total_images = total_bytes = 0
    special, per_class, warnings = {}, {}, []
    for w in wnids:
        folder = os.path.join(train_dir, w)
        rec = read_record(records, w)
        why = foreign_reason(folder, rec)
        if why:
            raise Fail("train: %s holds %s; delete that folder and run again to extract the class anew"
                       % (folder, why))
        per_class[w] = rec["images"]
        total_images += rec["images"]
        total_bytes += rec["bytes"]
        for name, kind in rec["special"].items():
            special[w + "/" + name] = kind
    strays = sorted(e.name for e in os.scandir(train_dir)
                    if e.is_dir() and not e.name.startswith(".") and e.name not in per_class)
    if strays:
        raise Fail("train: %s holds %d folder(s) that are not classes of the archive (a class loader "
                   "would take them for classes): %s; move them elsewhere and run again"
                   % (train_dir, len(strays), some(strays)))
    log("train: verified %d classes, %d images, %s", len(wnids), total_images, human(total_bytes))
    official_counts("train", archive_size, len(wnids), total_images)
    synsets = read_synsets(root)
    if synsets is not None:
        diff = ["%s: %d images, meta/synsets.csv says %d" % (w, per_class[w], synsets[w])
                for w in wnids if w in synsets and synsets[w] != per_class[w]]
        missing = sorted(set(synsets) - set(wnids))
        extra = sorted(set(wnids) - set(synsets))
        if diff:
            warnings.append("%d classes differ from meta/synsets.csv: %s" % (len(diff), "; ".join(diff[:10])))
        if missing:
            warnings.append("%d classes of meta/synsets.csv are not in the archive: %s"
                            % (len(missing), " ".join(missing[:10])))
        if extra:
            warnings.append("%d classes of the archive are not in meta/synsets.csv: %s"
                            % (len(extra), " ".join(extra[:10])))
        if not (diff or missing or extra):
            log("train: every class matches num_train_images in meta/synsets.csv")
    for w in warnings:
        log("train: warning: %s", w)
    report_specials(special)
    return {"classes": wnids, "images": total_images, "bytes": total_bytes, "special": special,
            "warnings": warnings}


def train_done(state, train_dir):
    doc = read_json(os.path.join(state, "train.done"))
    if not doc:
        return None
    missing = [w for w in doc.get("classes", []) if not os.path.isdir(os.path.join(train_dir, w))]
    if missing:
        log("train: %d classes recorded as done are missing (e.g. %s); extracting them again",
            len(missing), missing[0])
        os.remove(os.path.join(state, "train.done"))
        return None
    return doc


def clear_share_leftovers(train_dir, records, mine):
    """Temporary folders and records of interrupted runs of these classes."""
    for e in os.scandir(train_dir):
        if e.name.startswith(".") and ".tmp-" in e.name and e.name[1:].split(".tmp-")[0] in mine:
            clear_leftover(e.path)
    for e in os.scandir(records):
        if ".tmp-" in e.name and e.name.split(".", 1)[0] in mine:
            os.remove(e.path)


class ErrorLog:
    """Errors as they come: the first few in full, then only counted; a summary at the end."""

    SHOWN = 10

    def __init__(self):
        self.errors = []

    def add(self, text):
        self.errors.append(text)
        if len(self.errors) <= self.SHOWN:
            log("error: %s", text)
        elif len(self.errors) == self.SHOWN + 1:
            log("error: more errors follow; only their number is given at the end")

    def __bool__(self):
        return bool(self.errors)


def extract_share(cfg, archive, train_dir, records, todo, errors):
    """Extract the classes of `todo` in parallel; stop starting new ones once the disk is full."""
    full = []

    def jobs():
        for w, off, size, mtime in todo:
            if full:
                return
            yield (archive, train_dir, records, w, off, size, mtime)

    t0 = time.time()
    done = images = nbytes = 0
    bar = Progress("train", len(todo), "classes")
    for status, wnid, a, b, special in run_parallel(extract_class, jobs(), cfg["jobs"]):
        done += 1
        if status == "full":
            if not full:
                errors.add(a)
            full.append(wnid)
        elif status == "error":
            errors.add(a)
        else:
            images += a
            nbytes += b
        bar.update(done, images, nbytes)
    bar.update(done, images, nbytes, force=True)
    if full:
        errors.add("train: the disk filled up: %d class(es) failed, %d not started"
                   % (len(full), len(todo) - done))
    dt = time.time() - t0
    log("train: this run wrote %d images, %s in %.1f s (%.1f MiB/s)",
        images, human(nbytes), dt, nbytes / max(dt, 1e-6) / MIB)


def do_train(cfg):
    root, state = cfg["root"], cfg["state"]
    k, n = cfg["k"], cfg["n"]
    train_dir = os.path.join(root, "train")
    records = os.path.join(state, "train")
    doc = train_done(state, train_dir)
    if doc:
        log("train: already done (%d classes, %d images, %s in %s); nothing to do",
            len(doc["classes"]), doc["images"], human(doc["bytes"]), train_dir)
        maybe_remove(cfg, "train", None, doc)
        return 0
    archive = find_archive(cfg, "train")
    check_archive(archive, "train")
    lock = Lock(state, "train.shard-%d-of-%d" % (k, n), False, "train shard %d/%d" % (k, n))
    os.makedirs(records, exist_ok=True)
    os.makedirs(train_dir, exist_ok=True)
    label = os.path.basename(archive)
    classes, refused, broken = index_outer(archive)
    classes.sort()
    if not classes and not refused and not broken:
        raise Fail("%s holds no class tars (WNID.tar members); is it the right file? download it again"
                   % archive)
    log("train: %s holds %d class tars (%s)", archive, len(classes), human(os.path.getsize(archive)))
    errors = ErrorLog()
    if refused:
        errors.add(refused_text(label, refused))
    if broken:
        errors.add(broken)
    share = [c for i, c in enumerate(classes) if i % n == k]
    clear_share_leftovers(train_dir, records, {c[0] for c in share})
    check_class_folders(train_dir, records, [c[0] for c in share])
    todo = [c for c in share if not os.path.isdir(os.path.join(train_dir, c[0]))]
    preflight(root, sum(c[2] for c in todo), "train")
    log("train: shard %d/%d: %d classes, %d already complete, %d to extract with %d workers",
        k, n, len(share), len(share) - len(todo), len(todo), cfg["jobs"])
    if todo:
        extract_share(cfg, archive, train_dir, records, todo, errors)
    lock.release()
    if errors:
        log("error: train: %d problem(s)%s; complete classes are kept, a rerun retries the rest",
            len(errors.errors), ", listed above" if len(errors.errors) <= errors.SHOWN
            else " (the first %d listed above)" % errors.SHOWN)
        return 1
    return finish_train(cfg, archive, [c[0] for c in classes])


def finish_train(cfg, archive, wnids):
    """The whole split: is every class of the archive present (other shards included)? Then verify
    it and write the done marker."""
    root, state, k, n = cfg["root"], cfg["state"], cfg["k"], cfg["n"]
    train_dir = os.path.join(root, "train")
    whole = Lock(state, "train", True, "train (final check)")
    try:
        if train_done(state, train_dir):
            log("train: already verified by another shard")
            return 0
        missing = [w for w in wnids if not os.path.isdir(os.path.join(train_dir, w))]
        if missing:
            log("train: shard %d/%d complete; %d classes of other shards are not there yet (e.g. %s); "
                "the last shard to finish verifies the whole split", k, n, len(missing), missing[0])
            return 0
        for e in os.scandir(train_dir):        # leftovers of runs that died after another finished
            if e.name.startswith(".") and ".tmp-" in e.name:
                clear_leftover(e.path)
        size = os.path.getsize(archive)
        doc = verify_train(root, train_dir, os.path.join(state, "train"), wnids, size)
        doc.update(archive=os.path.basename(archive), archive_size=size)
        write_json(os.path.join(state, "train.done"), doc)
        log("train: complete: %d classes, %d images, %s in %s", len(wnids), doc["images"],
            human(doc["bytes"]), train_dir)
    finally:
        whole.release()
    maybe_remove(cfg, "train", archive)
    return 0


# ----------------------------------------------------------------------------- val, test, devkit

def split_done(state, final, split):
    doc = read_json(os.path.join(state, split + ".done"))
    return doc if isinstance(doc, dict) and os.path.isdir(final) else None


def resolve_final(root, split):
    """Where a split's folder goes: ROOT/SPLIT, or the folder it links to (e.g. on another disk).
    The split is built beside it and renamed into place."""
    link = os.path.join(root, split)
    if not os.path.islink(link):
        return link
    target = os.path.realpath(link)
    if not os.path.isdir(target):
        raise Fail("%s: %s is a symbolic link to %s, which is not a folder: create that folder (mkdir -p "
                   "%s) or remove the link, then run again" % (split, link, target, target))
    return target


def temp_beside(final):
    return os.path.join(os.path.dirname(final), ".%s.tmp-%s" % (os.path.basename(final), TAG))


def prepare_final(state, final, split):
    """Clear leftovers; refuse a folder under the final name that this script did not finish."""
    parent, base = os.path.dirname(final), os.path.basename(final)
    for e in os.scandir(parent):
        if e.name.startswith(".%s.tmp-" % base):
            remove_tree(e.path)
    marker = os.path.join(state, split + ".done")
    for e in os.scandir(state):
        if e.name.startswith(split + ".done.tmp-"):
            os.remove(e.path)
    if os.path.exists(marker):
        os.remove(marker)
    if os.path.isdir(final) and not os.listdir(final):
        return                                   # an empty folder: the rename replaces it
    if os.path.lexists(final):
        raise Fail("%s exists but was not completed by 01_unzip.sh (no %s); move it away or delete it, "
                   "then run again" % (final, marker))


def write_flat(archive, split, tmp, size):
    """The members of the val or test tar as files of folder `tmp`; (count, bytes)."""
    label = os.path.basename(archive)
    count = nbytes = 0
    bar = Progress(split, size, "bytes read")
    pattern = RE_FLAT[split]
    refused = []
    with open_dir(tmp) as folder, open(archive, "rb", buffering=1 << 20) as f:
        for m in iter_tar(f, 0, size, label, need_eof=True):
            if split == "test" and m.type == b"5" and m.name.rstrip("/") == "test":
                continue
            refuse_unless_file(m, label, PATTERN_TEXT[split])
            match = pattern.match(m.name)
            if not match:
                refused.append(m.name)
                continue
            if not refused:
                write_member(f, m, folder, match.group(1), label)
            count += 1
            nbytes += m.size
            bar.update(m.offset + m.size, count, nbytes)
    if refused:
        hint = " (this looks like the train archive)" if RE_OUTER.match(refused[0]) else ""
        raise Fail("%s: %d member(s) refused, expected names like %s%s: %s"
                   % (label, len(refused), PATTERN_TEXT[split], hint, some(refused)))
    bar.update(size, count, nbytes, force=True)
    return count, nbytes


def do_flat(cfg, split):
    root, state = cfg["root"], cfg["state"]
    final = resolve_final(root, split)
    doc = split_done(state, final, split)
    if doc:
        log("%s: already done (%d images, %s in %s); nothing to do", split, doc["images"],
            human(doc["bytes"]), final)
        maybe_remove(cfg, split, None, doc)
        return 0
    archive = find_archive(cfg, split)
    check_archive(archive, split)
    lock = Lock(state, split, True, split)
    try:
        if split_done(state, final, split):
            log("%s: already done by another process; nothing to do", split)
            return 0
        prepare_final(state, final, split)
        size = os.path.getsize(archive)
        preflight(os.path.dirname(final), size, split)
        tmp = temp_beside(final)
        os.mkdir(tmp, 0o755)
        try:
            count, nbytes = write_flat(archive, split, tmp, size)
            log("%s: verified %d images, %s", split, count, human(nbytes))
            official_counts(split, size, None, count)
            if count != OFFICIAL_IMAGES[split]:
                log("%s: note: the official release has %s images; this archive has %s", split,
                    "{:,}".format(OFFICIAL_IMAGES[split]), "{:,}".format(count))
            write_json(os.path.join(state, split + ".done"),
                       {"images": count, "bytes": nbytes, "archive": os.path.basename(archive),
                        "archive_size": size})
            os.rename(tmp, final)
        except BaseException as e:
            remove_tree(tmp)
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                raise Fail("%s: %s" % (split, disk_full_text(os.path.dirname(final), size))) from None
            raise
        log("%s: complete: %d images in %s", split, count, final)
    finally:
        lock.release()
    maybe_remove(cfg, split, archive)
    return 0


def devkit_members(tar, label):
    """Every member of the devkit archive, checked before anything is written: only files and
    folders, all under one top folder, no absolute or '..' paths. Returns (top, members)."""
    members, top = tar.getmembers(), None
    for ti in members:
        name = ti.name
        parts = name.rstrip("/").split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise Fail("%s: member %s refused: absolute path, '..' or empty part" % (label, name))
        if not (ti.isfile() or ti.isdir()):
            raise Fail("%s: member %s is a link or device; refused" % (label, name))
        top = top or parts[0]
        if parts[0] != top:
            raise Fail("%s: member %s refused: every member must be under one top folder "
                       "(%s/)" % (label, name, top))
    if not any(ti.isfile() for ti in members):
        raise Fail("%s holds no files; download it again" % label)
    return top, members


def write_devkit(tar, members, tmp):
    """Extract the checked members into `tmp`, keeping their times and (safe) modes."""
    folders = []
    for ti in members:
        path = os.path.join(tmp, *ti.name.rstrip("/").split("/"))
        if ti.isdir():
            os.makedirs(path, exist_ok=True)
            folders.append((path, ti))
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        src = tar.extractfile(ti)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fchmod(out.fileno(), safe_mode(ti.mode))
            os.utime(out.fileno(), (ti.mtime, ti.mtime))
    for path, ti in reversed(folders):           # innermost first: writing files changes a folder's time
        os.chmod(path, safe_mode(ti.mode) | 0o700)
        os.utime(path, (ti.mtime, ti.mtime))


def do_devkit(cfg):
    root, state = cfg["root"], cfg["state"]
    final = resolve_final(root, "devkit")
    doc = split_done(state, final, "devkit")
    if doc:
        log("devkit: already done (%s in %s); nothing to do", doc.get("top"), final)
        maybe_remove(cfg, "devkit", None, doc)
        return 0
    archive = find_archive(cfg, "devkit")
    fmt = check_archive(archive, "devkit")
    label = os.path.basename(archive)
    lock = Lock(state, "devkit", True, "devkit")
    try:
        if split_done(state, final, "devkit"):
            log("devkit: already done by another process; nothing to do")
            return 0
        prepare_final(state, final, "devkit")
        tmp, need = temp_beside(final), 0
        try:
            with tarfile.open(archive, "r:gz" if fmt == "gz" else "r:") as tar:
                top, members = devkit_members(tar, label)
                need = sum(ti.size for ti in members)
                preflight(os.path.dirname(final), need, "devkit")
                os.mkdir(tmp, 0o755)
                write_devkit(tar, members, tmp)
            count = sum(1 for ti in members if ti.isfile())
            write_json(os.path.join(state, "devkit.done"),
                       {"top": top, "files": count, "bytes": need, "archive": label,
                        "archive_size": os.path.getsize(archive)})
            os.rename(tmp, final)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            remove_tree(tmp)
            raise Fail("%s is damaged (%s); download it again" % (archive, e)) from None
        except BaseException as e:
            remove_tree(tmp)
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                raise Fail("devkit: %s" % disk_full_text(os.path.dirname(final), need)) from None
            raise
        log("devkit: complete: %d files, %s in %s/%s (%s archive)", count, human(need), final, top,
            "gzip" if fmt == "gz" else "plain tar")
    finally:
        lock.release()
    maybe_remove(cfg, "devkit", archive)
    return 0


# ----------------------------------------------------------------------------- common

def find_archive(cfg, split):
    if cfg["archive"]:
        path = os.path.abspath(cfg["archive"])
        if not os.path.isfile(path):
            raise Fail("%s: --archive %s is not a file" % (split, cfg["archive"]))
        return path
    folder = os.path.join(cfg["root"], "downloads")
    for name in NAMES[split]:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise Fail("%s: archive not found: expected %s in %s (run 00_download.sh, or name the file with "
               "--archive PATH)" % (split, " or ".join(NAMES[split]), folder))


def free_bytes(folder):
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def preflight(root, need, split):
    free = free_bytes(root)
    need = int(need * 1.05)
    if need > free:
        raise Fail("%s: not enough free space in %s: about %s to write, %s free; free some space or "
                   "use --root on a bigger disk" % (split, root, human(need), human(free)))


def disk_full_text(folder, need=None):
    """The message for ENOSPC / EDQUOT while writing into `folder`."""
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = human(free_bytes(folder))
    except OSError:
        free = "?"
    return ("the disk is full (or the quota is used up): cannot write to %s, %s free%s; free some "
            "space there, or use --root on a bigger disk, and run again: complete work is kept"
            % (folder, free, ", about %s needed" % human(need) if need else ""))


def maybe_remove(cfg, split, archive, doc=None):
    """--remove-archive: delete the archive of a split that is complete and verified. For a split
    done earlier (`doc`, its marker), only the very archive it was extracted from."""
    if not cfg["remove"]:
        return
    if archive is None:
        try:
            archive = find_archive(cfg, split)
        except Fail:
            return
        if doc is None or doc.get("archive_size") != os.path.getsize(archive):
            log("%s: not removing %s: it is not the archive the split was extracted from (%s, %s B)",
                split, archive, (doc or {}).get("archive"), (doc or {}).get("archive_size"))
            return
    os.remove(archive)
    log("%s: removed %s as asked (--remove-archive); the split is complete and verified", split, archive)


def main(argv):
    root, jobs, k, n, remove, archive = argv[:6]
    cfg = {"root": root, "jobs": int(jobs), "k": int(k), "n": int(n), "remove": remove == "1",
           "archive": archive, "state": os.path.join(root, STATE)}
    os.makedirs(cfg["state"], exist_ok=True)
    rc = 0
    for split in argv[6:]:
        try:
            if split == "train":
                r = do_train(cfg)
            elif split == "devkit":
                r = do_devkit(cfg)
            else:
                r = do_flat(cfg, split)
        except Fail as e:
            log("error: %s", e)
            r = 1
        except OSError as e:
            if e.errno in DISK_FULL:
                log("error: %s: %s", split, disk_full_text(getattr(e, "filename", None) or root))
            else:
                log("error: %s: %s", split, e)
            r = 1
        rc = rc or r
    return rc


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)      # e.g. a SLURM time limit: stop workers, say so
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as e:
        log("stopped by %s; complete work is kept and a rerun resumes", e.args[0] if e.args else "Ctrl-C")
        sys.exit(143 if e.args else 130)
