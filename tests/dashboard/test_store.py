"""The result store: what the dashboard reads, retention, restart and crash safety."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.tls import TlsValues
from mailfleet.dashboard.store import SCHEMA_VERSION, ResultStore, StoreVersionError
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


# The first release's file, exactly as its store wrote it (schema 1: no reason column).
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    check_name TEXT NOT NULL,
    started_at REAL NOT NULL,
    success INTEGER NOT NULL,
    status INTEGER NOT NULL,
    duration REAL NOT NULL,
    error TEXT NOT NULL,
    phases TEXT NOT NULL,
    "values" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_host_check ON results (host, check_name, started_at);
CREATE INDEX IF NOT EXISTS results_by_time ON results (started_at);
CREATE TABLE IF NOT EXISTS latest (
    host TEXT NOT NULL,
    check_name TEXT NOT NULL,
    result_id INTEGER NOT NULL,
    last_success_at REAL,
    PRIMARY KEY (host, check_name)
);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    duration REAL NOT NULL,
    probes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    overrun INTEGER NOT NULL
);
"""


def write_v1_store(path: Path, now: float) -> None:
    """Six hours of one-minute sweeps of mx1 and mx2, and a mesh pair, as release 1 did."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    with conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("PRAGMA user_version = 1")
    sweeps = 360
    for k in range(sweeps):
        at = now - (sweeps - 1 - k) * 60
        rows: list[tuple[object, ...]] = []
        for host in ("mx1", "mx2"):
            port_ok = not (host == "mx2" and k == sweeps - 1)  # mx2's newest port failed
            rows.append((host, "port", at, int(port_ok), 0 if port_ok else 2, 0.003,
                         "" if port_ok else "connection to 10.0.0.2:993 refused",
                         json.dumps({"connect": 0.002, "total": 0.003}),
                         json.dumps({"port": 993, "open": port_ok}, sort_keys=True)))
            expiry = now + 40 * 86400
            rows.append((host, "tls", at, 1, 0, 0.013, "",
                         json.dumps({"connect": 0.002, "tls": 0.01, "total": 0.013}),
                         json.dumps({"tls_version": "TLSv1.3", "cert_not_after": expiry,
                                     "chain_earliest_not_after": expiry}, sort_keys=True)))
            rows.append((host, "sync", at, 1, 0, 0.6, "", json.dumps({"total": 0.6}),
                         json.dumps({"kind": "local", "delivery_latency_seconds": 0.3,
                                     "push_latency_seconds": 0.28,
                                     "client_latency_seconds": 0.05}, sort_keys=True)))
        if k % 10 == 0:
            rows.append(("mx2", "sync_mesh:mx1", at, 1, 0, 0.5, "", json.dumps({"total": 0.5}),
                         json.dumps({"kind": "mesh", "source": "mx1", "destination": "mx2",
                                     "delivery_latency_seconds": 0.4}, sort_keys=True)))
        with conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO results (host, check_name, started_at, success, status, "
                    'duration, error, phases, "values") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    row,
                )
                success_at = row[2] if row[3] else None
                conn.execute(
                    "INSERT INTO latest (host, check_name, result_id, last_success_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (host, check_name) DO UPDATE SET "
                    "result_id = excluded.result_id, "
                    "last_success_at = COALESCE(excluded.last_success_at, latest.last_success_at)",
                    (row[0], row[1], cur.lastrowid, success_at),
                )
            conn.execute(
                "INSERT INTO sweeps (started_at, duration, probes, failures, overrun) "
                "VALUES (?, ?, ?, ?, ?)", (at, 2.5, len(rows), 0, 0))
    conn.close()


def test_a_first_release_store_opens_with_its_history(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    now = time.time()
    write_v1_store(path, now)
    store = ResultStore(path)
    latest = {(r.host, r.check): r for r in store.latest()}
    assert set(latest) == {(h, c) for h in ("mx1", "mx2") for c in ("port", "tls", "sync")} | {
        ("mx2", "sync_mesh:mx1")}
    down = latest["mx2", "port"]
    assert down.error == "connection to 10.0.0.2:993 refused"
    assert down.reason is Reason.OTHER  # release 1 never said why
    assert down.last_success_at == now - 60
    assert latest["mx1", "port"].reason is Reason.NONE
    assert TlsValues.of(latest["mx1", "tls"]).tls_version == "TLSv1.3"
    assert len(store.history("mx1", "port")) == 360
    points = store.series("mx1", "tls", now - 6 * 3600, 60.0,
                          (TlsValues.key.chain_earliest_not_after,))
    assert len(points) == 360
    assert points[-1].values == {"chain_earliest_not_after": now + 40 * 86400}
    assert points[-1].phases["tls"] == 0.01
    pairs = store.mesh_pairs("mx2", now - 3600)
    assert [(p.source, p.destination, p.delivery_latency_seconds) for p in pairs] == [
        ("mx1", "mx2", 0.4)]
    last = store.last_sweep()
    assert last is not None and last.started_at == now
    # The upgraded file takes new results, with their reason.
    store.record("mx2", ProbeResult("port", "10.0.0.2", False, Status.CRITICAL,
                                    error="connection refused", started_at=now + 60,
                                    reason=Reason.REFUSED))
    assert store.latest("mx2")[0].reason is Reason.REFUSED
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    ResultStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match="newer than this mailfleet knows"):
        ResultStore(path)


def test_a_store_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file path"):
        ResultStore(":memory:")


def test_two_processes_opening_an_old_store_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    write_v1_store(path, time.time())
    opener = ("import sys; from mailfleet.dashboard.store import ResultStore; "
              "ResultStore(sys.argv[1])")
    procs = [subprocess.Popen([sys.executable, "-c", opener, str(path)], stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    store = ResultStore(path)
    assert len(store.history("mx1", "port")) == 360
    store.close()
