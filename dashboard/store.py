"""The result store: every probe result, in SQLite (WAL), with retention.

Writers: the scheduler (``record``, ``record_sweep``, ``prune``). Readers: the
exporter's ``/metrics``, the dashboard pages and the JSON API, through the read
API below (see dashboard/README.md). All methods are thread-safe: writes go
through one connection under a lock; a read borrows a connection from a small
pool of idle ones (never one per thread: each request thread would leak one),
and WAL lets readers run while the scheduler writes.

Crash safety: WAL journal, ``synchronous=NORMAL`` — a crash (kill -9, power
loss) can lose the last commits but never corrupts the file; ``latest`` is
updated in the same transaction as ``results``, so they never disagree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailfleet.checks.result import ProbeResult, Status

SCHEMA_VERSION = 1
MAX_IDLE_READERS = 8

SCHEMA = """
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

_RESULT_COLUMNS = (
    "r.host, r.check_name, r.started_at, r.success, r.status, r.duration, r.error, "
    'r.phases, r."values"'
)


@dataclass(frozen=True)
class StoredResult:
    """One probe result as stored; ``last_success_at`` only on ``latest`` rows."""

    host: str
    check: str
    started_at: float
    success: bool
    status: Status
    duration: float
    error: str
    phases: Mapping[str, float] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    last_success_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "check": self.check,
            "started_at": self.started_at,
            "success": self.success,
            "status": self.status.label,
            "duration": self.duration,
            "error": self.error,
            "phases": dict(self.phases),
            "values": dict(self.values),
            "last_success_at": self.last_success_at,
        }


@dataclass(frozen=True)
class Sweep:
    started_at: float
    duration: float
    probes: int
    failures: int
    overrun: bool


@dataclass(frozen=True)
class HostSummary:
    host: str
    status: Status  # the worst status of its latest results (UNKNOWN when none)
    checks: Mapping[str, StoredResult]
    last_probe_at: float | None


@dataclass(frozen=True)
class FleetSummary:
    hosts: tuple[HostSummary, ...]
    counts: Mapping[str, int]  # status label -> number of hosts
    last_sweep: Sweep | None


def worst(statuses: Iterable[Status]) -> Status:
    """CRITICAL > WARNING > UNKNOWN > OK (nagios ordering, unknown is not ok)."""
    order = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}
    found = list(statuses)
    return max(found, key=order.__getitem__) if found else Status.UNKNOWN


def _duration(result: ProbeResult) -> float:
    total = result.phases.get("total")
    if total is not None:
        return float(total)
    return float(sum(result.phases.values()))


def _row_to_result(row: Any, last_success: float | None = None) -> StoredResult:
    return StoredResult(
        host=row[0],
        check=row[1],
        started_at=row[2],
        success=bool(row[3]),
        status=Status(row[4]),
        duration=row[5],
        error=row[6],
        phases=json.loads(row[7]),
        values=json.loads(row[8]),
        last_success_at=last_success,
    )


