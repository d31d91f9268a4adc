"""What the pages and the JSON API show, computed once from the store's latest results.

A fleet *row* is one inventory host; its *cells* are the columns an on-call
admin scans (port 993, TLS, IMAP login, ...). Each cell has a status (colour and
word), a short text, a detail (the probe's own error text, shown on hover and on
the host page) and a sort key. The HTML pages and ``/api/fleet`` use the same
dictionaries, so the page and its auto-refresh can never disagree.

Nothing here reads a credential: rows are built from ``WatchedHost`` names,
groups and thresholds, and from stored results (which never hold secrets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import ProbeOptions
from mailfleet.dashboard.scheduler import failure_reason, is_mesh_check
from mailfleet.dashboard.store import FleetSummary, HostSummary, StoredResult, worst
from mailfleet.dashboard.targets import WatchedHost

STATUSES: tuple[str, ...] = ("critical", "warning", "unknown", "ok")
NOT_WATCHED = "none"  # a check this host does not run (the inventory did not ask for it)

# Sync latency thresholds, as checks.sync judges them.
SYNC_WARNING_SECONDS = 10.0
SYNC_CRITICAL_SECONDS = 30.0

Cell = dict[str, Any]
Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    check: str  # the check whose result fills it
    numeric: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("port", "Port 993", "port"),
    Column("tls", "TLS", "tls"),
    Column("imap_login", "IMAP login", "imap_login"),
    Column("smtp", "SMTP", "smtp"),
    Column("cert_days", "Cert days left", "tls", numeric=True),
    Column("delivery", "Delivery", "sync", numeric=True),
    Column("client_sync", "Client sync", "sync", numeric=True),
    Column("mx", "MX", "dns"),
    Column("rdns", "rDNS", "dns"),
    Column("quota", "Quota", "quota", numeric=True),
)


def utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cell(status: str, text: str, detail: str = "", sort: float | str | None = None) -> Cell:
    return {"status": status, "text": text, "detail": detail, "sort": sort}


def _short_failure(result: StoredResult) -> str:
    reason = failure_reason_of(result)
    return {"other": "failed", "crash": "failed", "deadline": "timeout"}.get(reason, reason)


def failure_reason_of(result: StoredResult) -> str:
    return failure_reason(
        ProbeResult(result.check, result.host, result.success, result.status,
                    values=result.values, error=result.error)
    )


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _result_cell(result: StoredResult, ok_text: str) -> Cell:
    if result.success and result.status == Status.OK:
        return cell("ok", ok_text, result.error, 0)
    text = ok_text if result.success else _short_failure(result)
    return cell(result.status.label, text, result.error, int(result.status))


def _port(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
    return _result_cell(r, "open")


def _tls(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
    v = r.values
    ok_text = str(v.get("tls_version") or "ok")
    if r.status != Status.OK and v.get("served_certs"):
        if v.get("hostname_match") is False:
            return cell(r.status.label, "name mismatch", r.error, int(r.status))
        if v.get("chain_verified") is False:
            return cell(r.status.label, "untrusted", r.error, int(r.status))
        return cell(r.status.label, ok_text, r.error, int(r.status))
    return _result_cell(r, ok_text)


def _imap_login(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
    mech = r.values.get("mechanism")
    return _result_cell(r, f"ok ({mech})" if mech else "ok")


def _smtp(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
    return _result_cell(r, "ok")


def cert_expiry(values: Mapping[str, Any]) -> float | None:
    """When the served chain stops being valid: the verified chain's earliest not-after."""
    for key in ("chain_earliest_not_after", "cert_not_after", "served_earliest_not_after"):
        value = values.get(key)
        if isinstance(value, int | float):
            return float(value)
    return None


def _cert_days(r: StoredResult, o: ProbeOptions, now: float) -> Cell:
    expiry = cert_expiry(r.values)
    if expiry is None:
        return cell("unknown", "no cert", r.error, None)
    days = (expiry - now) / 86400
    if days < o.tls_critical_days:
        status = "critical"
    elif days < o.tls_warning_days:
        status = "warning"
    else:
        status = "ok"
    text = "expired" if days < 0 else f"{days:.0f} d" if days >= 2 else f"{days * 24:.0f} h"
    return cell(status, text, f"not after {utc(expiry)}", round(days, 3))


def _latency_status(seconds: float) -> str:
    if seconds >= SYNC_CRITICAL_SECONDS:
        return "critical"
    if seconds >= SYNC_WARNING_SECONDS:
        return "warning"
    return "ok"


