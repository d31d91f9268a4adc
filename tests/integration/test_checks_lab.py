"""The probes against a real Dovecot 2.3 on a lab host, hostile servers, and the lab's DNS.

mx1 runs a private Dovecot instance on ports 10993/10143 (tests/checks/labmail.py;
the host's own mail stack, if the roles deployed one, is left alone); mx2
runs, for a moment each, hostile servers. Every failure's error text is
asserted. The deployed stack (Postfix too) is probed in test_checks_deployed.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailfleet.checks import PROBES, Credentials, Deadline, ProbeOptions, Secret, Status, Target
from mailfleet.checks.result import ProbeResult
from mailfleet.lab.dns import DNSBL_ZONE, dnsbl_addresses
from mailfleet.lab.fleet import Lab, LabHost
from tests.checks.labmail import (
    IMAP_PORT,
    IMAPS_PORT,
    PASSWORD,
    QUOTA_KIB,
    USER,
    MailHost,
    setup_mail_host,
    start_hostile,
    stop_hostile,
    stop_mail_host,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def mail(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailHost]:
    host = lab.hosts()[0]
    mail = setup_mail_host(lab, host, tmp_path_factory.mktemp("labmail"))
    yield mail
    stop_mail_host(lab, host)


@pytest.fixture(scope="module")
def idle_host(lab: Lab) -> LabHost:
    lab.require_up()
    return lab.hosts()[1]


def target(mail: MailHost, name: str | None = None, **creds: object) -> Target:
    h = mail.host
    credentials = Credentials(user=str(creds.get("user", USER)),
                              password=Secret(str(creds.get("password", PASSWORD))),
                              token=Secret(str(creds["token"])) if "token" in creds else None,
                              token_file=creds.get("token_file"))  # type: ignore[arg-type]
    return Target(name=h.name, address=h.address, mail_hostname=name or h.fqdn,
                  domains=(h.mail_domain,), ca_bundle=mail.ca_bundle, credentials=credentials,
                  ports={"imaps": IMAPS_PORT, "imap": IMAP_PORT})


def probe(check: str, t: Target, budget: float = 20, **options: object) -> ProbeResult:
    # 20 s: Dovecot delays logins from an address after failed ones (auth
    # penalty, up to 15 s), and the wrong-password tests come from here too.
    start = time.monotonic()
    result = PROBES[check](t, ProbeOptions(**options), Deadline(budget))  # type: ignore[arg-type]
    assert time.monotonic() - start < budget + 0.5
    return result


# -- port ----------------------------------------------------------------------
def test_port_open_and_closed(mail: MailHost, idle_host: LabHost) -> None:
    assert probe("port", target(mail)).status == Status.OK
    closed = Target(name=idle_host.name, address=idle_host.address, ports={"imaps": 10994})
    for check in ("port", "tls", "imap_login", "smtp"):
        t = replace(closed, ports={s: 10994 for s in ("imaps", "imap", "smtp")},
                    credentials=Credentials(USER, Secret(PASSWORD)))
        result = probe(check, t)
        assert result.error == f"{idle_host.address}:10994: connection refused", check


# -- tls -------------------------------------------------------------------------
def test_tls_good_certificate_implicit_and_starttls(mail: MailHost) -> None:
    for service in ("imaps", "imap"):
        result = probe("tls", target(mail), tls_service=service)
        assert result.status == Status.OK, (service, result.error)
        assert result.values["tls_version"] == "TLSv1.3"
        assert result.values["hostname_match"] and result.values["chain_verified"]


def test_tls_expired_certificate(mail: MailHost) -> None:
    name = f"expired.{mail.host.fqdn}"
    result = probe("tls", target(mail, name))
    assert result.status == Status.CRITICAL
    assert result.error.startswith(f"certificate for {name} expired 3 days ago (not after ")
    assert result.values["cert_not_after"] < time.time() - 3 * 86400


def test_tls_wrong_hostname(mail: MailHost) -> None:
    name = f"wrongname.{mail.host.fqdn}"
    result = probe("tls", target(mail, name))
    assert result.error == f"certificate is for elsewhere.lab.test, not {name}"


def test_tls_untrusted_ca(mail: MailHost) -> None:
    name = f"untrusted.{mail.host.fqdn}"
    result = probe("tls", target(mail, name))
    assert result.error == (f"certificate chain for {name} is not trusted by {mail.ca_bundle}: "
                            "unable to get local issuer certificate")


# -- imap_login --------------------------------------------------------------------
@pytest.mark.parametrize(("service", "mechanism"), [
    ("imaps", "PLAIN"), ("imaps", "LOGIN"), ("imap", "PLAIN"), ("imap", "LOGIN")])
def test_imap_login_works(mail: MailHost, service: str, mechanism: str) -> None:
    result = probe("imap_login", target(mail), imap_service=service, mechanism=mechanism)
    assert result.status == Status.OK, result.error
    assert result.values["logged_in"] is True
    assert "AUTH=PLAIN" in result.values["capabilities"]
    assert {"connect", "tls", "greeting", "auth", "total"} <= set(result.phases)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_imap_wrong_password(mail: MailHost, mechanism: str) -> None:
    result = probe("imap_login", target(mail, password="not-the-password"),
                   mechanism=mechanism)
    assert result.status == Status.CRITICAL
    assert result.error == (f"{mechanism} rejected: [AUTHENTICATIONFAILED] "
                            "Authentication failed.")
    text = json.dumps(result.to_dict()) + repr(result)
    assert "not-the-password" not in text and PASSWORD not in text


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_oauth2_token_from_a_file(mail: MailHost, mechanism: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(mail.token() + "\n")
    result = probe("imap_login", target(mail, token_file=token_file), mechanism=mechanism)
    assert result.status == Status.OK, result.error
    assert mail.token() not in json.dumps(result.to_dict())


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_imap_oauth2_bad_token(mail: MailHost, mechanism: str) -> None:
    forged = mail.token(key=b"k" * 32)
    result = probe("imap_login", target(mail, token=forged), mechanism=mechanism)
    assert result.status == Status.CRITICAL
    assert result.error.startswith(f"{mechanism} rejected: [AUTHENTICATIONFAILED]")
    assert forged not in json.dumps(result.to_dict())


def test_imap_oauthbearer_with_a_long_token(mail: MailHost) -> None:
    """A 3-4 KB JWT goes in a continuation, not on the command line."""
    token = mail.token(pad=3000)
    assert len(token) > 3000
    result = probe("imap_login", target(mail, token=token), mechanism="OAUTHBEARER")
    assert result.status == Status.OK, result.error


# -- quota -------------------------------------------------------------------------
def test_quota_of_the_probe_account(mail: MailHost) -> None:
    result = probe("quota", target(mail))
    assert result.status == Status.OK, result.error
    assert result.values["storage_limit_bytes"] == QUOTA_KIB * 1024
    assert result.values["storage_used_bytes"] >= 0
    assert result.values["quota_roots"] == ["User quota"]


# -- hostile servers on a lab host ---------------------------------------------------
@pytest.mark.parametrize(("kind", "check", "options", "error"), [
    ("tarpit", "imap_login", {"imap_service": "imap"}, "no greeting within 2.0 s"),
    ("tarpit", "smtp", {}, "no greeting within 2.0 s"),
    ("tarpit", "tls", {}, "TLS handshake did not finish within 2.0 s"),
    ("garbage", "imap_login", {"imap_service": "imap"},
     "not an IMAP greeting: 'SSH-2.0-OpenSSH_9.2p1 Debian-2'"),
    ("garbage", "smtp", {}, "not an SMTP reply to greeting: 'SSH-2.0-OpenSSH_9.2p1 Debian-2'"),
    ("stalltls", "tls", {}, "TLS handshake did not finish within 2.0 s"),
    ("stalltls", "imap_login", {}, "TLS handshake did not finish within 2.0 s"),
])
def test_hostile_servers(lab: Lab, idle_host: LabHost, kind: str, check: str,
                         options: dict[str, object], error: str) -> None:
    port = 10993
    pid = start_hostile(lab, idle_host, kind, port)
    try:
        t = Target(name=idle_host.name, address=idle_host.address, mail_hostname=idle_host.fqdn,
                   ports={s: port for s in ("imaps", "imap", "smtp")},
                   credentials=Credentials(USER, Secret(PASSWORD)))
        result = probe(check, t, budget=2.0, **options)
    finally:
        stop_hostile(lab, idle_host, pid)
    assert result.status == Status.CRITICAL
    assert result.error == error


# -- dns through the lab's DNS server -------------------------------------------------
def test_dns_of_the_lab_hosts(lab: Lab) -> None:
    """Every record right, and no host on the lab's block list."""
    for h in lab.hosts():
        t = Target(name=h.name, address=h.address, mail_hostname=h.fqdn,
                   domains=(h.mail_domain,))
        result = probe("dns", t, dns_resolvers=(lab.config.gateway,), dns_tlsa_services=(),
                       dns_blocklists=(DNSBL_ZONE,))
        assert result.status == Status.OK, result.error
        assert result.values["mx_ok"] and result.values["rdns_ok"]
        assert result.values["dnsbl_ok"] is True


