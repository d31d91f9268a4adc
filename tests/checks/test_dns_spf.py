"""SPF evaluated in full (pyspf) through the probe's resolvers: a real knot on loopback.

The mail host is mx.spf.test, 192.0.2.30 (PTR set, forward-confirmed), so the
findings that differ between the tests are the SPF ones.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
import time
from collections.abc import Iterator

import dns.exception
import dns.message
import dns.query
import pytest

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Status, Target
from mailfleet.checks.result import ProbeResult, Reason
from tests.checks.knot import Knot, knotd_path

pytestmark = pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")

HOST, ADDRESS = "mx.spf.test", "192.0.2.30"
MAIL = "@ 300 IN MX 10 mx.spf.test.\n"


def spf_zone(record: str, extra: str = "") -> str:
    return f'{MAIL}@ 300 IN TXT "{record}"\n{extra}'


TOO_MANY = "".join(
    f'l{n} 300 IN TXT "v=spf1 include:l{n + 1}.toomany.test -all"\n' for n in range(1, 11)
) + 'l11 300 IN TXT "v=spf1 ip4:192.0.2.30 -all"\n'

ZONES = {
    "spf.test": (f"mx 300 IN A {ADDRESS}\nother 300 IN A 198.51.100.7\n"
                 "dual 300 IN A 192.0.2.31\ndual 300 IN AAAA 2001:db8::31\n"),
    "30.2.0.192.in-addr.arpa": "@ 300 IN PTR mx.spf.test.\n",
    "chain.test": spf_zone(
        "v=spf1 include:_spf.chain.test -all",
        '_spf 300 IN TXT "v=spf1 include:_spf2.chain.test ~all"\n'
        '_spf2 300 IN TXT "v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.30 -all"\n'),
    "elsewhere.test": spf_zone(
        "v=spf1 include:_spf.elsewhere.test ~all",
        '_spf 300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"\n'),
    "neutral.test": spf_zone("v=spf1 include:_spf.elsewhere.test ?all"),
    "failing.test": spf_zone("v=spf1 a:other.spf.test -all"),
    "redirected.test": spf_zone("v=spf1 redirect=_spf.chain.test"),
    "redirfail.test": spf_zone("v=spf1 redirect=_spf.elsewhere.test"),
    "exists.test": spf_zone("v=spf1 exists:%{i}.allow.exists.test -all",
                            "192.0.2.30.allow 300 IN A 127.0.0.2\n"),
    "toomany.test": spf_zone("v=spf1 include:l1.toomany.test -all", TOO_MANY),
    "void.test": spf_zone("v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test mx -all"),
    "plusall.test": spf_zone("v=spf1 +all"),
    "v4only.test": spf_zone("v=spf1 ip4:192.0.2.31 -all"),
    "both.test": spf_zone("v=spf1 ip4:192.0.2.31 ip6:2001:db8::/64 -all"),
    "slow.test": spf_zone("v=spf1 include:_spf.blackhole.test -all"),
}


@pytest.fixture(scope="module")
def spf_knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    with Knot(tmp_path_factory.mktemp("knot-spf"), "127.0.5.57", ZONES) as server:
        yield server


class BlackholeProxy(socketserver.ThreadingUDPServer):
    """A UDP resolver on loopback: it passes queries to knot, but reads the ones for
    ``*.blackhole.test`` and never replies (one lookup of the chain times out)."""

    daemon_threads = True

    def __init__(self, upstream: Knot) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.port: int = self.server_address[1]
        self.swallowed = 0

    def __enter__(self) -> BlackholeProxy:
        threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Forward(socketserver.BaseRequestHandler):
    server: BlackholeProxy

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        if query.question[0].name.to_text().rstrip(".").endswith("blackhole.test"):
            self.server.swallowed += 1
            return
        upstream = self.server.upstream
        with contextlib.suppress(OSError, dns.exception.DNSException):
            answer = dns.query.udp(query, upstream.address, timeout=1, port=upstream.port)
            sock.sendto(answer.to_wire(), self.client_address)


def run_dns(resolver: str, domain: str, deadline: float = 5, address: str = ADDRESS,
            host: str = HOST) -> ProbeResult:
    target = Target(name="mx", address=address, mail_hostname=host, domains=(domain,))
    options = ProbeOptions(dns_resolvers=(resolver,), dns_tlsa_services=())
    return PROBES["dns"](target, options, Deadline(deadline))


def spf(result: ProbeResult) -> list[dict[str, str]]:
    return [f for f in result.values["findings"] if f["check"] == "spf"]


def test_an_include_chain_that_authorizes_the_host(spf_knot: Knot) -> None:
    """Only the knot knows chain.test: a pass shows that pyspf asked the probe's resolver."""
    result = run_dns(spf_knot.resolver, "chain.test")
    [finding] = spf(result)
    assert finding["status"] == "ok", finding
    assert finding["message"] == "SPF of chain.test authorizes the server"
    assert result.values["spf_ok"] is True


