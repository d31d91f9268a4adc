"""The sweep scheduler: every interval, every watched host's checks, into the store.

Bounded concurrency (``concurrency`` probes at once, at most ``per_host`` on one
host), a hard deadline per probe, and results written as each probe ends — so a
slow or dead host never delays the others' results. A probe that does not
return by its deadline (plus a grace) is recorded as failed and abandoned: its
slot is freed for the others and whatever it returns later is dropped.

Probes run on a pool of at most ``concurrency`` worker threads per sweep (not a
thread per probe; the pool is ``dashboard.sweep.SweepRun``); a worker stuck in an
abandoned probe is replaced, up to ``max_stranded`` stuck at once. Results are
written in batches (every 50 ms or 64 results) and a host's results are in the
store before its next probe starts.
A host with both ``tls`` and ``imap_login`` on its IMAPS port gets one job that
does both on one connection (``checks.tls_login``) and stores both results; its
``quota`` check, when it has one, is asked on the same logged-in session.

Probes are looked up by name in a table (``checks.PROBES`` by default), each
``probe(target, options, deadline) -> ProbeResult``.

The fleet mesh (check ``sync_mesh``) is not per host but per pair: hosts that
list it submit a message on one host and measure it arriving in another's
mailbox over the real MX path. Each sweep runs one round of
``checks.mesh.mesh_round`` (N pairs for N hosts, every ordered pair once every
N-1 sweeps); a pair's result is stored on its destination as
``sync_mesh:<source>``, so the latest of every pair stays visible.

Results go to a ``ResultSink``: the result store for ``serve``, a
``CollectingSink`` for ``mailfleet probe`` (one sweep of this same engine).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailfleet.checks import imap, quota, sync, tls, tls_login
from mailfleet.checks.mesh import mesh_round
from mailfleet.checks.result import ProbeResult, Reason
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.shard import WHOLE_FLEET, Shard
from mailfleet.dashboard.store import Sweep
from mailfleet.dashboard.sweep import MESH_CHECK as MESH_CHECK  # re-exported
from mailfleet.dashboard.sweep import (
    Job,
    SweepRun,
    failed_result,
    pair_values,
)
from mailfleet.dashboard.sweep import is_mesh_check as is_mesh_check  # re-exported
from mailfleet.dashboard.sweep import mesh_check_name as mesh_check_name  # re-exported
from mailfleet.dashboard.targets import WatchedHost

log = logging.getLogger(__name__)

Probe = Callable[[Target, ProbeOptions, Deadline], ProbeResult]
PairProbe = Callable[[Target, Target, ProbeOptions, Deadline], ProbeResult]


class ResultSink(Protocol):
    """Where a sweep's results go: the result store for ``serve``, a list for ``probe``."""

    def record_many(self, items: Iterable[tuple[str, ProbeResult]]) -> None: ...

    def record_sweep(self, sweep: Sweep) -> None: ...

    def prune(self, now: float | None = None) -> int: ...

    def forget_hosts(self, keep: Iterable[str]) -> None: ...


class CollectingSink:
    """A sink that keeps one sweep's results in memory (``mailfleet probe``)."""

    def __init__(self) -> None:
        self.results: list[tuple[str, ProbeResult]] = []
        self.sweeps: list[Sweep] = []

    def record_many(self, items: Iterable[tuple[str, ProbeResult]]) -> None:
        self.results.extend(items)

    def record_sweep(self, sweep: Sweep) -> None:
        self.sweeps.append(sweep)

    def prune(self, now: float | None = None) -> int:
        return 0

    def forget_hosts(self, keep: Iterable[str]) -> None:
        return None
HostSource = Callable[[], Sequence[WatchedHost]]


# Why a probe failed, as a small fixed set (a label value: never free text).
REASONS: tuple[str, ...] = tuple(str(r) for r in Reason if r is not Reason.NONE)


def probe_table() -> Mapping[str, Probe]:
    """``checks.PROBES`` when the checks library provides it (empty until then)."""
    from mailfleet import checks

    table: Mapping[str, Probe] = getattr(checks, "PROBES", {})
    return table


def failure_reason(result: ProbeResult) -> str:
    """The bounded reason of a failed result: the probe's own (``other`` if it gave none)."""
    return str(result.reason) if result.reason is not Reason.NONE else str(Reason.OTHER)


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


