"""The DNS gauges say what their help says: a missing SPF or DMARC record is a 0."""

from __future__ import annotations

from mailfleet.checks.dns import OK, WARNING, Finding
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.dashboard.metrics import GAUGES, result_samples


def _dns_result(*findings: Finding) -> ProbeResult:
    status = Status.WARNING if any(f.status != OK for f in findings) else Status.OK
    return ProbeResult(
        check="dns", target="mx1", success=True, status=status,
        values={"findings": [f.to_dict() for f in findings], "spf_ok": True, "dmarc_ok": True},
    )


def _gauges(result: ProbeResult) -> dict[str, float]:
    return {s.name: s.value for s in result_samples(result) if s.name.startswith("mailfleet_dns")}


def test_missing_records_are_zero_and_good_ones_one() -> None:
    missing = _dns_result(
        Finding("spf", "example.org", WARNING, "no SPF record for example.org", seen="none"),
        Finding("dmarc", "example.org", WARNING, "no DMARC record for example.org"),
    )
    assert _gauges(missing) == {"mailfleet_dns_spf_ok": 0.0, "mailfleet_dns_dmarc_ok": 0.0}
    good = _dns_result(
        Finding("spf", "example.org", OK, "SPF of example.org authorizes the server"),
        Finding("dmarc", "example.org", OK, "DMARC of example.org: p=reject"),
    )
    assert _gauges(good) == {"mailfleet_dns_spf_ok": 1.0, "mailfleet_dns_dmarc_ok": 1.0}


def test_a_concern_not_looked_at_has_no_gauge_and_the_help_is_true() -> None:
    assert _gauges(_dns_result()) == {}
    assert "missing" in GAUGES["mailfleet_dns_spf_ok"]
    assert "missing" in GAUGES["mailfleet_dns_dmarc_ok"]