def _latency(key: str) -> Callable[[StoredResult, ProbeOptions, float], Cell]:
    def fill(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
        value = r.values.get(key)
        if isinstance(value, int | float):
            detail = r.error
            if r.values.get("kind") == "mesh":
                detail = f"mesh: from {r.values.get('source')} {detail}".strip()
            return cell(_latency_status(float(value)), _seconds(float(value)), detail,
                        round(float(value), 4))
        if not r.success:
            return cell(r.status.label, _short_failure(r), r.error, None)
        return cell("unknown", "no data", r.error, None)

    return fill


def _dns_flag(key: str, what: str) -> Callable[[StoredResult, ProbeOptions, float], Cell]:
    def fill(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
        value = r.values.get(key)
        mine = [f for f in r.values.get("findings") or [] if _finding_is(f, key)]
        problems = "; ".join(f.get("message", "") for f in mine if f.get("status") != "ok")
        if value is True:
            warn = any(f.get("status") == "warning" for f in mine)
            return cell("warning" if warn else "ok", "ok", problems, 1 if warn else 0)
        if value is False:
            return cell("critical", "wrong", problems or f"{what} does not match", 2)
        if not r.success:
            return cell(r.status.label, _short_failure(r), r.error, None)
        return cell("unknown", "n/a", f"no {what} finding", None)

    return fill


def _finding_is(finding: Mapping[str, Any], key: str) -> bool:
    check = finding.get("check")
    if key == "rdns_ok":
        return check in ("ptr", "fcrdns")
    return bool(check == key.removesuffix("_ok"))


def _quota(r: StoredResult, _o: ProbeOptions, _now: float) -> Cell:
    percent = r.values.get("used_percent")
    if isinstance(percent, int | float):
        return cell(r.status.label, f"{percent:.0f} %", r.error, round(float(percent), 2))
    if r.success:
        return cell(r.status.label, "no limit", r.error, -1)
    return cell(r.status.label, _short_failure(r), r.error, None)


FILLERS: Mapping[str, Callable[[StoredResult, ProbeOptions, float], Cell]] = {
    "port": _port,
    "tls": _tls,
    "imap_login": _imap_login,
    "smtp": _smtp,
    "cert_days": _cert_days,
    "delivery": _latency("delivery_latency_seconds"),
    "client_sync": _latency("client_latency_seconds"),
    "mx": _dns_flag("mx_ok", "MX"),
    "rdns": _dns_flag("rdns_ok", "reverse DNS"),
    "quota": _quota,
}


def host_cells(
    host: WatchedHost, checks: Mapping[str, StoredResult], now: float
) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    for column in COLUMNS:
        result = checks.get(column.check)
        if result is None:
            if column.check in host.checks:
                cells[column.key] = cell("unknown", "pending", "no result yet", None)
            else:
                cells[column.key] = cell(NOT_WATCHED, "n/a", "not in this host's checks", None)
            continue
        cells[column.key] = FILLERS[column.key](result, host.options, now)
    return cells


CHECK_ORDER: tuple[str, ...] = ("port", "tls", "imap_login", "smtp", "quota", "sync", "dns")


def _check_rank(check: str) -> tuple[int, str]:
    return (CHECK_ORDER.index(check) if check in CHECK_ORDER else len(CHECK_ORDER), check)


def reason(summary: HostSummary) -> tuple[str, float | None]:
    """Why the host has its status (the failing checks' errors) and since when it was last ok.

    Checks failing with the same words are named together ("port, tls: connection
    refused"), most basic check first: the first words are the likely cause.
    """
    if summary.status == Status.OK:
        return "", None
    if not summary.checks:
        return "no probe result yet", None
    bad = sorted((r for r in summary.checks.values() if r.status == summary.status),
                 key=lambda r: _check_rank(r.check))
    by_error: dict[str, list[str]] = {}
    for r in bad:
        by_error.setdefault(r.error or r.status.label, []).append(r.check)
    words = [f"{', '.join(checks)}: {error}" for error, checks in by_error.items()]
    successes = [r.last_success_at for r in bad if r.last_success_at is not None]
    return "; ".join(words), (max(successes) if successes else None)


def fleet_row(host: WatchedHost, summary: HostSummary, now: float) -> Row:
    why, last_ok = reason(summary)
    return {
        "name": host.name,
        "groups": list(host.groups),
        "status": summary.status.label,
        "reason": why,
        "last_ok_at": last_ok,
        "last_probe_at": summary.last_probe_at,
        "cells": host_cells(host, summary.checks, now),
    }


def fleet_rows(
    hosts: Sequence[WatchedHost], summary: FleetSummary, now: float | None = None
) -> list[Row]:
    now = time.time() if now is None else now
    by_name = {s.host: s for s in summary.hosts}
    rows = []
    for host in hosts:
        s = by_name.get(host.name) or HostSummary(host.name, Status.UNKNOWN, {}, None)
        rows.append(fleet_row(host, s, now))
    return rows


def counts(rows: Iterable[Row]) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for row in rows:
        out[row["status"]] += 1
    return out


def groups_of(hosts: Iterable[WatchedHost]) -> list[str]:
    return sorted({g for h in hosts for g in h.groups})


def host_summary(host: WatchedHost, latest: Iterable[StoredResult]) -> HostSummary:
    # Mesh pairs stored on this host (mail into it from another host) are shown in
    # the host page's mesh section, not judged as the host's own health.
    checks = {r.check: r for r in latest if not is_mesh_check(r.check)}
    status = worst(r.status for r in checks.values())
    last = max((r.started_at for r in checks.values()), default=None)
    return HostSummary(host.name, status, checks, last)


def public_host(host: WatchedHost) -> dict[str, Any]:
    """What the pages say about a host's configuration: no credential, not even masked."""
    t = host.target
    return {
        "name": host.name,
        "address": t.address,
        "mail_hostname": t.mail_hostname,
        "domains": list(t.domains),
        "groups": list(host.groups),
        "checks": list(t.checks),
        "ports": dict(t.ports),
        "probe_user": t.credentials.user if t.credentials else None,
    }


def result_view(r: StoredResult) -> dict[str, Any]:
    """One latest result for the host page (values minus bulky structures shown elsewhere)."""
    values = {k: v for k, v in r.values.items() if k not in ("served_certs", "findings")}
    return {
        "check": r.check,
        "status": r.status.label,
        "success": r.success,
        "error": r.error,
        "started_at": r.started_at,
        "duration": r.duration,
        "phases": dict(r.phases),
        "values": values,
        "last_success_at": r.last_success_at,
    }


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "nothing queued"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def server_view(server: StoredResult | None) -> dict[str, Any] | None:
    """The ``server`` check's inside view (checks/SERVER.md) for the host page."""
    if server is None:
        return None
    v = server.values
    queues = v.get("queue_messages") or {}
    filesystems = []
    for path, fs in sorted((v.get("filesystems") or {}).items()):
        if not isinstance(fs, Mapping):
            continue
        ratio = fs.get("free_ratio")
        filesystems.append({
            "path": path,
            "free_percent": round(100 * ratio, 1) if isinstance(ratio, int | float) else None,
            "free_bytes": fs.get("free_bytes"),
            "free_inodes_percent": (round(100 * fs["free_inodes_ratio"], 1)
                                    if isinstance(fs.get("free_inodes_ratio"), int | float)
                                    else None),
        })
    return {
        "status": server.status.label,
        "error": server.error,
        "ssh_error": v.get("ssh_error") or "",
        "queues": {q: queues[q] for q in sorted(queues)},
        "oldest": _age(v.get("queue_oldest_seconds")),
        "deferral_reasons": [
            {"reason": str(r.get("reason", "")), "count": r.get("count", 0)}
            for r in v.get("deferral_reasons") or [] if isinstance(r, Mapping)
        ],
        "sessions": v.get("dovecot_sessions"),
        "sessions_by_protocol": dict(v.get("dovecot_sessions_by_protocol") or {}),
        "services": dict(v.get("services") or {}),
        "filesystems": filesystems,
        "cert_file": v.get("cert_file") or "",
        "cert_file_not_after": v.get("cert_file_not_after"),
        "cert_reload_pending": dict(v.get("cert_reload_pending_by_service") or {}),
        "command_errors": dict(v.get("command_errors") or {}),
        "checked_at": server.started_at,
    }


def certificate(tls: StoredResult | None, now: float) -> dict[str, Any] | None:
    if tls is None:
        return None
    v = tls.values
    chain = list(v.get("served_certs") or [])
    if not chain:
        return {"present": False, "error": tls.error, "chain": []}
    leaf = chain[0]
    expiry = cert_expiry(v)
    return {
        "present": True,
        "subject": leaf.get("subject", ""),
        "issuer": leaf.get("issuer", ""),
        "sans": list(leaf.get("sans") or []),
        "not_before": leaf.get("not_before"),
        "not_after": leaf.get("not_after"),
        "days_left": round((expiry - now) / 86400, 2) if expiry is not None else None,
        "chain_verified": v.get("chain_verified"),
        "verify_error": v.get("verify_error") or "",
        "hostname": v.get("hostname", ""),
        "hostname_match": v.get("hostname_match"),
        "tls_version": v.get("tls_version", ""),
        "tls_cipher": v.get("tls_cipher", ""),
        "chain": [
            {
                "subject": c.get("subject", ""),
                "issuer": c.get("issuer", ""),
                "not_after": c.get("not_after"),
                "expired": isinstance(c.get("not_after"), int | float) and c["not_after"] < now,
            }
            for c in chain
        ],
        "error": tls.error,
        "checked_at": tls.started_at,
    }


def dns_findings(dns: StoredResult | None) -> dict[str, Any] | None:
    if dns is None:
        return None
    return {
        "status": dns.status.label,
        "error": dns.error,
        "resolvers": list(dns.values.get("resolvers") or []),
        "findings": [
            {
                "check": f.get("check", ""),
                "subject": f.get("subject", ""),
                "status": f.get("status", ""),
                "message": f.get("message", ""),
                "seen": f.get("seen", ""),
                "expected": f.get("expected", ""),
                "resolvers": f.get("resolvers", ""),
            }
            for f in dns.values.get("findings") or []
        ],
        "checked_at": dns.started_at,
    }
