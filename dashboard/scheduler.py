"""The sweep scheduler: every interval, every watched host's checks, into the store.

Bounded concurrency (``concurrency`` probes at once, at most ``per_host`` on one
host), a hard deadline per probe, and results written as each probe ends — so a
slow or dead host never delays the others' results. A probe that does not
return by its deadline (plus a grace) is recorded as failed and abandoned: its
slot is freed for the others and whatever it returns later is dropped.

Probes run on a pool of at most ``concurrency`` worker threads per sweep (not a
thread per probe); a worker stuck in an abandoned probe is replaced, up to
``max_stranded`` stuck at once. Results are written in batches (every 50 ms or
64 results) and a host's results are in the store before its next probe starts.
A host with both ``tls`` and ``imap_login`` on its IMAPS port gets one job that
does both on one connection (``checks.tls_login``) and stores both results.

Probes are looked up by name in a table (``checks.PROBES`` by default), each
``probe(target, options, deadline) -> ProbeResult``.

The fleet mesh (check ``sync_mesh``) is not per host but per pair: hosts that
list it submit a message on one host and measure it arriving in another's
mailbox over the real MX path. Each sweep runs one round of
``checks.mesh.mesh_round`` (N pairs for N hosts, every ordered pair once every
N-1 sweeps); a pair's result is stored on its destination as
``sync_mesh:<source>``, so the latest of every pair stays visible.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mailfleet.checks import imap, sync, tls, tls_login
from mailfleet.checks.mesh import mesh_round
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.store import ResultStore, Sweep
from mailfleet.dashboard.targets import WatchedHost

log = logging.getLogger(__name__)

Probe = Callable[[Target, ProbeOptions, Deadline], ProbeResult]
PairProbe = Callable[[Target, Target, ProbeOptions, Deadline], ProbeResult]
MESH_CHECK = "sync_mesh"


def mesh_check_name(source: str) -> str:
    """How a mesh pair's result is stored on its destination host."""
    return f"{MESH_CHECK}:{source}"


def is_mesh_check(name: str) -> bool:
    """A stored mesh pair (``sync_mesh:<source>``), or the mesh as a host lists it."""
    return name == MESH_CHECK or name.startswith(MESH_CHECK + ":")
HostSource = Callable[[], Sequence[WatchedHost]]

# Results are written in batches (one SQLite transaction each), every FLUSH_EVERY
# seconds or FLUSH_BATCH results, whichever comes first: still "as each probe ends"
# for anyone reading the store, at a fraction of a transaction per result.
FLUSH_EVERY = 0.05
FLUSH_BATCH = 64
_worker_serial = itertools.count(1)

# Why a probe failed, as a small fixed set (a label value: must never be free text).
REASONS: tuple[str, ...] = (
    "timeout",
    "refused",
    "unreachable",
    "tls",
    "auth",
    "dns",
    "protocol",
    "deadline",
    "crash",
    "unknown_check",
    "other",
)
_REASON_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("refused", ("refused",)),
    ("unreachable", ("unreachable", "no route", "host is down", "network is down")),
    ("timeout", ("timed out", "timeout", "within", "deadline")),
    ("tls", ("certificate", "tls", "ssl", "handshake", "hostname mismatch", "expired")),
    ("auth", ("auth", "login", "credential", "password", "token", "rejected")),
    ("dns", ("dns", "nxdomain", "ptr", "mx ", "resolve", "resolver", "spf", "dmarc", "tlsa")),
    ("protocol", ("greeting", "garbage", "unexpected", "protocol", "banner", "starttls")),
)


def probe_table() -> Mapping[str, Probe]:
    """``checks.PROBES`` when the checks library provides it (empty until then)."""
    from mailfleet import checks

    table: Mapping[str, Probe] = getattr(checks, "PROBES", {})
    return table


def failure_reason(result: ProbeResult) -> str:
    """A bounded reason for a failed result: the probe's own ``values["reason"]`` or a guess."""
    given = result.values.get("reason")
    if isinstance(given, str) and given in REASONS:
        return given
    text = result.error.lower()
    for reason, words in _REASON_WORDS:
        if any(w in text for w in words):
            return reason
    return "other"


