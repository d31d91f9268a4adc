"""The reads the pages need without decoding whole results.

A week of one-minute sweeps is ~10,000 results per check, and a TLS result carries
its whole certificate chain: charts ask SQLite for the few declared values they
draw (``json_extract`` with a path made from a ``Values`` declaration's key) and
for at most one point per time bucket. The fleet view asks for ids first and
decodes only results it has not seen (``dashboard/web/fleetcache.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mailfleet.checks.result import Status
from mailfleet.dashboard.store.records import (
    LatestIndex,
    MeshPair,
    SeriesPoint,
    StoredResult,
    decode,
    reason_of,
)
from mailfleet.dashboard.store.results import StoreCore
from mailfleet.dashboard.store.values import SyncValues

MESH_CHECK_PREFIX = "sync_mesh:"  # a pair is stored as check sync_mesh:<source>
_CHUNK = 500  # ids per IN (...) query: SQLite's parameter limit is far above


def json_path(key: str) -> str:
    """The SQLite JSON path of a declared value key (``TlsValues.key.cert_not_after``)."""
    return f"$.{key}"


_SERIES_SQL = """
SELECT started_at, status, phases{extracts}
FROM results WHERE id IN (
    SELECT max(id) FROM results
    WHERE host = ? AND check_name = ? AND started_at >= ?
    GROUP BY CAST(started_at / ? AS INTEGER)
) ORDER BY started_at
"""

# The newest result of each ordered pair touching one host, among the newest
# ``scan`` mesh results of the window (every pair comes up once per n-1 rounds).
_MESH_SQL = """
SELECT src, dst, status, latency, error, reason, max(started_at) FROM (
    SELECT json_extract("values", ?) AS src,
           json_extract("values", ?) AS dst,
           json_extract("values", ?) AS latency,
           status, error, reason, started_at
    FROM (SELECT "values", status, error, reason, started_at FROM results
          WHERE check_name >= ? AND check_name < ? AND started_at >= ?
          ORDER BY started_at DESC LIMIT ?)
)
WHERE src = ? OR dst = ?
GROUP BY src, dst
"""

_ID_COLUMNS = (
    'r.id, r.host, r.check_name, r.started_at, r.success, r.status, r.duration, r.error, '
    'r.phases, r."values", r.reason'
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class ResultStore(StoreCore):
    """The result store: ``StoreCore``'s file and writes, and every read the pages need."""

    def series(
        self, host: str, check: str, since: float, bucket: float, keys: Sequence[str] = ()
    ) -> list[SeriesPoint]:
        """The newest result of each ``bucket`` seconds since ``since``, oldest first,
        with only the declared value ``keys`` asked for (``TlsValues.key.cert_not_after``)."""
        extracts = "".join(', json_extract("values", ?)' for _ in keys)
        sql = _SERIES_SQL.format(extracts=extracts)
        args = [json_path(k) for k in keys] + [host, check, since, bucket]
        with self._read() as conn:
            rows = list(conn.execute(sql, args))
        return [
            SeriesPoint(
                started_at=row[0],
                status=Status(row[1]),
                phases=json.loads(row[2]) if row[2] else {},
                values={k: v for k, v in zip(keys, row[3:], strict=True) if v is not None},
            )
            for row in rows
        ]

    def oldest(self, host: str, checks: Iterable[str]) -> float | None:
        """When the oldest kept result of any of the host's ``checks`` started."""
        names = list(checks)
        if not names:
            return None
        marks = ",".join("?" * len(names))
        with self._read() as conn:
            row = conn.execute(
                f"SELECT min(started_at) FROM results WHERE host = ? AND check_name IN ({marks})",
                (host, *names),
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def mesh_pairs(self, host: str, since: float, scan: int = 5_000) -> list[MeshPair]:
        """The newest result of every mesh pair from or to ``host`` since ``since``."""
        key = SyncValues.key
        args = (
            json_path(key.source), json_path(key.destination),
            json_path(key.delivery_latency_seconds),
            # Every mesh check name sorts between these two: ':' + 1 is ';'.
            MESH_CHECK_PREFIX, MESH_CHECK_PREFIX[:-1] + ";", since, scan, host, host,
        )
        with self._read() as conn:
            rows = list(conn.execute(_MESH_SQL, args))
        return [
            MeshPair(str(src), str(dst), Status(int(status)), _number(latency),
                     error or "", reason_of(reason or ""), at)
            for src, dst, status, latency, error, reason, at in rows
            if src is not None and dst is not None
        ]

    # -- the fleet view's incremental reads ------------------------------------------
    def result_version(self) -> int | None:
        """The newest result's id: unchanged means nothing was written since."""
        with self._read() as conn:
            row = conn.execute("SELECT max(id) FROM results").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def latest_index(self) -> list[LatestIndex]:
        """Every ``latest`` row, without decoding its result."""
        with self._read() as conn:
            rows = list(conn.execute(
                "SELECT host, check_name, result_id, last_success_at FROM latest"))
        return [LatestIndex(*row) for row in rows]

    def results_by_id(self, wanted: Mapping[int, float | None]) -> dict[int, StoredResult]:
        """The results of the ids in ``wanted`` (id -> its last success), decoded."""
        ids = list(wanted)
        found: dict[int, StoredResult] = {}
        with self._read() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                sql = (f"SELECT {_ID_COLUMNS} FROM results r "
                       f"WHERE r.id IN ({','.join('?' * len(chunk))})")
                for row in conn.execute(sql, chunk):
                    found[row[0]] = decode(row[1:], wanted[row[0]])
        return found

    def results_after(
        self, after: int, upto: int, limit: int
    ) -> list[tuple[int, StoredResult]]:
        """Results with ``after < id <= upto``, oldest first, at most ``limit``; without
        their last success (the caller carries it over)."""
        with self._read() as conn:
            rows = list(conn.execute(
                f"SELECT {_ID_COLUMNS} FROM results r WHERE r.id > ? AND r.id <= ? "
                "ORDER BY r.id LIMIT ?",
                (after, upto, limit),
            ))
        return [(row[0], decode(row[1:])) for row in rows]
