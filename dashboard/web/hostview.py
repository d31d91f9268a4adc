"""The host page's sections beyond the row: configuration, checks, certificate, DNS, server.

Each section reads its check's values through the check's declaration
(``checks.VALUES``), never by key. Nothing here reads a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailfleet.dashboard.store import StoredResult
from mailfleet.dashboard.store.values import DnsValues, ServerValues, TlsValues
from mailfleet.dashboard.targets import WatchedHost
from mailfleet.dashboard.web.model import cert_expiry

# Values shown in their own sections (the certificate chain, the DNS findings).
_SHOWN_ELSEWHERE = frozenset({TlsValues.key.served_certs, DnsValues.key.findings})


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
    return {
        "check": r.check,
        "status": r.status.label,
        "success": r.success,
        "error": r.error,
        "reason": str(r.reason),
        "started_at": r.started_at,
        "duration": r.duration,
        "phases": dict(r.phases),
        "values": {k: v for k, v in r.values.items() if k not in _SHOWN_ELSEWHERE},
        "last_success_at": r.last_success_at,
    }


def pending_view(check: str) -> dict[str, Any]:
    """A check of the inventory that has no result yet."""
    return {"check": check, "status": "unknown", "error": "no result yet", "reason": "",
            "success": False, "started_at": None, "duration": None, "phases": {},
            "values": {}, "last_success_at": None}


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "nothing queued"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _percent(ratio: Any) -> float | None:
    return round(100 * ratio, 1) if isinstance(ratio, int | float) else None


def server_view(server: StoredResult | None) -> dict[str, Any] | None:
    """The ``server`` check's inside view (checks/SERVER.md) for the host page."""
    if server is None:
        return None
    v = ServerValues.of(server)
    queues = v.queue_messages or {}
    filesystems = [
        {
            "path": path,
            "free_percent": _percent(fs.get("free_ratio")),
            "free_bytes": fs.get("free_bytes"),
            "free_inodes_percent": _percent(fs.get("free_inodes_ratio")),
        }
        for path, fs in sorted((v.filesystems or {}).items())
        if isinstance(fs, Mapping)
    ]
    # {section: message} as checks/SERVER.md says (the declaration's type says less).
    errors: Any = v.command_errors
    return {
        "status": server.status.label,
        "error": server.error,
        "reason": str(server.reason),
        "ssh_error": v.ssh_error or "",
        "queues": {q: queues[q] for q in sorted(queues)},
        "oldest": _age(v.queue_oldest_seconds),
        "deferral_reasons": [
            {"reason": str(r.get("reason", "")), "count": r.get("count", 0)}
            for r in v.deferral_reasons or [] if isinstance(r, Mapping)
        ],
        "sessions": v.dovecot_sessions,
        "sessions_by_protocol": dict(v.dovecot_sessions_by_protocol or {}),
        "services": dict(v.services or {}),
        "filesystems": filesystems,
        "cert_file": v.cert_file or "",
        "cert_file_not_after": v.cert_file_not_after,
        "cert_reload_pending": dict(v.cert_reload_pending_by_service or {}),
        "command_errors": dict(errors) if isinstance(errors, Mapping) else {},
        "checked_at": server.started_at,
    }


def certificate(tls: StoredResult | None, now: float) -> dict[str, Any] | None:
    if tls is None:
        return None
    v = TlsValues.of(tls)
    chain = list(v.served_certs or [])
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
        "chain_verified": v.chain_verified,
        "verify_error": v.verify_error or "",
        "hostname": v.hostname or "",
        "hostname_match": v.hostname_match,
        "tls_version": v.tls_version or "",
        "tls_cipher": v.tls_cipher or "",
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
    v = DnsValues.of(dns)
    return {
        "status": dns.status.label,
        "error": dns.error,
        "reason": str(dns.reason),
        "resolvers": list(v.resolvers or []),
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
            for f in v.findings or []
        ],
        "checked_at": dns.started_at,
    }
