"""One sweep's run: its queue of jobs, a pool of probe workers, results written in batches.

The scheduler (``dashboard.scheduler``) plans a sweep's jobs and hands them to a
``SweepRun``; workers take jobs themselves, the sweeping thread abandons probes
past their hard end and writes results in batches to the scheduler's sink.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.sync import SyncValues
from mailfleet.dashboard.targets import WatchedHost

if TYPE_CHECKING:
    from mailfleet.dashboard.scheduler import Probe, Scheduler

MESH_CHECK = "sync_mesh"


def mesh_check_name(source: str) -> str:
    """How a mesh pair's result is stored on its destination host."""
    return f"{MESH_CHECK}:{source}"


def is_mesh_check(name: str) -> bool:
    """A stored mesh pair (``sync_mesh:<source>``), or the mesh as a host lists it."""
    return name == MESH_CHECK or name.startswith(MESH_CHECK + ":")

# Results are written in batches (one SQLite transaction each), every FLUSH_EVERY
# seconds or FLUSH_BATCH results, whichever comes first: still "as each probe ends"
# for anyone reading the store, at a fraction of a transaction per result.
FLUSH_EVERY = 0.05
FLUSH_BATCH = 64
_worker_serial = itertools.count(1)


@dataclass(eq=False)
class Job:
    host: WatchedHost
    check: str
    budget: float
    source: WatchedHost | None = None  # a mesh pair: submitted here, delivered to host
    # checks done on one connection (checks.tls_login): tls, imap_login (and quota); () alone
    shared: tuple[str, ...] = ()
    hard_end: float = 0.0
    done: bool = False
    abandoned: bool = False

    @property
    def stored_check(self) -> str:
        return mesh_check_name(self.source.name) if self.source is not None else self.check

    @property
    def stored_checks(self) -> tuple[str, ...]:
        return self.shared or (self.stored_check,)


def failed_result(host: WatchedHost, check: str, error: str, reason: Reason, started: float,
                  values: Mapping[str, str] | None = None) -> ProbeResult:
    """A result the scheduler writes for a probe that gave none (abandoned, crashed, unknown)."""
    return ProbeResult(
        check=check,
        target=host.target.address,
        success=False,
        status=Status.UNKNOWN,
        phases={"total": max(0.0, time.time() - started)},
        values=dict(values or {}),
        error=error,
        started_at=started,
        reason=reason,
    )


def pair_values(job: Job) -> dict[str, str]:
    if job.source is None:
        return {}
    key = SyncValues.key
    return {key.kind: "mesh", key.source: job.source.name, key.destination: job.host.name}


