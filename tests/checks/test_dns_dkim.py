"""DKIM key records and DMARC alignment in the dns probe, against a real knot on loopback."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Status, Target
from mailfleet.checks.dns import (
    DkimSpec,
    Resolvers,
    dns_report,
    parse_resolver,
    parse_tags,
    public_key_der,
)
from mailfleet.checks.result import ProbeResult
from tests.checks.knot import Knot, knotd_path

pytestmark = pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")


def p_value(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


SIGNING = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def txt(name: str, value: str) -> str:
    """One TXT record in 255-byte strings, as a 2048-bit key needs."""
    parts = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{name} 300 IN TXT {parts}\n"


MX = ('@ 300 IN MX 10 mx-good.dnstest.test.\n'
      '_dmarc 300 IN TXT "v=DMARC1; p=reject; adkim=s"\n')
ZONES = {
    "dnstest.test": "ns 300 IN A 127.0.5.55\nmx-good 300 IN A 192.0.2.10\n",
    "2.0.192.in-addr.arpa": "10 300 IN PTR mx-good.dnstest.test.\n",
    # SPF and the signing selector good: aligned both ways
    "signed.test": MX + '@ 300 IN TXT "v=spf1 mx -all"\n'
    + txt("mail._domainkey", f"v=DKIM1; k=rsa; p={p_value(SIGNING)}")
    + txt("old._domainkey", "v=DKIM1; k=rsa; p="),
    # SPF fails the host: only DKIM can align
    "dkimonly.test": MX + '@ 300 IN TXT "v=spf1 -all"\n'
    + txt("mail._domainkey", f"v=DKIM1; k=rsa; p={p_value(SIGNING)}"),
    # neither
    "unaligned.test": MX + '@ 300 IN TXT "v=spf1 -all"\n',
}


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    with Knot(tmp_path_factory.mktemp("knot-dkim"), "127.0.5.55", ZONES) as server:
        yield server


def run(knot: Knot, domain: str, **options: tuple[str, ...]) -> ProbeResult:
    target = Target(name="mx", address="192.0.2.10", mail_hostname="mx-good.dnstest.test",
                    domains=(domain,))
    opts = ProbeOptions(dns_resolvers=(knot.resolver,), dns_tlsa_services=(), **options)
    return PROBES["dns"](target, opts, Deadline(5))


def of(result: ProbeResult, check: str) -> list[tuple[str, str]]:
    return [(f["status"], f["message"]) for f in result.values["findings"] if f["check"] == check]


def test_the_signing_key_published_is_ok_and_aligned(knot: Knot) -> None:
    key = f"mail._domainkey.signed.test={p_value(SIGNING)}"
    result = run(knot, "signed.test", dns_dkim_selectors=("mail",), dns_dkim_keys=(key,))
    assert result.status == Status.OK, result.error
    assert of(result, "dkim") == [
        ("ok", "DKIM record of selector 'mail' for signed.test matches the host's key")]
    assert ("ok", "mail from signed.test aligns with its DMARC policy through SPF and DKIM"
            ) in of(result, "dmarc")
    assert result.values["dkim_ok"] is True


def test_a_rotated_selector_not_yet_published_is_critical_naming_it(knot: Knot) -> None:
    result = run(knot, "signed.test", dns_dkim_selectors=("mail2",),
                 dns_dkim_retired_selectors=("mail",))
    assert result.status == Status.CRITICAL
    assert "'mail2'" in result.error and "mail2._domainkey.signed.test" in result.error
    assert "publish the record the rspamd role reports" in result.error
    assert result.values["dkim_ok"] is False
    # the retired one still verifies mail in flight: it is fine
    assert ("ok", "DKIM record of selector 'mail' for signed.test holds a usable key"
            ) in of(result, "dkim")


def test_a_record_with_another_key_is_critical(knot: Knot) -> None:
    key = f"mail._domainkey.signed.test={p_value(OTHER)}"
    result = run(knot, "signed.test", dns_dkim_selectors=("mail",), dns_dkim_keys=(key,))
    assert result.status == Status.CRITICAL
    assert "holds another key than the one the host signs with" in result.error


def test_a_revoked_or_missing_retired_selector(knot: Knot) -> None:
    revoked = run(knot, "signed.test", dns_dkim_selectors=("old",))
    assert revoked.status == Status.CRITICAL
    assert "p= is empty: the key is revoked" in revoked.error
    retired_gone = run(knot, "dkimonly.test", dns_dkim_selectors=("mail",),
                       dns_dkim_retired_selectors=("gone",))
    assert retired_gone.status == Status.WARNING
    assert "no DKIM record for the retired selector 'gone'" in retired_gone.error


def test_dkim_alone_aligns_and_neither_fails_the_policy(knot: Knot) -> None:
    dkim_only = run(knot, "dkimonly.test", dns_dkim_selectors=("mail",))
    assert ("ok", "mail from dkimonly.test aligns with its DMARC policy through DKIM"
            ) in of(dkim_only, "dmarc")
    unaligned = run(knot, "unaligned.test", dns_dkim_selectors=("mail",))
    assert unaligned.status == Status.CRITICAL
    assert ("mail from unaligned.test fails its DMARC policy (p=reject): SPF does not "
            "authorise the server and its DKIM record is not good") in unaligned.error


def test_without_selectors_dkim_is_not_looked_at(knot: Knot) -> None:
    result = run(knot, "signed.test")
    assert of(result, "dkim") == [] and result.values["dkim_ok"] is None
    assert result.status == Status.OK


def test_a_malformed_key_option_is_a_configuration_error(knot: Knot) -> None:
    result = run(knot, "signed.test", dns_dkim_selectors=("mail",), dns_dkim_keys=("mail=abc",))
    assert result.status == Status.UNKNOWN
    assert "is not SELECTOR._domainkey.DOMAIN=KEY" in result.error


def test_tag_lists_and_keys() -> None:
    assert parse_tags("v=DKIM1; k=rsa; p=AB CD ;") == ({"v": "DKIM1", "k": "rsa", "p": "ABCD"}, [])
    assert parse_tags("v=DKIM1; v=DKIM1; junk")[1] == ["tag v given twice", "malformed tag 'junk'"]
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert public_key_der(base64.b64encode(ed).decode()) == ed
    with pytest.raises(ValueError, match="not base64"):
        public_key_der("!!")
    with pytest.raises(ValueError, match="holds no public key"):
        public_key_der(base64.b64encode(b"x" * 40).decode())


def test_before_a_deploy_that_publishes_by_update_a_missing_record_only_warns(knot: Knot) -> None:
    res = Resolvers([parse_resolver(knot.resolver)], Deadline(5))
    key = {"mail._domainkey.unaligned.test": p_value(SIGNING)}
    report = dns_report(res, ["unaligned.test"], "mx-good.dnstest.test", ["192.0.2.10"],
                        dkim=DkimSpec(["mail"], keys=key, keyless_pending=True, updated=True))
    dkim = [f for f in report.findings if f.check == "dkim"]
    assert [(f.status, f.message) for f in dkim] == [(
        "warning", "no DKIM record for the selector the host signs with 'mail' at "
        "mail._domainkey.unaligned.test: this deployment publishes it by DNS update")]
