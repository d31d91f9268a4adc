"""``ResultStore``: every probe result, in one SQLite file (WAL), with retention.

Writers: the scheduler (``record_many``, ``record_sweep``, ``prune``,
``forget_hosts``). Readers: the exporter's ``/metrics``, the pages and the JSON
API, through the read methods here and in ``reads.py`` — nothing else opens the
file. Writes go through one connection under a lock; a read borrows a
connection from a small pool of idle ones (werkzeug serves each request in a new
thread: one connection per thread would leak one per request), and WAL lets
readers run while the scheduler writes.

Crash safety: WAL journal, ``synchronous=NORMAL`` — a crash (kill -9, power
loss) can lose the last commits but never corrupts the file; ``latest`` is
updated in the same transaction as ``results``, so they never disagree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailfleet.checks.result import ProbeResult
from mailfleet.dashboard.store.records import RESULT_COLUMNS, StoredResult, Sweep, decode
from mailfleet.dashboard.store.schema import migrate

MAX_IDLE_READERS = 8


def _duration(result: ProbeResult) -> float:
    total = result.phases.get("total")
    if total is not None:
        return float(total)
    return float(sum(result.phases.values()))


class StoreCore:
    """The file, its connections and the writes; ``ResultStore`` adds the reads."""

    def __init__(self, path: str | Path, retention: float = 7 * 86400) -> None:
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file:"):
            # Every connection would open its own empty database.
            raise ValueError("the result store needs a file path, not an SQLite URI")
        self.retention = retention
        self._write_lock = threading.Lock()
        # Bumped by every write that changes what ``latest`` returns (in this process):
        # readers that cache what they render from it compare generations.
        self.generation = 0
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        try:
            migrate(self._writer, self.path)
        except BaseException:
            self._writer.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
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
                str(r.reason),
            )
            for host, r in items
        ]
        with self._write_lock, self._writer as conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO results (host, check_name, started_at, success, status, "
                    'duration, error, phases, "values", reason) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    # -- the plain reads -------------------------------------------------------------
    def latest(self, host: str | None = None) -> list[StoredResult]:
        """The latest result of every (host, check), or of one host; sorted by host, check."""
        sql = (
            f"SELECT {RESULT_COLUMNS}, l.last_success_at FROM latest l "
            "JOIN results r ON r.id = l.result_id"
        )
        args: tuple[Any, ...] = ()
        if host is not None:
            sql += " WHERE l.host = ?"
            args = (host,)
        sql += " ORDER BY l.host, l.check_name"
        with self._read() as conn:
            return [decode(row, row[10]) for row in conn.execute(sql, args)]

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
            f"SELECT {RESULT_COLUMNS} FROM results r WHERE {' AND '.join(clauses)} "
            "ORDER BY r.started_at DESC, r.id DESC LIMIT ?"
        )
        args.append(limit)
        with self._read() as conn:
            rows = list(conn.execute(sql, args))
        return [decode(row) for row in reversed(rows)]

    def last_sweep(self) -> Sweep | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT started_at, duration, probes, failures, overrun FROM sweeps "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return Sweep(row[0], row[1], row[2], row[3], bool(row[4]))

    def integrity_ok(self) -> bool:
        """SQLite's own quick check of the file (after a crash, a restore)."""
        with self._read() as conn:
            row = conn.execute("PRAGMA quick_check").fetchone()
        return bool(row and row[0] == "ok")
