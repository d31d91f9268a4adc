"""A realistic fleet in a real ``ResultStore``: inventory hosts and their probe results.

Used by the Flask test-client tests, the browser tests (until they watch the lab)
and ``bench/dashboard_bench.py``. The values have the shapes the checks produce
(``checks.tls``, ``checks.dns``, ``checks.quota``, ``checks.sync``), written through
the store's own ``record_many``/``record_sweep``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.dashboard.store import ResultStore, Sweep
from mailfleet.dashboard.targets import WatchedHost, watched_host

PROBE_PASSWORD = "s3cret-probe-Passw0rd!"
PROBE_TOKEN = "eyJhbGciOiJIUzI1NiJ9.probe-token-VALUE.sig"
CHECKS = ("port", "tls", "imap_login", "smtp", "quota", "dns", "sync")
DAY = 86400.0


def make_hosts(n: int, groups: Sequence[str] = ("eu", "us")) -> list[WatchedHost]:
    hosts = []
    for i in range(1, n + 1):
        name = f"mx{i}"
        group = groups[i % len(groups)]
        hostvars: dict[str, Any] = {
            "ansible_host": f"10.77.5.{10 + i % 200}",
            "mail_hostname": f"{name}.lab.test",
            "mail_domains": ["lab.test"],
            "mailfleet_probe_user": "probe@lab.test",
            "mailfleet_probe_password": PROBE_PASSWORD,
            "mailfleet_probe_token": PROBE_TOKEN,
            "mailfleet_checks": list(CHECKS),
        }
        hosts.append(watched_host(name, hostvars, ["mailservers", group]))
    return hosts


def _cert(name: str, not_after: float) -> dict[str, Any]:
    return {
        "subject": f"CN={name}.lab.test",
        "issuer": "CN=mailfleet lab CA",
        "sans": [f"{name}.lab.test"],
        "not_before": not_after - 90 * DAY,
        "not_after": not_after,
        "serial": "4a1f",
    }


def results_for(name: str, i: int, at: float, healthy: bool = True) -> list[ProbeResult]:
    """One sweep of host ``name`` at time ``at``; host number ``i`` picks its flavour."""
    jitter = (i * 7919 + int(at)) % 100 / 1000.0
    expiry = at + (10 if i % 10 == 3 else 60 + i % 30) * DAY
    leaf = _cert(name, expiry)
    ca = {**_cert("ca", at + 3000 * DAY), "subject": "CN=mailfleet lab CA"}
    down = not healthy or i % 10 == 7
    out = []
    if down:
        refused = f"connection to 10.77.5.{10 + i}:993 refused"
        for check, values in (("port", {"port": 993, "service": "imaps"}),
                              ("tls", {"port": 993}), ("imap_login", {"port": 993}),
                              ("quota", {})):
            out.append(ProbeResult(check, name, False, Status.CRITICAL,
                                   {"connect": 0.001} if values else {}, values, refused, at,
                                   reason=Reason.REFUSED))
    else:
        out.append(ProbeResult("port", name, True, Status.OK,
                               {"connect": 0.002 + jitter / 10, "total": 0.003 + jitter / 10},
                               {"port": 993, "service": "imaps", "open": True}, "", at))
        tls_status = Status.WARNING if i % 10 == 3 else Status.OK
        tls_error = (f"certificate chain for {name}.lab.test expires in 10 d" if tls_status
                     else "")
        out.append(ProbeResult(
            "tls", name, True, tls_status,
            {"connect": 0.002, "tls": 0.01 + jitter / 5, "total": 0.013 + jitter / 5},
            {"service": "imaps", "port": 993, "hostname": f"{name}.lab.test",
             "ca_bundle": "/etc/mailfleet/lab-ca.pem", "tls_version": "TLSv1.3",
             "tls_cipher": "TLS_AES_256_GCM_SHA384", "chain_verified": True, "verify_error": "",
             "served_certs": [leaf, ca], "served_earliest_not_after": expiry,
             "chain_earliest_not_after": expiry, "cert_subject": leaf["subject"],
             "cert_issuer": leaf["issuer"], "cert_sans": leaf["sans"],
             "cert_not_before": leaf["not_before"], "cert_not_after": expiry,
             "cert_days_left": round((expiry - at) / DAY, 2), "hostname_match": True},
            tls_error, at, reason=Reason.THRESHOLD if tls_status else Reason.NONE))
        out.append(ProbeResult(
            "imap_login", name, True, Status.OK,
            {"connect": 0.002, "tls": 0.012, "greeting": 0.004, "auth": 0.03 + jitter,
             "total": 0.05 + jitter},
            {"service": "imaps", "port": 993, "mechanism": "PLAIN", "user": "probe@lab.test",
             "logged_in": True, "capabilities": ["IMAP4rev1", "IDLE", "QUOTA"]}, "", at))
        used = 5 + i % 90
        q_status = Status.CRITICAL if used >= 95 else Status.WARNING if used >= 80 else Status.OK
        out.append(ProbeResult(
            "quota", name, True, q_status, {"auth": 0.03, "quota": 0.002, "total": 0.06},
            {"storage_used_bytes": used * 1024 * 1024, "storage_limit_bytes": 100 * 1024 * 1024,
             "quota_roots": ["User quota"], "used_percent": float(used)},
            f"quota storage {used}% used" if q_status else "", at,
            reason=Reason.THRESHOLD if q_status else Reason.NONE))
    out.append(ProbeResult(
        "smtp", name, True, Status.OK,
        {"connect": 0.002, "banner": 0.01, "starttls": 0.015, "total": 0.03 + jitter},
        {"service": "smtp", "port": 25, "banner": f"220 {name}.lab.test ESMTP Postfix",
         "starttls_offered": True, "auth_before_tls": []}, "", at))
    ptr_ok = i % 10 != 5
    findings = [
        {"check": "mx", "subject": "lab.test", "status": "ok",
         "message": f"lab.test MX includes {name}.lab.test", "seen": f"10 {name}.lab.test",
         "expected": f"{name}.lab.test", "resolvers": ""},
        {"check": "a", "subject": f"{name}.lab.test", "status": "ok",
         "message": f"{name}.lab.test has an address", "seen": f"10.77.5.{10 + i}",
         "expected": f"10.77.5.{10 + i}", "resolvers": ""},
        {"check": "ptr", "subject": f"10.77.5.{10 + i}", "status": "ok" if ptr_ok else "error",
         "message": (f"PTR of 10.77.5.{10 + i} is {name}.lab.test" if ptr_ok else
                     f"PTR of 10.77.5.{10 + i} is not set"),
         "seen": f"{name}.lab.test" if ptr_ok else "NXDOMAIN", "expected": f"{name}.lab.test",
         "resolvers": "" if ptr_ok else "10.77.5.1:53 said NXDOMAIN"},
    ]
    out.append(ProbeResult(
        "dns", name, True, Status.OK if ptr_ok else Status.CRITICAL, {"dns": 0.004},
        {"resolvers": ["10.77.5.1:53"], "findings": findings, "mx_ok": True, "a_ok": True,
         "ptr_ok": ptr_ok, "fcrdns_ok": None, "spf_ok": None, "dmarc_ok": None,
         "tlsa_ok": None, "rdns_ok": ptr_ok},
        "" if ptr_ok else f"PTR of 10.77.5.{10 + i} is not set", at,
        reason=Reason.NONE if ptr_ok else Reason.DNS_RECORD))
    if not down:
        out.append(ProbeResult(
            "sync", name, True, Status.OK, {"submit": 0.05, "deliver": 0.3 + jitter, "total": 0.6},
            {"kind": "local", "method": "idle", "delivery_latency_seconds": 0.3 + jitter,
             "push_latency_seconds": 0.28 + jitter, "client_latency_seconds": 0.05 + jitter / 2},
            "", at))
    return out


def fill_store(
    store: ResultStore,
    hosts: Sequence[WatchedHost],
    sweeps: int = 3,
    interval: float = 60.0,
    now: float | None = None,
    mesh: bool = True,
) -> None:
    """``sweeps`` sweeps of every host, the newest ending at ``now``."""
    now = time.time() if now is None else now
    names = [h.name for h in hosts]
    for k in range(sweeps):
        at = now - (sweeps - 1 - k) * interval
        items = []
        for i, host in enumerate(hosts, 1):
            for r in results_for(host.name, i, at):
                items.append((host.name, r))
        if mesh and len(names) > 1:
            offset = 1 + k % (len(names) - 1)
            for j, src in enumerate(names):
                dst = names[(j + offset) % len(names)]
                items.append((dst, ProbeResult(  # as the scheduler stores a pair
                    f"sync_mesh:{src}", dst, True, Status.OK, {"total": 0.5},
                    {"kind": "mesh", "source": src, "destination": dst,
                     "delivery_latency_seconds": 0.4 + (j % 7) / 10}, "", at)))
        store.record_many(items)
        store.record_sweep(Sweep(at, 2.5, len(items), 0, False))