@pytest.mark.parametrize(("domain", "words"), [
    ("elsewhere.test", "softfail by ~all (chain: elsewhere.test -> include:_spf.elsewhere.test)"),
    ("neutral.test", "neutral by ?all (chain: neutral.test -> include:_spf.elsewhere.test)"),
    ("failing.test", "fail by -all (chain: failing.test)"),
])
def test_an_spf_that_does_not_authorize_says_the_result_and_the_chain(
    spf_knot: Knot, domain: str, words: str
) -> None:
    result = run_dns(spf_knot.resolver, domain)
    [finding] = spf(result)
    assert finding["status"] == "warning"
    assert finding["message"] == f"SPF of {domain} does not authorize {ADDRESS}: {words}"
    assert finding["reason"] == Reason.DNS_RECORD
    assert result.status == Status.WARNING and result.reason == Reason.DNS_RECORD


def test_redirect_is_followed(spf_knot: Knot) -> None:
    assert spf(run_dns(spf_knot.resolver, "redirected.test"))[0]["status"] == "ok"
    [fails] = spf(run_dns(spf_knot.resolver, "redirfail.test"))
    assert fails["message"] == (f"SPF of redirfail.test does not authorize {ADDRESS}: fail by "
                                "-all (chain: redirfail.test -> redirect=_spf.elsewhere.test)")


def test_exists_with_a_macro(spf_knot: Knot) -> None:
    assert spf(run_dns(spf_knot.resolver, "exists.test"))[0]["status"] == "ok"


def test_every_address_of_the_host_is_evaluated(spf_knot: Knot) -> None:
    """No address given: the host's A and AAAA are the addresses SPF must authorise."""
    def dual(domain: str) -> dict[str, str]:
        result = run_dns(spf_knot.resolver, domain, address="dual.spf.test",
                         host="dual.spf.test")
        return spf(result)[0]

    assert dual("both.test")["status"] == "ok"
    assert dual("v4only.test")["message"] == ("SPF of v4only.test does not authorize "
                                              "2001:db8::31: fail by -all (chain: v4only.test)")


def test_more_than_ten_lookups_is_a_permerror(spf_knot: Knot) -> None:
    result = run_dns(spf_knot.resolver, "toomany.test")
    [finding] = spf(result)
    assert finding["status"] == "error"
    assert finding["message"].startswith(
        "SPF of toomany.test is invalid: permerror (Too many DNS lookups) (chain: toomany.test "
        "-> include:l1.toomany.test -> include:l2.toomany.test")
    assert result.values["spf_ok"] is False
    assert result.status == Status.CRITICAL and result.reason == Reason.DNS_RECORD


def test_more_than_two_void_lookups_is_a_permerror(spf_knot: Knot) -> None:
    [finding] = spf(run_dns(spf_knot.resolver, "void.test"))
    assert finding["message"] == ("SPF of void.test is invalid: permerror (Void lookup limit "
                                  "of 2 exceeded) (chain: void.test)")


def test_plus_all_is_flagged(spf_knot: Knot) -> None:
    findings = spf(run_dns(spf_knot.resolver, "plusall.test"))
    assert [(f["status"], f["message"]) for f in findings] == [
        ("warning", "SPF of plusall.test has +all: it authorizes every host on the internet"),
        ("ok", "SPF of plusall.test authorizes the server"),
    ]


def test_a_lookup_that_times_out_stays_inside_the_deadline(spf_knot: Knot) -> None:
    with BlackholeProxy(spf_knot) as proxy:
        start = time.monotonic()
        result = run_dns(f"127.0.0.1:{proxy.port}", "slow.test", deadline=3)
        elapsed = time.monotonic() - start
        assert proxy.swallowed >= 1
    assert elapsed < 3.5
    [finding] = spf(result)
    assert finding["status"] == "error"
    assert finding["message"] == (
        "SPF of slow.test could not be evaluated: temperror (no DNS answer for TXT "
        f"_spf.blackhole.test: 127.0.0.1:{proxy.port}: no answer) (chain: slow.test)")
    assert finding["reason"] == Reason.TIMEOUT
    assert result.reason == Reason.TIMEOUT


def test_a_domain_that_does_not_exist(spf_knot: Knot) -> None:
    result = run_dns(spf_knot.resolver, "gone.chain.test")
    assert result.status == Status.CRITICAL
    assert result.reason == Reason.DNS_NXDOMAIN
    assert result.error.startswith("no MX for gone.chain.test")


def test_a_bad_resolver_setting_is_not_configured() -> None:
    result = run_dns("dns.google", "chain.test")
    assert result.status == Status.UNKNOWN
    assert result.reason == Reason.NOT_CONFIGURED
    assert result.error == "resolver 'dns.google' is not an IP address[:port]"


def test_concurrent_probes_keep_their_own_resolvers(spf_knot: Knot) -> None:
    """pyspf's DNS hook is one per process; each probe thread must still ask its own."""
    from concurrent.futures import ThreadPoolExecutor

    with BlackholeProxy(spf_knot) as proxy, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(run_dns, f"127.0.0.1:{proxy.port}", "slow.test", 3)
        time.sleep(0.2)  # the slow one is inside pyspf, waiting on its lookup
        quick = pool.submit(run_dns, spf_knot.resolver, "chain.test")
        assert spf(quick.result())[0]["status"] == "ok"
        assert spf(slow.result())[0]["message"].startswith(
            "SPF of slow.test could not be evaluated: temperror")
