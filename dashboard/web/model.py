"""The fleet rows the pages and the JSON API show, from the store's latest results.

A fleet *row* is one inventory host; its *cells* are the columns an on-call
admin scans (port 993, TLS, IMAP login, ...). Each cell has a status (colour and
word), a short text, a detail (the probe's own error text, shown on hover and on
the host page) and a sort key. The HTML pages and ``/api/fleet`` use the same
dictionaries, so the page and its auto-refresh can never disagree.

A cell never judges a result again: its status is the stored result's, which the
probe's judge set from the host's ``ProbeOptions`` thresholds. Its text is the
measured value when the probe passed, and the probe's bounded ``reason`` when it
did not.

Nothing here reads a credential: rows are built from ``WatchedHost`` names and
groups, and from stored results (which never hold secrets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailfleet.checks.result import Reason, Status
from mailfleet.dashboard.scheduler import is_mesh_check
from mailfleet.dashboard.store import HostSummary, StoredResult, worst
from mailfleet.dashboard.store.values import (
    DnsValues,
    ImapLoginValues,
    QuotaValues,
    SyncValues,
    TlsValues,
)
from mailfleet.dashboard.targets import WatchedHost

STATUSES: tuple[str, ...] = ("critical", "warning", "unknown", "ok")
NOT_WATCHED = "none"  # a check this host does not run (the inventory did not ask for it)

Cell = dict[str, Any]
Row = dict[str, Any]
Filler = Callable[[StoredResult, float], Cell]


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

# A reason as the word in a narrow cell; any other reason shows as itself.
SHORT_REASONS: Mapping[Reason, str] = {
    Reason.NONE: "failed",  # a failure whose probe named no reason
    Reason.OTHER: "failed",
    Reason.CRASH: "failed",
    Reason.DEADLINE: "timeout",
    Reason.AUTH_FAILED: "auth",
    Reason.TLS_HANDSHAKE: "tls",
    Reason.CERT_INVALID: "untrusted",
    Reason.CERT_EXPIRED: "expired",
    Reason.DNS_NXDOMAIN: "nxdomain",
    Reason.DNS_RECORD: "dns",
    Reason.NOT_CONFIGURED: "not set up",
    Reason.COMMAND_FAILED: "command",
    Reason.UNKNOWN_CHECK: "unknown check",
}


def utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cell(status: str, text: str, detail: str = "", sort: float | str | None = None) -> Cell:
    return {"status": status, "text": text, "detail": detail, "sort": sort}


def short_reason(result: StoredResult) -> str:
    return SHORT_REASONS.get(result.reason, str(result.reason).replace("_", " "))


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _days(days: float) -> str:
    return "expired" if days < 0 else f"{days:.0f} d" if days >= 2 else f"{days * 24:.0f} h"


def _verdict(r: StoredResult, ok_text: str, sort: float | None = None) -> Cell:
    """The probe's status; the measured ``ok_text`` unless the probe failed."""
    if r.status == Status.OK:
        return cell("ok", ok_text, r.error, 0 if sort is None else sort)
    text = ok_text if r.success else short_reason(r)
    return cell(r.status.label, text, r.error, int(r.status) if sort is None else sort)


def _port(r: StoredResult, _now: float) -> Cell:
    return _verdict(r, "open")


def _tls(r: StoredResult, _now: float) -> Cell:
    v = TlsValues.of(r)
    ok_text = v.tls_version or "ok"
    if r.status != Status.OK and v.served_certs:
        if v.hostname_match is False:
            return cell(r.status.label, "name mismatch", r.error, int(r.status))
        if v.chain_verified is False:
            return cell(r.status.label, "untrusted", r.error, int(r.status))
        return cell(r.status.label, ok_text, r.error, int(r.status))
    return _verdict(r, ok_text)


def _imap_login(r: StoredResult, _now: float) -> Cell:
    mech = ImapLoginValues.of(r).mechanism
    return _verdict(r, f"ok ({mech})" if mech else "ok")


def _smtp(r: StoredResult, _now: float) -> Cell:
    return _verdict(r, "ok")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cert_expiry(tls: TlsValues) -> float | None:
    """When the served chain stops being valid: the verified chain's earliest not-after."""
    for value in (tls.chain_earliest_not_after, tls.cert_not_after,
                  tls.served_earliest_not_after):
        number = _number(value)
        if number is not None:
            return number
    return None


