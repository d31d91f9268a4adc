"""The fleet view, rebuilt only where a result changed (so 500 hosts stay cheap).

Each request reads the store's ``latest`` table without decoding anything
(host, check, result id, last success: a few ms for thousands of rows), decodes
only results it has not seen yet, and rebuilds only the rows whose results
changed (or whose minute turned: certificate days and "ago" texts move with
time). A row is kept as its dictionary, its JSON and its HTML, so ``/`` and
``/api/fleet`` mostly join strings that are already made. Results of mesh pairs
(``sync_mesh:<source>``, up to n*(n-1) of them) are left out: no row shows them.

Reads go through this module's own read-only SQLite connection (see
``history._connection``); an in-memory store (tests) falls back to
``store.latest()``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from mailfleet.checks.result import Status
from mailfleet.dashboard.scheduler import is_mesh_check
from mailfleet.dashboard.store import ResultStore, StoredResult
from mailfleet.dashboard.targets import WatchedHost
from mailfleet.dashboard.web import model
from mailfleet.dashboard.web.history import _connection

_LATEST_SQL = "SELECT host, check_name, result_id, last_success_at FROM latest"
_RESULTS_SQL = (
    'SELECT id, host, check_name, started_at, success, status, duration, error, phases, "values" '
    "FROM results WHERE id IN ({})"
)
_NEWER_SQL = (
    'SELECT id, host, check_name, started_at, success, status, duration, error, phases, "values" '
    "FROM results WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"
)
_CHUNK = 500
# Beyond this many new results since the last request, re-reading ``latest`` is cheaper.
_INCREMENTAL_MAX = 2000


class Entry:
    """One host's row: as a dict, as JSON (made at once) and as HTML (made when a page asks)."""

    __slots__ = ("_html", "_render", "json", "key", "row")

    def __init__(self, key: tuple[Any, ...], row: model.Row,
                 render: Callable[[model.Row], str]) -> None:
        self.key = key
        self.row = row
        self.json = json.dumps(row, separators=(",", ":"))
        self._render = render
        self._html: Markup | None = None

    @property
    def html(self) -> Markup:
        if self._html is None:
            self._html = Markup(self._render(self.row))
        return self._html


def _decode(row: Sequence[Any], last_success: float | None) -> StoredResult:
    return StoredResult(
        host=row[1], check=row[2], started_at=row[3], success=bool(row[4]),
        status=Status(row[5]), duration=row[6], error=row[7],
        phases=json.loads(row[8]), values=json.loads(row[9]), last_success_at=last_success,
    )


@dataclass(frozen=True)
class Snapshot:
    """The latest results as of one store version (``max(results.id)``)."""

    version: int | None
    by_host: dict[str, dict[str, StoredResult]]
    fingerprints: dict[str, tuple[int, ...]]  # host -> (newest result id, checks): changes
    # whenever any of its checks gets a new result (ids only grow)


class FleetCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(None, {}, {})
        self._results: dict[tuple[str, str], tuple[int, StoredResult]] = {}
        self._entries: dict[str, Entry] = {}
        self._memo: tuple[tuple[Any, ...], list[Entry]] | None = None

    def latest(self, store: ResultStore) -> Snapshot:
        """host -> check -> latest result, decoding only what changed since the last call."""
        conn = _connection(store)
        if conn is None:
            by_host: dict[str, dict[str, StoredResult]] = {}
            for r in store.latest():
                if is_mesh_check(r.check):
                    continue
                by_host.setdefault(r.host, {})[r.check] = r
            prints = {h: tuple(sorted(int(r.started_at * 1e6) for r in c.values()))
                      for h, c in by_host.items()}  # no ids here: every start time
            return Snapshot(None, by_host, prints)
        # Every change of ``latest`` comes with a new result row (forget_hosts only
        # drops hosts that left the inventory): an unchanged max id means no change.
        version = conn.execute("SELECT max(id) FROM results").fetchone()[0]
        with self._lock:
            base = self._snapshot
            known = self._results
        if version is not None and version == base.version:
            return base
        if base.version is not None and version is not None:
            new_rows = list(conn.execute(_NEWER_SQL, (base.version, version, _INCREMENTAL_MAX)))
            if len(new_rows) < _INCREMENTAL_MAX:
                snapshot, current = self._apply(base, known, new_rows, version)
                with self._lock:
                    self._results = current
                    self._snapshot = snapshot
                return snapshot
        snapshot, current = self._rebuild(conn, known, version)
        with self._lock:
            self._results = current
            self._snapshot = snapshot
        return snapshot

    @staticmethod
    def _apply(
        base: Snapshot,
        known: dict[tuple[str, str], tuple[int, StoredResult]],
        rows: list[tuple[Any, ...]],
        version: int,
    ) -> tuple[Snapshot, dict[tuple[str, str], tuple[int, StoredResult]]]:
        """The store's own rule, applied to the results written since ``base``: each new
        result becomes its (host, check)'s latest; last success carries over on failure."""
        current = dict(known)
        by_host = dict(base.by_host)
        prints = dict(base.fingerprints)
        copied: set[str] = set()
        for row in rows:
            rid, host, check, started, success = row[0], row[1], row[2], row[3], bool(row[4])
            if is_mesh_check(check):
                continue  # rows never show mesh pairs (the host page reads them itself)
            prev = current.get((host, check))
            last = started if success else (prev[1].last_success_at if prev else None)
            result = _decode(row, last)
            current[(host, check)] = (rid, result)
            if host not in copied:
                by_host[host] = dict(by_host.get(host, {}))
                copied.add(host)
            by_host[host][check] = result
            prints[host] = (rid, len(by_host[host]))
        return Snapshot(version, by_host, prints), current

    @staticmethod
    def _rebuild(
        conn: Any,
        known: dict[tuple[str, str], tuple[int, StoredResult]],
        version: int | None,
    ) -> tuple[Snapshot, dict[tuple[str, str], tuple[int, StoredResult]]]:
        """From the ``latest`` table, decoding only results not already known."""
        # Mesh pairs are not part of a row: a fleet of n mesh hosts has up to n*(n-1).
        index = [r for r in conn.execute(_LATEST_SQL) if not is_mesh_check(r[1])]
        wanted = {rid: last for host, check, rid, last in index
                  if (known.get((host, check)) or (None,))[0] != rid}
        fresh: dict[int, StoredResult] = {}
        ids = list(wanted)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            sql = _RESULTS_SQL.format(",".join("?" * len(chunk)))
            for row in conn.execute(sql, chunk):
                fresh[row[0]] = _decode(row, wanted[row[0]])
        current: dict[tuple[str, str], tuple[int, StoredResult]] = {}
        by_host: dict[str, dict[str, StoredResult]] = {}
        newest: dict[str, int] = {}
        for host, check, rid, _last in index:
            cached = known.get((host, check))
            if rid in fresh:
                result = fresh[rid]
            elif cached is not None and cached[0] == rid:
                result = cached[1]
            else:
                continue  # written between the two queries: the next request sees it
            current[(host, check)] = (rid, result)
            by_host.setdefault(host, {})[check] = result
            newest[host] = max(newest.get(host, 0), rid)
        # ``version`` was read before the index: anything written in between has a
        # larger id, so the next request applies it (again, harmlessly).
        prints: dict[str, tuple[int, ...]] = {h: (newest[h], len(c)) for h, c in by_host.items()}
        return Snapshot(version, by_host, prints), current

    def entries(
        self,
        hosts: Sequence[WatchedHost],
        snapshot: Snapshot,
        now: float,
        render: Callable[[model.Row], str],
    ) -> list[Entry]:
        minute = int(now // 60)  # certificate days and "ago" texts move with time
        memo_key = (snapshot.version, minute, id(hosts), len(hosts))
        with self._lock:
            if snapshot.version is not None and self._memo and self._memo[0] == memo_key:
                return self._memo[1]
            old = self._entries
        out: list[Entry] = []
        for host in hosts:
            key = (id(host), minute, snapshot.fingerprints.get(host.name, ()))
            entry = old.get(host.name)
            if entry is None or entry.key != key:
                checks = snapshot.by_host.get(host.name, {})
                row = model.fleet_row(host, model.host_summary(host, checks.values()), now)
                entry = Entry(key, row, render)
            out.append(entry)
        with self._lock:
            self._entries = {e.row["name"]: e for e in out}
            self._memo = (memo_key, out)
        return out
