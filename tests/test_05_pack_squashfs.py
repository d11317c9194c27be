"""05_pack_squashfs.py: images whose listing and bytes are the release's, reproducible, killed and
rerun, hostile archives, missing tools, --from-tree, mounting; and the SLURM example that uses them."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import minirelease
from conftest import REPO, assert_usage_error, run, script

PACK = script("05_pack_squashfs.py")
UNZIP = script("01_unzip.sh")
META = script("02_convert_meta_clsloc.py")
SORT = script("03_build_val_class_folders.py")
SBATCH = REPO / "examples" / "slurm" / "imagenet_squashfs.sbatch"
TOOLS = ("sqfstar", "unsquashfs")
LLN = re.compile(r"([-d])(\S{9}) 0/0 +([0-9]+) \S+ \S+ squashfs-root(?:/(.*))?\Z")

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in TOOLS),
    reason="squashfs-tools >= 4.5.1 not installed (Debian package squashfs-tools: sqfstar, unsquashfs)")


# ----------------------------------------------------------------------------- helpers

def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("IMAGENET_ROOT", "SOURCE_DATE_EPOCH")}
    env.update(extra)
    return env


def pack(root: Path, *args, env=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, PACK, "--root", root, *args], timeout=timeout,
               env=env or clean_env(), **kw)


def make_root(tmp_path: Path, rel: minirelease.Release, splits=("train", "val", "test"),
              name: str = "root", meta: bool = True) -> Path:
    """ROOT/downloads with the archives; with meta, the devkit (01) and synsets.csv (02) too."""
    root = tmp_path / name
    (root / "downloads").mkdir(parents=True)
    for s in list(splits) + (["devkit"] if meta else []):
        shutil.copy(rel.archives[s], root / "downloads" / rel.archives[s].name)
    if meta:
        r = run(["bash", UNZIP, "--root", root, "devkit"], env=clean_env())
        assert r.returncode == 0, r.stderr
        r = run([sys.executable, META, "--root", root, "--expect-classes", len(rel.classes)],
                env=clean_env())
        assert r.returncode == 0, r.stderr
    return root


def listing(image: Path) -> dict[str, tuple[str, int]]:
    """path in the image -> ("d", 0) or ("f", size), from `unsquashfs -lln`; checks owner and modes."""
    r = run(["unsquashfs", "-lln", image])
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        m = LLN.match(line)
        assert m, line
        kind, mode, size, path = m.groups()
        assert mode == ("rwxr-xr-x" if kind == "d" else "rw-r--r--"), line
        if path is not None:
            out[path] = ("d", 0) if kind == "d" else ("f", int(size))
    return out


def cat(image: Path, paths: list[str], sizes: list[int]) -> dict[str, bytes]:
    """The files' bytes read back with `unsquashfs -cat` (one call, split by their sizes)."""
    r = subprocess.run(["unsquashfs", "-cat", str(image), *paths], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out, pos = {}, 0
    for p, n in zip(paths, sizes):
        out[p] = r.stdout[pos:pos + n]
        pos += n
    assert pos == len(r.stdout)
    return out


def expected_files(rel: minirelease.Release, split: str) -> dict[str, bytes]:
    """path in the image -> bytes, straight from the generated archives."""
    out = {}
    with tarfile.open(rel.archives[split]) as tar:
        for m in tar:
            if not m.isfile():
                continue
            data = tar.extractfile(m).read()
            if split == "train":
                with tarfile.open(fileobj=tar.extractfile(m)) as inner:
                    for im in inner:
                        out["%s/%s" % (m.name[:-4], im.name)] = inner.extractfile(im).read()
            else:
                name = m.name.rsplit("/", 1)[-1]
                out[name if split == "test" else "%s/%s" % (rel.val[name], name)] = data
    return out


def expected_listing(files: dict[str, bytes]) -> dict[str, tuple[str, int]]:
    out = {p: ("f", len(b)) for p, b in files.items()}
    out.update({p.rsplit("/", 1)[0]: ("d", 0) for p in files if "/" in p})
    return out


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name)


def tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """path -> (bytes, mtime) of every file and folder under `folder` (folders: b"")."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else b"",
                                           int(p.stat().st_mtime))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory, release) -> Path:
    """The unit release's three images, built once from the archives."""
    root = make_root(tmp_path_factory.mktemp("built"), release)
    r = pack(root, "train", "val", "test")
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> minirelease.Release:
    """~60 MB of train images: a build long enough (~0.3 s) to be killed mid-way."""
    return minirelease.make_release(tmp_path_factory.mktemp("big"), classes=24, images=(10, 16),
                                    val_per_class=1, test=2, kib=200.0, seed=5)


# ----------------------------------------------------------------------------- command line

def test_help_lists_options_and_defaults():
    r = run([sys.executable, PACK, "--help"])
    assert r.returncode == 0
    for text in ("--root DIR", "--from-tree", "--processors N", "--labels FILE", "--meta CSV",
                 "IMAGENET_ROOT", "train val test", "sqfstar", "squashfs-tools"):
        assert text in r.stdout, text


@pytest.mark.parametrize("args, message", [
    ([], "name at least one SPLIT (train val test, or all)"),
    (["trian"], "unknown split 'trian'"),
    (["--processors", "0", "train"], "--processors wants a number from 1 to 1024"),
    (["--frobnicate", "train"], "unknown option '--frobnicate'"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    r = pack(tmp_path, *args)
    assert_usage_error(r, "05_pack_squashfs.py", message)


def test_missing_tools_name_the_debian_packages(tmp_path, release):
    root = make_root(tmp_path, release, ["train"], meta=False)
    empty = tmp_path / "bin"
    empty.mkdir()
    r = pack(root, "train", env=clean_env(PATH=str(empty)))
    assert r.returncode == 1
    assert "needs sqfstar or tar2sqfs and unsquashfs, not found in PATH" in r.stderr
    assert "sudo apt-get install squashfs-tools" in r.stderr and "squashfs-tools-ng" in r.stderr
    assert not (root / "squashfs").exists()


def test_copied_alone_says_the_package_is_missing(tmp_path):
    shutil.copy(PACK, tmp_path / PACK.name)
    r = run([sys.executable, tmp_path / PACK.name, "train"])
    assert r.returncode == 1 and "needs the folder imagenet_prep/ beside it" in r.stderr


# ----------------------------------------------------------------------------- the images

@needs_tools
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_image_holds_the_release_tree_and_bytes(built, release, split):
    image = built / "squashfs" / (split + ".sqfs")
    want = expected_files(release, split)
    assert listing(image) == expected_listing(want)
    paths = sorted(want)
    assert cat(image, paths, [len(want[p]) for p in paths]) == want
    if split == "train":
        assert sorted(p for p, (k, _) in listing(image).items() if k == "d") == release.wnids_sorted
    doc = (built / "squashfs" / (split + ".sqfs.json")).read_text()
    assert '"files": %d' % len(want) in doc and '"image_bytes": %d' % image.stat().st_size in doc


@needs_tools
def test_rerun_is_already_done_and_changes_nothing(built):
    images = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (built / "squashfs").iterdir()}
    r = pack(built, "all")
    assert r.returncode == 0, r.stderr
    for split in ("train", "val", "test"):
        assert "%s: already done" % split in r.stderr
    assert "sqfstar" not in r.stderr                   # no builder started
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in (built / "squashfs").iterdir()} == images


@needs_tools
def test_already_done_says_when_the_source_was_another_roots(tmp_path, built, release):
    """The images of a ROOT copied elsewhere (or moved into another ROOT) were built from the
    first ROOT's archives: "already done" says so, instead of naming them as this ROOT's."""
    r = pack(built, "train")
    archive = built / "downloads" / release.archives["train"].name
    assert "built from the archive %s); nothing to do" % archive in r.stderr, r.stderr
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, symlinks=True)
    other = tmp_path / "other"
    (other / "squashfs").mkdir(parents=True)
    for name in ("train.sqfs", "train.sqfs.json"):
        shutil.copy2(built / "squashfs" / name, other / "squashfs" / name)
    for root in (copy, other):
        r = pack(root, "train")
        assert r.returncode == 0, r.stderr
        assert "train: already done (%d files, " % sum(len(v) for v in release.train.values()) \
            in r.stderr
        assert "built from the archive %s of another ROOT: the image was copied or moved here "\
            "since); nothing to do" % archive in r.stderr, r.stderr


