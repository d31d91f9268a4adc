"""The TLS a scanner sees on the converged fleet: the ports where TLS is mandatory
(465, 587, 993, and ManageSieve's 4190) meet Mozilla's "intermediate" profile, checked
by sslyze; port 25 keeps opportunistic TLS (RFC 7435) for the MTAs of the internet."""

from __future__ import annotations

import socket
import ssl
import subprocess
from contextlib import ExitStack

import pytest

from tests.conftest import skip_or_fail
from tests.integration.conftest import ROOT, MailFleet
from tests.integration.sieve_starttls import StartTLSRelay, managesieve_starttls

pytestmark = pytest.mark.lab

SSLYZE = ROOT / ".venv" / "sslyze" / "bin" / "sslyze"

# (port, sslyze --starttls protocol or None for implicit TLS; "sieve", which sslyze
# does not speak, goes through a local relay that does ManageSieve's STARTTLS)
MANDATORY_TLS = [(465, None), (587, "smtp"), (993, None), (4190, "sieve")]

# A TLS 1.2 CBC suite for the host's ECDSA certificate: what an old MTA may offer.
CBC_SUITE = "ECDHE-ECDSA-AES128-SHA"


HOSTS = ["mx1", "mx2"]  # Debian 12, Debian 13


@pytest.fixture(scope="module")
def sslyze_reports(mail_fleet: MailFleet) -> dict[tuple[str, int], str]:
    """One sslyze run per TLS mode (it scans its targets concurrently): each
    (host, port)'s part of the report, from its own name to the next target's."""
    if not SSLYZE.exists():
        skip_or_fail(f"{SSLYZE} is missing: scripts/bootstrap.sh installs it")
    reports: dict[tuple[str, int], str] = {}
    for starttls in {s for _, s in MANDATORY_TLS}:
        ports = [port for port, s in MANDATORY_TLS if s == starttls]
        targets = [(host, port) for host in HOSTS for port in ports]
        argv = [str(SSLYZE), "--mozilla_config=intermediate",
                f"--certinfo_ca_file={mail_fleet.ca_bundle}"]
        if starttls and starttls != "sieve":
            argv.append(f"--starttls={starttls}")
        with ExitStack() as relays:
            scanned: dict[tuple[str, int], int] = {}  # the port sslyze connects to
            for host, port in targets:
                h = mail_fleet.host(host)
                if starttls == "sieve":
                    scanned[(host, port)] = relays.enter_context(StartTLSRelay(h.address, port))
                    argv.append(f"{h.fqdn}:{scanned[(host, port)]}{{127.0.0.1}}")
                else:
                    scanned[(host, port)] = port
                    argv.append(f"{h.fqdn}:{port}{{{h.address}}}")
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                                  check=False)
        output = proc.stdout + proc.stderr
        scans, _, compliance = output.partition("COMPLIANCE AGAINST")
        for host, port in targets:
            fqdn = mail_fleet.host(host).fqdn
            port_scanned = scanned[(host, port)]
            marker = f"SCAN RESULTS FOR {fqdn.upper()}:{port_scanned}"
            part = scans.split(marker, 1)[1] if marker in scans else ""
            part = part.split("SCAN RESULTS FOR", 1)[0]
            verdict = next((line.strip() for line in compliance.splitlines()
                            if line.strip().startswith(f"{fqdn}:{port_scanned}:")),
                           "no verdict")
            # reported under the real port, whichever port sslyze connected to
            verdict = verdict.replace(f"{fqdn}:{port_scanned}:", f"{fqdn}:{port}:", 1)
            reports[(host, port)] = f"{verdict}\n{part}"
    return reports


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(("port", "starttls"), MANDATORY_TLS)
def test_mandatory_tls_ports_meet_mozilla_intermediate(
    sslyze_reports: dict[tuple[str, int], str], mail_fleet: MailFleet,
    host: str, port: int, starttls: str | None,
) -> None:
    report = sslyze_reports[(host, port)]
    fqdn = mail_fleet.host(host).fqdn
    assert report.startswith(f"{fqdn}:{port}: OK - Compliant"), (
        f"{host}:{port} is not Mozilla intermediate:\n{report[:3000]}")
    # what the profile means, said plainly: no anonymous and no CBC suites accepted
    assert "TLS_ECDHE_" in report, f"sslyze listed no accepted suites for {host}:{port}"
    assert "_anon_" not in report.lower() and "ADH-" not in report
    assert "_CBC_" not in report, f"{host}:{port} accepts a CBC suite"


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
        elif port == 4190:
            managesieve_starttls(raw)
        try:
            with ctx.wrap_socket(raw, server_hostname=h.fqdn) as tls:
                cipher = tls.cipher()
                return cipher[0] if cipher else ""
        except ssl.SSLError:
            return ""


@pytest.mark.parametrize("host", HOSTS)
def test_port_25_stays_opportunistic_while_submission_refuses_cbc(
    mail_fleet: MailFleet, host: str
) -> None:
    assert _handshake(mail_fleet, host, 25, CBC_SUITE) == CBC_SUITE, (
        f"{host}:25 refuses {CBC_SUITE}: an old MTA would fall back to plaintext")
    for port in (587, 465, 993, 4190):
        assert _handshake(mail_fleet, host, port, CBC_SUITE) == "", (
            f"{host}:{port} agreed to {CBC_SUITE}")
