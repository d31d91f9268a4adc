"""The sweep scheduler: every interval, every watched host's checks, into the store.

Bounded concurrency (``concurrency`` probes at once, at most ``per_host`` on one
host), a hard deadline per probe, and results written as each probe ends — so a
slow or dead host never delays the others' results. A probe that does not
return by its deadline (plus a grace) is recorded as failed and abandoned: its
slot is freed for the others and whatever it returns later is dropped.

Probes are looked up by name in a table (``checks.PROBES`` by default), each
``probe(target, options, deadline) -> ProbeResult``.

The fleet mesh (check ``sync_mesh``) is not per host but per pair: hosts that
list it submit a message on one host and measure it arriving in another's
mailbox over the real MX path. Each sweep runs one round of
``checks.sync.mesh_round`` (N pairs for N hosts, every ordered pair once every
N-1 sweeps); a pair's result is stored on its destination as
``sync_mesh:<source>``, so the latest of every pair stays visible.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from checks import sync
from checks.result import ProbeResult, Status
from checks.target import Deadline, ProbeOptions, Target
from dashboard.store import ResultStore, Sweep
from dashboard.targets import WatchedHost

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
    import checks

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
    in_flight: int = 0

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
                in_flight=self.in_flight,
            )


@dataclass(eq=False)
class _Job:
    host: WatchedHost
    check: str
    budget: float
    source: WatchedHost | None = None  # a mesh pair: submitted here, delivered to host
    hard_end: float = 0.0
    done: bool = False
    abandoned: bool = False

    @property
    def stored_check(self) -> str:
        return mesh_check_name(self.source.name) if self.source is not None else self.check


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
        self.stats = SchedulerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self.pair_probe: PairProbe = pair_probe or sync.probe_pair
        self._mesh_round = 0

    @property
    def probes(self) -> Mapping[str, Probe]:
        return self._probes if self._probes is not None else probe_table()

    # -- one probe -----------------------------------------------------------------------
    def _run_probe(self, job: _Job) -> ProbeResult:
        started = time.time()
        if job.source is not None:
            return self._run_pair(job, started)
        probe = self.probes.get(job.check)
        if probe is None:
            return _failed(
                job.host, job.check, f"no check named {job.check!r}", "unknown_check", started
            )
        try:
            return probe(job.host.target, job.host.options, Deadline(job.budget))
        except Exception as exc:  # a probe must not raise; if it does, say so, keep going
            log.exception("probe %s on %s raised", job.check, job.host.name)
            return _failed(
                job.host, job.check, f"probe crashed: {type(exc).__name__}: {exc}", "crash",
                started,
            )

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

    def _store(self, job: _Job, result: ProbeResult) -> None:
        with self.stats.lock:
            self.stats.probes[job.check] += 1
            if not result.success:
                self.stats.errors[(job.check, failure_reason(result))] += 1
        try:
            self.store.record(job.host.name, result)
        except Exception:
            log.exception("cannot store the %s result of %s", job.check, job.host.name)

    # -- one sweep -------------------------------------------------------------------------
    def _jobs(self, hosts: Sequence[WatchedHost]) -> collections.deque[_Job]:
        # Round-robin over hosts (all hosts' first check, then all second checks...):
        # one host's many checks never queue ahead of everyone else.
        jobs: collections.deque[_Job] = collections.deque()
        depth = max((len(h.checks) for h in hosts), default=0)
        for i in range(depth):
            for h in hosts:
                if i < len(h.checks) and h.checks[i] != MESH_CHECK:
                    jobs.append(_Job(h, h.checks[i], budget=max(0.1, h.options.timeout)))
        jobs.extend(self._mesh_jobs(hosts))
        return jobs

    def _mesh_jobs(self, hosts: Sequence[WatchedHost]) -> list[_Job]:
        """This sweep's round of the mesh: O(N) pairs, rotating (checks.sync.mesh_round)."""
        members = {h.name: h for h in hosts if MESH_CHECK in h.checks}
        pairs = sync.mesh_round(sorted(members), self._mesh_round)
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
        pending.extendleft(reversed(skipped))
        return chosen

    def sweep(self) -> Sweep:
        """Probe every watched host once; returns when every probe ended or was abandoned."""
        started = time.time()
        t0 = time.monotonic()
        hosts = list(self.hosts())
        pending = self._jobs(hosts)
        total = len(pending)
        failures = 0
        running: set[_Job] = set()
        per_host: collections.Counter[str] = collections.Counter()
        cond = threading.Condition()

        def work(job: _Job) -> None:
            nonlocal failures
            result = self._run_probe(job)
            with cond:
                if job.abandoned:
                    return  # its timeout result is already stored
                job.done = True
            self._store(job, result)
            with cond:
                failures += 0 if result.success else 1
                running.discard(job)
                per_host[job.host.name] -= 1
                cond.notify_all()

        with cond:
            while pending or running:
                now = time.monotonic()
                for job in [j for j in running if not j.done and now >= j.hard_end]:
                    job.abandoned = True
                    running.discard(job)
                    per_host[job.host.name] -= 1
                    failures += 1
                    with self.stats.lock:
                        self.stats.abandoned += 1
                    self._store(
                        job,
                        _failed(
                            job.host, job.stored_check,
                            f"probe did not return within its {job.budget:.1f} s deadline",
                            "deadline", time.time() - job.budget - self.grace,
                            _pair_values(job),
                        ),
                    )
                if self._stop.is_set():
                    pending.clear()
                chosen = None
                if len(running) < self.concurrency:
                    chosen = self._next_job(pending, per_host)
                if chosen is None and not pending and not running:
                    break
                if chosen is not None:
                    chosen.hard_end = time.monotonic() + chosen.budget + self.grace
                    running.add(chosen)
                    per_host[chosen.host.name] += 1
                    threading.Thread(
                        target=work, args=(chosen,), daemon=True,
                        name=f"probe-{chosen.check}-{chosen.host.name}",
                    ).start()
                    continue
                next_end = min((j.hard_end for j in running), default=now + 1.0)
                cond.wait(timeout=max(0.01, next_end - time.monotonic()))
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
