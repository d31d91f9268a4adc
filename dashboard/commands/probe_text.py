"""What ``mailfleet probe`` says of one result: a line of what was seen, and Nagios perfdata.

Lines follow the monitoring-plugins' habit (check_ssl_cert, check_imap): the check, its
status, then what was seen — "TLS OK - TLSv1.3, CN=mx1.lab.test, 365 days left
(2027-12-02)". A failed check says its error instead. Perfdata follows the plugin
guidelines: ``'label'=value[UOM];[warn];[crit];[min];[max]``, with the thresholds the
probe judged by (``ProbeOptions``), so a graphing add-on draws them.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mailfleet.checks import ProbeOptions, ProbeResult, Status
from mailfleet.checks.dns import DnsValues
from mailfleet.checks.imap import ImapLoginValues
from mailfleet.checks.port import PortValues
from mailfleet.checks.quota import QuotaValues
from mailfleet.checks.server import ServerValues
from mailfleet.checks.smtp import SmtpValues
from mailfleet.checks.sync import SyncValues
from mailfleet.checks.tls import TlsValues
from mailfleet.checks.tlsinfo import span
from mailfleet.dashboard.sweep import MESH_CHECK, is_mesh_check

LABELS = {"port": "port", "tls": "TLS", "imap_login": "IMAP login", "smtp": "SMTP",
          "quota": "quota", "dns": "DNS", "server": "server", "sync": "sync",
          MESH_CHECK: "sync mesh"}
MIB = 1024 * 1024


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def _secs(seconds: float | None) -> str:
    """Milliseconds below a tenth of a second, seconds above (sync waits for pushes)."""
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _total(r: ProbeResult) -> float | None:
    return r.phases.get("total")


def _port(r: ProbeResult) -> str:
    v = PortValues.of(r)
    where = f"{v.address}:{v.port}" if v.address else str(v.port or "")
    where += f" ({v.service})" if v.service else ""
    return f"{where} open in {_ms(_total(r))}".strip()


def _days_left(r: ProbeResult) -> tuple[float, float] | None:
    """(seconds left, expiry) of what the verdict judges: the verified chain's earliest end."""
    v = TlsValues.of(r)
    ends = v.chain_earliest_not_after or v.cert_not_after
    return None if ends is None else (ends - r.started_at, ends)


def _tls(r: ProbeResult) -> str:
    v = TlsValues.of(r)
    left = ""
    if (found := _days_left(r)) is not None:
        seconds, ends = found
        day = datetime.datetime.fromtimestamp(ends, datetime.UTC)
        left = f"{span(seconds)} left ({day:%Y-%m-%d})"
    return _join(v.tls_version, v.cert_subject, left)


def _imap_login(r: ProbeResult) -> str:
    v = ImapLoginValues.of(r)
    who = f"{v.mechanism} as {v.user}" if v.user else v.mechanism
    return f"{who} in {_ms(_total(r))}".strip()


def _smtp(r: ProbeResult) -> str:
    v = SmtpValues.of(r)
    greeted = f"{v.service} {v.port}: {v.banner_hostname or v.banner[:60]}".strip()
    tls = f"STARTTLS to {v.tls_version}" if v.starttls_offered and v.tls_version else (
        v.tls_version)
    login = f"logged in with {v.mechanism}" if v.logged_in else ""
    return _join(greeted, tls, login, f"in {_ms(_total(r))}" if _total(r) is not None else "")


def _quota(r: ProbeResult) -> str:
    v = QuotaValues.of(r)
    if v.storage_used_bytes is None:
        return _join(f"no quota limit for {v.user}" if v.user else "no quota limit")
    used = f"{v.storage_used_bytes / MIB:.1f}"
    if v.storage_limit_bytes:
        used += f" of {v.storage_limit_bytes / MIB:.0f} MiB"
        if v.used_percent is not None:
            used += f" ({v.used_percent:.0f}%)"
    else:
        used += " MiB, no limit"
    messages = f"{v.messages_used} messages" if v.messages_used is not None else ""
    return _join(used, messages, f"for {v.user}" if v.user else "")


def _dns(r: ProbeResult) -> str:
    findings = DnsValues.of(r).findings
    counts = {s: sum(1 for f in findings if f.get("status") == s)
              for s in ("ok", "warning", "error")}
    text = _join(*(f"{n} {s}" for s, n in counts.items() if n)) or "no records looked at"
    problem = next((f.get("message", "") for f in findings if f.get("status") != "ok"), "")
    return f"{text} ({problem})" if problem and r.status == Status.OK else text