class Scheduler:
    def __init__(
        self,
        hosts: HostSource,
        store: ResultSink,
        probes: Mapping[str, Probe] | None = None,
        interval: float = 60.0,
        concurrency: int = 32,
        per_host: int = 2,
        grace: float = 1.0,
        prune_every: float = 3600.0,
        pair_probe: PairProbe | None = None,
        max_stranded: int | None = None,
        shard: Shard = WHOLE_FLEET,
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
        self.shard = shard

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
    def _run_probe(self, job: Job, probes: Mapping[str, Probe]) -> Sequence[ProbeResult]:
        started = time.time()
        if job.source is not None:
            return (self._run_pair(job, started),)
        if job.shared:
            try:
                return tls_login.probe(job.host.target, job.host.options, Deadline(job.budget),
                                       with_quota=quota.CHECK in job.shared)
            except Exception as exc:  # a probe must not raise; if it does, say so, keep going
                log.exception("probe %s on %s raised", "+".join(job.stored_checks),
                              job.host.name)
                return [failed_result(job.host, check,
                                      f"probe crashed: {type(exc).__name__}: {exc}",
                                      Reason.CRASH, started) for check in job.stored_checks]
        probe = probes.get(job.check)
        if probe is None:
            return (failed_result(
                job.host, job.check, f"no check named {job.check!r}", Reason.UNKNOWN_CHECK, started
            ),)
        try:
            return (probe(job.host.target, job.host.options, Deadline(job.budget)),)
        except Exception as exc:  # a probe must not raise; if it does, say so, keep going
            log.exception("probe %s on %s raised", job.check, job.host.name)
            return (failed_result(
                job.host, job.check, f"probe crashed: {type(exc).__name__}: {exc}", Reason.CRASH,
                started,
            ),)

    def _run_pair(self, job: Job, started: float) -> ProbeResult:
        assert job.source is not None
        try:
            result = self.pair_probe(job.source.target, job.host.target, job.host.options,
                                     Deadline(job.budget))
        except Exception as exc:
            log.exception("mesh probe %s -> %s raised", job.source.name, job.host.name)
            return failed_result(job.host, job.stored_check,
                           f"probe crashed: {type(exc).__name__}: {exc}", Reason.CRASH, started,
                           pair_values(job))
        return dataclasses.replace(result, check=job.stored_check)

    def _store(self, items: Sequence[tuple[Job, ProbeResult]]) -> None:
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
    def _plan(self, host: WatchedHost, shares: bool,
              quota_shares: bool) -> list[tuple[str, tuple[str, ...]]]:
        """A host's checks in order as (check, checks done with it on one connection):
        tls + imap_login (+ quota) may become one job, at the place of the first of them."""
        checks = [c for c in host.checks if c != MESH_CHECK]
        plan: list[tuple[str, tuple[str, ...]]] = [(c, ()) for c in checks]
        if (shares and all(c in checks for c in tls_login.CHECKS)
                and tls_login.shares_connection(host.options)):
            together = (tls_login.WITH_QUOTA if quota_shares and quota.CHECK in checks
                        else tls_login.CHECKS)
            where = [checks.index(c) for c in together]  # each one's first place
            plan[min(where)] = (tls_login.CHECKS[0], together)
            for i in sorted(where, reverse=True):
                if i != min(where):
                    del plan[i]
        return plan

    def _jobs(self, mine: Sequence[WatchedHost], hosts: Sequence[WatchedHost],
              probes: Mapping[str, Probe]) -> collections.deque[Job]:
        """Every job of one sweep: the checks of ``mine`` (the shard's hosts), and the
        mesh pairs into them (``hosts`` is the whole inventory: a pair's source may be
        any host)."""
        # Round-robin over hosts (all hosts' first check, then all second checks...):
        # one host's many checks never queue ahead of everyone else.
        # tls and imap_login (and quota) share one connection when the table has the real probes
        # (a caller that brings its own keeps them apart).
        shares = (probes.get(tls.CHECK) is tls.probe
                  and probes.get(imap.CHECK) is imap.probe)
        quota_shares = probes.get(quota.CHECK) is quota.probe
        plans = [(h, self._plan(h, shares, quota_shares)) for h in mine]
        jobs: collections.deque[Job] = collections.deque()
        depth = max((len(plan) for _, plan in plans), default=0)
        for i in range(depth):
            for h, plan in plans:
                if i < len(plan):
                    check, shared = plan[i]
                    jobs.append(Job(h, check, budget=max(0.1, h.options.timeout),
                                     shared=shared))
        jobs.extend(self._mesh_jobs(hosts))
        return jobs

    def _mesh_jobs(self, hosts: Sequence[WatchedHost]) -> list[Job]:
        """This sweep's round of the mesh: O(N) pairs, rotating (checks.mesh.mesh_round).

        The round is the whole fleet's; a shard runs the pairs whose destination is
        its own (a pair's result is stored on its destination), so every pair has
        exactly one watcher and each host's series come from one shard."""
        members = {h.name: h for h in hosts if MESH_CHECK in h.checks}
        pairs = mesh_round(sorted(members), self._mesh_round)
        if pairs:
            self._mesh_round += 1
        return [
            Job(members[dst], MESH_CHECK, budget=max(0.1, members[dst].options.timeout),
                 source=members[src])
            for src, dst in pairs
            if self.shard.owns(dst)
        ]

    def _next_job(
        self, pending: collections.deque[Job], per_host: collections.Counter[str]
    ) -> Job | None:
        """The first pending job whose host has a free slot (order otherwise kept)."""
        skipped: list[Job] = []
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
        mine = [h for h in hosts if self.shard.owns(h.name)]
        probes = self.probes
        pending = self._jobs(mine, hosts, probes)
        total = sum(len(job.stored_checks) for job in pending)
        run = SweepRun(self, pending, probes)
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
            self.store.forget_hosts(h.name for h in mine)
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
