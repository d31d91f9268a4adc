"""mail_tls's ACME path against Debian's Pebble on the lab gateway: HTTP-01
answered from the host, certificate issued by Pebble and served on 993/465/587."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import MailFleet
from tests.integration.test_mail_stack import _starttls_socket
from tests.processes import stop_process

pytestmark = pytest.mark.lab

ACME_PORT = 14000
MANAGEMENT_PORT = 15000


@dataclass(frozen=True)
class Pebble:
    directory: str
    management: str
    listener_ca: Path  # trusts Pebble's own HTTPS listener (not the certificates it issues)
    work: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.listener_ca))

    def issuing_root(self) -> str:
        """Pebble makes a fresh root per start; its management API hands it out."""
        with urllib.request.urlopen(
            f"{self.management}/roots/0", context=self.context(), timeout=10
        ) as resp:
            return str(resp.read().decode())


def _listener_cert(work: Path, address: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for Pebble's HTTPS listener on `address`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (work / "listener-ca.pem", work / "listener.pem", work / "listener.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _wait_port(address: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"Pebble did not listen on {address}:{port} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def pebble(mail_fleet: MailFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """Pebble on the lab gateway, resolving names through the lab DNS, validating
    HTTP-01 on port 80 of the lab hosts. Stopped by its PID at the end."""
    mail_fleet.lab.require_up()
    gateway = mail_fleet.lab.config.gateway
    work = tmp_path_factory.mktemp("pebble")
    ca, cert, key = _listener_cert(work, gateway)
    config = work / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{gateway}:{ACME_PORT}",
                    "managementListenAddress": f"{gateway}:{MANAGEMENT_PORT}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": 80,
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    log = (work / "pebble.log").open("w")
    proc = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", f"{gateway}:53"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_port(gateway, ACME_PORT, 20)
        yield Pebble(
            f"https://{gateway}:{ACME_PORT}/dir",
            f"https://{gateway}:{MANAGEMENT_PORT}",
            ca,
            work,
        )
    finally:
        stop_process(proc, 10)
        log.close()


def _acme_vars(pebble: Pebble) -> dict[str, object]:
    return {
        "mail_tls_source": "acme",
        "mail_tls_acme_directory": pebble.directory,
        "mail_tls_acme_ca_bundle": str(pebble.listener_ca),
        "mail_tls_acme_terms_agreed": True,
        "mail_tls_acme_account_key_path": str(pebble.work / "acme" / "account.key"),
    }


def test_acme_path_issues_from_pebble_and_both_daemons_serve_it(
    mail_fleet: MailFleet, pebble: Pebble
) -> None:
    h = mail_fleet.hosts[-1]
    try:
        run = mail_fleet.playbook("--limit", h.name, extra_vars=_acme_vars(pebble))
        assert run.returncode == 0, run.output[-6000:]
        root = pebble.work / "issuing-root.pem"
        root.write_text(pebble.issuing_root())
        ctx = ssl.create_default_context(cafile=str(root))
        for port in (993, 465, 587):
            sock = (
                _starttls_socket(h.address, port)
                if port == 587
                else socket.create_connection((h.address, port), timeout=10)
            )
            with ctx.wrap_socket(sock, server_hostname=h.fqdn) as tls:
                issuer = dict(x[0] for x in tls.getpeercert()["issuer"])  # type: ignore[index]
            assert "Pebble" in str(issuer.get("commonName")), issuer
        # Valid and matching: a re-run orders nothing and changes nothing.
        again = mail_fleet.playbook("--limit", h.name, extra_vars=_acme_vars(pebble))
        assert again.returncode == 0, again.output[-6000:]
        assert again.changed() == 0, again.output[-6000:]
    finally:
        # Give the host a lab CA certificate again (renewal forced) for the other tests.
        back = mail_fleet.playbook("--limit", h.name, extra_vars={"mail_tls_renew_days_left": 400})
        assert back.returncode == 0, back.output[-6000:]
