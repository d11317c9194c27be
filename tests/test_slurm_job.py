"""The cluster job scripts (examples/slurm/*.sbatch) under a real SLURM.

A single-node cluster (munged, slurmctld, slurmd as root; tests/slurmcluster.py) runs the exact
files on the miniature release, the way a user would: from a copy of the repository folder as a
clone has it (the files git knows, plus a urls.sh), `cd` there and
`bash examples/slurm/imagenet_prep.sbatch`; the node-local variant is also submitted from another
folder with IMAGENET_PREP_DIR pointing at the copy. The tests assert the trees on disk, the job
states and the per-task logs. Without the Debian packages slurmctld slurmd slurm-client munge (or
without root) the SLURM tests skip with the reason.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, run, small_tmpfs
from slurmcluster import SlurmCluster, SlurmError

# the job scripts as a user names them, from the repository folder
PREP = "examples/slurm/imagenet_prep.sbatch"
PREP_LOCAL = "examples/slurm/imagenet_prep_local.sbatch"
SCRIPTS = ("00_download.sh", "01_unzip.sh", "02_convert_meta_clsloc.py",
           "03_build_val_class_folders.py")
# outside a git checkout: what the job scripts need of the repository
FALLBACK_FILES = (*SCRIPTS, "urls.sh.example", "imagenet_prep", "examples")
URL_SUFFIX = {"train": "train", "val": "val", "test": "test", "devkit": "devkit_t12"}
SHARDS = 4
JOB_TIMEOUT = 120  # seconds for a chain of jobs to leave the queue (they take ~5 s here)
SYNSETS_HEADER = "ilsvrc_id,class_index,wnid,words,description,num_train_images"
SUBMITTED = re.compile(r"download job (\d+), train array job (\d+) \((\d+) tasks\), finish job (\d+)")

# The command the node-local tests give imagenet_prep_local.sbatch: copy the prepared local tree
# to shared storage ($0 = the output folder) so the test can see what the job saw.
SHOW_LOCAL = ('d="$0/${SLURM_ARRAY_TASK_ID:-single}"; mkdir -p "$d" && '
              'cp -r "$IMAGENET_ROOT/train" "$IMAGENET_ROOT/val" "$IMAGENET_ROOT/meta" "$d/" && '
              'printf "%s\\n" "$IMAGENET_ROOT" "$IMAGENET_SHARED_ROOT" >"$d/roots"')


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def cluster():
    """A running single-node SLURM for the whole module; stopped and removed even on failure."""
    reason = SlurmCluster.unavailable()
    if reason:
        pytest.skip(reason)
    c = SlurmCluster()
    try:
        c.start()
    except (SlurmError, OSError, subprocess.SubprocessError) as e:
        c.stop()
        c.cleanup()
        pytest.skip("could not start a single-node SLURM here: %s" % str(e)[-3000:])
    try:
        yield c
    finally:
        c.stop()
        c.cleanup()


def write_urls(path: Path, release, broken: str = "") -> Path:
    """urls.sh with file:// links to the release and its checksums; `broken` points nowhere."""
    lines = ["# written by tests/test_slurm_job.py"]
    for split, suffix in URL_SUFFIX.items():
        archive = release.archives[split]
        if split == broken:
            archive = archive.with_name("missing-" + archive.name)
        lines.append('DOWNLOAD_URL_%s="file://%s"' % (suffix, archive))
        lines.append('MD5_%s="%s"' % (suffix, release.md5[split]))
    path.write_text("\n".join(lines) + "\n")
    return path


def repo_files() -> list[str]:
    """The repository's files as a clone has them: what git tracks, plus new files not ignored (a
    module being written counts; urls.sh, data and caches do not). Outside a git checkout: the
    numbered scripts, the package, the examples and urls.sh.example."""
    if shutil.which("git"):
        r = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        if r.returncode == 0 and r.stdout:
            return sorted(f for f in r.stdout.split("\0") if f and (REPO / f).is_file())
    out = []
    for name in FALLBACK_FILES:
        path = REPO / name
        files = [path] if path.is_file() else [f for f in path.rglob("*")
                                                 if f.is_file() and "__pycache__" not in f.parts]
        out += [str(f.relative_to(REPO)) for f in files]
    return sorted(out)