def _cert_days(r: StoredResult, now: float) -> Cell:
    expiry = cert_expiry(TlsValues.of(r))
    if expiry is None:
        return cell(r.status.label if not r.success else "unknown", "no cert", r.error, None)
    days = (expiry - now) / 86400
    return cell(r.status.label, _days(days), f"not after {utc(expiry)}", round(days, 3))


def _latency(read: Callable[[SyncValues], float | None]) -> Filler:
    def fill(r: StoredResult, _now: float) -> Cell:
        sync = SyncValues.of(r)
        value = _number(read(sync))
        if value is not None:
            detail = r.error
            if sync.kind == "mesh":
                detail = f"mesh: from {sync.source} {detail}".strip()
            return cell(r.status.label, _seconds(value), detail, round(value, 4))
        if not r.success:
            return cell(r.status.label, short_reason(r), r.error, None)
        return cell("unknown", "no data", r.error, None)

    return fill


def _dns_flag(read: Callable[[DnsValues], bool | None], checks: tuple[str, ...],
              what: str) -> Filler:
    """A DNS concern's cell: its flag, and the probe's verdicts of its findings."""
    def fill(r: StoredResult, _now: float) -> Cell:
        dns = DnsValues.of(r)
        mine = [f for f in dns.findings if f.get("check") in checks]
        problems = "; ".join(f.get("message", "") for f in mine if f.get("status") != "ok")
        value = read(dns)
        if value is True:
            warn = any(f.get("status") == "warning" for f in mine)
            return cell("warning" if warn else "ok", "ok", problems, 1 if warn else 0)
        if value is False:
            return cell("critical", "wrong", problems or f"{what} does not match", 2)
        if not r.success:
            return cell(r.status.label, short_reason(r), r.error, None)
        return cell("unknown", "n/a", f"no {what} finding", None)

    return fill


def _quota(r: StoredResult, _now: float) -> Cell:
    percent = _number(QuotaValues.of(r).used_percent)
    if percent is not None:
        return cell(r.status.label, f"{percent:.0f} %", r.error, round(percent, 2))
    if r.success:
        return cell(r.status.label, "no limit", r.error, -1)
    return cell(r.status.label, short_reason(r), r.error, None)


FILLERS: Mapping[str, Filler] = {
    "port": _port,
    "tls": _tls,
    "imap_login": _imap_login,
    "smtp": _smtp,
    "cert_days": _cert_days,
    "delivery": _latency(lambda v: v.delivery_latency_seconds),
    "client_sync": _latency(lambda v: v.client_latency_seconds),
    "mx": _dns_flag(lambda d: d.mx_ok, ("mx",), "MX"),
    "rdns": _dns_flag(lambda d: d.rdns_ok, ("ptr", "fcrdns"), "reverse DNS"),
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
        cells[column.key] = FILLERS[column.key](result, now)
    return cells


CHECK_ORDER: tuple[str, ...] = ("port", "tls", "imap_login", "smtp", "quota", "sync", "dns")


def _check_rank(check: str) -> tuple[int, str]:
    return (CHECK_ORDER.index(check) if check in CHECK_ORDER else len(CHECK_ORDER), check)


def why(summary: HostSummary) -> tuple[str, float | None]:
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
    words, last_ok = why(summary)
    return {
        "name": host.name,
        "groups": list(host.groups),
        "status": summary.status.label,
        "reason": words,
        "last_ok_at": last_ok,
        "last_probe_at": summary.last_probe_at,
        "cells": host_cells(host, summary.checks, now),
    }


def counts(rows: Iterable[Row]) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for row in rows:
        out[row["status"]] += 1
    return out


def groups_of(hosts: Iterable[WatchedHost]) -> list[str]:
    return sorted({g for h in hosts for g in h.groups})


def host_summary(name: str, latest: Iterable[StoredResult]) -> HostSummary:
    """The host's worst status over its own checks (UNKNOWN without any result)."""
    # Mesh pairs stored on this host (mail into it from another host) are shown in
    # the host page's mesh section, not judged as the host's own health.
    checks = {r.check: r for r in latest if not is_mesh_check(r.check)}
    status = worst(r.status for r in checks.values())
    last = max((r.started_at for r in checks.values()), default=None)
    return HostSummary(name, status, checks, last)