class ResultStore:
    """SQLite store of probe results. ``path`` may be ``":memory:"`` only for one thread."""

    def __init__(self, path: str | Path, retention: float = 7 * 86400) -> None:
        self.path = str(path)
        self.retention = retention
        self._write_lock = threading.Lock()
        # Bumped by every write that changes what ``latest`` returns (in this process):
        # readers that cache what they render from it compare generations.
        self.generation = 0
        # Idle reader connections, shared by every thread (werkzeug serves each request
        # in a new thread: one connection per thread would leak one fd per request).
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        with self._writer:
            self._writer.executescript(SCHEMA)
            self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self.path == ":memory:":
            with self._write_lock:
                yield self._writer
            return
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        # One read transaction: every query inside sees the same snapshot.
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")
            with self._idle_lock:
                keep = len(self._idle) < MAX_IDLE_READERS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- writing (the scheduler) -----------------------------------------------------
    def record(self, host: str, result: ProbeResult) -> None:
        """Store one result and make it the latest for (host, check)."""
        self.record_many([(host, result)])

    def record_many(self, items: Iterable[tuple[str, ProbeResult]]) -> None:
        rows = [
            (
                host,
                r.check,
                r.started_at,
                int(r.success),
                int(r.status),
                _duration(r),
                r.error,
                json.dumps(dict(r.phases)),
                json.dumps(dict(r.values), default=str, sort_keys=True),
            )
            for host, r in items
        ]
        with self._write_lock, self._writer as conn:
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
            self.generation += 1

    def record_sweep(self, sweep: Sweep) -> None:
        with self._write_lock, self._writer as conn:
            conn.execute(
                "INSERT INTO sweeps (started_at, duration, probes, failures, overrun) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    sweep.started_at, sweep.duration, sweep.probes, sweep.failures,
                    int(sweep.overrun),
                ),
            )

    def prune(self, now: float | None = None) -> int:
        """Drop results older than the retention (never a (host, check)'s latest)."""
        cutoff = (now if now is not None else time.time()) - self.retention
        with self._write_lock, self._writer as conn:
            cur = conn.execute(
                "DELETE FROM results WHERE started_at < ? "
                "AND id NOT IN (SELECT result_id FROM latest)",
                (cutoff,),
            )
            conn.execute("DELETE FROM sweeps WHERE started_at < ?", (cutoff,))
            return cur.rowcount

    def forget_hosts(self, keep: Iterable[str]) -> None:
        """Drop ``latest`` rows of hosts no longer in the inventory (history ages out)."""
        names = list(keep)
        with self._write_lock, self._writer as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep_hosts (host TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM keep_hosts")
            conn.executemany("INSERT OR IGNORE INTO keep_hosts VALUES (?)", [(n,) for n in names])
            cur = conn.execute(
                "DELETE FROM latest WHERE host NOT IN (SELECT host FROM keep_hosts)"
            )
            if cur.rowcount:
                self.generation += 1

    # -- reading (exporter, dashboard, API) ----------------------------------------------
    def latest(self, host: str | None = None) -> list[StoredResult]:
        """The latest result of every (host, check), or of one host; sorted by host, check."""
        sql = (
            f"SELECT {_RESULT_COLUMNS}, l.last_success_at FROM latest l "
            "JOIN results r ON r.id = l.result_id"
        )
        args: tuple[Any, ...] = ()
        if host is not None:
            sql += " WHERE l.host = ?"
            args = (host,)
        sql += " ORDER BY l.host, l.check_name"
        with self._read() as conn:
            return [_row_to_result(row[:9], row[9]) for row in conn.execute(sql, args)]

    def history(
        self,
        host: str,
        check: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10_000,
    ) -> list[StoredResult]:
        """Results of one host (optionally one check) in [since, until], oldest first.

        With more than ``limit`` results in the window, the newest ``limit`` are returned.
        """
        clauses = ["r.host = ?"]
        args: list[Any] = [host]
        if check is not None:
            clauses.append("r.check_name = ?")
            args.append(check)
        if since is not None:
            clauses.append("r.started_at >= ?")
            args.append(since)
        if until is not None:
            clauses.append("r.started_at <= ?")
            args.append(until)
        sql = (
            f"SELECT {_RESULT_COLUMNS} FROM results r WHERE {' AND '.join(clauses)} "
            "ORDER BY r.started_at DESC, r.id DESC LIMIT ?"
        )
        args.append(limit)
        with self._read() as conn:
            rows = list(conn.execute(sql, args))
        return [_row_to_result(row) for row in reversed(rows)]

    def hosts(self) -> list[str]:
        """Hosts that have a latest result."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT host FROM latest ORDER BY host")]

    def last_sweep(self) -> Sweep | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT started_at, duration, probes, failures, overrun FROM sweeps "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return Sweep(row[0], row[1], row[2], row[3], bool(row[4]))

    def fleet_summary(self, hosts: Iterable[str] | None = None) -> FleetSummary:
        """Per-host worst status and latest results, and how many hosts are in each status.

        ``hosts`` (the inventory) decides which hosts appear; a host without any
        result yet is ``unknown``.
        """
        by_host: dict[str, dict[str, StoredResult]] = {}
        for result in self.latest():
            by_host.setdefault(result.host, {})[result.check] = result
        names = list(hosts) if hosts is not None else sorted(by_host)
        summaries = []
        counts = {s.label: 0 for s in Status}
        for name in names:
            checks = by_host.get(name, {})
            status = worst(r.status for r in checks.values())
            counts[status.label] += 1
            last = max((r.started_at for r in checks.values()), default=None)
            summaries.append(HostSummary(name, status, checks, last))
        return FleetSummary(tuple(summaries), counts, self.last_sweep())

    def integrity_ok(self) -> bool:
        with self._read() as conn:
            row = conn.execute("PRAGMA quick_check").fetchone()
        return bool(row and row[0] == "ok")