@needs_tools
def test_unpacked_image_is_the_tree_01_makes_with_its_times(tmp_path, built, release):
    """Names, bytes and times (files and class folders) equal 01's tree (val: after 03)."""
    root = make_root(tmp_path, release)
    for cmd in (["bash", UNZIP, "--root", root, "train", "val", "test"],
                [sys.executable, SORT, "--root", root]):
        r = run(cmd, env=clean_env())
        assert r.returncode == 0, r.stderr
    for split in ("train", "val", "test"):
        out = tmp_path / ("unpacked-" + split)
        r = run(["unsquashfs", "-q", "-n", "-d", out, built / "squashfs" / (split + ".sqfs")])
        assert r.returncode == 0, r.stderr
        got, want = tree(out), tree(root / split)
        if split == "val":                 # 03 made the class folders just now: names only
            got = {p: v if "." in p else (b"", 0) for p, v in got.items()}
            want = {p: v if "." in p else (b"", 0) for p, v in want.items()}
        assert got == want, split


@needs_tools
def test_builds_are_byte_identical_for_any_processors(tmp_path, built, release):
    """The same archives, another ROOT, later, 1 and 3 threads: the bytes of `built` (all cores)."""
    for n in ("1", "3"):
        root = make_root(tmp_path, release, ["train", "val"], "root" + n)
        time.sleep(1.1)                      # a build that took the clock's time would differ
        r = pack(root, "--processors", n, "train", "val")
        assert r.returncode == 0, r.stderr
        for split in ("train", "val"):
            a, b = built / "squashfs" / (split + ".sqfs"), root / "squashfs" / (split + ".sqfs")
            assert a.read_bytes() == b.read_bytes(), (split, n)


