"""01_unzip.sh's extraction: train class by class from the outer tar, val/test/devkit atomically."""
import contextlib, csv, itertools, json, multiprocessing, multiprocessing.connection, os, re
import shutil, signal
import socket, sys, tarfile, time, zlib
import fcntl

PROG = "01_unzip.sh"
BLOCK = 512
ZERO = bytes(BLOCK)
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


class Fail(Exception):
    """An error with a message for the user."""


def log(fmt, *args):
    sys.stderr.write("%s %s %s\n" % (PROG, time.strftime("%H:%M:%S"), fmt % args if args else fmt))
    sys.stderr.flush()


def human(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1000.0


# ----------------------------------------------------------------------------- tar reading

class Member:
    __slots__ = ("name", "type", "size", "offset", "linkname", "header")

    def __init__(self, name, typ, size, offset, linkname, header):
        self.name, self.type, self.size, self.offset = name, typ, size, offset
        self.linkname, self.header = linkname, header

    def kind(self):
        return {b"0": "file", b"\0": "file", b"7": "file", b"5": "folder", b"1": "hard link",
                b"2": "symbolic link", b"3": "character device", b"4": "block device",
                b"6": "FIFO"}.get(self.type, "entry of type %r" % self.type.decode("latin-1"))


def _num(field, where):
    if field[:1] and field[0] & 0x80:                  # GNU base-256 for big numbers
        return int.from_bytes(field[1:], "big")
    s = field.split(b"\0", 1)[0].strip(b" ")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise Fail("%s: corrupt tar header (bad number %r)" % (where, s)) from None


def _text(b):
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def iter_tar(f, start, end, label, need_eof):
    """Yield the Members of the tar stored between byte `start` and `end` of file `f`.

    Only headers are read; the caller may seek to m.offset and read m.size bytes of data.
    Raises Fail naming the member where the archive breaks.
    """
    pos, prev = start, None
    longname = longlink = None
    pax = {}
    after = lambda: (" (after member %s)" % prev) if prev else " (at its first member)"
    while True:
        if pos >= end and not need_eof:
            return
        f.seek(pos)
        h = f.read(BLOCK)
        if len(h) < BLOCK:
            raise Fail("%s: truncated: the archive ends at byte %d, inside or before a tar header%s; "
                       "the download is incomplete: download it again" % (label, pos + len(h), after()))
        if h == ZERO:
            return
        where = "%s: byte %d%s" % (label, pos, after())
        chk = _num(h[148:156], where)
        if chk != sum(h) - sum(h[148:156]) + 256:
            raise Fail("%s: not a tar header (bad checksum); the archive is corrupt: download it again"
                       % where)
        typ = h[156:157]
        size = _num(h[124:136], where)
        name = _text(h[0:100])
        if h[257:263] == b"ustar\0" and h[345] != 0:   # POSIX ustar name prefix
            name = _text(h[345:500]) + "/" + name
        data = pos + BLOCK
        if "size" in pax:
            size = int(pax["size"])
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
            pos = nxt
            continue
        m = Member(longname or pax.get("path") or name, typ, size, data,
                   longlink or pax.get("linkpath") or _text(h[157:257]), pos)
        longname = longlink = None
        pax = {}
        yield m
        prev = m.name
        pos = nxt


def _parse_pax(payload, where):
    out, i = {}, 0
    while i < len(payload):
        sp = payload.find(b" ", i)
        try:
            n = int(payload[i:sp])
        except ValueError:
            raise Fail("%s: corrupt pax header" % where) from None
        rec = payload[sp + 1:i + n - 1]
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "surrogateescape")
        i += n
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
    finally:
        os.close(fd)
    return kind


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
        line = "%s: %d/%d %s (%d%%), %d images, %s, %.1f MB/s" % (
            self.what, done, self.total, self.unit, pct, images, human(nbytes), nbytes / dt / 1e6)
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
    """Worker: write the members of one class tar to train/.WNID.tmp-TAG, then rename to train/WNID."""
    archive, train_dir, records, wnid, off, size = job
    label = "%s: %s.tar" % (os.path.basename(archive), wnid)
    final = os.path.join(train_dir, wnid)
    tmp = os.path.join(train_dir, ".%s.tmp-%s" % (wnid, TAG))
    pattern = re.compile(re.escape(wnid) + r"_\d+\.JPEG\Z")
    count = nbytes = 0
    special = {}
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
                    count += 1
                    nbytes += m.size
            if count == 0:
                raise Fail("%s: holds no images; the archive is damaged: download it again" % label)
            write_json(os.path.join(records, wnid + ".json"),
                       {"wnid": wnid, "images": count, "bytes": nbytes, "special": special}, sync=False)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isdir(final):
                    raise
                remove_tree(tmp)             # another process finished this class first
        return ("ok", wnid, count, nbytes, special)
    except Fail as e:
        remove_tree(tmp)
        return ("error", wnid, str(e), 0, {})
    except OSError as e:
        remove_tree(tmp)
        return ("error", wnid, "%s: %s" % (label, e), 0, {})


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
    """Read the outer tar's headers only: [(wnid, data offset, size)], plus errors for refused members."""
    label = os.path.basename(archive)
    size = os.path.getsize(archive)
    classes, errors, seen = [], [], set()
    with open(archive, "rb", buffering=BLOCK) as f:
        try:
            for m in iter_tar(f, 0, size, label, need_eof=True):
                if m.type not in (b"0", b"\0", b"7"):
                    errors.append("%s: member %s%s is a %s; refused (only WNID.tar files belong here)"
                                  % (label, m.name, (" -> " + m.linkname) if m.linkname else "", m.kind()))
                elif not RE_OUTER.match(m.name):
                    errors.append("%s: member %s refused: expected names like n01440764.tar"
                                  % (label, m.name))
                elif m.name in seen:
                    errors.append("%s: member %s appears twice; refused" % (label, m.name))
                else:
                    seen.add(m.name)
                    classes.append((m.name[:-4], m.offset, m.size))
        except Fail as e:
            errors.append(str(e))
    return classes, errors


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