def _server(r: ProbeResult) -> str:
    v = ServerValues.of(r)
    up = sorted(n for n, ok in (v.services or {}).items() if ok)
    down = sorted(n for n, ok in (v.services or {}).items() if not ok)
    queued = sum((v.queue_messages or {}).values()) if v.queue_messages is not None else None
    used = {path: (1 - fs["free_ratio"]) * 100 for path, fs in (v.filesystems or {}).items()
            if fs.get("free_ratio") is not None}
    fullest = max(used.items(), key=lambda pu: pu[1], default=None)
    return _join(
        f"{', '.join(up)} running" if up else "",
        f"{', '.join(down)} down" if down else "",
        f"{queued} queued" if queued is not None else "",
        f"{v.dovecot_sessions} IMAP sessions" if v.dovecot_sessions is not None else "",
        f"{fullest[0]} {fullest[1]:.0f}% full" if fullest else "",
    )


def _sync(r: ProbeResult) -> str:
    v = SyncValues.of(r)
    delivered = (f"delivered in {_secs(v.delivery_latency_seconds)}"
                 if v.delivery_latency_seconds is not None else "")
    seen = (f"seen by the second client after {_secs(v.client_latency_seconds)}"
            if v.client_latency_seconds is not None else "")
    return _join(delivered, seen)


SEEN: Mapping[str, Callable[[ProbeResult], str]] = {
    "port": _port, "tls": _tls, "imap_login": _imap_login, "smtp": _smtp, "quota": _quota,
    "dns": _dns, "server": _server, "sync": _sync, MESH_CHECK: _sync,
}


def _kind(check: str) -> str:
    return MESH_CHECK if is_mesh_check(check) else check


def seen(result: ProbeResult) -> str:
    """What was seen (a pass) or what went wrong (anything else), without the status."""
    if result.status != Status.OK:
        return result.error or result.status.label
    describe = SEEN.get(_kind(result.check))
    return (describe(result) if describe else "") or "ok"


def line(result: ProbeResult) -> str:
    """``TLS OK - TLSv1.3, CN=..., 365 days left (2027-12-02)``."""
    kind = _kind(result.check)
    label = LABELS.get(kind, kind)
    if kind == MESH_CHECK and (source := result.check.partition(":")[2]):
        label += f" from {source}"
    return f"{label} {result.status.name} - {seen(result)}"


# -- perfdata -------------------------------------------------------------------------


@dataclass(frozen=True)
class Perf:
    label: str
    value: float
    unit: str = ""
    warn: str = ""
    crit: str = ""
    low: str = ""
    high: str = ""

    def __str__(self) -> str:
        label = self.label.replace("'", "_").replace("=", "_")
        value = _g(self.value)
        measured = value + (self.unit if value != "U" else "")
        fields = [measured, self.warn, self.crit, self.low, self.high]
        return f"'{label}'=" + ";".join(fields).rstrip(";")


def _g(x: float) -> str:
    """A plain decimal: perfdata parsers read no exponent (``:g`` writes 1.31072e+07).

    Not a finite number: "U", the guidelines' value for "could not be determined".
    """
    if not math.isfinite(x):
        return "U"
    return f"{x:.6f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def perfdata(host: str, result: ProbeResult, options: ProbeOptions) -> list[Perf]:
    """The result's time, and for tls, quota and sync what they measured, with thresholds."""
    name = f"{host} {result.check}"
    out: list[Perf] = []
    total = _total(result)
    if total is not None:
        out.append(Perf(f"{name} time", round(total, 4), "s", low="0"))
    kind = _kind(result.check)
    if kind == "tls" and (found := _days_left(result)) is not None:
        # "21:" is the guidelines' range for "alert below 21".
        out.append(Perf(f"{name} days left", round(found[0] / 86400, 2), "",
                        _g(options.tls_warning_days) + ":", _g(options.tls_critical_days) + ":"))
    if kind == "quota":
        q = QuotaValues.of(result)
        if q.used_percent is not None:
            out.append(Perf(f"{name} used", round(q.used_percent, 2), "%",
                            _g(options.quota_warning_percent), _g(options.quota_critical_percent),
                            "0", "100"))
        if q.storage_used_bytes is not None:
            limit = str(q.storage_limit_bytes) if q.storage_limit_bytes else ""
            out.append(Perf(f"{name} storage", q.storage_used_bytes, "B", low="0", high=limit))
    if kind in ("sync", MESH_CHECK):
        s = SyncValues.of(result)
        for what, value in (("delivery", s.delivery_latency_seconds),
                            ("client", s.client_latency_seconds)):
            if value is not None:
                out.append(Perf(f"{name} {what}", round(value, 4), "s", low="0"))
    return out


def perf_line(items: Sequence[tuple[str, ProbeResult, ProbeOptions]]) -> str:
    return " ".join(str(p) for host, r, o in items for p in perfdata(host, r, o))