@needs_tools
def test_sigkill_during_a_build_then_rerun_gives_the_same_image(tmp_path, big):
    ref = make_root(tmp_path, big, ["train"], "ref", meta=False)
    t0 = time.monotonic()
    assert pack(ref, "train").returncode == 0
    window = time.monotonic() - t0
    root = make_root(tmp_path, big, ["train"], meta=False)
    rng, kills, left = random.Random(3), 0, False
    for attempt in range(8):
        proc = subprocess.Popen([sys.executable, str(PACK), "--root", str(root), "train"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=clean_env(), start_new_session=True)
        time.sleep(rng.uniform(0.3, 0.8) * window)
        if proc.poll() is None:
            # the whole job (as SLURM does), or the script alone (its builder sees the stream end)
            if attempt % 2:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if proc.returncode == 0:
            left = False             # that run finished the image (and cleared what was left)
            break
        assert not (root / "squashfs" / "train.sqfs").exists()
        left = bool(leftovers(root))
    assert kills >= 4, "only %d runs were killed mid-way" % kills
    r = pack(root, "train")
    assert r.returncode == 0, r.stderr
    assert ("a build interrupted earlier had written" in r.stderr) == left, r.stderr
    assert (root / "squashfs" / "train.sqfs").read_bytes() == (ref / "squashfs" / "train.sqfs").read_bytes()
    assert leftovers(root) == []


@needs_tools
def test_an_interrupted_build_is_started_over_and_said(tmp_path, release):
    root = make_root(tmp_path, release, ["train"], meta=False)
    (root / "squashfs").mkdir()
    stale = root / "squashfs" / ".train.sqfs.tmp-otherhost.12345"
    stale.write_bytes(b"half an image" * 1000)
    (root / "squashfs" / ".train.sqfs.lock").write_text('{"started": %d}\n' % (time.time() - 600))
    r = pack(root, "train")
    assert r.returncode == 0, r.stderr
    assert "a build interrupted earlier had written 12.7 KiB in" in r.stderr
    assert "cannot be resumed: removing it and starting over" in r.stderr
    assert not stale.exists() and leftovers(root) == []


@needs_tools
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_and_sigterm_remove_the_half_image(tmp_path, big, sig, code, said):
    root = make_root(tmp_path, big, ["train"], meta=False)
    proc = subprocess.Popen([sys.executable, str(PACK), "--root", str(root), "train"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    deadline = time.monotonic() + 30
    while not list((root / "squashfs").glob(".train.sqfs.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the build finished before the signal arrived")
    assert proc.returncode == code and said in err and "run the same command again" in err, err
    assert leftovers(root) == [] and not (root / "squashfs" / "train.sqfs").exists()


@needs_tools
def test_a_build_in_progress_is_not_started_twice(tmp_path, release):
    root = make_root(tmp_path, release, ["train"], meta=False)
    (root / "squashfs").mkdir()
    with open(root / "squashfs" / ".train.sqfs.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = pack(root, "train")
    assert r.returncode == 1 and "another 05_pack_squashfs.py is building" in r.stderr
    assert not (root / "squashfs" / "train.sqfs").exists()


@needs_tools
def test_an_image_not_made_here_is_left_alone(tmp_path, release):
    root = make_root(tmp_path, release, ["train"], meta=False)
    (root / "squashfs").mkdir()
    (root / "squashfs" / "train.sqfs").write_bytes(b"mine")
    r = pack(root, "train")
    assert r.returncode == 1 and "exists but was not completed by 05_pack_squashfs.py" in r.stderr
    assert (root / "squashfs" / "train.sqfs").read_bytes() == b"mine"


# ----------------------------------------------------------------------------- refused input

@needs_tools
@pytest.mark.parametrize("kind", minirelease.HOSTILE_KINDS)
def test_hostile_archives_are_refused_and_leave_nothing(tmp_path, kind):
    src = minirelease.make_hostile(tmp_path / "src", kind)
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    shutil.copy(src, root / "downloads" / src.name)
    split = "val" if kind.startswith("val-") else "train"
    r = pack(root, split)
    assert r.returncode == 1, r.stderr
    assert minirelease.HOSTILE_MESSAGES[kind] in r.stderr, r.stderr
    left = sorted(p.name for p in (root / "squashfs").iterdir()) if (root / "squashfs").exists() else []
    assert left in ([], [".%s.sqfs.lock" % split]), left
    assert not (tmp_path / "escaped.JPEG").exists()


@needs_tools
def test_val_labels_are_checked_before_the_builder_starts(tmp_path, release):
    root = make_root(tmp_path, release, ["val"], meta=False)
    r = pack(root, "val")
    assert r.returncode == 1
    assert "val: the images go into class folders by the validation labels" in r.stderr
    assert "run 02_convert_meta_clsloc.py first" in r.stderr
    assert "sqfstar" not in r.stderr and leftovers(root) == []
    assert not (root / "squashfs" / "val.sqfs").exists()


@needs_tools
def test_val_labels_that_do_not_cover_the_archive_are_refused(tmp_path, release):
    root = make_root(tmp_path, release, ["val"])
    labels = tmp_path / "short.txt"
    labels.write_text("".join(release.val[n] + "\n" for n in sorted(release.val)[:-1]))
    r = pack(root, "--labels", labels, "val")
    assert r.returncode == 1 and "1 without a label (%s)" % sorted(release.val)[-1] in r.stderr, \
        r.stderr
    assert "labelled but absent" not in r.stderr and "()" not in r.stderr, r.stderr
    assert not (root / "squashfs" / "val.sqfs").exists()


@needs_tools
def test_kaggle_labels_give_the_same_val_image(tmp_path, built, release):
    root = make_root(tmp_path, release, ["val"])
    r = pack(root, "--labels", release.labels["kaggle"], "val")
    assert r.returncode == 0, r.stderr
    assert (root / "squashfs" / "val.sqfs").read_bytes() == (built / "squashfs" / "val.sqfs").read_bytes()


# ----------------------------------------------------------------------------- --from-tree

@needs_tools
def test_from_tree_gives_the_same_listing_flat_or_sorted_val(tmp_path, built, release):
    root = make_root(tmp_path, release)
    r = pack(root, "--from-tree", "train")
    assert r.returncode == 1 and "01_unzip.sh has not marked it done" in r.stderr
    r = run(["bash", UNZIP, "--root", root, "train", "val", "test"], env=clean_env())
    assert r.returncode == 0, r.stderr
    r = pack(root, "--from-tree", "all")                 # val still flat: placed by the labels
    assert r.returncode == 0, r.stderr
    lln = {s: run(["unsquashfs", "-lln", built / "squashfs" / (s + ".sqfs")]).stdout
           for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        image = root / "squashfs" / (split + ".sqfs")
        assert run(["unsquashfs", "-lln", image]).stdout == lln[split], split
    flat_val = (root / "squashfs" / "val.sqfs").read_bytes()
    for name in ("val.sqfs", "val.sqfs.json"):
        (root / "squashfs" / name).unlink()
    r = run([sys.executable, SORT, "--root", root], env=clean_env())
    assert r.returncode == 0, r.stderr
    r = pack(root, "--from-tree", "val")                 # sorted by 03: packed as it is
    assert r.returncode == 0, r.stderr
    assert run(["unsquashfs", "-lln", root / "squashfs" / "val.sqfs"]).stdout == lln["val"]
    assert (root / "squashfs" / "val.sqfs").read_bytes() == flat_val


@needs_tools
def test_from_tree_refuses_a_tree_with_other_files(tmp_path, release):
    root = make_root(tmp_path, release, ["train"], meta=False)
    assert run(["bash", UNZIP, "--root", root, "train"], env=clean_env()).returncode == 0
    wnid = release.wnids_sorted[0]
    (root / "train" / wnid / "notes.txt").write_text("hi")
    r = pack(root, "--from-tree", "train")
    assert r.returncode == 1 and "notes.txt" in r.stderr and "move them out" in r.stderr
    (root / "train" / wnid / "notes.txt").unlink()
    (root / "train" / wnid / (release.train[wnid][0])).unlink()
    r = pack(root, "--from-tree", "train")              # the manifest says so before building
    assert r.returncode == 1 and "files in the manifest but not in the tree (1): train/%s/%s" \
        % (wnid, release.train[wnid][0]) in r.stderr, r.stderr
    (root / "meta" / "SHA256SUMS.train").unlink()       # 01 wrote it: not without it
    r = pack(root, "--from-tree", "train")
    assert r.returncode == 1 and "SHA256SUMS.train is missing, but 01_unzip.sh wrote it" \
        in r.stderr, r.stderr
    no_manifest(root, "train")                          # without one (and no class list): 01's bytes
    r = pack(root, "--from-tree", "train")
    assert r.returncode == 1 and "but 01_unzip.sh extracted" in r.stderr, r.stderr
    assert leftovers(root) == [] and not (root / "squashfs" / "train.sqfs").exists()


def no_manifest(root: Path, split: str) -> None:
    """The tree as `01_unzip.sh --no-manifest` leaves it: no manifest, and a done marker that
    says so."""
    with contextlib.suppress(FileNotFoundError):
        (root / "meta" / ("SHA256SUMS." + split)).unlink()
    marker = root / ".01_unzip" / (split + ".done")
    doc = json.loads(marker.read_text())
    doc["manifest"] = False
    marker.write_text(json.dumps(doc))


def extracted(tmp_path: Path, release, meta: bool = True) -> Path:
    """ROOT with train extracted by 01 (and its manifest); with meta, the devkit and 02 too."""
    root = make_root(tmp_path, release, ["train"], meta=meta)
    r = run(["bash", UNZIP, "--root", root, "train"], env=clean_env())
    assert r.returncode == 0, r.stderr
    return root


def refused(root: Path, r: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 1, the words said, no traceback, no image under its name, no temporary image."""
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert not (root / "squashfs" / "train.sqfs").exists()
    assert not (root / "squashfs" / "train.sqfs.json").exists()
    assert leftovers(root) == []


@needs_tools
def test_from_tree_hashes_each_file_against_the_manifest_while_streaming(tmp_path, release):
    """A byte changed after extraction: the structure is right, only the hash can see it."""
    root = extracted(tmp_path, release)
    wnid = release.wnids_sorted[4]
    rel = "train/%s/%s" % (wnid, release.train[wnid][-1])
    data = bytearray((root / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / rel).write_bytes(bytes(data))
    r = pack(root, "--from-tree", "train")
    refused(root, r, rel, "SHA256SUMS.train", "01_unzip.sh train", "04_verify.py --full train")
    assert "sqfstar" in r.stderr                       # found while streaming, in one read
    (root / rel).write_bytes(bytes(data[:-10]))         # truncated: its size says so at once
    r = pack(root, "--from-tree", "train")
    refused(root, r, rel, "01_unzip.sh wrote %s B" % format(len(data), ","))
    assert "sqfstar" not in r.stderr


@needs_tools
def test_from_tree_refuses_a_missing_class_before_building(tmp_path, release):
    root = extracted(tmp_path, release)
    wnid = release.wnids_sorted[2]
    shutil.rmtree(root / "train" / wnid)
    no_manifest(root, "train")                          # the class list alone finds it
    r = pack(root, "--from-tree", "train")
    refused(root, r, "class folders missing (1): " + wnid, "01_unzip.sh train",
            "04_verify.py --full train")
    assert "sqfstar" not in r.stderr                   # before the builder started


@needs_tools
def test_from_tree_refuses_fifos_and_links_never_opening_them(tmp_path, release):
    root = extracted(tmp_path, release)
    wnid = release.wnids_sorted[1]
    fifo = "train/%s/%s" % (wnid, release.train[wnid][0])
    (root / fifo).unlink()
    os.mkfifo(root / fifo)
    link = "train/%s/%s" % (wnid, release.train[wnid][1])
    (root / link).unlink()
    (root / link).symlink_to("/dev/zero")
    r = pack(root, "--from-tree", "train", timeout=30)
    refused(root, r, fifo + " (not a regular file: a FIFO)",
            link + " (not a regular file: a symbolic link)")


def capped() -> None:
    """In the child: at most 4 GiB of address space, so that a read of /dev/zero fails quickly
    instead of taking the machine's memory."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@needs_tools
@pytest.mark.parametrize("kind", ["missing", "fifo", "folder", "dev-zero"])
def test_from_tree_refuses_a_manifest_01_wrote_that_is_missing_or_not_a_file(tmp_path, release,
                                                                             kind):
    """01's done marker says "manifest": true: a tree whose manifest is gone, or replaced by a
    FIFO, a folder or a link, cannot be checked against what was extracted; no image is built.
    For a missing one the way out the message gives works: 01 writes it again."""
    root = extracted(tmp_path, release)
    path = root / "meta" / "SHA256SUMS.train"
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    said = {"missing": "%s is missing, but 01_unzip.sh wrote it" % path,
            "fifo": "%s is not a regular file (a FIFO)" % path,
            "folder": "%s is not a regular file (a folder)" % path,
            "dev-zero": "%s is not a regular file (a symbolic link to /dev/zero)" % path}[kind]
    r = pack(root, "--from-tree", "train", timeout=30, preexec_fn=capped)
    refused(root, r, said, "restore it", "01_unzip.sh train", "nothing was built")
    assert "sqfstar" not in r.stderr
    if kind != "missing":
        return
    (root / ".01_unzip" / "train.done").unlink()        # as the message says
    r = run(["bash", UNZIP, "--root", root, "train"], env=clean_env())
    assert r.returncode == 0 and path.is_file(), r.stderr
    r = pack(root, "--from-tree", "train")
    assert r.returncode == 0, r.stderr
    assert listing(root / "squashfs" / "train.sqfs") == \
        expected_listing(expected_files(release, "train"))


@needs_tools
@pytest.mark.parametrize("split", ["train", "test"])
def test_from_tree_refuses_a_file_of_another_size_before_reading_it(tmp_path, release, split):
    """A 5 GB sparse file in place of an image: its size (train: 01's record of each file;
    test: the bytes 01 extracted in all) refuses it before the builder starts, without reading
    it (hashing 5 GB would take a while)."""
    root = make_root(tmp_path, release, [split], meta=False)
    assert run(["bash", UNZIP, "--root", root, split], env=clean_env()).returncode == 0
    if split == "train":
        wnid = release.wnids_sorted[3]
        rel = "train/%s/%s" % (wnid, release.train[wnid][1])
    else:
        rel = "test/" + release.test[5]
    was = (root / rel).stat().st_size
    with open(root / rel, "r+b") as f:
        f.truncate(5 << 30)
    t0 = time.monotonic()
    r = pack(root, "--from-tree", split, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert rel in r.stderr and "files of another size than 01_unzip.sh wrote" in r.stderr, r.stderr
    if split == "train":
        assert "%s (5,368,709,120 B, 01_unzip.sh wrote %s B)" % (rel, format(was, ",")) \
            in r.stderr
    assert "sqfstar" not in r.stderr and time.monotonic() - t0 < 30
    assert leftovers(root) == [] and not (root / "squashfs" / (split + ".sqfs")).exists()


@needs_tools
@pytest.mark.parametrize("which", ["01's done marker", "05's marker", "--labels", "--meta"])
def test_markers_and_inputs_that_are_not_regular_files_are_refused(tmp_path, release, which):
    """A FIFO where 05 reads a done marker, the labels or the class list: named, at once."""
    if which in ("01's done marker", "05's marker"):
        root = extracted(tmp_path, release, meta=False)
        split, args = "train", ["--from-tree"]
        path = root / (".01_unzip/train.done" if which == "01's done marker"
                       else "squashfs/train.sqfs.json")
        path.parent.mkdir(exist_ok=True)
        if path.exists():
            path.unlink()
    else:
        root = make_root(tmp_path, release, ["val"])
        split, path = "val", tmp_path / "hostile.txt"
        args = [which, path]
    os.mkfifo(path)
    r = pack(root, *args, split, timeout=30, preexec_fn=capped)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "%s is not a regular file (a FIFO)" % path in r.stderr, r.stderr
    assert "sqfstar" not in r.stderr
    assert not (root / "squashfs" / (split + ".sqfs")).exists()


# ----------------------------------------------------------------------------- the fallback builder

@needs_tools
@pytest.mark.skipif(not shutil.which("tar2sqfs"), reason="squashfs-tools-ng (tar2sqfs) not installed")
def test_without_sqfstar_tar2sqfs_builds_the_same_tree_reproducibly(tmp_path, built, release):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tar2sqfs", "unsquashfs"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    images = []
    for name in ("a", "b"):
        root = make_root(tmp_path, release, ["train"], name, meta=False)
        r = pack(root, "--processors", "1" if name == "a" else "2", "train",
                 env=clean_env(PATH=str(bin_dir)))
        assert r.returncode == 0, r.stderr
        assert "building with" in r.stderr and "tar2sqfs" in r.stderr
        images.append(root / "squashfs" / "train.sqfs")
    assert images[0].read_bytes() == images[1].read_bytes()
    assert listing(images[0]) == listing(built / "squashfs" / "train.sqfs")


# ----------------------------------------------------------------------------- mounting

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"


def fuse_problem(tmp_path: Path, image: Path) -> str:
    """Why squashfuse cannot mount here ('' when it can): tried, not guessed."""
    if not shutil.which("squashfuse"):
        return "squashfuse not installed (Debian package squashfuse)"
    if not shutil.which(FUSERMOUNT):
        return "fusermount not installed (Debian package fuse3)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this container)"
    probe = tmp_path / "probe"
    probe.mkdir()
    r = run(["squashfuse", image, probe], timeout=30)
    if r.returncode != 0:
        return "squashfuse cannot mount here: %s" % (r.stderr.strip() or r.returncode)
    run([FUSERMOUNT, "-u", probe])
    return ""


@needs_tools
def test_mounted_with_squashfuse_the_image_is_the_tree(tmp_path, built, release):
    image = built / "squashfs" / "train.sqfs"
    why = fuse_problem(tmp_path, image)
    if why:
        pytest.skip(why)
    mnt = tmp_path / "train"
    mnt.mkdir()
    assert run(["squashfuse", image, mnt]).returncode == 0
    try:
        got = {str(p.relative_to(mnt)): p.read_bytes() for p in sorted(mnt.rglob("*")) if p.is_file()}
        assert got == expected_files(release, "train")
        assert oct(mnt.stat().st_mode & 0o777) == "0o755"
    finally:
        run([FUSERMOUNT, "-u", mnt])


# ----------------------------------------------------------------------------- the SLURM example

def test_slurm_example_is_shellcheck_clean():
    assert run(["bash", "-n", SBATCH]).returncode == 0
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    r = run(["shellcheck", "-x", SBATCH])
    assert r.returncode == 0, r.stdout


@needs_tools
@pytest.mark.parametrize("mode", ["unpack", "auto"])
def test_slurm_example_runs_the_command_on_a_local_copy(tmp_path, built, release, mode):
    local = tmp_path / "local"
    local.mkdir()
    show = ('cd "$IMAGENET_ROOT" && find train val -type f | sort > "$0" && '
            'echo "$IMAGENET_SHARED_ROOT" >> "$0" && test -f meta/synsets.csv')
    out = tmp_path / "seen.txt"
    r = run(["bash", SBATCH, "sh", "-c", show, out],
            env=clean_env(IMAGENET_ROOT=str(built), SLURM_TMPDIR=str(local),
                          IMAGENET_SQUASHFS_MODE=mode))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    want = sorted(["train/" + p for p in expected_files(release, "train")]
                  + ["val/" + p for p in expected_files(release, "val")])
    assert lines == want + [str(built)]
    assert list(local.iterdir()) == []                 # unmounted and removed
    assert "unpacking" in r.stderr if mode == "unpack" else "mounting it at" in r.stderr \
        or "unpacking" in r.stderr


def test_slurm_example_without_images_says_what_to_run(tmp_path):
    r = run(["bash", SBATCH, "true"], env=clean_env(IMAGENET_ROOT=str(tmp_path)))
    assert r.returncode == 1
    assert "no finished image of train val" in r.stderr and "05_pack_squashfs.py --root" in r.stderr


@needs_tools
def test_an_output_folder_that_is_a_file_or_a_broken_link_is_named(tmp_path, release):
    root = make_root(tmp_path, release, ["val"], meta=True)
    out = root / "squashfs"
    out.write_text("mine\n")
    r = pack(root, "val")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "%s is not a folder: the images go into a folder of that name; move it away" % out \
        in r.stderr, r.stderr
    assert out.read_text() == "mine\n"
    out.unlink()
    out.symlink_to(tmp_path / "gone")
    r = pack(root, "val")
    assert r.returncode == 1, r.stderr
    assert "%s is a symbolic link to %s, which is not a folder (or is not there)" \
        % (out, tmp_path / "gone") in r.stderr, r.stderr
    assert not (tmp_path / "gone").exists()