@dataclass
class SchedulerStats:
    """Self-metrics of the scheduler (read by /metrics; guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    sweeps: int = 0
    overruns: int = 0
    last_sweep_started: float = 0.0
    last_sweep_duration: float = 0.0
    last_sweep_overrun: bool = False
    abandoned: int = 0
    probes: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def snapshot(self) -> SchedulerStats:
        with self.lock:
            return SchedulerStats(
                sweeps=self.sweeps,
                overruns=self.overruns,
                last_sweep_started=self.last_sweep_started,
                last_sweep_duration=self.last_sweep_duration,
                last_sweep_overrun=self.last_sweep_overrun,
                abandoned=self.abandoned,
                probes=collections.Counter(self.probes),
                errors=collections.Counter(self.errors),
            )


@dataclass(eq=False)
class _Job:
    host: WatchedHost
    check: str
    budget: float
    source: WatchedHost | None = None  # a mesh pair: submitted here, delivered to host
    shared: bool = False  # tls + imap_login on one connection (checks.tls_login)
    hard_end: float = 0.0
    done: bool = False
    abandoned: bool = False

    @property
    def stored_check(self) -> str:
        return mesh_check_name(self.source.name) if self.source is not None else self.check

    @property
    def stored_checks(self) -> tuple[str, ...]:
        return tls_login.CHECKS if self.shared else (self.stored_check,)


def _failed(host: WatchedHost, check: str, error: str, reason: str, started: float,
            values: Mapping[str, str] | None = None) -> ProbeResult:
    return ProbeResult(
        check=check,
        target=host.target.address,
        success=False,
        status=Status.UNKNOWN,
        phases={"total": max(0.0, time.time() - started)},
        values={"reason": reason, **(values or {})},
        error=error,
        started_at=started,
    )


def _pair_values(job: _Job) -> dict[str, str]:
    if job.source is None:
        return {}
    return {"kind": "mesh", "source": job.source.name, "destination": job.host.name}


class _SweepRun:
    """One sweep's queue, its pool of probe workers, and the results not yet written.

    Everything here is guarded by ``lock``. Workers take jobs themselves (the
    sweeping thread is not on the path of a probe); the sweeping thread starts
    workers, abandons probes past their hard end, and writes results in batches.
    """

    def __init__(self, scheduler: Scheduler, jobs: collections.deque[_Job],
                 probes: Mapping[str, Probe]) -> None:
        self.scheduler = scheduler
        self.probes = probes
        self.pending = jobs
        self.lock = threading.Lock()
        self.job_ready = threading.Condition(self.lock)  # idle workers wait here
        self.wake = threading.Condition(self.lock)  # the sweeping thread waits here
        self.running: set[_Job] = set()
        self.per_host: collections.Counter[str] = collections.Counter()
        self.unwritten: list[tuple[_Job, ProbeResult]] = []
        self.unwritten_jobs: list[_Job] = []  # their hosts' slots are freed once written
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

    def take(self) -> _Job | None:
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
    def add(self, job: _Job, results: Sequence[ProbeResult]) -> None:
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
                _failed(job.host, check,
                        f"probe did not return within its {job.budget:.1f} s deadline",
                        "deadline", started, _pair_values(job))
                for check in job.stored_checks
            ])

    def fail_unstartable(self) -> None:
        """No worker can start (too many stuck in hung probes): the rest fail, in words."""
        stuck = self.scheduler.stranded
        while self.pending:
            job = self.pending.popleft()
            self.add(job, [
                _failed(job.host, check,
                        f"not probed: {stuck} probe threads are still stuck in probes that "
                        "ignored their deadline", "deadline", time.time(), _pair_values(job))
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


class Scheduler:
    def __init__(
        self,
        hosts: HostSource,
        store: ResultStore,
        probes: Mapping[str, Probe] | None = None,
        interval: float = 60.0,
        concurrency: int = 32,
        per_host: int = 2,
        grace: float = 1.0,
        prune_every: float = 3600.0,
        pair_probe: PairProbe | None = None,
        max_stranded: int | None = None,
    ) -> None:
        if interval <= 0 or concurrency < 1 or per_host < 1:
            raise ValueError("interval must be > 0, concurrency and per_host >= 1")
        self.hosts = hosts
        self.store = store
        self._probes = probes
        self.interval = interval
        self.concurrency = concurrency
        self.per_host = per_host
        self.grace = grace
        self.prune_every = prune_every
        # Threads stuck in abandoned probes, at most this many at once (across sweeps):
        # past it a worker stuck is not replaced, so a buggy probe cannot pile up threads.
        self.max_stranded = max(4, concurrency) if max_stranded is None else max_stranded
        self.stranded = 0
        self._stranded_lock = threading.Lock()
        self.stats = SchedulerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self.pair_probe: PairProbe = pair_probe or sync.probe_pair
        self._mesh_round = 0

    @property
    def probes(self) -> Mapping[str, Probe]:
        return self._probes if self._probes is not None else probe_table()

    def stranded_room(self) -> bool:
        with self._stranded_lock:
            return self.stranded < self.max_stranded

    def stranded_leave(self) -> None:
        with self._stranded_lock:
            self.stranded += 1

    def stranded_return(self) -> None:
        with self._stranded_lock:
            self.stranded -= 1

    # -- one probe -----------------------------------------------------------------------
    def _run_probe(self, job: _Job, probes: Mapping[str, Probe]) -> Sequence[ProbeResult]:
        started = time.time()
        if job.source is not None:
            return (self._run_pair(job, started),)
        if job.shared:
            try:
                return tls_login.probe(job.host.target, job.host.options, Deadline(job.budget))
            except Exception as exc:  # a probe must not raise; if it does, say so, keep going
                log.exception("probe %s on %s raised", "+".join(job.stored_checks),
                              job.host.name)
                return [_failed(job.host, check, f"probe crashed: {type(exc).__name__}: {exc}",
                                "crash", started) for check in job.stored_checks]
        probe = probes.get(job.check)
        if probe is None:
            return (_failed(
                job.host, job.check, f"no check named {job.check!r}", "unknown_check", started
            ),)
        try:
            return (probe(job.host.target, job.host.options, Deadline(job.budget)),)
        except Exception as exc:  # a probe must not raise; if it does, say so, keep going
            log.exception("probe %s on %s raised", job.check, job.host.name)
            return (_failed(
                job.host, job.check, f"probe crashed: {type(exc).__name__}: {exc}", "crash",
                started,
            ),)

    def _run_pair(self, job: _Job, started: float) -> ProbeResult:
        assert job.source is not None
        try:
            result = self.pair_probe(job.source.target, job.host.target, job.host.options,
                                     Deadline(job.budget))
        except Exception as exc:
            log.exception("mesh probe %s -> %s raised", job.source.name, job.host.name)
            return _failed(job.host, job.stored_check,
                           f"probe crashed: {type(exc).__name__}: {exc}", "crash", started,
                           _pair_values(job))
        return dataclasses.replace(result, check=job.stored_check)

    def _store(self, items: Sequence[tuple[_Job, ProbeResult]]) -> None:
        """Count and write a batch of results (one SQLite transaction)."""
        with self.stats.lock:
            for job, result in items:
                check = result.check if job.shared else job.check
                self.stats.probes[check] += 1
                if not result.success:
                    self.stats.errors[(check, failure_reason(result))] += 1
        try:
            self.store.record_many([(job.host.name, result) for job, result in items])
        except Exception:
            log.exception("cannot store %d results", len(items))

    # -- one sweep -------------------------------------------------------------------------
    def _plan(self, host: WatchedHost, shares: bool) -> list[tuple[str, bool]]:
        """A host's checks in order as (check, shared); tls + imap_login may become one job."""
        checks = [c for c in host.checks if c != MESH_CHECK]
        if (shares and all(c in checks for c in tls_login.CHECKS)
                and tls_login.shares_connection(host.options)):
            first = min(checks.index(c) for c in tls_login.CHECKS)
            second = max(checks.index(c) for c in tls_login.CHECKS)
            plan = [(c, False) for c in checks]
            plan[first] = (tls_login.CHECKS[0], True)
            del plan[second]
            return plan
        return [(c, False) for c in checks]

    def _jobs(self, hosts: Sequence[WatchedHost],
              probes: Mapping[str, Probe]) -> collections.deque[_Job]:
        # Round-robin over hosts (all hosts' first check, then all second checks...):
        # one host's many checks never queue ahead of everyone else.
        # tls and imap_login share one connection when the table has the real probes
        # (a caller that brings its own keeps them apart).
        shares = (probes.get(tls.CHECK) is tls.probe
                  and probes.get(imap.CHECK) is imap.probe)
        plans = [(h, self._plan(h, shares)) for h in hosts]
        jobs: collections.deque[_Job] = collections.deque()
        depth = max((len(plan) for _, plan in plans), default=0)
        for i in range(depth):
            for h, plan in plans:
                if i < len(plan):
                    check, shared = plan[i]
                    jobs.append(_Job(h, check, budget=max(0.1, h.options.timeout),
                                     shared=shared))
        jobs.extend(self._mesh_jobs(hosts))
        return jobs

    def _mesh_jobs(self, hosts: Sequence[WatchedHost]) -> list[_Job]:
        """This sweep's round of the mesh: O(N) pairs, rotating (checks.mesh.mesh_round)."""
        members = {h.name: h for h in hosts if MESH_CHECK in h.checks}
        pairs = mesh_round(sorted(members), self._mesh_round)
        if pairs:
            self._mesh_round += 1
        return [
            _Job(members[dst], MESH_CHECK, budget=max(0.1, members[dst].options.timeout),
                 source=members[src])
            for src, dst in pairs
        ]

    def _next_job(
        self, pending: collections.deque[_Job], per_host: collections.Counter[str]
    ) -> _Job | None:
        """The first pending job whose host has a free slot (order otherwise kept)."""
        skipped: list[_Job] = []
        chosen = None
        while pending:
            job = pending.popleft()
            if per_host[job.host.name] < self.per_host:
                chosen = job
                break
            skipped.append(job)
        if skipped:
            pending.extendleft(reversed(skipped))
        return chosen

    def sweep(self) -> Sweep:
        """Probe every watched host once; returns when every probe ended or was abandoned."""
        started = time.time()
        t0 = time.monotonic()
        hosts = list(self.hosts())
        probes = self.probes
        pending = self._jobs(hosts, probes)
        total = sum(len(job.stored_checks) for job in pending)
        run = _SweepRun(self, pending, probes)
        run.run()
        failures = run.failures
        duration = time.monotonic() - t0
        overrun = duration > self.interval
        sweep = Sweep(started, duration, total, failures, overrun)
        with self.stats.lock:
            self.stats.sweeps += 1
            self.stats.last_sweep_started = started
            self.stats.last_sweep_duration = duration
            self.stats.last_sweep_overrun = overrun
            self.stats.overruns += int(overrun)
        try:
            self.store.record_sweep(sweep)
            self.store.forget_hosts(h.name for h in hosts)
            if time.time() - self._last_prune >= self.prune_every:
                self.store.prune()
                self._last_prune = time.time()
        except Exception:
            log.exception("cannot record the sweep")
        if overrun:
            log.warning(
                "sweep took %.1f s, longer than the %.1f s interval", duration, self.interval
            )
        return sweep

    # -- the loop ----------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Sweep every ``interval`` seconds (start to start); an overrunning sweep is
        followed at once by the next, never overlapped."""
        next_start = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")
            next_start += self.interval
            now = time.monotonic()
            if next_start < now:
                next_start = now
            self._stop.wait(max(0.0, next_start - now))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run_forever, daemon=True, name="scheduler")
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
