"""DNS block lists in the dns probe, against a real knot serving a list (tests/checks/conftest.py):
listed, not listed, a refused query (127.255.255.254) and a lapsed list domain."""

from __future__ import annotations

import pytest

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Status, Target
from mailfleet.checks.dns.dnsbl import query_name, valid_zone
from mailfleet.checks.result import ProbeResult, Reason
from mailfleet.dashboard.metrics import result_samples
from tests.checks.knot import Knot, knotd_path

pytestmark = pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")


def probe(knot: Knot, address: str, name: str, *lists: str) -> ProbeResult:
    target = Target(name="mx", address=address, mail_hostname=name, domains=())
    options = ProbeOptions(dns_resolvers=(knot.resolver,), dns_blocklists=lists)
    return PROBES["dns"](target, options, Deadline(5))


def dnsbl(result: ProbeResult) -> list[dict[str, str]]:
    return [f for f in result.values["findings"] if f["check"] == "dnsbl"]


def gauge(result: ProbeResult) -> float | None:
    found = [s.value for s in result_samples(result) if s.name == "mailfleet_dns_dnsbl_ok"]
    return found[0] if found else None


def test_a_listed_address_is_critical_and_says_why(knot: Knot) -> None:
    result = probe(knot, "192.0.2.10", "mx-good.dnstest.test", "dnsbl.test", "lapsed.test")
    assert result.status == Status.CRITICAL
    assert result.reason == Reason.LISTED
    listed, lapsed = dnsbl(result)
    assert listed["status"] == "error"
    assert listed["message"] == ("192.0.2.10 is listed on dnsbl.test (127.0.0.2): "
                                 "listed: sent spam to traps")
    assert lapsed["status"] == "warning"
    assert "answered 198.51.100.80, not an address in 127.0.0.0/8" in lapsed["message"]
    assert result.values["dnsbl_ok"] is False
    assert gauge(result) == 0.0
    assert result.error.startswith("192.0.2.10 is listed on dnsbl.test")


def test_an_address_not_on_the_list_is_fine(knot: Knot) -> None:
    result = probe(knot, "192.0.2.99", "mx9.dnstest.test", "dnsbl.test.")
    (finding,) = dnsbl(result)
    assert (finding["status"], finding["message"]) == ("ok", "192.0.2.99 is not on dnsbl.test")
    assert result.values["dnsbl_ok"] is True
    assert gauge(result) == 1.0


def test_a_refused_query_is_unknown_never_listed(knot: Knot) -> None:
    """127.255.255.254: the list refused to answer (a public resolver asked). Not a listing:
    no CRITICAL, no dnsbl_ok false, no gauge at 0 for the alert to fire on."""
    result = probe(knot, "192.0.2.12", "mx2.dnstest.test", "dnsbl.test")
    (finding,) = dnsbl(result)
    assert finding["status"] == "warning"
    assert finding["message"].startswith(
        "unknown whether 192.0.2.12 is on dnsbl.test: the list refused the query "
        "(127.255.255.254;")
    assert result.values["dnsbl_ok"] is None
    assert gauge(result) is None
    # (mx2's PTR is wrong in these zones: that, not the list, is its error)
    assert result.reason != Reason.LISTED and "listed" not in result.error


def test_a_list_that_does_not_answer_is_unknown(knot: Knot) -> None:
    # nothing serves this zone: knot refuses, the lookup fails
    result = probe(knot, "192.0.2.99", "mx9.dnstest.test", "nowhere.invalid")
    (finding,) = dnsbl(result)
    assert finding["status"] == "warning"
    assert finding["message"].startswith("unknown whether 192.0.2.99 is on nowhere.invalid: ")
    assert result.values["dnsbl_ok"] is None


@pytest.mark.parametrize("zone", ["not a zone!", "192.0.2.1", "*.dnsbl.test", "single"])
def test_a_list_that_is_not_a_zone_name_is_a_configuration_error(knot: Knot, zone: str) -> None:
    result = probe(knot, "192.0.2.99", "mx9.dnstest.test", zone)
    assert result.status == Status.UNKNOWN
    assert result.reason == Reason.NOT_CONFIGURED
    assert "is not a block list's zone name (write its DNS zone, e.g. zen.spamhaus.org)" in (
        result.error)


def test_query_names_follow_rfc_5782() -> None:
    assert query_name("192.0.2.99", "zen.example.") == "99.2.0.192.zen.example"
    assert query_name("2001:db8:1:2::3", "v6.example") == (
        "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.v6.example")
    assert valid_zone("zen.spamhaus.org") and valid_zone("dnsbl.test.")
    assert not valid_zone("") and not valid_zone("org")
