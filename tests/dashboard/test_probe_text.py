"""What ``mailfleet probe`` says of each check, and its Nagios perfdata.

Results are built from each probe's own ``Values`` declaration (a field that does not
exist fails here), as the probes fill them.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from mailfleet.checks import (
    DnsValues,
    ImapLoginValues,
    PortValues,
    ProbeOptions,
    ProbeResult,
    QuotaValues,
    ServerValues,
    SmtpValues,
    Status,
    SyncValues,
    TlsValues,
    Values,
)
from mailfleet.dashboard.commands import probe_text, probe_thresholds
from mailfleet.dashboard.commands.probe import nagios

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
DAY = 86400.0
MIB = 1024 * 1024
# The plugin guidelines' form: 'label'=value[UOM];[warn];[crit];[min];[max]
PERFDATA = re.compile(r"^'[^'=]+'=-?[0-9.]+(s|%|B|KB|MB|TB|c)?(;[^; ]*){0,4}$")


def result(check: str, values: Values, total: float | None = 0.042, *,
           status: Status = Status.OK, error: str = "") -> ProbeResult:
    phases = {"total": total} if total is not None else {}
    return ProbeResult(check=check, target="mx1", success=status == Status.OK, status=status,
                       phases=phases, values=dataclasses.asdict(values), error=error,
                       started_at=NOW)


TLS = TlsValues(tls_version="TLSv1.3", cert_subject="CN=mx1.lab.test",
                cert_not_after=NOW + 365 * DAY + 3600, chain_earliest_not_after=NOW + 365 * DAY
                + 3600, cert_days_left=365.04)
QUOTA = QuotaValues(mechanism="PLAIN", user="probe@example1.test",
                    storage_used_bytes=int(12.5 * MIB), storage_limit_bytes=100 * MIB,
                    messages_used=30, used_percent=12.5)
SYNC = SyncValues(kind="local", delivery_latency_seconds=0.013, client_latency_seconds=0.5)

LINES = [
    (result("port", PortValues(address="192.0.2.10", port=993, service="imaps", open=True),
            0.004), "port OK - 192.0.2.10:993 (imaps) open in 4 ms"),
    (result("tls", TLS), "TLS OK - TLSv1.3, CN=mx1.lab.test, 365 days left (2028-01-15)"),
    (result("imap_login", ImapLoginValues(mechanism="PLAIN", user="probe@example1.test")),
     "IMAP login OK - PLAIN as probe@example1.test in 42 ms"),
    (result("smtp", SmtpValues(service="submission", port=587, banner_hostname="mx1.lab.test",
                               starttls_offered=True, tls_version="TLSv1.3", mechanism="PLAIN",
                               logged_in=True), 0.08),
     "SMTP OK - submission 587: mx1.lab.test, STARTTLS to TLSv1.3, logged in with PLAIN, "
     "in 80 ms"),
    (result("quota", QUOTA),
     "quota OK - 12.5 of 100 MiB (12%), 30 messages, for probe@example1.test"),
    (result("quota", QuotaValues(user="probe@example1.test")),
     "quota OK - no quota limit for probe@example1.test"),
    (result("dns", DnsValues(findings=[{"check": "mx", "status": "ok", "message": "MX fine"},
                                       {"check": "spf", "status": "warning",
                                        "message": "SPF of example1.test is softfail"},
                                       {"check": "ptr", "status": "ok", "message": "PTR fine"}])),
     "DNS OK - 2 ok, 1 warning (SPF of example1.test is softfail)"),
    (result("server", ServerValues(
        services={"postfix": True, "dovecot": True}, queue_messages={"active": 1, "deferred": 2},
        dovecot_sessions=4,
        filesystems={"/var/mail": {"size_bytes": 100, "free_bytes": 59, "free_ratio": 0.59},
                     "/var/spool/postfix": {"size_bytes": 100, "free_bytes": 90,
                                            "free_ratio": 0.9}})),
     "server OK - dovecot, postfix running, 3 queued, 4 IMAP sessions, /var/mail 41% full"),
    (result("sync", SYNC, 1.2),
     "sync OK - delivered in 13 ms, seen by the second client after 0.50 s"),
    (result("sync_mesh:mx2", SyncValues(kind="mesh", source="mx2", destination="mx1",
                                        delivery_latency_seconds=1.25)),
     "sync mesh from mx2 OK - delivered in 1.25 s"),
    (result("tls", TLS, status=Status.WARNING,
            error="certificate chain for mx1.lab.test expires in 20 days (2027-02-04 08:00 UTC)"),
     "TLS WARNING - certificate chain for mx1.lab.test expires in 20 days "
     "(2027-02-04 08:00 UTC)"),
    (result("imap_login", ImapLoginValues(), None, status=Status.CRITICAL,
            error="192.0.2.10:993: connection refused"),
     "IMAP login CRITICAL - 192.0.2.10:993: connection refused"),
]


@pytest.mark.parametrize(("probed", "expected"), LINES,
                         ids=[f"{r.check}-{r.status.label}" for r, _ in LINES])
def test_each_check_says_what_it_saw(probed: ProbeResult, expected: str) -> None:
    assert probe_text.line(probed) == expected


def test_a_failure_without_an_error_says_its_status() -> None:
    probed = result("smtp", SmtpValues(), None, status=Status.UNKNOWN)
    assert probe_text.line(probed) == "SMTP UNKNOWN - unknown"


def test_perfdata_has_units_and_the_thresholds_judged_by() -> None:
    options = ProbeOptions(tls_warning_days=30, tls_critical_days=10)
    perf = [str(p) for p in probe_text.perfdata("mx1", result("tls", TLS), options)]
    assert perf == ["'mx1 tls time'=0.042s;;;0", "'mx1 tls days left'=365.04;30:;10:"]
    perf = [str(p) for p in probe_text.perfdata("mx1", result("quota", QUOTA), ProbeOptions())]
    assert perf == ["'mx1 quota time'=0.042s;;;0", "'mx1 quota used'=12.5%;80;95;0;100",
                    f"'mx1 quota storage'={int(12.5 * MIB)}B;;;0;{100 * MIB}"]
    perf = [str(p) for p in probe_text.perfdata("mx1", result("sync", SYNC, 1.2), options)]
    assert perf == ["'mx1 sync time'=1.2s;;;0", "'mx1 sync delivery'=0.013s;;;0",
                    "'mx1 sync client'=0.5s;;;0"]


def test_every_perfdata_item_has_the_guidelines_form() -> None:
    text = nagios([r for r, _ in LINES], {})
    head, _, perf = text.splitlines()[0].partition(" | ")
    assert head.startswith("MAILFLEET CRITICAL - 10 ok, 1 warning, 1 critical: ")
    items = perf.split(" '")
    items = [items[0]] + ["'" + i for i in items[1:]]
    assert len(items) >= len(LINES)
    for item in items:
        assert PERFDATA.match(item), item
    assert text.splitlines()[1:] == [f"mx1: {line}" for _, line in LINES]


def test_a_label_cannot_break_perfdata() -> None:
    perf = probe_text.Perf("it's=odd", 1.0, "s")
    assert str(perf) == "'it_s_odd'=1s"
    assert str(probe_text.Perf("x", float("nan"), "s")) == "'x'=U"
    assert str(probe_text.Perf("x", 0.000125, "s")) == "'x'=0.000125s"


@pytest.mark.parametrize(("option", "text", "message"), [
    ("--warning", "tls_days", "write NAME=NUMBER, e.g. --warning tls_days=21"),
    ("--warning", "tls_dayz=3",
     "unknown threshold 'tls_dayz' (known: tls_days, tls_lifetime_percent, quota_percent)"),
    ("--critical", "quota_percent=lots", "quota_percent='lots': not a number"),
    ("--critical", "quota_percent=101", "quota_percent=101: must be 0 to 100"),
    ("--warning", "tls_days=-1", "tls_days=-1: must be 0 or more"),
    ("--warning", "tls_days=nan", "must be 0 or more"),
    ("--warning", "tls_days=3,tls_days=4", "tls_days given twice"),
])
def test_a_bad_threshold_names_the_problem(option: str, text: str, message: str) -> None:
    with pytest.raises(probe_thresholds.ThresholdError, match=re.escape(message)):
        probe_thresholds.parse(option, text)


def test_thresholds_set_the_options_and_must_be_in_order() -> None:
    warning = probe_thresholds.parse("--warning", "tls_days=30, quota_percent=70")
    critical = probe_thresholds.parse("--critical", "quota_percent=90")
    options = probe_thresholds.apply(ProbeOptions(timeout=3), warning, critical)
    assert (options.timeout, options.tls_warning_days, options.tls_critical_days,
            options.quota_warning_percent, options.quota_critical_percent) == (3, 30, 14, 70, 90)
    with pytest.raises(probe_thresholds.ThresholdError,
                       match=re.escape("the warning tls_days (30) must be at least the critical "
                                       "one (40): set both, e.g. --warning tls_days=40 "
                                       "--critical tls_days=30")):
        probe_thresholds.apply(ProbeOptions(), {}, {"tls_days": 40})
    with pytest.raises(probe_thresholds.ThresholdError,
                       match=re.escape("the warning tls_lifetime_percent (95) must be at most "
                                       "the critical one (90)")):
        probe_thresholds.apply(ProbeOptions(), {"tls_lifetime_percent": 95}, {})
    with pytest.raises(probe_thresholds.ThresholdError, match="must be at most"):
        probe_thresholds.apply(ProbeOptions(), {"quota_percent": 99}, {})
    assert probe_thresholds.parse("--warning", None) == {}
