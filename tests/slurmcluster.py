"""A throw-away single-node SLURM cluster for tests: munged, slurmctld and slurmd, as root.

    cluster = SlurmCluster()            # nothing runs yet
    reason = cluster.unavailable()      # None, or why this machine cannot host it (skip the test)
    cluster.start()                     # private munge key and socket, free ports, node idle
    jid = cluster.sbatch(["job.sbatch"], cwd=jobdir, env={...})
    cluster.wait_jobs({jid}, timeout=120)  # until those jobs left the queue (else cancel them)
    cluster.wait_idle(timeout=120)      # until no job at all is queued or running
    cluster.jobs()                      # finished jobs, from the jobcomp/filetxt log
    cluster.stop()                      # cancels what is left and stops the three daemons

Everything lives in one temporary directory (config, keys, state, spool, logs), the ports are picked
free, and the daemons run in the foreground as children of the test, so two test runs on one machine
do not see each other and nothing is left behind. The daemons get SIGTERM when the test process dies
(prctl PR_SET_PDEATHSIG), so even a killed pytest leaves no cluster running. Client commands get
SLURM_CONF from `env()`.

The configuration needs no systemd and no cgroups: proctrack/linuxproc, task/none, accounting off.
The node is declared with more CPUs and memory than the machine may have (config_overrides), so that
job scripts can keep the resource requests they would use on a real cluster; nothing is enforced.

Run as a command to poke at it by hand: `python3 tests/slurmcluster.py` starts the cluster, prints
the `export SLURM_CONF=...` line and waits for Ctrl-C (or SIGTERM), then stops it and removes its
folder (`--keep` keeps it, for the logs).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel")
PACKAGES = "slurmctld slurmd slurm-client munge"
NODE_CPUS = 32          # declared, not real: job scripts ask for realistic --cpus-per-task
NODE_MEMORY_MB = 64000  # declared, not real: and for realistic --mem
START_TIMEOUT = 30.0    # seconds for the node to become idle
STOP_TIMEOUT = 10.0     # seconds for a daemon to exit after SIGTERM
PR_SET_PDEATHSIG = 1    # prctl(2)

CONF = """\
# Single-node test cluster written by tests/slurmcluster.py
ClusterName=imagenetprep
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={dir}/jobcomp.txt
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() is then the only way the daemons end