class SweepRun:
    """One sweep's queue, its pool of probe workers, and the results not yet written.

    Everything here is guarded by ``lock``. Workers take jobs themselves (the
    sweeping thread is not on the path of a probe); the sweeping thread starts
    workers, abandons probes past their hard end, and writes results in batches.
    """

    def __init__(self, scheduler: Scheduler, jobs: collections.deque[Job],
                 probes: Mapping[str, Probe]) -> None:
        self.scheduler = scheduler
        self.probes = probes
        self.pending = jobs
        self.lock = threading.Lock()
        self.job_ready = threading.Condition(self.lock)  # idle workers wait here
        self.wake = threading.Condition(self.lock)  # the sweeping thread waits here
        self.running: set[Job] = set()
        self.per_host: collections.Counter[str] = collections.Counter()
        self.unwritten: list[tuple[Job, ProbeResult]] = []
        self.unwritten_jobs: list[Job] = []  # their hosts' slots are freed once written
        self.first_unwritten = 0.0
        self.flush_now = False
        self.failures = 0
        self.workers = 0  # live workers (a worker stuck in an abandoned probe is not one)
        self.idle = 0

    # -- workers ------------------------------------------------------------------------
    def grow(self) -> None:
        """Start workers for the pending jobs, up to ``concurrency`` (and the stranded cap)."""
        sched = self.scheduler
        want = min(sched.concurrency, self.workers + len(self.pending) - self.idle)
        while self.workers < want and sched.stranded_room():
            self.workers += 1
            threading.Thread(target=self.work, daemon=True,
                             name=f"probe-worker-{next(_worker_serial)}").start()

    def take(self) -> Job | None:
        if self.scheduler._stop.is_set():
            self.pending.clear()
        if len(self.running) >= self.scheduler.concurrency:
            return None
        job = self.scheduler._next_job(self.pending, self.per_host)
        if job is not None:
            job.hard_end = time.monotonic() + job.budget + self.scheduler.grace
            self.running.add(job)
            self.per_host[job.host.name] += 1
        return job

    def work(self) -> None:
        self.lock.acquire()
        try:
            while True:
                job = self.take()
                if job is None:
                    if not self.pending:  # nothing left for anyone: the pool shrinks
                        self.workers -= 1
                        self.wake.notify()
                        return
                    # What is left waits for a host's slot: written results free them.
                    if self.unwritten and not self.flush_now:
                        self.flush_now = True
                        self.wake.notify()
                    self.idle += 1
                    self.job_ready.wait(1.0)
                    self.idle -= 1
                    continue
                self.lock.release()
                try:
                    results = self.scheduler._run_probe(job, self.probes)
                finally:
                    self.lock.acquire()
                if job.abandoned:  # its timeout results are stored; another worker took over
                    self.scheduler.stranded_return()
                    self.wake.notify()
                    return
                job.done = True
                self.running.discard(job)
                self.add(job, results)
        finally:
            self.lock.release()

    # -- results --------------------------------------------------------------------------
    def add(self, job: Job, results: Sequence[ProbeResult]) -> None:
        if not self.unwritten:
            self.first_unwritten = time.monotonic()
            self.wake.notify()  # the sweeping thread sets its flush timer
        for result in results:
            self.unwritten.append((job, result))
            self.failures += 0 if result.success else 1
        self.unwritten_jobs.append(job)
        if len(self.unwritten) >= FLUSH_BATCH or not (self.pending or self.running):
            self.wake.notify()

    def flush(self) -> None:
        """Write what is waiting (the lock is let go meanwhile), then free the hosts' slots."""
        items, self.unwritten = self.unwritten, []
        jobs, self.unwritten_jobs = self.unwritten_jobs, []
        self.flush_now = False
        self.lock.release()
        try:
            self.scheduler._store(items)
        finally:
            self.lock.acquire()
        for job in jobs:
            self.per_host[job.host.name] -= 1
        if self.idle:
            self.job_ready.notify_all()

    def abandon_overdue(self) -> None:
        now = time.monotonic()
        for job in [j for j in self.running if now >= j.hard_end]:
            job.abandoned = True
            self.running.discard(job)
            self.workers -= 1  # its worker is stuck in the probe: a new one takes its place
            self.scheduler.stranded_leave()
            with self.scheduler.stats.lock:
                self.scheduler.stats.abandoned += 1
            started = time.time() - job.budget - self.scheduler.grace
            self.add(job, [
                failed_result(job.host, check,
                        f"probe did not return within its {job.budget:.1f} s deadline",
                        Reason.DEADLINE, started, pair_values(job))
                for check in job.stored_checks
            ])

    def fail_unstartable(self) -> None:
        """No worker can start (too many stuck in hung probes): the rest fail, in words."""
        stuck = self.scheduler.stranded
        while self.pending:
            job = self.pending.popleft()
            self.add(job, [
                failed_result(job.host, check,
                        f"not probed: {stuck} probe threads are still stuck in probes that "
                        "ignored their deadline", Reason.DEADLINE, time.time(),
                        pair_values(job))
                for check in job.stored_checks
            ])
            self.per_host[job.host.name] += 1  # released with the others when written

    def run(self) -> None:
        """The sweeping thread: returns once every job ended (or was abandoned) and is written."""
        with self.lock:
            while True:
                self.abandon_overdue()
                if self.scheduler._stop.is_set():
                    self.pending.clear()
                self.grow()
                if self.pending and self.workers == 0 and not self.running:
                    self.fail_unstartable()
                now = time.monotonic()
                idle_end = not self.pending and not self.running
                if self.unwritten and (self.flush_now or idle_end
                                       or len(self.unwritten) >= FLUSH_BATCH
                                       or now - self.first_unwritten >= FLUSH_EVERY):
                    self.flush()
                    continue
                if idle_end and not self.unwritten:
                    break
                wake_at = min((j.hard_end for j in self.running), default=now + 1.0)
                if self.unwritten:
                    wake_at = min(wake_at, self.first_unwritten + FLUSH_EVERY)
                self.wake.wait(timeout=max(0.005, wake_at - now))
            # Let idle workers see there is nothing left, and wait for them to end: a
            # sweep leaves no thread behind (except one stuck in an abandoned probe).
            self.job_ready.notify_all()
            end = time.monotonic() + 5.0
            while self.workers > 0 and time.monotonic() < end:
                self.wake.wait(timeout=0.1)