def test_dns_of_a_host_with_the_wrong_name(lab: Lab) -> None:
    h = lab.hosts()[1]
    t = Target(name=h.name, address=h.address, mail_hostname="mx9.lab.test")
    result = probe("dns", t, dns_resolvers=(lab.config.gateway,), dns_tlsa_services=())
    assert f"PTR of {h.address} is {h.fqdn}, expected mx9.lab.test" in result.error


def test_dns_block_list_of_the_lab(lab: Lab) -> None:
    """The lab's DNS serves a block list (dnsbl.test; the fleet is not on it: above): its
    .250 address is listed, and for .251 the list answers 127.255.255.254, a refused
    query that must never read as a listing."""
    listed, refused = dnsbl_addresses(lab.config)
    options = {"dns_resolvers": (lab.config.gateway,), "dns_tlsa_services": (),
               "dns_blocklists": (DNSBL_ZONE,)}
    h = lab.hosts()[0]
    on_list = probe("dns", Target(name="listed", address=listed, mail_hostname=h.fqdn),
                    **options)
    assert on_list.values["dnsbl_ok"] is False
    assert f"{listed} is listed on {DNSBL_ZONE} (127.0.0.2)" in on_list.error
    asked_wrong = probe("dns", Target(name="refused", address=refused, mail_hostname=h.fqdn),
                        **options)
    assert asked_wrong.values["dnsbl_ok"] is None
    assert "is listed" not in asked_wrong.error


# -- site.yml: the DNS preflight stops a host before anything touches it ------------------
def test_site_yml_never_touches_a_host_whose_dns_is_wrong(lab: Lab) -> None:
    from tests.integration.conftest import run_playbook

    lab.require_up()
    h = lab.hosts()[1]
    run = run_playbook(lab.config.inventory_path, "playbooks/site.yml", ["--limit", h.name],
                       extra_vars={"mail_hostname": "mx9.lab.test"}, timeout=300)
    assert run.returncode == 2, run.output[-3000:]
    assert f"PTR of {h.address} is {h.fqdn}, expected mx9.lab.test" in run.output
    assert "TASK [mail_tls" not in run.output and "TASK [postfix" not in run.output
    assert run.recap()[h.name]["failed"] == 1