def scan_class(folder):
    """Count, bytes and non-plain-JPEG files of a class folder that has no record (first 256 KiB each)."""
    count = nbytes = 0
    special = {}
    for e in os.scandir(folder):
        count += 1
        nbytes += e.stat().st_size
        with open(e.path, "rb") as f:
            kind = image_kind(f.read(1 << 18))
        if kind:
            special[e.name] = kind
    return {"images": count, "bytes": nbytes, "special": special}


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


def verify_train(root, train_dir, records, wnids, archive_size):
    """Totals over all classes; compare with the official counts and meta/synsets.csv."""
    total_images = total_bytes = 0
    special, per_class, warnings = {}, {}, []
    for w in wnids:
        folder = os.path.join(train_dir, w)
        rec = read_json(os.path.join(records, w + ".json")) or scan_class(folder)
        found = len(os.listdir(folder))
        if found != rec["images"]:
            raise Fail("train: %s holds %d files, but %d were extracted into it; delete that folder and "
                       "run again to extract the class anew" % (folder, found, rec["images"]))
        per_class[w] = rec["images"]
        total_images += rec["images"]
        total_bytes += rec["bytes"]
        for name, kind in rec["special"].items():
            special[w + "/" + name] = kind
    log("train: verified %d classes, %d images, %s", len(wnids), total_images, human(total_bytes))
    if archive_size == OFFICIAL_SIZE["train"]:
        if len(wnids) != OFFICIAL_CLASSES or total_images != OFFICIAL_IMAGES["train"]:
            warnings.append("the official archive holds %d classes and %d images, found %d and %d"
                            % (OFFICIAL_CLASSES, OFFICIAL_IMAGES["train"], len(wnids), total_images))
    else:
        log("train: archive is not the official one (%s B, official %s B); official counts (1,000 "
            "classes, 1,281,167 images) not checked", "{:,}".format(archive_size),
            "{:,}".format(OFFICIAL_SIZE["train"]))
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


