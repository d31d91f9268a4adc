"""Fixtures of the checks tests: a real knot on loopback with the test zones, TLS servers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from tests.checks.certs import make_ca, make_leaf, write_chain
from tests.checks.knot import Knot
from tests.checks.servers import LoopbackServer, tls_greeter, tls_server_context

FORWARD = """\
ns 300 IN A 127.0.5.53
mx-good 300 IN A 192.0.2.10
mx9 300 IN A 192.0.2.99
mx-noptr 300 IN A 192.0.2.20
mx2 300 IN A 192.0.2.12
other 300 IN A 192.0.2.12
mx4 300 IN A 192.0.2.40
mx-tls 300 IN A 127.0.0.1
"""
REVERSE = """\
10 300 IN PTR mx-good.dnstest.test.
12 300 IN PTR other.dnstest.test.
14 300 IN PTR mx4.dnstest.test.
"""
GOOD_MAIL = ('@ 300 IN MX 10 mx-good.dnstest.test.\n@ 300 IN TXT "v=spf1 mx -all"\n'
             '_dmarc 300 IN TXT "v=DMARC1; p=reject"\n')


def zones(tlsa: str = "") -> dict[str, str]:
    return {
        "dnstest.test": FORWARD + tlsa,
        "2.0.192.in-addr.arpa": REVERSE,
        "good.test": GOOD_MAIL,
        "nomx.test": '@ 300 IN TXT "v=spf1 -all"\n',
        "wrongmx.test": "@ 300 IN MX 10 mx9.dnstest.test.\n",
        "badspf.test": ('@ 300 IN MX 10 mx-good.dnstest.test.\n'
                        '@ 300 IN TXT "v=spf1 ip4:999.0.0.1 -all"\n'),
        "nullmx.test": "@ 300 IN MX 0 .\n",
        # A block list (RFC 5782 test entries and 127.0.0.2 for 192.0.2.10), one that
        # refuses mx2's query (127.255.255.254, as Spamhaus does through a public
        # resolver) and a lapsed list domain answering everything with a web address.
        "dnsbl.test": ("2.0.0.127 300 IN A 127.0.0.2\n"
                       '2.0.0.127 300 IN TXT "test entry"\n'
                       "10.2.0.192 300 IN A 127.0.0.2\n"
                       '10.2.0.192 300 IN TXT "listed: sent spam to traps"\n'
                       "12.2.0.192 300 IN A 127.255.255.254\n"),
        "lapsed.test": "* 300 IN A 198.51.100.80\n",
    }


@pytest.fixture(scope="module")
def tls_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, str]]:
    """Two TLS servers with the same certificate; the zone publishes a TLSA for each port."""
    d = tmp_path_factory.mktemp("tlsa")
    ca = make_ca("dane test CA")
    leaf = make_leaf(ca, ["mx-tls.dnstest.test"])
    cert, key = write_chain(d, "leaf", leaf)
    spki = leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ctx = tls_server_context(cert, key)
    with LoopbackServer(tls_greeter(ctx)) as good, LoopbackServer(tls_greeter(ctx)) as bad:
        yield good.port, bad.port, hashlib.sha256(spki).hexdigest()


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory, tls_ports: tuple[int, int, str]
         ) -> Iterator[Knot]:
    good, bad, digest = tls_ports
    tlsa = (f"_{good}._tcp.mx-tls 300 IN TLSA 3 1 1 {digest}\n"
            f"_{bad}._tcp.mx-tls 300 IN TLSA 3 1 1 {'ab' * 32}\n")
    with Knot(tmp_path_factory.mktemp("knot"), "127.0.5.53", zones(tlsa)) as server:
        yield server


@pytest.fixture(scope="module")
def knot_second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    """A second resolver view where mx-good's PTR is missing (rDNS 'flapping')."""
    z = zones()
    z["2.0.192.in-addr.arpa"] = REVERSE.replace("10 300 IN PTR mx-good.dnstest.test.\n", "")
    with Knot(tmp_path_factory.mktemp("knot2"), "127.0.5.54", z) as server:
        yield server


