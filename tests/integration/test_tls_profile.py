"""The TLS a scanner sees on the converged fleet: the ports where TLS is mandatory
(465, 587, 993) meet Mozilla's "intermediate" profile, checked by sslyze; port 25
keeps opportunistic TLS (RFC 7435) for the MTAs of the internet."""

from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

from tests.conftest import skip_or_fail
from tests.integration.conftest import ROOT, MailFleet

pytestmark = pytest.mark.lab

SSLYZE = ROOT / ".venv" / "sslyze" / "bin" / "sslyze"

# (port, sslyze --starttls protocol or None for implicit TLS)
MANDATORY_TLS = [(465, None), (587, "smtp"), (993, None)]

# A TLS 1.2 CBC suite for the host's ECDSA certificate: what an old MTA may offer.
CBC_SUITE = "ECDHE-ECDSA-AES128-SHA"


def _sslyze(fleet: MailFleet, host: str, port: int, starttls: str | None) -> str:
    if not SSLYZE.exists():
        skip_or_fail(f"{SSLYZE} is missing: scripts/bootstrap.sh installs it")
    h = fleet.host(host)
    argv = [str(SSLYZE), "--mozilla_config=intermediate",
            f"--certinfo_ca_file={fleet.ca_bundle}", f"{h.fqdn}:{port}{{{h.address}}}"]
    if starttls:
        argv.insert(1, f"--starttls={starttls}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"{h.fqdn}:{port}: OK - Compliant" in report, (
        f"{host}:{port} is not Mozilla intermediate:\n{report[-3000:]}")
    return report


@pytest.mark.parametrize("host", ["mx1", "mx2"])  # Debian 12, Debian 13
@pytest.mark.parametrize(("port", "starttls"), MANDATORY_TLS)
def test_mandatory_tls_ports_meet_mozilla_intermediate(
    mail_fleet: MailFleet, host: str, port: int, starttls: str | None
) -> None:
    report = _sslyze(mail_fleet, host, port, starttls)
    # what the profile means, said plainly: no anonymous and no CBC suites accepted
    accepted = report.split("COMPLIANCE AGAINST")[0]
    assert "_anon_" not in accepted.lower() and "ADH-" not in accepted
    assert "_CBC_" not in accepted, f"{host}:{port} accepts a CBC suite"


def _handshake(fleet: MailFleet, host: str, port: int, ciphers: str) -> str:
    """A TLS 1.2 handshake offering only ``ciphers``: the suite agreed, or "" if refused."""
    ctx = fleet.tls_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    h = fleet.host(host)
    with socket.create_connection((h.address, port), timeout=15) as raw:
        if port in (25, 587):
            reader = raw.makefile("rb")
            reader.readline()
            raw.sendall(b"EHLO tls-test.lab.test\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"220"), f"{host}:{port} refused STARTTLS"
        try:
            with ctx.wrap_socket(raw, server_hostname=h.fqdn) as tls:
                cipher = tls.cipher()
                return cipher[0] if cipher else ""
        except ssl.SSLError:
            return ""


@pytest.mark.parametrize("host", ["mx1", "mx2"])
def test_port_25_stays_opportunistic_while_submission_refuses_cbc(
    mail_fleet: MailFleet, host: str
) -> None:
    assert _handshake(mail_fleet, host, 25, CBC_SUITE) == CBC_SUITE, (
        f"{host}:25 refuses {CBC_SUITE}: an old MTA would fall back to plaintext")
    for port in (587, 465, 993):
        assert _handshake(mail_fleet, host, port, CBC_SUITE) == "", (
            f"{host}:{port} agreed to {CBC_SUITE}")
