"""Faults during a sweep: every other host's results stay correct and on time, the
scheduler keeps its interval, and nothing leaks (fds, threads, memory).

The healthy hosts are a real Dovecot (bench/localmail.py) on loopback
addresses; the faulty ones are a second Dovecot killed (SIGKILL) mid-sweep, a
tarpit, a server that sends garbage (plain and inside TLS), a TLS server that
stalls mid-handshake, one that trickles a byte at a time, a closed port, and a
DNS server that never answers (a resolver that is down) or whose port is
closed. The lab's own faults (a host partitioned, its veth down) are in
test_partition.py.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.localmail import LocalDovecot, start_dovecot
from mailfleet.checks import PROBES, Probe
from mailfleet.checks.result import ProbeResult
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.scheduler import Scheduler
from mailfleet.dashboard.store import ResultStore, StoredResult
from mailfleet.dashboard.targets import WatchedHost
from tests.reliability.conftest import (
    GOOD_ADDRESSES,
    VICTIM_ADDRESS,
    Holdings,
    Hostile,
    mail_host,
    wait_for_probe_threads_to_end,
)

TIMEOUT = 2.0  # every probe's deadline in these tests
GRACE = 1.0  # the scheduler's grace past a deadline before it abandons a probe


def faulty_hosts(dovecot: LocalDovecot, hostile: Hostile) -> list[WatchedHost]:
    p = hostile.ports
    login = ("tls", "imap_login")
    return [
        mail_host("bad-tarpit", "127.0.0.1", dovecot, login, TIMEOUT, p["tarpit"]),
        mail_host("bad-garbage", "127.0.0.1", dovecot, login, TIMEOUT, p["garbage"]),
        mail_host("bad-stalled-tls", "127.0.0.1", dovecot, login, TIMEOUT, p["stalled_tls"]),
        mail_host("bad-trickle", "127.0.0.1", dovecot, login, TIMEOUT, p["trickle"]),
        # Valid TLS (the tls check passes), then garbage where IMAP should be.
        mail_host("bad-tls-garbage", "127.0.0.1", dovecot, ("imap_login",), TIMEOUT,
                  p["tls_garbage"], ca=hostile.ca),
        mail_host("bad-closed", "127.0.0.1", dovecot, ("port", "tls"), TIMEOUT, p["closed"]),
        mail_host("bad-dns-silent", "127.0.0.1", dovecot, ("dns",), TIMEOUT,
                  dns_resolvers=(f"127.0.0.1:{p['silent_dns']}",)),
        mail_host("bad-dns-closed", "127.0.0.1", dovecot, ("dns",), TIMEOUT,
                  dns_resolvers=(f"127.0.0.1:{p['closed']}",)),
        # The sync probe, its mailbox stalling at IDLE, UID SEARCH or UID FETCH, or its
        # submission server at DATA.
        sync_host("bad-sync-idle", dovecot, hostile, p["stall_idle"], p["closed"]),
        sync_host("bad-sync-search", dovecot, hostile, p["stall_search"], p["closed"]),
        sync_host("bad-sync-fetch", dovecot, hostile, p["stall_fetch"], p["closed"]),
        sync_host("bad-sync-data", dovecot, hostile, p["mailbox"], p["stall_data"]),
    ]


def sync_host(name: str, dovecot: LocalDovecot, hostile: Hostile, imaps: int,
              submission: int) -> WatchedHost:
    from dataclasses import replace

    host = mail_host(name, "127.0.0.1", dovecot, ("sync",), TIMEOUT, imaps, ca=hostile.ca)
    return replace(host, target=replace(host.target,
                                        ports={"imaps": imaps, "submission": submission}))


def with_domains(host: WatchedHost) -> WatchedHost:
    from dataclasses import replace

    return replace(host, target=replace(host.target, domains=("example1.test",)))


def killing_after(victim_name: str, victim: LocalDovecot, probe: Probe) -> Probe:
    """``probe``, except that the victim's Dovecot is SIGKILLed once its host was probed.

    (In the probe, not by watching the store: the victim's next probe may start as soon
    as this result is written.)"""
    def probe_then_kill(target: Target, options: ProbeOptions,
                        deadline: Deadline) -> ProbeResult:
        result = probe(target, options, deadline)
        if target.name == victim_name:
            victim.kill()
        return result

    return probe_then_kill


def by_check(results: list[StoredResult]) -> dict[tuple[str, str], StoredResult]:
    return {(r.host, r.check): r for r in results}


def test_faulty_hosts_do_not_slow_or_spoil_the_others(
    dovecot: LocalDovecot, hostile: Hostile, tmp_path: Path
) -> None:
    good = [mail_host(f"good{i}", a, dovecot, timeout=TIMEOUT)
            for i, a in enumerate(GOOD_ADDRESSES)]
    victim_dovecot = start_dovecot([VICTIM_ADDRESS])
    try:
        # port first; tls + imap_login share one connection (one job), after the kill.
        victim = mail_host("victim", VICTIM_ADDRESS, victim_dovecot, timeout=TIMEOUT,
                           checks=("port", "tls", "imap_login"))
        bad = [with_domains(h) if "dns" in h.name else h for h in faulty_hosts(dovecot, hostile)]
        hosts = [victim, *bad, *good]
        store = ResultStore(tmp_path / "results.sqlite3")
        probes = {**PROBES, "port": killing_after("victim", victim_dovecot, PROBES["port"])}
        scheduler = Scheduler(lambda: hosts, store, probes=probes, interval=60, concurrency=8,
                              per_host=1, grace=GRACE)
        store.latest()  # this thread's reader connection, opened before counting
        before = Holdings.now()
        t0 = time.time()
        sweep = scheduler.sweep()
        after = wait_for_probe_threads_to_end()
    finally:
        victim_dovecot.stop()

    results = by_check(store.latest())
    assert len(results) == sum(len(h.checks) for h in hosts), "a probe left no result"
    # Healthy hosts: every check right, each far inside its deadline, none queued
    # behind the slow ones.
    for h in good:
        for check in h.checks:
            r = results[(h.name, check)]
            assert r.success, f"{h.name} {check}: {r.error}"
            assert r.duration < TIMEOUT / 2, f"{h.name} {check} took {r.duration:.2f} s"
            assert r.started_at + r.duration - t0 < TIMEOUT + GRACE, (
                f"{h.name} {check} ended {r.started_at + r.duration - t0:.1f} s into the sweep"
            )
    # The victim: probed fine before the kill, then refused — quickly, not hung.
    assert results[("victim", "port")].success
    for check in ("tls", "imap_login"):
        r = results[("victim", check)]
        assert not r.success and r.duration < TIMEOUT, (check, r.error, r.duration)
    # Faulty hosts: a failure in words, bounded by the deadline (plus the grace).
    for h in bad:
        for check in h.checks:
            r = results[(h.name, check)]
            assert not r.success, f"{h.name} {check} succeeded?"
            assert r.error, f"{h.name} {check}: no error text"
            assert r.duration <= TIMEOUT + GRACE + 0.5, (h.name, check, r.duration)
    assert sweep.failures == sum(len(h.checks) for h in bad) + 2
    # Slow probes (tarpit, stall, trickle, silent DNS) take two rounds of the 8 slots at most.
    assert sweep.duration < 2 * (TIMEOUT + GRACE) + 1.5, sweep.duration
    # Nothing left behind: no probe thread, no socket, no file.
    assert after.probe_threads == 0
    assert after.threads <= before.threads
    new = Counter(after.fd_targets) - Counter(before.fd_targets)
    assert after.fds <= before.fds, f"fds {before.fds} -> {after.fds}: new {new}"
    store.close()


def test_the_scheduler_keeps_its_interval_and_holds_nothing_more_over_time(
    dovecot: LocalDovecot, hostile: Hostile, tmp_path: Path
) -> None:
    interval = 1.5
    good = [mail_host(f"good{i}", a, dovecot, timeout=1.0)
            for i, a in enumerate(GOOD_ADDRESSES[:6])]
    slow = [mail_host("tarpit", "127.0.0.1", dovecot, ("tls",), 1.0, hostile.ports["tarpit"]),
            mail_host("stalled", "127.0.0.1", dovecot, ("tls",), 1.0,
                      hostile.ports["stalled_tls"])]
    store = ResultStore(tmp_path / "results.sqlite3")
    scheduler = Scheduler(lambda: [*slow, *good], store, interval=interval, concurrency=4,
                          per_host=1, grace=0.5)
    held: list[Holdings] = []
    seen = 0
    scheduler.start()
    try:
        deadline = time.monotonic() + 8 * interval + 5
        while len(held) < 6 and time.monotonic() < deadline:
            sweeps = scheduler.stats.snapshot().sweeps
            if sweeps > seen:
                seen = sweeps
                held.append(wait_for_probe_threads_to_end(1.0))
            time.sleep(0.02)
    finally:
        scheduler.stop()
    assert len(held) >= 6, f"only {len(held)} sweeps in {8 * interval + 5:.0f} s"
    with store._read() as conn:  # the sweeps the scheduler recorded, oldest first
        starts = [row[0] for row in conn.execute(
            "SELECT started_at, overrun FROM sweeps ORDER BY id")]
        overruns = [row[0] for row in conn.execute("SELECT overrun FROM sweeps")]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert not any(overruns)
    assert all(abs(g - interval) < 0.35 for g in gaps), f"sweep start gaps {gaps}"
    # Steady state from the second sweep on: the same fds, threads, and no growing RSS.
    steady = held[1:]
    assert max(h.fds for h in steady) - min(h.fds for h in steady) <= 1, steady
    assert max(h.threads for h in steady) == min(h.threads for h in steady), steady
    assert steady[-1].rss_kib - steady[0].rss_kib < 4 * 1024, steady
    store.close()


@pytest.mark.parametrize("kind", ["silent_dns", "closed"])
def test_a_dns_resolver_that_is_down_is_a_failure_within_the_deadline(
    dovecot: LocalDovecot, hostile: Hostile, tmp_path: Path, kind: str
) -> None:
    from mailfleet.checks import PROBES
    from mailfleet.checks.target import Deadline

    host = with_domains(mail_host("dns", "127.0.0.1", dovecot, ("dns",), TIMEOUT,
                                  dns_resolvers=(f"127.0.0.1:{hostile.ports[kind]}",)))
    t0 = time.monotonic()
    result = PROBES["dns"](host.target, host.options, Deadline(TIMEOUT))
    assert time.monotonic() - t0 <= TIMEOUT + 0.5
    assert not result.success
    assert "127.0.0.1" in result.error or "resolver" in result.error.lower(), result.error
