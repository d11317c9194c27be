"""Run jobs in worker processes that a killed sibling cannot wedge.

multiprocessing.Pool shares one queue and its lock between workers: a worker killed while holding
it (the out-of-memory killer, a SIGTERM to the process group under SLURM) hangs the whole run.
Here each worker has a pipe of its own to the main process and nothing else is shared, so a dead
worker fails only the job it had, and a new worker takes over.
"""
from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import signal
from typing import Any, Callable, Iterable, Iterator, Optional

SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker(func, conn, inherited) -> None:
    """A worker process: runs the jobs it is sent until told to stop (None) or its parent is gone.
    Ctrl-C is left to the main process, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
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


def _send(conn, msg) -> bool:
    try:
        conn.send(msg)
        return True
    except OSError:                    # it died right after answering
        return False


def run_parallel(func: Callable[[Any], Any], jobs: Iterable[Any],
                 n: int) -> Iterator[tuple[Any, Optional[Any], Optional[int]]]:
    """Yield (job, func(job), None) for every job, run in up to n forked worker processes; for a
    job whose worker died, (job, None, its exit code). The next job is taken from `jobs` only
    after the caller has seen the result (so a generator of jobs can stop early). On any exit
    the workers still running are killed and reaped."""
    ctx = multiprocessing.get_context("fork")
    todo = iter(jobs)
    busy: dict = {}                    # pipe -> (process, job it is working on)

    def start(job) -> None:
        conn, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(func, child, list(busy) + [conn]), daemon=True)
        # A signal arriving between the fork and the worker's own handler setup would be lost
        # there (Python drops it once the handler is SIG_DFL): hold it back until then.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
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
                proc, job = busy[conn]
                try:
                    result = conn.recv()
                except (EOFError, OSError):    # died before answering (EOF, or a reset when it
                    result = None              # left a job unread)
                if result is None:
                    proc.join()
                yield job, result, (proc.exitcode if result is None else None)
                del busy[conn]
                nxt = next(todo, None)
                if result is not None and nxt is not None and _send(conn, nxt):
                    busy[conn] = (proc, nxt)   # same worker, next job
                    continue
                if result is not None:         # no more jobs, or the worker is dead
                    _send(conn, None)          # stop
                conn.close()
                proc.join()
                if nxt is not None:
                    start(nxt)                 # a new worker takes the job
    finally:
        for proc, _ in busy.values():
            proc.kill()
        for proc, _ in busy.values():
            proc.join()
