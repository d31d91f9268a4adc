"""OAuth2 introspection mode: Dovecot asks a real RFC 7662 endpoint about each token.

The endpoint (tests/integration/introspection.py, Authlib on Flask) serves
HTTPS on the lab gateway's address, with a certificate from the lab CA that
the hosts already trust (/etc/ssl/mailfleet/chain.pem). One host's inventory
switches to ``dovecot_oauth2_mode: introspection`` with the endpoint's URL
(client credentials in it) and the playbook is re-run on that host. Opaque
tokens the endpoint issued log in; unknown, revoked, expired tokens and a
token of another user are refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.conftest import MailFleet, MailUser
from tests.integration.hostvars import set_host_vars
from tests.integration.introspection import IntrospectionServer, serve_introspection
from tests.integration.test_oauth2 import imap_refused, imap_token_login, xoauth2

pytestmark = [pytest.mark.lab]

HOST_CA = "/etc/ssl/mailfleet/chain.pem"  # the lab CA on the hosts (mail_tls)


def lab_ca_leaf(state_dir: Path, address: str, out: Path) -> tuple[Path, Path]:
    """A server certificate for an IP address, signed by the lab CA on the controller."""
    ca_cert = x509.load_pem_x509_certificate((state_dir / "ca" / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((state_dir / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab introspection")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = out / "introspection.crt", out / "introspection.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def endpoint(
    mail_fleet: MailFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IntrospectionServer]:
    lab = mail_fleet.lab
    lab.require_up()
    gateway = lab.config.gateway
    cert, key = lab_ca_leaf(lab.config.state_dir, gateway, tmp_path_factory.mktemp("idp"))
    with serve_introspection(gateway, 0, cert, key) as server:
        client = server.add_client("mail-servers")
        host = mail_fleet.hosts[1]
        set_host_vars(mail_fleet, host.name, {
            "dovecot_oauth2_mode": "introspection",
            "dovecot_oauth2_introspection_mode": "post",
            "dovecot_oauth2_introspection_url": server.url_for(client),
            "dovecot_oauth2_tls_ca_file": HOST_CA,
        })
        yield server


@pytest.fixture(scope="module")
def alice(mail_fleet: MailFleet) -> MailUser:
    return mail_fleet.user(mail_fleet.hosts[1].name, "alice")


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_an_active_token_logs_in(
    mail_fleet: MailFleet, endpoint: IntrospectionServer, alice: MailUser, mechanism: str
) -> None:
    before = endpoint.store.requests
    imap_token_login(mail_fleet, alice, mechanism, endpoint.issue(alice.address))
    assert endpoint.store.requests > before, "Dovecot did not ask the endpoint"


def _refused(fleet: MailFleet, endpoint: IntrospectionServer, user: MailUser, token: str) -> str:
    return imap_refused(fleet, user, xoauth2(user.address, token),
                        good=endpoint.issue(user.address))


@pytest.mark.timeout(300)
def test_inactive_and_foreign_tokens_are_refused(
    mail_fleet: MailFleet, endpoint: IntrospectionServer, alice: MailUser
) -> None:
    bob = mail_fleet.user(alice.host.name, "bob")
    revoked = endpoint.issue(alice.address)
    endpoint.revoke(revoked)
    cases = {
        "unknown": "not-a-token-the-endpoint-issued",
        "revoked": revoked,
        "expired": endpoint.issue(alice.address, lifetime=-1),
        "another user's": endpoint.issue(bob.address),
    }
    for case, token in cases.items():
        why = _refused(mail_fleet, endpoint, alice, token)
        assert "AUTHENTICATIONFAILED" in why, (case, why)
