"""The scheduler: bounded concurrency, hard deadlines, a tarpit never delays the others."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mailfleet.checks import PROBES
from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.scheduler import REASONS, Scheduler, failure_reason
from mailfleet.dashboard.store import ResultStore
from tests.dashboard.conftest import TEST_PROBES, host
from tests.dashboard.servers import closed_port, tarpit


def test_a_tarpit_host_never_delays_the_other_hosts_results(
    tmp_path: Path, listener: int
) -> None:
    store = ResultStore(tmp_path / "r.db")
    with tarpit() as pit:
        hosts = [host("slow", pit.port, ("tls", "tls", "tls"), timeout=1.5)]
        hosts += [host(f"mx{i}", listener, ("port",)) for i in range(20)]
        hosts.append(host("dead", closed_port(), ("port",)))
        sched = Scheduler(lambda: hosts, store, probes=PROBES, interval=30, concurrency=4)
        done = threading.Thread(target=sched.sweep)
        t0 = time.monotonic()
        done.start()
        # every fast host's result is in the store long before the tarpit's deadline
        while len({r.host for r in store.latest()} - {"slow"}) < 21:
            assert time.monotonic() - t0 < 1.0, "fast hosts waited for the tarpit"
            time.sleep(0.02)
        done.join(10)
    latest = {r.host: r for r in store.latest()}
    assert all(latest[f"mx{i}"].success for i in range(20))
    assert not latest["dead"].success and "refused" in latest["dead"].error
    assert not latest["slow"].success
    assert 1.3 < latest["slow"].duration < 2.5  # it ended at its deadline
    stats = sched.stats.snapshot()
    assert stats.errors[("port", "refused")] == 1
    assert stats.errors[("tls", "timeout")] >= 1


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow_probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return ProbeResult(check="slow", target=target.name, success=True)

    hosts = [host(f"mx{i}", 1, ("slow", "slow", "slow")) for i in range(30)]
    sched = Scheduler(lambda: hosts, ResultStore(tmp_path / "r.db"), probes={"slow": slow_probe},
                      interval=30, concurrency=5, per_host=1)
    sweep = sched.sweep()
    assert sweep.probes == 90 and sweep.failures == 0
    assert peak == 5


def test_a_probe_that_ignores_its_deadline_is_abandoned_not_waited_for(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    hosts = [host("buggy", 1, ("hung",), timeout=0.3)]
    sched = Scheduler(lambda: hosts, store, probes=TEST_PROBES, interval=30, grace=0.2)
    t0 = time.monotonic()
    sweep = sched.sweep()
    assert time.monotonic() - t0 < 1.5
    assert sweep.failures == 1
    (r,) = store.latest()
    assert "did not return within its 0.3 s deadline" in r.error
    assert sched.stats.snapshot().abandoned == 1


def test_a_crashing_probe_becomes_an_unknown_result(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    hosts = [host("mx1", 1, ("crash", "nosuch"))]
    Scheduler(lambda: hosts, store, probes=TEST_PROBES).sweep()
    by_check = {r.check: r for r in store.latest()}
    assert by_check["crash"].status.label == "unknown"
    assert "probe crashed: RuntimeError: boom" in by_check["crash"].error
    assert by_check["nosuch"].error == "no check named 'nosuch'"


def test_a_sweep_longer_than_the_interval_is_an_overrun(tmp_path: Path) -> None:
    def sleepy(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        time.sleep(0.3)
        return ProbeResult(check="sleepy", target=target.name, success=True)

    hosts = [host("mx1", 1, ("sleepy",))]
    sched = Scheduler(lambda: hosts, ResultStore(tmp_path / "r.db"), probes={"sleepy": sleepy},
                      interval=0.1)
    assert sched.sweep().overrun
    stats = sched.stats.snapshot()
    assert stats.overruns == 1 and stats.last_sweep_overrun


def test_the_background_loop_sweeps_every_interval_and_stops(tmp_path: Path, listener: int) -> None:
    store = ResultStore(tmp_path / "r.db")
    hosts = [host("mx1", listener, ("port",))]
    sched = Scheduler(lambda: hosts, store, probes=PROBES, interval=0.2)
    sched.start()
    time.sleep(1.1)
    sched.stop()
    assert 4 <= sched.stats.snapshot().sweeps <= 7
    assert len(store.history("mx1", "port")) == sched.stats.snapshot().sweeps


def test_failure_reasons_are_a_small_fixed_set() -> None:
    def failed(error: str) -> ProbeResult:
        # As a probe fails: a ProbeFailure raised during acquisition, judged by checks.base.run.
        def acquire(acq: Acquisition) -> None:
            raise ProbeFailure(error)

        return run("x", Target("t", "127.0.0.1"), acquire, lambda values: Verdict(Status.OK))

    assert failure_reason(failed("connection refused")) == "refused"
    assert failure_reason(failed("no greeting within 5.0 s")) == "timeout"
    expired = failed("certificate for mx1.lab.test expired 3 days ago")
    assert failure_reason(expired) == "cert_expired"
    assert failure_reason(failed("LOGIN rejected: [AUTHENTICATIONFAILED]")) == "auth_failed"
    assert failure_reason(failed("something odd")) == "other"
    assert set(REASONS) == {str(r) for r in Reason} - {""}
    passed = ProbeResult(check="x", target="t", success=False, error="no reason given")
    assert failure_reason(passed) == "other"


def test_the_mesh_runs_n_rotating_pairs_per_sweep_and_keeps_each_pair(tmp_path: Path) -> None:
    from mailfleet.dashboard.metrics import MeshTally

    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def pair(source: Target, mailbox: Target, options: ProbeOptions,
             deadline: Deadline) -> ProbeResult:
        with lock:
            calls.append((source.name, mailbox.name))
        ok = source.name != "mx3"  # mx3 cannot submit
        return ProbeResult(
            check="sync", target=mailbox.name, success=ok,
            values={"kind": "mesh", "source": source.name, "destination": mailbox.name,
                    **({"delivery_latency_seconds": 0.25} if ok else {})},
            error="" if ok else "submission on mx3 failed: login refused: 535",
        )

    hosts = [host(f"mx{i}", 1, ("sync_mesh",)) for i in (1, 2, 3)]
    hosts.append(host("solo", 1, ()))  # watched, not in the mesh
    store = ResultStore(tmp_path / "r.db")
    sched = Scheduler(lambda: hosts, store, probes={}, interval=30, pair_probe=pair)
    first = sched.sweep()
    assert first.probes == 3  # O(N): one pair per mesh host per sweep, nothing for "solo"
    assert sorted(calls) == [("mx1", "mx2"), ("mx2", "mx3"), ("mx3", "mx1")]
    sched.sweep()
    assert sorted(calls[3:]) == [("mx1", "mx3"), ("mx2", "mx1"), ("mx3", "mx2")]
    # after N-1 sweeps every ordered pair has a result, stored on its destination
    latest = {(r.host, r.check): r for r in store.latest()}
    assert {k for k in latest if k[1].startswith("sync_mesh")} == {
        (d, f"sync_mesh:{s}") for s in ("mx1", "mx2", "mx3")
        for d in ("mx1", "mx2", "mx3") if s != d
    }
    assert not latest[("mx1", "sync_mesh:mx3")].success
    assert sched.stats.snapshot().probes["sync_mesh"] == 6
    # /metrics: per destination, not per pair (n hosts: 3n series, never n(n-1))
    tally = MeshTally()
    for r in store.latest():
        if r.check.startswith("sync_mesh:"):
            tally.add(r.host, r)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in tally.samples()}
    pairs = "mailfleet_sync_mesh_pairs"
    slowest = "mailfleet_sync_mesh_latency_max_seconds"
    assert got == {
        (pairs, (("host", "mx1"), ("result", "ok"))): 1.0,  # from mx2; mx3 cannot submit
        (pairs, (("host", "mx1"), ("result", "failed"))): 1.0,
        (slowest, (("host", "mx1"),)): 0.25,
        (pairs, (("host", "mx2"), ("result", "ok"))): 1.0,
        (pairs, (("host", "mx2"), ("result", "failed"))): 1.0,
        (slowest, (("host", "mx2"),)): 0.25,
        (pairs, (("host", "mx3"), ("result", "ok"))): 2.0,
        (pairs, (("host", "mx3"), ("result", "failed"))): 0.0,
        (slowest, (("host", "mx3"),)): 0.25,
    }


def test_shards_split_hosts_and_mesh_pairs_with_nothing_twice_and_nothing_left(
    tmp_path: Path,
) -> None:
    from mailfleet.dashboard.shard import Shard

    calls: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def check(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        with lock:
            calls.append(("port", target.name, ""))
        return ProbeResult(check="port", target=target.name, success=True)

    def pair(source: Target, mailbox: Target, options: ProbeOptions,
             deadline: Deadline) -> ProbeResult:
        with lock:
            calls.append(("mesh", mailbox.name, source.name))
        return ProbeResult(check="sync", target=mailbox.name, success=True,
                           values={"kind": "mesh", "source": source.name,
                                   "destination": mailbox.name})

    names = [f"mx{i}" for i in range(9)]
    hosts = [host(n, 1, ("port", "sync_mesh")) for n in names]
    shards = [Shard(k, 3) for k in range(3)]
    scheds = [Scheduler(lambda: hosts, ResultStore(tmp_path / f"{k}.db"), probes={"port": check},
                        interval=30, pair_probe=pair, shard=shard)
              for k, shard in enumerate(shards)]
    for _ in range(len(names) - 1):  # a whole mesh cycle: every ordered pair comes up once
        for sched in scheds:
            sched.sweep()
    owners = {n: [s.owns(n) for s in shards].index(True) for n in names}
    assert len(set(owners.values())) > 1  # the hash spreads these names over the shards
    per_sweep = [c for c in calls if c[0] == "port"]
    assert sorted(per_sweep) == sorted(("port", n, "") for n in names for _ in range(8))
    mesh = [c for c in calls if c[0] == "mesh"]
    assert sorted(mesh) == sorted(("mesh", d, s) for d in names for s in names if s != d)
    for k, sched in enumerate(scheds):  # each store holds its own hosts' results only
        assert {r.host for r in sched.store.latest()} == {n for n in names if owners[n] == k}


def test_probes_run_on_a_bounded_pool_of_reused_threads_that_ends_with_the_sweep(
    tmp_path: Path,
) -> None:
    threads: set[int] = set()
    lock = threading.Lock()

    def quick(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        with lock:
            threads.add(threading.get_ident())
        time.sleep(0.002)
        return ProbeResult(check="quick", target=target.name, success=True)

    hosts = [host(f"mx{i}", 1, ("quick", "quick")) for i in range(100)]
    store = ResultStore(tmp_path / "r.db")
    before = set(threading.enumerate())
    sched = Scheduler(lambda: hosts, store, probes={"quick": quick}, interval=30,
                      concurrency=6)
    sweep = sched.sweep()
    assert sweep.probes == 200 and sweep.failures == 0
    assert len(store.latest()) == 100  # two results of one check per host: the latest each
    assert len(store.history("mx7", "quick")) == 2
    assert 1 <= len(threads) <= 6, "a thread per probe, or more threads than the concurrency"
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("probe-")]


def test_results_are_written_in_batches_yet_promptly(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    writes: list[int] = []
    record_many = store.record_many

    def counting(items):  # type: ignore[no-untyped-def]
        items = list(items)
        writes.append(len(items))
        record_many(items)

    store.record_many = counting  # type: ignore[method-assign]

    def quick(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        time.sleep(0.001)
        return ProbeResult(check="quick", target=target.name, success=True)

    hosts = [host(f"mx{i}", 1, ("quick",)) for i in range(300)]
    Scheduler(lambda: hosts, store, probes={"quick": quick}, interval=30,
              concurrency=8).sweep()
    assert sum(writes) == 300
    assert len(writes) < 300 / 4, f"{len(writes)} transactions for 300 results"


def test_a_hosts_result_is_stored_before_its_next_probe_starts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    seen_before: list[int] = []
    lock = threading.Lock()

    def counted(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        with lock:
            seen_before.append(len(store.history(target.name)))
        return ProbeResult(check="counted", target=target.name, success=True)

    hosts = [host("mx1", 1, ("counted",) * 5)]
    Scheduler(lambda: hosts, store, probes={"counted": counted}, interval=30,
              per_host=1).sweep()
    assert seen_before == [0, 1, 2, 3, 4]


def test_a_hung_probe_frees_its_slot_for_a_new_worker_at_its_deadline(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    probes = {**TEST_PROBES, "quick": lambda t, o, d: ProbeResult("quick", t.name, True)}
    hosts = [host("buggy", 1, ("hung",), timeout=0.3)]
    hosts += [host(f"mx{i}", 1, ("quick",)) for i in range(20)]
    # One slot: the hung probe takes it first; everything else runs once it is abandoned.
    sched = Scheduler(lambda: hosts, store, probes=probes, interval=30, concurrency=1,
                      grace=0.2)
    before = set(threading.enumerate())
    t0 = time.monotonic()
    sweep = sched.sweep()
    assert time.monotonic() - t0 < 1.5
    assert sweep.probes == 21 and sweep.failures == 1
    latest = {r.host: r for r in store.latest()}
    assert all(latest[f"mx{i}"].success for i in range(20))
    assert "did not return within its 0.3 s deadline" in latest["buggy"].error
    stuck = [t for t in set(threading.enumerate()) - before if t.name.startswith("probe-")]
    assert len(stuck) == 1, "only the worker stuck in the hung probe is left"
    assert sched.stranded == 1
    stuck[0].join(6)  # the hung probe returns after 5 s; its worker then ends
    assert not stuck[0].is_alive() and sched.stranded == 0


def test_threads_stuck_in_hung_probes_are_bounded(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    hosts = [host(f"buggy{i}", 1, ("hung",), timeout=0.2) for i in range(4)]
    before = threading.active_count()
    sched = Scheduler(lambda: hosts, store, probes=TEST_PROBES, interval=30, concurrency=1,
                      grace=0.1, max_stranded=2)
    t0 = time.monotonic()
    sweep = sched.sweep()
    assert time.monotonic() - t0 < 1.5
    assert sweep.failures == 4
    assert threading.active_count() - before <= 2  # never more threads than the cap
    errors = sorted(r.error for r in store.latest())
    assert sum("did not return within" in e for e in errors) == 2
    assert sum(e.startswith("not probed: 2 probe threads are still stuck") for e in errors) == 2
