"""Chart series and the sync mesh, read straight from the result store's SQLite file.

The store's own ``history()`` decodes every stored result's values (a TLS result
carries its whole certificate chain); a week of one-minute sweeps is ~10,000
results per check. Charts need a few numbers per point, so this module asks
SQLite for exactly those (``json_extract``) and for at most ``MAX_POINTS``
points per series: the newest result of each time bucket. It opens its own
read-only connection per thread (WAL lets it read while the scheduler writes)
and never writes. An in-memory store (tests) falls back to ``store.history()``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mailfleet.checks.result import Status
from mailfleet.dashboard.scheduler import is_mesh_check
from mailfleet.dashboard.store import ResultStore

MAX_POINTS = 720
MESH_SCAN_LIMIT = 5_000  # newest sync results looked at for one host's mesh row/column

# (started_at, status, phases JSON, chain expiry, leaf expiry, delivery, push, client, kind)
Point = tuple[float, int, str, Any, Any, Any, Any, Any, Any]

_SERIES_SQL = """
SELECT started_at, status, phases,
       json_extract("values", '$.chain_earliest_not_after'),
       json_extract("values", '$.cert_not_after'),
       json_extract("values", '$.delivery_latency_seconds'),
       json_extract("values", '$.push_latency_seconds'),
       json_extract("values", '$.client_latency_seconds'),
       json_extract("values", '$.kind')
FROM results WHERE id IN (
    SELECT max(id) FROM results
    WHERE host = ? AND check_name = ? AND started_at >= ?
      AND (check_name != 'sync' OR coalesce(json_extract("values", '$.kind'), '') != 'mesh')
    GROUP BY CAST(started_at / ? AS INTEGER)
) ORDER BY started_at
"""

_MESH_SQL = """
SELECT src, dst, status, latency, error, max(started_at) FROM (
    SELECT json_extract("values", '$.source') AS src,
           json_extract("values", '$.destination') AS dst,
           status, error, started_at,
           json_extract("values", '$.delivery_latency_seconds') AS latency
    FROM (SELECT "values", status, error, started_at FROM results
          WHERE check_name >= 'sync_mesh:' AND check_name < 'sync_mesh;'
                AND started_at >= ?
          ORDER BY started_at DESC LIMIT ?)
    WHERE json_extract("values", '$.kind') = 'mesh'
)
WHERE src = ? OR dst = ?
GROUP BY src, dst
"""

_local = threading.local()


def _connection(store: ResultStore) -> sqlite3.Connection | None:
    if store.path == ":memory:":
        return None
    conns: dict[str, sqlite3.Connection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    conn = conns.get(store.path)
    if conn is None:
        uri = Path(store.path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conns[store.path] = conn
    return conn


def _points(store: ResultStore, host: str, check: str, since: float, bucket: float) -> list[Point]:
    conn = _connection(store)
    if conn is not None:
        return list(conn.execute(_SERIES_SQL, (host, check, since, bucket)))
    # In-memory store: decode everything and bucket here (small by construction).
    chosen: dict[int, Point] = {}
    for r in store.history(host, check, since=since, limit=100_000):
        v = r.values
        if check == "sync" and v.get("kind") == "mesh":
            continue
        chosen[int(r.started_at // bucket)] = (
            r.started_at, int(r.status), json.dumps(dict(r.phases)),
            v.get("chain_earliest_not_after"), v.get("cert_not_after"),
            v.get("delivery_latency_seconds"), v.get("push_latency_seconds"),
            v.get("client_latency_seconds"), v.get("kind"),
        )
    return [chosen[k] for k in sorted(chosen)]


def _oldest(store: ResultStore, host: str, checks: Sequence[str]) -> float | None:
    conn = _connection(store)
    found: list[float] = []
    for check in checks:
        if conn is not None:
            row = conn.execute(
                "SELECT min(started_at) FROM results WHERE host = ? AND check_name = ?",
                (host, check),
            ).fetchone()
            value = row[0] if row else None
        else:
            first = store.history(host, check, limit=100_000)
            value = first[0].started_at if first else None
        if value is not None:
            found.append(float(value))
    return min(found) if found else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def phase_series(points: Sequence[Point]) -> dict[str, Any]:
    """Columnar (uPlot) series: ``t`` and one list per phase, None where a run lacked it."""
    decoded = [json.loads(p[2]) if p[2] else {} for p in points]
    names: list[str] = []
    for phases in decoded:
        for name in phases:
            if name not in names:
                names.append(name)
    # "total" last, so the per-phase lines come first in the legend.
    names.sort(key=lambda n: n == "total")
    return {
        "t": [p[0] for p in points],
        "status": [p[1] for p in points],
        # A list, not a dict: JSON objects lose their order and the legend should not.
        "series": [[n, [_number(ph.get(n)) for ph in decoded]] for n in names],
    }


def host_history(
    store: ResultStore,
    host: str,
    checks: Iterable[str],
    since: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Every chart of the host page over [since, now] (default: the store's retention)."""
    now = time.time() if now is None else now
    checks = list(checks)
    oldest = _oldest(store, host, checks)
    floor = now - store.retention
    if since is None:
        # Charts span what is kept, not the whole retention of a fresh store.
        since = max(floor, oldest if oldest is not None else now - 3600)
    since = min(max(since, floor), now - 60)
    bucket = max(1.0, (now - since) / MAX_POINTS)
    phases: dict[str, Any] = {}
    sync: dict[str, list[Any]] = {"t": [], "delivery": [], "push": [], "client": []}
    cert: dict[str, list[Any]] = {"t": [], "days": []}
    for check in checks:
        points = _points(store, host, check, since, bucket)
        if check != "dns":  # a DNS run's single phase says little next to the others
            phases[check] = phase_series(points)
        if check == "tls":
            for p in points:
                expiry = _number(p[3]) or _number(p[4])
                if expiry is not None:
                    cert["t"].append(p[0])
                    cert["days"].append(round((expiry - p[0]) / 86400, 3))
        if check == "sync":
            for p in points:
                sync["t"].append(p[0])
                sync["delivery"].append(_number(p[5]))
                sync["push"].append(_number(p[6]))
                sync["client"].append(_number(p[7]))
    return {
        "since": since,
        "until": now,
        "bucket_seconds": bucket,
        "phases": phases,
        "sync": sync,
        "cert_days": cert,
    }


