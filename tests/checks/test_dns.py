"""The dns probe against a real knot on loopback serving zones written here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Status, Target
from mailfleet.checks.result import ProbeResult
from tests.checks.knot import Knot, knotd_path

pytestmark = pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")

def run_dns(knot: Knot, address: str, mail_hostname: str, domains: tuple[str, ...] = (),
            resolvers: tuple[str, ...] | None = None, ports: dict[str, int] | None = None,
            tlsa: tuple[str, ...] = ()) -> ProbeResult:
    target = Target(name="mx", address=address, mail_hostname=mail_hostname, domains=domains,
                    ports=ports or {})
    options = ProbeOptions(dns_resolvers=resolvers or (knot.resolver,), dns_tlsa_services=tlsa)
    return PROBES["dns"](target, options, Deadline(5))


def findings(result: ProbeResult, check: str) -> list[dict[str, str]]:
    return [f for f in result.values["findings"] if f["check"] == check]


def test_a_correct_server_is_all_ok(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("good.test",))
    assert result.status == Status.OK, result.error
    assert {f["status"] for f in result.values["findings"]} == {"ok"}
    checks = {f["check"] for f in result.values["findings"]}
    assert checks == {"mx", "a", "ptr", "fcrdns", "spf", "dmarc"}
    assert result.values["mx_ok"] is True and result.values["rdns_ok"] is True
    spf = findings(result, "spf")[0]
    assert spf["message"] == "SPF of good.test authorizes the server"
    assert spf["seen"] == "v=spf1 mx -all"


def test_missing_mx(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("nomx.test",))
    assert result.status == Status.CRITICAL
    mx = findings(result, "mx")[0]
    assert mx["message"] == "no MX for nomx.test, expected mx-good.dnstest.test"
    assert (mx["status"], mx["seen"]) == ("error", "none")
    assert result.values["mx_ok"] is False


def test_mx_to_the_wrong_host(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("wrongmx.test",))
    mx = findings(result, "mx")[0]
    assert mx["message"] == ("MX of wrongmx.test is mx9.dnstest.test (192.0.2.99), "
                             "expected mx-good.dnstest.test (192.0.2.10)")
    assert mx["expected"] == "mx-good.dnstest.test (192.0.2.10)"
    assert result.error.startswith("MX of wrongmx.test is mx9.dnstest.test")


def test_null_mx(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("nullmx.test",))
    assert findings(result, "mx")[0]["message"] == "nullmx.test has a null MX (it accepts no mail)"


def test_missing_ptr(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.20", "mx-noptr.dnstest.test")
    ptr = findings(result, "ptr")[0]
    assert ptr["message"] == "no PTR for 192.0.2.20, expected mx-noptr.dnstest.test"
    assert result.values["rdns_ok"] is False
    assert result.status == Status.CRITICAL


def test_ptr_not_matching_the_mail_hostname(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.12", "mx2.dnstest.test")
    ptr = findings(result, "ptr")[0]
    assert ptr["message"] == "PTR of 192.0.2.12 is other.dnstest.test, expected mx2.dnstest.test"
    assert (ptr["seen"], ptr["expected"]) == ("other.dnstest.test", "mx2.dnstest.test")
    # other.dnstest.test does resolve back: only the name is wrong
    assert findings(result, "fcrdns")[0]["status"] == "ok"


def test_ptr_that_does_not_resolve_back(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.14", "mx4.dnstest.test")
    assert findings(result, "ptr")[0]["status"] == "ok"
    fc = findings(result, "fcrdns")[0]
    assert fc["status"] == "error"
    assert fc["message"] == ("PTR of 192.0.2.14 (mx4.dnstest.test) does not resolve back to "
                             "192.0.2.14 (mx4.dnstest.test -> 192.0.2.40)")
    a = findings(result, "a")[0]
    assert a["message"] == "A/AAAA of mx4.dnstest.test is 192.0.2.40, expected 192.0.2.14"


def test_bad_spf_syntax(knot: Knot) -> None:
    result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("badspf.test",))
    spf = findings(result, "spf")[0]
    assert spf["status"] == "error"
    assert spf["message"] == "SPF of badspf.test is invalid: invalid ip4 term 'ip4:999.0.0.1'"
    assert spf["seen"] == "v=spf1 ip4:999.0.0.1 -all"
    dmarc = findings(result, "dmarc")[0]
    assert dmarc["status"] == "warning"
    assert dmarc["message"] == "no DMARC record at _dmarc.badspf.test"


def test_tlsa_matches_and_mismatches_the_served_certificate(
    knot: Knot, tls_ports: tuple[int, int, str]
) -> None:
    good, bad, digest = tls_ports
    ok = run_dns(knot, "127.0.0.1", "mx-tls.dnstest.test", ports={"imaps": good},
                 tlsa=("imaps",))
    tlsa_ok = findings(ok, "tlsa")[0]
    assert tlsa_ok["status"] == "ok", tlsa_ok
    assert tlsa_ok["message"].startswith(f"TLSA _{good}._tcp.mx-tls.dnstest.test (3 1 1 ")
    assert ok.values["tlsa_ok"] is True
    bad_result = run_dns(knot, "127.0.0.1", "mx-tls.dnstest.test", ports={"imaps": bad},
                         tlsa=("imaps",))
    mismatch = findings(bad_result, "tlsa")[0]
    assert mismatch["status"] == "error"
    assert mismatch["message"] == (
        f"TLSA _{bad}._tcp.mx-tls.dnstest.test (3 1 1 {'ab' * 8}…) does not match "
        f"the served certificate (3 1 1 {digest[:16]}…)"
    )
    assert bad_result.values["tlsa_ok"] is False


def test_two_resolvers_disagreeing_say_who_said_what(knot: Knot, knot_second: Knot) -> None:
    result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("good.test",),
                     resolvers=(knot.resolver, knot_second.resolver))
    ptr = findings(result, "ptr")
    assert [f["status"] for f in ptr] == ["warning", "ok"]
    assert ptr[0]["message"] == (
        "resolvers disagree on PTR 10.2.0.192.in-addr.arpa: "
        f"{knot.resolver} said mx-good.dnstest.test; {knot_second.resolver} said NXDOMAIN"
    )
    assert result.status == Status.WARNING and result.success
    assert result.values["resolvers"] == [knot.resolver, knot_second.resolver]


def test_one_dead_resolver_among_two_still_gives_answers(knot: Knot, tmp_path: Path) -> None:
    from tests.checks.servers import SilentDns

    with SilentDns() as silent:
        dead = f"127.0.0.1:{silent.port}"
        result = run_dns(knot, "192.0.2.10", "mx-good.dnstest.test", ("good.test",),
                         resolvers=(dead, knot.resolver))
    assert findings(result, "mx")[-1]["status"] == "ok"
    assert result.phases["total"] < 5.5


def test_a_flapping_resolver_is_asked_again() -> None:
    """SERVFAIL on every other query must not turn into 'no PTR' (mail-in-a-box#628)."""
    from mailfleet.checks.dns import DnsReport, Resolvers, check_ptr, parse_resolver
    from tests.checks.servers import FlakyDns

    records = {("10.2.0.192.in-addr.arpa", "PTR"): ["mx-good.dnstest.test."],
               ("mx-good.dnstest.test", "A"): ["192.0.2.10"],
               ("mx-good.dnstest.test", "AAAA"): []}
    records = {k: v for k, v in records.items() if v}
    with FlakyDns(records) as flaky:
        res = Resolvers([parse_resolver(f"127.0.0.1:{flaky.port}")], Deadline(5), attempts=2)
        report = DnsReport()
        check_ptr(res, report, "192.0.2.10", "mx-good.dnstest.test")
        assert flaky.queries >= 4
    assert [(f.check, f.status) for f in report.findings] == [("ptr", "ok"), ("fcrdns", "ok")]


def test_a_watcher_asks_a_shared_domain_once_per_ttl_and_each_resolver_for_itself() -> None:
    """``serve --dns-cache``: answers are kept across hosts and probes for their TTL (and at
    most the cap); a resolver's cache is its own, so "who said what" stays true."""
    from mailfleet.checks.dns import Resolvers, parse_resolver
    from mailfleet.checks.dns.lookups import share_answers
    from tests.checks.servers import FlakyDns

    records = {("shared.test", "MX"): ["10 mx.shared.test."],
               ("mx.shared.test", "A"): ["192.0.2.10"]}
    with FlakyDns(records, flapping=False, ttl=1, negative_ttl=1) as one, \
            FlakyDns(records, flapping=False, ttl=3600, negative_ttl=3600) as two:
        try:
            share_answers(300)

            def sweep() -> None:
                for _host in range(3):  # three hosts of one domain, each its own probe
                    res = Resolvers([parse_resolver(f"127.0.0.1:{one.port}"),
                                     parse_resolver(f"127.0.0.1:{two.port}")], Deadline(5))
                    assert res.ask("shared.test", "MX").records == ("10 mx.shared.test",)
                    assert res.ask("nothing.shared.test", "A").nxdomain

            nothing = ("nothing.shared.test", "A")
            sweep()
            assert one.asked[("shared.test", "MX")] == 1
            assert two.asked[("shared.test", "MX")] == 1
            assert one.asked[nothing] == two.asked[nothing] == 1  # NXDOMAIN kept too (SOA)
            time.sleep(1.2)  # past the 1 s TTLs of the first resolver's answers only
            sweep()
            assert one.asked[("shared.test", "MX")] == 2 and one.asked[nothing] == 2
            assert two.asked[("shared.test", "MX")] == 1 and two.asked[nothing] == 1
            share_answers(0)  # off: every probe asks
            sweep()
            assert one.asked[("shared.test", "MX")] == 5 and one.asked[nothing] == 5
            assert two.asked[("shared.test", "MX")] == 4 and two.asked[nothing] == 4
        finally:
            share_answers(0)