def repo_copy(tmp_path: Path, release, broken: str = "") -> Path:
    """What a user has: the repository folder (a clone), with their urls.sh in it."""
    clone = tmp_path / "imagenet-prep"
    for name in repo_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    for name in (*SCRIPTS, PREP, PREP_LOCAL):
        assert (clone / name).is_file(), "%s is missing from the copy of the repository" % name
    write_urls(clone / "urls.sh", release, broken)
    return clone


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def tree(folder: Path) -> dict[str, list[str]]:
    """{subfolder: sorted file names} of a train/ or val/ folder (hidden bookkeeping left out)."""
    loose = [n for n in visible(folder) if not (folder / n).is_dir()]
    assert not loose, "files outside the class folders of %s: %s" % (folder, loose[:5])
    return {d: visible(folder / d) for d in visible(folder)}


def expected_val(release) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, wnid in release.val.items():
        out.setdefault(wnid, []).append(name)
    return {w: sorted(v) for w, v in out.items()}


def assert_dataset(root: Path, release) -> None:
    """train/ and val/ hold exactly the release's images per class; meta/synsets.csv is right."""
    assert tree(root / "train") == release.train
    assert tree(root / "val") == expected_val(release)
    with open(root / "meta" / "synsets.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert ",".join(rows[0]) == SYNSETS_HEADER
    assert [r[2] for r in rows[1:]] == [c.wnid for c in release.classes]
    leftovers = [str(p) for p in root.rglob("*") if p.name.endswith(".part") or ".tmp" in p.name]
    assert not leftovers, leftovers


def logs(folder: Path) -> str:
    """Every job log in the submit folder, for failure messages."""
    return "\n".join("==== %s\n%s" % (p.name, p.read_text(errors="replace"))
                     for p in sorted(folder.glob("*.out")))


def states(cluster: SlurmCluster, ids: set) -> dict[str, str]:
    """{job id, or 'ARRAYID_TASK' for an array task: final state} of the given jobs (jobcomp log)."""
    out = {}
    for j in cluster.jobs():
        base = j.get("ArrayJobId") or j.get("JobId", "")
        if base not in ids:
            continue
        task = j.get("ArrayTaskId")
        out[base if task is None else "%s_%s" % (base, task)] = j.get("JobState", "")
    return out


def downloaded(tmp_path: Path, release) -> tuple[Path, Path]:
    """The repository folder and a shared root whose downloads/ 00_download.sh has filled."""
    clone = repo_copy(tmp_path, release)
    shared = tmp_path / "shared" / "imagenet"
    shared.mkdir(parents=True)
    r = run(["bash", clone / "00_download.sh", "--root", shared, "--urls", clone / "urls.sh",
             "train", "val", "devkit"], timeout=60)
    assert r.returncode == 0, r.stderr
    return clone, shared


def wait(cluster: SlurmCluster, folder: Path, ids: set, timeout: float = JOB_TIMEOUT) -> None:
    """Wait for these jobs to leave the queue; if they do not, they are cancelled and the test fails."""
    try:
        cluster.wait_jobs(ids, timeout)
    except SlurmError as e:
        pytest.fail("%s\n%s" % (e, logs(folder)))


def submit_chain(cluster: SlurmCluster, clone: Path, root: Path, classes: int) -> tuple[str, str, str]:
    """`bash examples/slurm/imagenet_prep.sbatch` in the repository folder; the three job ids."""
    r = cluster.run(["bash", PREP], cwd=clone, env={
        "IMAGENET_ROOT": str(root), "IMAGENET_EXPECT_CLASSES": str(classes),
        "IMAGENET_SHARDS": str(SHARDS)})
    assert r.returncode == 0, r.stderr
    m = SUBMITTED.search(r.stderr)
    assert m, r.stderr
    assert int(m.group(3)) == SHARDS
    return m.group(1), m.group(2), m.group(4)


# ----------------------------------------------------------------------------- under SLURM

@pytest.mark.slurm
def test_array_job_builds_the_exact_tree_and_a_rerun_is_already_done(cluster, release, tmp_path):
    clone = repo_copy(tmp_path, release)
    root = tmp_path / "shared" / "imagenet"  # not there yet: the download step creates it

    download, train, finish = submit_chain(cluster, clone, root, len(release.classes))
    ids = {download, train, finish}
    wait(cluster, clone, ids)
    got = states(cluster, ids)
    want = {download: "COMPLETED", finish: "COMPLETED",
            **{"%s_%d" % (train, k): "COMPLETED" for k in range(SHARDS)}}
    assert got == want, logs(clone)

    # each of the 4 array tasks ran its own shard and wrote its own log
    for k in range(SHARDS):
        out = (clone / ("imagenet-prep-train-%s_%d.out" % (train, k))).read_text()
        assert "array task %d of %d" % (k, SHARDS) in out, out
        assert "shard %d/%d" % (k, SHARDS) in out, out
    assert (clone / ("imagenet-prep-download-%s.out" % download)).is_file()
    assert (clone / ("imagenet-prep-finish-%s.out" % finish)).is_file()

    # the exact tree: archives downloaded once, train and val by class, the class metadata
    archives = sorted(release.archives[s].name for s in ("train", "val", "devkit"))
    names = visible(root / "downloads")
    assert set(archives) <= set(names), names
    assert all(n.startswith(tuple(archives)) for n in names), names  # archives (+ 00's sidecars)
    for s in ("train", "val", "devkit"):
        assert (root / "downloads" / release.archives[s].name).stat().st_size == release.sizes[s]
    assert_dataset(root, release)
    assert not (root / "test").exists()  # not asked for
    assert sorted(visible(root)) == ["devkit", "downloads", "meta", "train", "val"]

    # submitted again on the finished root: every step completes and says "already done"
    before = {p: p.stat().st_mtime_ns for p in (root / "train").rglob("*.JPEG")}
    download2, train2, finish2 = submit_chain(cluster, clone, root, len(release.classes))
    wait(cluster, clone, {download2, train2, finish2})
    assert set(states(cluster, {download2, train2, finish2}).values()) == {"COMPLETED"}, logs(clone)
    for name in ["imagenet-prep-download-%s.out" % download2,
                 "imagenet-prep-train-%s_0.out" % train2, "imagenet-prep-finish-%s.out" % finish2]:
        assert "already done" in (clone / name).read_text(), logs(clone)
    assert_dataset(root, release)
    assert {p: p.stat().st_mtime_ns for p in (root / "train").rglob("*.JPEG")} == before


@pytest.mark.slurm
def test_a_failed_download_cancels_the_waiting_steps_and_a_resubmit_finishes(cluster, release,
                                                                             tmp_path):
    clone = repo_copy(tmp_path, release, broken="val")
    root = tmp_path / "imagenet"
    download, train, finish = submit_chain(cluster, clone, root, len(release.classes))
    wait(cluster, clone, {download, train, finish})  # none may wait for a dependency that never comes
    got = states(cluster, {download, train, finish})
    assert got.get(download) == "FAILED", (got, logs(clone))
    assert all(v == "CANCELLED" for k, v in got.items() if k != download), (got, logs(clone))
    out = (clone / ("imagenet-prep-download-%s.out" % download)).read_text()
    assert "missing-" + release.archives["val"].name in out, out
    assert not (root / "train").exists() and not (root / "val").exists()
    assert not list(clone.glob("imagenet-prep-train-*.out"))

    # the user fixes the link and submits again: the chain completes from where it stopped
    write_urls(clone / "urls.sh", release)
    ids = set(submit_chain(cluster, clone, root, len(release.classes)))
    wait(cluster, clone, ids)
    assert set(states(cluster, ids).values()) == {"COMPLETED"}, logs(clone)
    assert_dataset(root, release)


@pytest.mark.slurm
def test_node_local_variant_gives_every_array_task_its_own_full_copy(cluster, release, tmp_path):
    clone, shared = downloaded(tmp_path, release)
    node_local = tmp_path / "node-local-tmp"  # stands for /tmp: stock SLURM sets no SLURM_TMPDIR
    node_local.mkdir()
    out = tmp_path / "seen-by-job"
    project = tmp_path / "project"  # the user's training folder: submitted from there
    project.mkdir()

    jid = cluster.sbatch(["--array=0-1", clone / PREP_LOCAL, "sh", "-c", SHOW_LOCAL, out],
                         cwd=project, env={
        "IMAGENET_ROOT": str(shared), "IMAGENET_EXPECT_CLASSES": str(len(release.classes)),
        "IMAGENET_PREP_DIR": str(clone), "TMPDIR": str(node_local)})
    wait(cluster, project, {jid})
    assert states(cluster, {jid}) == {"%s_0" % jid: "COMPLETED", "%s_1" % jid: "COMPLETED"}, \
        logs(project)
    # the two tasks' logs are in the submit folder; nothing was written into the repository
    assert [p.suffix for p in project.iterdir()] == [".out", ".out"], logs(project)
    assert not list(clone.glob("*.out"))
    for k in (0, 1):
        seen = out / str(k)
        assert_dataset(seen, release)
        assert sorted(visible(seen)) == ["meta", "roots", "train", "val"]
        local, seen_shared = (seen / "roots").read_text().split()
        assert Path(local).parent == node_local and Path(seen_shared) == shared
        assert not Path(local).exists()  # removed at the end of the job
    assert list(node_local.iterdir()) == []
    assert visible(shared) == ["downloads"]  # nothing extracted on shared storage


# ----------------------------------------------------------------------------- without SLURM

def test_job_scripts_are_shellcheck_clean():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    r = run(["shellcheck", "-x", REPO / PREP, REPO / PREP_LOCAL])
    assert r.returncode == 0, r.stdout


def prep(cwd: Path, *args, env=None):
    """Run a job script outside SLURM, as a user would by mistake or to try it on a workstation;
    from cwd (the repository folder, unless a test says otherwise)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "IMAGENET_"))}
    base["SLURM_CONF"] = str(cwd / "no-such-slurm.conf")  # a stray sbatch could submit nowhere
    base.update(env or {})
    return run(["bash", *args], cwd=cwd, env=base, timeout=60)


@pytest.mark.parametrize("case, env, remove, code, message", [
    ("no root", {}, None, 1, "IMAGENET_ROOT is not set: export IMAGENET_ROOT="),
    ("script missing", {"IMAGENET_ROOT": "ROOT"}, "01_unzip.sh", 1,
     "is not the imagenet-prep repository folder (no 01_unzip.sh there): submit from your clone "
     "(cd ~/imagenet-prep && bash examples/slurm/imagenet_prep.sbatch) or set IMAGENET_PREP_DIR"),
    ("package missing", {"IMAGENET_ROOT": "ROOT"}, "imagenet_prep", 1,
     "is not the imagenet-prep repository folder (no imagenet_prep/ there)"),
    ("no urls.sh", {"IMAGENET_ROOT": "ROOT"}, "urls.sh", 1,
     "urls.sh not found: cp urls.sh.example urls.sh and fill in your links"),
    ("bad shards", {"IMAGENET_ROOT": "ROOT", "IMAGENET_SHARDS": "0"}, None, 1,
     "IMAGENET_SHARDS must be a positive number, got '0'"),
])
def test_submit_refuses_a_bad_setup_before_submitting(release, tmp_path, case, env, remove, code,
                                                       message):
    clone = repo_copy(tmp_path, release)
    root = tmp_path / "root"
    root.mkdir()
    if remove and (clone / remove).is_dir():
        shutil.rmtree(clone / remove)
    elif remove:
        (clone / remove).unlink()
    env = {k: v.replace("ROOT", str(root)) for k, v in env.items()}
    r = prep(clone, PREP, env=env)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert list(root.iterdir()) == [] and not list(clone.glob("*.out"))


def test_the_repository_is_the_submit_folder_or_imagenet_prep_dir(release, tmp_path):
    clone = repo_copy(tmp_path, release)
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    elsewhere.mkdir()
    root.mkdir()
    # run from another folder: that folder is taken for the repository and refused, saying what to do
    r = prep(elsewhere, clone / PREP, env={"IMAGENET_ROOT": str(root)})
    assert r.returncode == 1, r.stderr
    assert ("%s is not the imagenet-prep repository folder (no 00_download.sh 01_unzip.sh "
            "02_convert_meta_clsloc.py 03_build_val_class_folders.py imagenet_prep/ there): submit "
            "from your clone (cd ~/imagenet-prep && bash examples/slurm/imagenet_prep.sbatch) or set "
            "IMAGENET_PREP_DIR to it" % elsewhere) in r.stderr
    # IMAGENET_PREP_DIR names it: accepted, and urls.sh is looked for there
    (clone / "urls.sh").unlink()
    r = prep(elsewhere, clone / PREP, env={"IMAGENET_ROOT": str(root), "IMAGENET_PREP_DIR": str(clone)})
    assert r.returncode == 1, r.stderr
    assert "%s/urls.sh not found: cp urls.sh.example urls.sh" % clone in r.stderr
    # IMAGENET_PREP_DIR comes before the submit folder
    r = prep(clone, PREP, env={"IMAGENET_ROOT": str(root), "IMAGENET_PREP_DIR": str(elsewhere)})
    assert r.returncode == 1, r.stderr
    assert "%s is not the imagenet-prep repository folder" % elsewhere in r.stderr
    assert visible(root) == [] and visible(elsewhere) == [] and not list(clone.glob("*.out"))


@pytest.mark.parametrize("args", [["bogus"], ["train", "extra"]])
def test_unknown_step_is_a_usage_error(release, tmp_path, args):
    clone = repo_copy(tmp_path, release)
    r = prep(clone, PREP, *args, env={"IMAGENET_ROOT": str(tmp_path)})
    assert r.returncode == 2
    assert "usage: bash examples/slurm/imagenet_prep.sbatch" in r.stderr


def test_local_variant_needs_a_command_and_the_downloads(release, tmp_path):
    clone = repo_copy(tmp_path, release)
    shared = tmp_path / "imagenet"
    shared.mkdir()
    r = prep(clone, PREP_LOCAL, env={"IMAGENET_ROOT": str(shared)})
    assert r.returncode == 2 and "usage: sbatch examples/slurm/imagenet_prep_local.sbatch COMMAND" in r.stderr
    r = prep(clone, PREP_LOCAL, "true", env={"IMAGENET_ROOT": str(shared), "TMPDIR": str(tmp_path)})
    assert r.returncode == 1
    assert ("%s/downloads/ILSVRC2012_img_train.tar not found: download first" % shared) in r.stderr
    assert visible(tmp_path) == ["imagenet", "imagenet-prep"]  # no local folder was made


def test_local_variant_finds_the_repository_by_imagenet_prep_dir(release, tmp_path):
    clone = repo_copy(tmp_path, release)
    shared, project = tmp_path / "imagenet", tmp_path / "project"
    shared.mkdir()
    project.mkdir()
    env = {"IMAGENET_ROOT": str(shared), "TMPDIR": str(tmp_path)}
    # submitted from a training project's folder without IMAGENET_PREP_DIR: refused, saying what to do
    r = prep(project, clone / PREP_LOCAL, "true", env=env)
    assert r.returncode == 1, r.stderr
    assert ("%s is not the imagenet-prep repository folder (no 01_unzip.sh 02_convert_meta_clsloc.py "
            "03_build_val_class_folders.py imagenet_prep/ there): set IMAGENET_PREP_DIR to your clone"
            % project) in r.stderr
    # with it, the job gets past that check (and stops at the missing downloads)
    r = prep(project, clone / PREP_LOCAL, "true", env={**env, "IMAGENET_PREP_DIR": str(clone)})
    assert r.returncode == 1, r.stderr
    assert "%s/downloads/ILSVRC2012_img_train.tar not found: download first" % shared in r.stderr
    assert visible(tmp_path) == ["imagenet", "imagenet-prep", "project"]  # no local folder was made
    assert visible(project) == []


def test_local_variant_prefers_slurm_tmpdir_and_passes_on_the_exit_code(release, tmp_path):
    clone, shared = downloaded(tmp_path, release)
    slurm_tmp, tmp = tmp_path / "slurm_tmpdir", tmp_path / "tmpdir"
    slurm_tmp.mkdir()
    tmp.mkdir()
    seen = tmp_path / "seen"
    r = prep(clone, PREP_LOCAL, "sh", "-c", 'ls "$IMAGENET_ROOT/train" | wc -l >"$0"; '
             'printf "%s" "$IMAGENET_ROOT" >>"$0"; exit 3', seen,
             env={"IMAGENET_ROOT": str(shared), "SLURM_TMPDIR": str(slurm_tmp), "TMPDIR": str(tmp),
                  "IMAGENET_EXPECT_CLASSES": str(len(release.classes))})
    assert r.returncode == 3, r.stderr
    count, local = seen.read_text().split()
    assert int(count) == len(release.classes)
    assert Path(local).parent == slurm_tmp and not Path(local).exists()
    assert list(slurm_tmp.iterdir()) == [] and list(tmp.iterdir()) == []
    assert "command exited with 3" in r.stderr and "removing the local copy" in r.stderr


def test_local_variant_refuses_a_too_small_local_disk(release, tmp_path):
    clone, shared = downloaded(tmp_path, release)
    with small_tmpfs(tmp_path / "tiny", "size=64k") as tiny:
        r = prep(clone, PREP_LOCAL, "true", env={"IMAGENET_ROOT": str(shared), "TMPDIR": str(tiny)})
        left = list(tiny.iterdir())
    assert r.returncode == 1
    assert re.search(r"error: %s has 64\.0 KiB free, the archives and their extracted copy need "
                     r"[0-9.]+ MiB: ask for a node with a bigger local disk" % re.escape(str(tiny)),
                     r.stderr), r.stderr
    assert left == []  # the empty local folder was removed again


@pytest.mark.slurm
def test_node_local_copy_is_removed_when_the_job_is_cancelled(cluster, release, tmp_path):
    clone, shared = downloaded(tmp_path, release)
    node_local = tmp_path / "node-local-tmp"
    node_local.mkdir()
    started = tmp_path / "started"
    jid = cluster.sbatch([PREP_LOCAL, "sh", "-c", 'echo "$IMAGENET_ROOT" >"$0.part" && '
                          'mv "$0.part" "$0" && exec sleep 300', started], cwd=clone, env={
        "IMAGENET_ROOT": str(shared), "IMAGENET_EXPECT_CLASSES": str(len(release.classes)),
        "TMPDIR": str(node_local)})
    end = time.monotonic() + JOB_TIMEOUT
    while not started.exists():
        if time.monotonic() > end or not cluster.queue():
            wait(cluster, clone, {jid}, timeout=0)
            pytest.fail("the job's command never started\n" + logs(clone))
        time.sleep(0.2)
    local = Path(started.read_text().strip())
    assert (local / "train").is_dir()
    assert cluster.run(["scancel", jid]).returncode == 0
    wait(cluster, clone, {jid})
    assert states(cluster, {jid}) == {jid: "CANCELLED"}
    assert not local.exists(), logs(clone)
    assert list(node_local.iterdir()) == []
    assert "removing the local copy" in logs(clone)


@pytest.mark.slurm
def test_the_test_cluster_run_by_hand_removes_its_folder_when_stopped(tmp_path):
    """`python3 tests/slurmcluster.py` (docs/slurm.md): Ctrl-C stops the cluster and leaves no
    /tmp/slurm-* folder behind."""
    reason = SlurmCluster.unavailable()
    if reason:
        pytest.skip(reason)
    proc = subprocess.Popen(["python3", str(REPO / "tests" / "slurmcluster.py")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()                   # after the start, or "" if it failed
        m = re.match(r"export SLURM_CONF=(\S+)/slurm\.conf ", line)
        if not m:
            proc.kill()
            pytest.skip("the test cluster did not start here: %s" % proc.communicate()[1][-2000:])
        folder = Path(m.group(1))
        assert folder.is_dir()
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped; removed %s" % folder in err and "Traceback" not in err, err
    assert not folder.exists()
