"""The result store: what the dashboard reads, retention, restart and crash safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mailfleet.checks.result import ProbeResult, Status
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.web.model import host_summary


def result(check: str, ok: bool, at: float, **values: object) -> ProbeResult:
    return ProbeResult(
        check=check, target="10.0.0.1", success=ok,
        status=Status.OK if ok else Status.CRITICAL,
        phases={"connect": 0.01, "total": 0.02}, values=values,
        error="" if ok else "connection refused", started_at=at,
    )


def test_latest_is_the_newest_result_per_host_and_check(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    now = time.time()
    store.record("mx1", result("port", True, now - 20))
    store.record("mx1", result("port", False, now - 10))
    store.record("mx2", result("tls", True, now - 5, tls_version="TLSv1.3"))
    latest = {(r.host, r.check): r for r in store.latest()}
    assert set(latest) == {("mx1", "port"), ("mx2", "tls")}
    assert latest["mx1", "port"].success is False
    assert latest["mx1", "port"].error == "connection refused"
    # the last success is remembered while the check fails
    assert latest["mx1", "port"].last_success_at == now - 20
    assert latest["mx2", "tls"].values["tls_version"] == "TLSv1.3"
    assert [r.check for r in store.latest("mx2")] == ["tls"]


def test_history_is_oldest_first_within_the_window(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    base = time.time() - 100
    for i in range(10):
        store.record("mx1", result("port", i % 2 == 0, base + i))
        store.record("mx1", result("tls", True, base + i))
    hist = store.history("mx1", "port", since=base + 3, until=base + 7)
    assert [r.started_at - base for r in hist] == [3, 4, 5, 6, 7]
    assert [r.phases["connect"] for r in hist] == [0.01] * 5
    assert len(store.history("mx1")) == 20
    newest = store.history("mx1", "port", limit=2)
    assert [r.started_at - base for r in newest] == [8, 9]


def test_host_summaries_count_hosts_by_worst_status(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    now = time.time()
    store.record("mx1", result("port", True, now))
    store.record("mx1", result("tls", False, now))
    store.record("mx2", result("port", True, now))
    latest = store.latest()
    by_host = {name: host_summary(name, [r for r in latest if r.host == name])
               for name in ["mx1", "mx2", "mx3"]}
    counts = dict.fromkeys(("ok", "warning", "critical", "unknown"), 0)
    for summary in by_host.values():
        counts[summary.status.label] += 1
    assert by_host["mx1"].status is Status.CRITICAL
    assert by_host["mx2"].status is Status.OK
    assert by_host["mx3"].status is Status.UNKNOWN  # in the inventory, never probed
    assert counts == {"ok": 1, "warning": 0, "critical": 1, "unknown": 1}


def test_retention_drops_old_history_but_keeps_the_latest(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db", retention=3600)
    now = time.time()
    store.record("mx1", result("port", True, now - 7200))
    store.record("mx1", result("port", True, now - 60))
    store.record("mx2", result("port", True, now - 7200))  # old, but mx2's latest
    assert store.prune(now) == 1
    assert [r.started_at for r in store.history("mx1")] == [now - 60]
    assert [r.host for r in store.latest()] == ["mx1", "mx2"]


def test_results_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    first = ResultStore(path)
    first.record("mx1", result("port", True, time.time()))
    first.close()
    again = ResultStore(path)
    assert [r.host for r in again.latest()] == ["mx1"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


WRITER = """
import sys, time
from mailfleet.checks.result import ProbeResult
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.web.model import host_summary
store = ResultStore(sys.argv[1])
i = 0
while True:
    store.record_many([(f"mx{j}", ProbeResult(check="port", target="x", success=True,
                       values={"i": i}, started_at=time.time())) for j in range(50)])
    i += 1
    if i == 20:
        print("writing", flush=True)
"""


def test_a_writer_killed_mid_write_leaves_a_sound_store(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    store = ResultStore(path)
    assert store.integrity_ok()
    latest = store.latest()
    assert len(latest) == 50
    # latest and results are written in one transaction: they always agree
    assert {r.values["i"] for r in latest} == {latest[0].values["i"]}
    assert latest[0].values["i"] >= 19