def mesh(
    store: ResultStore, host: str, hosts: Sequence[str], interval: float, now: float | None = None
) -> dict[str, Any]:
    """The host's row (its submission -> each mailbox) and column (each -> its mailbox)."""
    now = time.time() if now is None else now
    # Every ordered pair comes up once per N-1 rounds; look back two such cycles.
    window = min(store.retention, max(600.0, 2 * max(len(hosts), 2) * interval))
    outgoing: dict[str, dict[str, Any]] = {}
    incoming: dict[str, dict[str, Any]] = {}
    rows: list[tuple[Any, ...]]
    conn = _connection(store)
    if conn is not None:
        rows = list(conn.execute(_MESH_SQL, (now - window, MESH_SCAN_LIMIT, host, host)))
    else:
        rows = [
            (r.values.get("source"), r.values.get("destination"), int(r.status),
             r.values.get("delivery_latency_seconds"), r.error, r.started_at)
            for r in store.latest()
            if is_mesh_check(r.check)
            and host in (r.values.get("source"), r.values.get("destination"))
        ]
    for src, dst, status, latency, error, at in rows:
        entry = {
            "status": Status(int(status)).label,
            "latency": _number(latency),
            "error": error or "",
            "at": at,
        }
        if src == host and dst != host:
            outgoing[str(dst)] = entry
        if dst == host and src != host:
            incoming[str(src)] = entry
    return {
        "hosts": [h for h in hosts if h != host],
        "outgoing": outgoing,
        "incoming": incoming,
        "window_seconds": window,
    }
