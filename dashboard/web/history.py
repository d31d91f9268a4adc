"""Chart series and the sync mesh of one host page, from the result store's reads.

Charts need a few numbers per point: the store's ``series`` returns at most
``MAX_POINTS`` per check (the newest result of each time bucket) with only the
declared values asked for, and ``mesh_pairs`` the newest result of each pair.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from mailfleet.dashboard.store import ResultStore, SeriesPoint
from mailfleet.dashboard.store.values import SyncValues, TlsValues

MAX_POINTS = 720
MESH_SCAN_LIMIT = 5_000  # newest mesh results looked at for one host's mesh row/column


def _keys(check: str) -> tuple[str, ...]:
    if check == "tls":
        return (TlsValues.key.chain_earliest_not_after, TlsValues.key.cert_not_after)
    if check == "sync":
        k = SyncValues.key
        return (k.delivery_latency_seconds, k.push_latency_seconds, k.client_latency_seconds)
    return ()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def phase_series(points: Sequence[SeriesPoint]) -> dict[str, Any]:
    """Columnar (uPlot) series: ``t`` and one list per phase, None where a run lacked it."""
    names: list[str] = []
    for p in points:
        for name in p.phases:
            if name not in names:
                names.append(name)
    # "total" last, so the per-phase lines come first in the legend.
    names.sort(key=lambda n: n == "total")
    return {
        "t": [p.started_at for p in points],
        "status": [int(p.status) for p in points],
        # A list, not a dict: JSON objects lose their order and the legend should not.
        "series": [[n, [_number(p.phases.get(n)) for p in points]] for n in names],
    }


def _cert_days(points: Sequence[SeriesPoint]) -> dict[str, list[Any]]:
    cert: dict[str, list[Any]] = {"t": [], "days": []}
    for p in points:
        tls = TlsValues.of(p.values)
        expiry = _number(tls.chain_earliest_not_after) or _number(tls.cert_not_after)
        if expiry is not None:
            cert["t"].append(p.started_at)
            cert["days"].append(round((expiry - p.started_at) / 86400, 3))
    return cert


def _sync(points: Sequence[SeriesPoint]) -> dict[str, list[Any]]:
    sync: dict[str, list[Any]] = {"t": [], "delivery": [], "push": [], "client": []}
    for p in points:
        v = SyncValues.of(p.values)
        sync["t"].append(p.started_at)
        sync["delivery"].append(_number(v.delivery_latency_seconds))
        sync["push"].append(_number(v.push_latency_seconds))
        sync["client"].append(_number(v.client_latency_seconds))
    return sync


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
    oldest = store.oldest(host, checks)
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
        points = store.series(host, check, since, bucket, _keys(check))
        if check != "dns":  # a DNS run's single phase says little next to the others
            phases[check] = phase_series(points)
        if check == "tls":
            cert = _cert_days(points)
        if check == "sync":
            sync = _sync(points)
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
    for pair in store.mesh_pairs(host, now - window, MESH_SCAN_LIMIT):
        entry = {
            "status": pair.status.label,
            "latency": pair.delivery_latency_seconds,
            "error": pair.error,
            "reason": str(pair.reason),
            "at": pair.started_at,
        }
        if pair.source == host and pair.destination != host:
            outgoing[pair.destination] = entry
        if pair.destination == host and pair.source != host:
            incoming[pair.source] = entry
    return {
        "hosts": [h for h in hosts if h != host],
        "outgoing": outgoing,
        "incoming": incoming,
        "window_seconds": window,
    }