def do_train(cfg):
    root, state = cfg["root"], cfg["state"]
    k, n = cfg["k"], cfg["n"]
    train_dir = os.path.join(root, "train")
    records = os.path.join(state, "train")
    doc = train_done(state, train_dir)
    if doc:
        log("train: already done (%d classes, %d images, %s in %s); nothing to do",
            len(doc["classes"]), doc["images"], human(doc["bytes"]), train_dir)
        maybe_remove(cfg, "train", None)
        return 0
    archive = find_archive(cfg, "train")
    check_archive(archive, "train")
    lock = Lock(state, "train.shard-%d-of-%d" % (k, n), False, "train shard %d/%d" % (k, n))
    os.makedirs(records, exist_ok=True)
    os.makedirs(train_dir, exist_ok=True)
    t0 = time.time()
    classes, errors = index_outer(archive)
    classes.sort()
    if not classes and not errors:
        raise Fail("%s holds no class tars (WNID.tar members); is it the right file? download it again"
                   % archive)
    log("train: %s holds %d class tars (%s)", archive, len(classes), human(os.path.getsize(archive)))
    for e in errors:
        log("error: %s", e)
    share = [c for i, c in enumerate(classes) if i % n == k]
    mine = {c[0] for c in share}
    for e in os.scandir(train_dir):            # leftovers of interrupted runs of this share
        if e.name.startswith(".") and ".tmp-" in e.name and e.name[1:].split(".tmp-")[0] in mine:
            clear_leftover(e.path)
    for e in os.scandir(records):
        if ".tmp-" in e.name and e.name.split(".", 1)[0] in mine:
            os.remove(e.path)
    todo = [c for c in share if not os.path.isdir(os.path.join(train_dir, c[0]))]
    preflight(root, sum(c[2] for c in todo), "train")
    log("train: shard %d/%d: %d classes, %d already complete, %d to extract with %d workers",
        k, n, len(share), len(share) - len(todo), len(todo), cfg["jobs"])
    done = images = nbytes = 0
    bar = Progress("train", len(todo), "classes")
    jobs = [(archive, train_dir, records, w, off, size) for w, off, size in todo]
    if todo:
        for status, wnid, a, b, special in run_parallel(extract_class, jobs, cfg["jobs"]):
            done += 1
            if status == "error":
                errors.append(a)
                log("error: %s", a)
            else:
                images += a
                nbytes += b
            bar.update(done, images, nbytes)
        bar.update(done, images, nbytes, force=True)
        dt = time.time() - t0
        log("train: this run wrote %d images, %s in %.1f s (%.1f MB/s)",
            images, human(nbytes), dt, nbytes / max(dt, 1e-6) / 1e6)
    lock.release()
    if errors:
        log("error: train: %d problem(s), listed above; complete classes are kept, a rerun retries the "
            "rest", len(errors))
        return 1
    # The whole split: is every class of the archive present (other shards included)?
    whole = Lock(state, "train", True, "train (final check)")
    try:
        if train_done(state, train_dir):
            log("train: already verified by another shard")
            return 0
        wnids = [c[0] for c in classes]
        missing = [w for w in wnids if not os.path.isdir(os.path.join(train_dir, w))]
        if missing:
            log("train: shard %d/%d complete; %d classes of other shards are not there yet (e.g. %s); "
                "the last shard to finish verifies the whole split", k, n, len(missing), missing[0])
            return 0
        for e in os.scandir(train_dir):        # leftovers of runs that died after another finished
            if e.name.startswith(".") and ".tmp-" in e.name:
                clear_leftover(e.path)
        doc = verify_train(root, train_dir, records, wnids, os.path.getsize(archive))
        doc.update(archive=os.path.basename(archive), archive_size=os.path.getsize(archive))
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
    return doc if doc and os.path.isdir(final) else None


def prepare_final(state, root, final, split):
    """Clear leftovers; refuse a folder under the final name that this script did not finish."""
    for e in os.scandir(root):
        if e.name.startswith(".%s.tmp-" % split):
            remove_tree(e.path)
    marker = os.path.join(state, split + ".done")
    for e in os.scandir(state):
        if e.name.startswith(split + ".done.tmp-"):
            os.remove(e.path)
    if os.path.exists(marker):
        os.remove(marker)
    if os.path.isdir(final) and not os.listdir(final):
        os.rmdir(final)
    if os.path.lexists(final):
        raise Fail("%s exists but was not completed by 01_unzip.sh (no %s); move it away or delete it, "
                   "then run again" % (final, marker))


