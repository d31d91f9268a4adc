"""The data behind each page, shared by the HTML blueprint and the JSON API."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import current_app, url_for

from mailfleet.dashboard.monitor import Monitor
from mailfleet.dashboard.scheduler import is_mesh_check
from mailfleet.dashboard.targets import WatchedHost
from mailfleet.dashboard.web import history, hostview, model, rowhtml
from mailfleet.dashboard.web.fleetcache import Entry, FleetCache


def refresh_seconds(interval: float) -> float:
    """How often the pages re-fetch: twice per sweep interval, between 2 s and 15 s."""
    return max(2.0, min(15.0, interval / 2))


def _sweep(mon: Monitor) -> dict[str, Any] | None:
    sweep = mon.store.last_sweep()
    if sweep is None:
        return None
    return {
        "started_at": sweep.started_at,
        "duration": sweep.duration,
        "probes": sweep.probes,
        "failures": sweep.failures,
        "overrun": sweep.overrun,
    }


def fleet_entries(mon: Monitor, now: float | None = None) -> tuple[dict[str, Any], list[Entry]]:
    """The fleet page's data without its rows, and the rows (dict, JSON and HTML each)."""
    now = time.time() if now is None else now
    cache: FleetCache = current_app.extensions["mailfleet_fleet_cache"]
    prefix = url_for("hosts.host", name="-")[:-1]

    def render(row: model.Row) -> str:
        return rowhtml.fleet_row(row, prefix)

    if mon.prometheus is not None:  # sharded: the whole fleet, as Prometheus holds it
        hosts = mon.inventory.hosts()
        state = mon.prometheus.latest()
        snapshot = cache.state_snapshot(mon.prometheus.version, state)
    else:  # this watcher's own results (its shard's hosts when sharded)
        hosts = mon.own_hosts()
        snapshot = cache.latest(mon.store)
    entries = cache.entries(hosts, snapshot, now, render)
    meta = {
        "generated_at": now,
        "interval": mon.interval,
        "refresh_seconds": refresh_seconds(mon.interval),
        "counts": model.counts(e.row for e in entries),
        "groups": model.groups_of(hosts),
        "columns": [{"key": c.key, "title": c.title, "numeric": c.numeric}
                    for c in model.COLUMNS],
        "last_sweep": _sweep(mon),
        "inventory_error": mon.inventory.last_error or None,
        "shard": str(mon.shard) if mon.shard.count > 1 else None,
        "prometheus": mon.prometheus.base_url if mon.prometheus else None,
        "prometheus_error": (mon.prometheus.last_error or None) if mon.prometheus else None,
    }
    return meta, entries


def fleet_json(mon: Monitor) -> str:
    """``/api/fleet``: the rows' JSON is made once per change and only joined here."""
    meta, entries = fleet_entries(mon)
    head = json.dumps(meta, separators=(",", ":"))
    return head[:-1] + ',"hosts":[' + ",".join(e.json for e in entries) + "]}"


MESH_COLUMNS = 40  # beyond this many hosts, the mesh table lists only hosts with data


def _mesh(mon: Monitor, name: str, names: list[str], now: float) -> dict[str, Any]:
    mesh = history.mesh(mon.store, name, names, mon.interval, now)
    if len(mesh["hosts"]) > MESH_COLUMNS:
        measured = set(mesh["outgoing"]) | set(mesh["incoming"])
        mesh["hosts"] = [h for h in mesh["hosts"] if h in measured]
    return mesh


def host(
    mon: Monitor,
    watched: WatchedHost,
    with_history: bool = True,
    since: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    latest = mon.store.latest(watched.name)
    if mon.prometheus is not None and not mon.shard.owns(watched.name):
        # Another watcher probes this host: its latest state as Prometheus holds it
        # (its history and error texts are on that watcher's own page).
        latest = list(mon.prometheus.latest().get(watched.name, {}).values())
    summary = model.host_summary(watched.name, latest)
    row = model.fleet_row(watched, summary, now)
    checks = {r.check: r for r in latest if not is_mesh_check(r.check)}
    names = [h.name for h in mon.inventory.hosts()]
    order = [c for c in watched.checks if not is_mesh_check(c)]
    order += sorted(set(checks) - set(order))
    data: dict[str, Any] = {
        "generated_at": now,
        "interval": mon.interval,
        "refresh_seconds": refresh_seconds(mon.interval),
        "host": hostview.public_host(watched),
        "status": row["status"],
        "reason": row["reason"],
        "last_ok_at": row["last_ok_at"],
        "last_probe_at": row["last_probe_at"],
        "cells": row["cells"],
        "checks": [
            hostview.result_view(checks[c]) if c in checks else hostview.pending_view(c)
            for c in order
        ],
        "certificate": hostview.certificate(checks.get("tls"), now),
        "dns": hostview.dns_findings(checks.get("dns")),
        "server": hostview.server_view(checks.get("server")),
        "mesh": _mesh(mon, watched.name, names, now),
    }
    if with_history:
        data["history"] = history.host_history(
            mon.store, watched.name, order, since=since, now=now
        )
    return data