def _which(name: str) -> Optional[str]:
    """Full path of a command; the daemons live in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


class SlurmError(RuntimeError):
    """The cluster did not start or a client command failed; the message carries the logs."""


class SlurmCluster:
    def __init__(self, base: Optional[Path] = None) -> None:
        self.base = base
        self.dir: Optional[Path] = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.host = socket.gethostname().split(".")[0]

    # ------------------------------------------------------------------ availability
    @staticmethod
    def unavailable() -> Optional[str]:
        """Why this machine cannot run the cluster, or None."""
        missing = [c for c in DAEMONS + CLIENTS if not _which(c)]
        if missing:
            return "SLURM/munge not installed (missing %s); Debian: apt-get install %s" % (
                ", ".join(missing), PACKAGES)
        if os.geteuid() != 0:
            return "starting slurmd/slurmctld needs root (SlurmUser=root)"
        return None

    # ------------------------------------------------------------------ lifecycle
    def env(self, extra: Optional[dict] = None) -> dict:
        """Environment for client commands (sbatch, squeue, ...) talking to this cluster."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        for k in list(env):  # a surrounding SLURM job must not leak into ours
            if k.startswith("SLURM_") and k != "SLURM_CONF":
                del env[k]
        env.update(extra or {})
        return env

    @property
    def conf(self) -> Path:
        assert self.dir is not None, "cluster not started"
        return self.dir / "slurm.conf"

    def _spawn(self, name: str, cmd: list) -> None:
        log = open(self.dir / ("%s.stderr" % name), "wb")
        cmd = [_which(cmd[0]) or cmd[0]] + [str(c) for c in cmd[1:]]
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, env=self.env(),
                                            start_new_session=True, preexec_fn=_die_with_parent)
        log.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise SlurmError("%s exited with %s during start-up\n%s"
                                 % (name, p.returncode, self.logs()))

    def start(self) -> None:
        # A short path: the munge socket path must fit in a sockaddr_un (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-", dir=self.base or "/tmp"))
        d = self.dir
        d.chmod(0o755)  # munged wants every directory on its socket path searchable by all
        for sub in ("state", "spool", "munge"):
            (d / sub).mkdir()
        (d / "munge").chmod(0o755)
        key = d / "munge" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(1024))
        os.close(fd)
        sock = d / "munge" / "munge.socket"
        self.conf.write_text(CONF.format(
            host=self.host, ctld_port=_free_port(), slurmd_port=_free_port(), munge_socket=sock,
            dir=d, cpus=NODE_CPUS, memory=NODE_MEMORY_MB))

        self._spawn("munged", ["munged", "--foreground", "--force", "--socket", sock,
                               "--key-file", key, "--pid-file", d / "munge" / "munged.pid",
                               "--log-file", d / "munge" / "munged.log",
                               "--seed-file", d / "munge" / "munged.seed"])
        self._wait(lambda: sock.exists(), 10, "munged socket %s" % sock)
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-i", "-f", self.conf])
        self._wait(lambda: "UP" in self._client(["scontrol", "ping"], check=False).stdout,
                   START_TIMEOUT, "slurmctld to answer scontrol ping")
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.host, "-f", self.conf])
        self._wait(lambda: self.node_state() == "idle", START_TIMEOUT, "node %s idle" % self.host)

    def _wait(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._check_alive()
            if cond():
                return
            time.sleep(0.2)
        raise SlurmError("timed out after %.0f s waiting for %s\n%s" % (timeout, what, self.logs()))

    def stop(self) -> None:
        """Cancel what is left, stop the daemons (SIGTERM, then SIGKILL), keep the logs."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            ids = self._client(["squeue", "-h", "-o", "%A"], check=False).stdout.split()
            if ids:
                self._client(["scancel", *sorted(set(ids))], check=False)
                end = time.monotonic() + STOP_TIMEOUT
                while time.monotonic() < end and self._client(
                        ["squeue", "-h", "-t", "R,CG", "-o", "%A"], check=False).stdout.strip():
                    time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(STOP_TIMEOUT)

    def cleanup(self) -> None:
        """Remove the temporary directory (call after stop(); keep it to read logs)."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ clients
    def _client(self, cmd: list, check: bool = True, timeout: float = 30, **kw
                ) -> subprocess.CompletedProcess:
        kw.setdefault("env", self.env())
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise SlurmError("%s failed (exit %d): %s%s" % (" ".join(map(str, cmd)), r.returncode,
                                                         r.stdout, r.stderr))
        return r

    def run(self, cmd: list, cwd=None, env: Optional[dict] = None, timeout: float = 60
            ) -> subprocess.CompletedProcess:
        """Run a client-side command (e.g. a submit script) with this cluster's SLURM_CONF."""
        return self._client(cmd, check=False, cwd=cwd, env=self.env(env), timeout=timeout)

    def sbatch(self, args: list, cwd=None, env: Optional[dict] = None) -> str:
        """Submit; return the job id."""
        r = self._client(["sbatch", "--parsable", *args], cwd=cwd, env=self.env(env))
        return r.stdout.strip().split(";")[0]

    def node_state(self) -> str:
        r = self._client(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    def queue(self) -> list:
        """(job id, state, reason) of every job still pending or running."""
        r = self._client(["squeue", "-h", "-o", "%i|%T|%r"])
        return [tuple(line.split("|")) for line in r.stdout.splitlines() if line]

    def wait_jobs(self, ids, timeout: float) -> None:
        """Wait until the given jobs (array jobs with all their tasks) have left the queue.

        On timeout they are cancelled, so that one stuck job cannot hold up the next test, and
        SlurmError says which were still queued and in what state.
        """
        ids = {str(i) for i in ids}
        end = time.monotonic() + timeout
        while True:
            mine = [j for j in self._queue_full() if j[0] in ids or j[1] in ids]
            if not mine:
                return
            if time.monotonic() > end:
                self._client(["scancel", *sorted(ids)], check=False)
                raise SlurmError("jobs still queued after %.0f s (now cancelled): %s\n%s"
                                 % (timeout, ["%s %s %s" % j[2:] for j in mine], self.logs()))
            self._check_alive()
            time.sleep(0.3)

    def _queue_full(self) -> list:
        """(job id, array job id, job or task id, state, reason) of every queued job."""
        r = self._client(["squeue", "-h", "-o", "%A|%F|%i|%T|%r"])
        return [tuple(line.split("|")) for line in r.stdout.splitlines() if line]

    def wait_idle(self, timeout: float) -> None:
        """Wait until the queue is empty; raise with the queue and the logs on timeout."""
        end = time.monotonic() + timeout
        q = self.queue()
        while q:
            if time.monotonic() > end:
                raise SlurmError("jobs still queued after %.0f s: %s\n%s" % (timeout, q, self.logs()))
            self._check_alive()
            time.sleep(0.5)
            q = self.queue()

    def jobs(self) -> list:
        """Finished jobs as dicts (JobId, JobName, JobState, ExitCode, ...) from jobcomp/filetxt."""
        path = self.dir / "jobcomp.txt"
        out = []
        if path.exists():
            for line in path.read_text().splitlines():
                out.append(dict(re.findall(r"(\w+)=(\S*)", line)))
        return out

    def logs(self, tail: int = 30) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        if self.dir is None:
            return ""
        files = [self.dir / "munged.stderr"]
        for name in ("slurmctld", "slurmd"):  # the log file, or stderr if it failed before that
            log = self.dir / ("%s.log" % name)
            files.append(log if log.exists() else self.dir / ("%s.stderr" % name))
        for f in files:
            if not f.exists():
                continue
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append("---- %s\n%s" % (f, "\n".join(lines)))
        return "\n".join(parts)


def main(argv: Optional[list] = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Start a throw-away single-node SLURM, print the "
                                "export SLURM_CONF=... line, and wait for Ctrl-C (or SIGTERM); "
                                "then stop it and remove its temporary folder.")
    p.add_argument("--keep", action="store_true",
                   help="keep the folder (configuration, daemon logs, job log) after stopping")
    args = p.parse_args(argv)
    cluster = SlurmCluster()
    reason = cluster.unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill PID stops it cleanly too
    try:
        cluster.start()
        print("export SLURM_CONF=%s   # Ctrl-C stops the cluster" % cluster.conf, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except SlurmError as e:
        print("the cluster did not start: %s" % e, file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        if cluster.dir is not None and args.keep:
            print("stopped; logs kept in %s" % cluster.dir, file=sys.stderr)
        elif cluster.dir is not None:
            cluster.cleanup()
            print("stopped; removed %s (--keep keeps it, with the logs)" % cluster.dir,
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