def do_flat(cfg, split):
    root, state = cfg["root"], cfg["state"]
    final = os.path.join(root, split)
    doc = split_done(state, final, split)
    if doc:
        log("%s: already done (%d images, %s in %s); nothing to do", split, doc["images"],
            human(doc["bytes"]), final)
        maybe_remove(cfg, split, None)
        return 0
    archive = find_archive(cfg, split)
    check_archive(archive, split)
    lock = Lock(state, split, True, split)
    try:
        doc = split_done(state, final, split)
        if doc:
            log("%s: already done by another process; nothing to do", split)
            return 0
        prepare_final(state, root, final, split)
        size = os.path.getsize(archive)
        preflight(root, size, split)
        tmp = os.path.join(root, ".%s.tmp-%s" % (split, TAG))
        os.mkdir(tmp, 0o755)
        label = os.path.basename(archive)
        count = nbytes = 0
        bar = Progress(split, size, "bytes read")
        pattern = RE_FLAT[split]
        try:
            with open_dir(tmp) as folder, open(archive, "rb", buffering=1 << 20) as f:
                for m in iter_tar(f, 0, size, label, need_eof=True):
                    if split == "test" and m.type == b"5" and m.name.rstrip("/") == "test":
                        continue
                    refuse_unless_file(m, label, PATTERN_TEXT[split])
                    match = pattern.match(m.name)
                    if not match:
                        raise Fail("%s: member %s refused: expected names like %s"
                                   % (label, m.name, PATTERN_TEXT[split]))
                    write_member(f, m, folder, match.group(1), label)
                    count += 1
                    nbytes += m.size
                    bar.update(m.offset + m.size, count, nbytes)
            bar.update(size, count, nbytes, force=True)
        except BaseException:
            remove_tree(tmp)
            raise
        log("%s: verified %d images, %s", split, count, human(nbytes))
        expect = OFFICIAL_IMAGES[split]
        if split in OFFICIAL_SIZE and size == OFFICIAL_SIZE[split] and count != expect:
            log("%s: warning: the official archive holds %d images, found %d", split, expect, count)
        elif count != expect:
            log("%s: note: the official release has %s images; this archive has %s", split,
                "{:,}".format(expect), "{:,}".format(count))
        write_json(os.path.join(state, split + ".done"),
                   {"images": count, "bytes": nbytes, "archive": label, "archive_size": size})
        os.rename(tmp, final)
        log("%s: complete: %d images in %s", split, count, final)
    finally:
        lock.release()
    maybe_remove(cfg, split, archive)
    return 0


def do_devkit(cfg):
    root, state = cfg["root"], cfg["state"]
    final = os.path.join(root, "devkit")
    doc = split_done(state, final, "devkit")
    if doc:
        log("devkit: already done (%s in %s); nothing to do", doc["top"], final)
        maybe_remove(cfg, "devkit", None)
        return 0
    archive = find_archive(cfg, "devkit")
    fmt = check_archive(archive, "devkit")
    lock = Lock(state, "devkit", True, "devkit")
    try:
        if split_done(state, final, "devkit"):
            log("devkit: already done by another process; nothing to do")
            return 0
        prepare_final(state, root, final, "devkit")
        preflight(root, os.path.getsize(archive) * 8, "devkit")
        tmp = os.path.join(root, ".devkit.tmp-%s" % TAG)
        os.mkdir(tmp, 0o755)
        label = os.path.basename(archive)
        top, count, nbytes = None, 0, 0
        try:
            with tarfile.open(archive, "r:gz" if fmt == "gz" else "r:") as tar:
                for ti in tar:
                    name = ti.name
                    parts = name.rstrip("/").split("/")
                    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
                        raise Fail("%s: member %s refused: absolute path, '..' or empty part" % (label, name))
                    if not (ti.isfile() or ti.isdir()):
                        raise Fail("%s: member %s is a link or device; refused" % (label, name))
                    if top is None:
                        top = parts[0]
                    if parts[0] != top:
                        raise Fail("%s: member %s refused: every member must be under one top folder "
                                   "(%s/)" % (label, name, top))
                    path = os.path.join(tmp, *parts)
                    if ti.isdir():
                        os.makedirs(path, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    src = tar.extractfile(ti)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    count += 1
                    nbytes += ti.size
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            remove_tree(tmp)
            raise Fail("%s is damaged (%s); download it again" % (archive, e)) from None
        except BaseException:
            remove_tree(tmp)
            raise
        if not count:
            remove_tree(tmp)
            raise Fail("%s holds no files; download it again" % archive)
        write_json(os.path.join(state, "devkit.done"),
                   {"top": top, "files": count, "bytes": nbytes, "archive": label})
        os.rename(tmp, final)
        log("devkit: complete: %d files, %s in %s/%s (%s archive)", count, human(nbytes), final, top,
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


def preflight(root, need, split):
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    need = int(need * 1.05)
    if need > free:
        raise Fail("%s: not enough free space in %s: about %s to write, %s free; free some space or "
                   "use --root on a bigger disk" % (split, root, human(need), human(free)))


def maybe_remove(cfg, split, archive):
    if not cfg["remove"]:
        return
    if archive is None:
        try:
            archive = find_archive(cfg, split)
        except Fail:
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
