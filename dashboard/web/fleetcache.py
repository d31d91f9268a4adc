"""The fleet view, rebuilt only where a result changed (so 500 hosts stay cheap).

Each request reads the store's ``latest`` table without decoding anything
(host, check, result id, last success: a few ms for thousands of rows), decodes
only results it has not seen yet, and rebuilds only the rows whose results
changed (or whose minute turned: certificate days and "ago" texts move with
time). A row is kept as its dictionary, its JSON and its HTML, so ``/`` and
``/api/fleet`` mostly join strings that are already made. Results of mesh pairs
(``sync_mesh:<source>``, up to n*(n-1) of them) are left out: no row shows them.

Reads go through the store's incremental reads (``result_version``,
``results_after``, ``latest_index``, ``results_by_id``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from mailfleet.dashboard.scheduler import is_mesh_check
from mailfleet.dashboard.store import ResultStore, StoredResult
from mailfleet.dashboard.targets import WatchedHost
from mailfleet.dashboard.web import model

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
        self._state: tuple[int, Snapshot] | None = None

    def latest(self, store: ResultStore) -> Snapshot:
        """host -> check -> latest result, decoding only what changed since the last call."""
        # Every change of ``latest`` comes with a new result row (forget_hosts only
        # drops hosts that left the inventory): an unchanged max id means no change.
        version = store.result_version()
        with self._lock:
            base = self._snapshot
            known = self._results
        if version is not None and version == base.version:
            return base
        if base.version is not None and version is not None:
            new = store.results_after(base.version, version, _INCREMENTAL_MAX)
            if len(new) < _INCREMENTAL_MAX:
                snapshot, current = self._apply(base, known, new, version)
                with self._lock:
                    self._results = current
                    self._snapshot = snapshot
                return snapshot
        snapshot, current = self._rebuild(store, known, version)
        with self._lock:
            self._results = current
            self._snapshot = snapshot
        return snapshot

    @staticmethod
    def _apply(
        base: Snapshot,
        known: dict[tuple[str, str], tuple[int, StoredResult]],
        new: list[tuple[int, StoredResult]],
        version: int,
    ) -> tuple[Snapshot, dict[tuple[str, str], tuple[int, StoredResult]]]:
        """The store's own rule, applied to the results written since ``base``: each new
        result becomes its (host, check)'s latest; last success carries over on failure."""
        current = dict(known)
        by_host = dict(base.by_host)
        prints = dict(base.fingerprints)
        copied: set[str] = set()
        for rid, fresh in new:
            host, check = fresh.host, fresh.check
            if is_mesh_check(check):
                continue  # rows never show mesh pairs (the host page reads them itself)
            prev = current.get((host, check))
            last = fresh.started_at if fresh.success else (
                prev[1].last_success_at if prev else None)
            result = dataclasses.replace(fresh, last_success_at=last)
            current[(host, check)] = (rid, result)
            if host not in copied:
                by_host[host] = dict(by_host.get(host, {}))
                copied.add(host)
            by_host[host][check] = result
            prints[host] = (rid, len(by_host[host]))
        return Snapshot(version, by_host, prints), current

    @staticmethod
    def _rebuild(
        store: ResultStore,
        known: dict[tuple[str, str], tuple[int, StoredResult]],
        version: int | None,
    ) -> tuple[Snapshot, dict[tuple[str, str], tuple[int, StoredResult]]]:
        """From the ``latest`` table, decoding only results not already known."""
        # Mesh pairs are not part of a row: a fleet of n mesh hosts has up to n*(n-1).
        index = [e for e in store.latest_index() if not is_mesh_check(e.check)]
        wanted = {e.result_id: e.last_success_at for e in index
                  if (known.get((e.host, e.check)) or (None,))[0] != e.result_id}
        fresh = store.results_by_id(wanted)
        current: dict[tuple[str, str], tuple[int, StoredResult]] = {}
        by_host: dict[str, dict[str, StoredResult]] = {}
        newest: dict[str, int] = {}
        for e in index:
            cached = known.get((e.host, e.check))
            if e.result_id in fresh:
                result = fresh[e.result_id]
            elif cached is not None and cached[0] == e.result_id:
                result = cached[1]
            else:
                continue  # written between the two queries: the next request sees it
            current[(e.host, e.check)] = (e.result_id, result)
            by_host.setdefault(e.host, {})[e.check] = result
            newest[e.host] = max(newest.get(e.host, 0), e.result_id)
        # ``version`` was read before the index: anything written in between has a
        # larger id, so the next request applies it (again, harmlessly).
        prints: dict[str, tuple[int, ...]] = {h: (newest[h], len(c)) for h, c in by_host.items()}
        return Snapshot(version, by_host, prints), current

    def state_snapshot(self, version: int,
                       by_host: dict[str, dict[str, StoredResult]]) -> Snapshot:
        """A snapshot of results read elsewhere (Prometheus), made once per ``version``."""
        with self._lock:
            made = self._state
        if made is not None and made[0] == version:
            return made[1]
        prints: dict[str, tuple[int, ...]] = {
            host: (hash(tuple(sorted((c, r.started_at, r.success, int(r.status))
                                     for c, r in checks.items()))), len(checks))
            for host, checks in by_host.items()
        }
        # Negative versions: never equal to a store's (ids from 1), so memos never mix.
        snapshot = Snapshot(-version - 1, by_host, prints)
        with self._lock:
            self._state = (version, snapshot)
        return snapshot

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
                row = model.fleet_row(host, model.host_summary(host.name, checks.values()), now)
                entry = Entry(key, row, render)
            out.append(entry)
        with self._lock:
            self._entries = {e.row["name"]: e for e in out}
            self._memo = (memo_key, out)
        return out
