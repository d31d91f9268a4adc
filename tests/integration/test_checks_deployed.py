"""The probes, ``mailfleet probe`` and the DNS preflight against the stack the roles deployed.

Uses the session's ``mail_fleet`` (playbooks/site.yml converged on the lab):
real Postfix and Dovecot, the lab CA, the lab users, the lab's knot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from mailfleet.checks import PROBES, Credentials, Deadline, ProbeOptions, Secret, Status, Target
from mailfleet.checks.result import ProbeResult
from mailfleet.cli import main
from mailfleet.lab.hosts import LabHost
from tests.integration.conftest import MailFleet, run_playbook

pytestmark = pytest.mark.lab


def target(fleet: MailFleet, h: LabHost, password: str | None = None) -> Target:
    user = fleet.user(h.name, "alice")
    return Target(name=h.name, address=h.address, mail_hostname=h.fqdn,
                  domains=(h.mail_domain,), ca_bundle=fleet.ca_bundle,
                  credentials=Credentials(user.address, Secret(password or user.password)))


def probe(check: str, t: Target, **options: object) -> ProbeResult:
    # 20 s: Dovecot's auth penalty slows logins from an address after failures.
    return PROBES[check](t, ProbeOptions(**options), Deadline(20))  # type: ignore[arg-type]


def test_every_host_passes_port_tls_imap_smtp_and_dns(mail_fleet: MailFleet) -> None:
    gateway = mail_fleet.lab.config.gateway
    cases: list[tuple[str, dict[str, object]]] = [
        ("port", {}),
        ("tls", {"tls_service": "imaps"}),
        ("tls", {"tls_service": "smtp"}),
        ("tls", {"tls_service": "submission"}),
        ("tls", {"tls_service": "submissions"}),
        ("imap_login", {"mechanism": "PLAIN"}),
        ("imap_login", {"mechanism": "LOGIN"}),
        ("smtp", {}),
        ("smtp", {"smtp_service": "submission", "smtp_auth": True}),
        ("smtp", {"smtp_service": "submissions", "smtp_auth": True}),
        # the DKIM record the rspamd role published holds a key, and DMARC aligns
        ("dns", {"dns_resolvers": (gateway,), "dns_tlsa_services": (),
                 "dns_dkim_selectors": ("mail",)}),
    ]
    for h in mail_fleet.hosts:
        t = target(mail_fleet, h)
        for check, options in cases:
            result = probe(check, t, **options)
            assert result.status == Status.OK, (h.name, check, options, result.error)


def test_deployed_certificate_values(mail_fleet: MailFleet) -> None:
    h = mail_fleet.hosts[0]
    result = probe("tls", target(mail_fleet, h))
    v = result.values
    assert v["hostname_match"] and v["chain_verified"] and h.fqdn in v["cert_sans"]
    assert v["chain_earliest_not_after"] <= v["cert_not_after"]
    assert v["cert_days_left"] > 7


def test_smtp_banner_and_no_auth_before_tls(mail_fleet: MailFleet) -> None:
    h = mail_fleet.hosts[0]
    for service in ("smtp", "submission"):
        result = probe("smtp", target(mail_fleet, h), smtp_service=service)
        assert result.values["banner_hostname"] == h.fqdn
        assert result.values["starttls_offered"] is True
        assert result.values["auth_before_tls"] == [], service


def test_wrong_password_over_imap_and_submission(mail_fleet: MailFleet) -> None:
    h = mail_fleet.hosts[1]
    t = target(mail_fleet, h, password="wrong-lab-password")
    imap = probe("imap_login", t)
    assert imap.error == "PLAIN rejected: [AUTHENTICATIONFAILED] Authentication failed."
    smtp = probe("smtp", t, smtp_service="submission", smtp_auth=True)
    assert smtp.error.startswith("PLAIN rejected: 535 5.7.8 Error: authentication failed")
    for r in (imap, smtp):
        assert "wrong-lab-password" not in json.dumps(r.to_dict())


def test_quota_is_reported_or_said_to_be_unsupported(mail_fleet: MailFleet) -> None:
    result = probe("quota", target(mail_fleet, mail_fleet.hosts[0]))
    if result.status == Status.UNKNOWN:
        assert result.error == "server does not support QUOTA (no QUOTA capability)"
    else:
        assert result.status == Status.OK, result.error
        assert "storage_used_bytes" in result.values or result.error


def test_long_oauth_token_through_postfix_submission(mail_fleet: MailFleet) -> None:
    """roundcube#8623: a 3 KB JWT must go after the 334, not on the AUTH line."""
    h = mail_fleet.hosts[0]
    offered = probe("smtp", target(mail_fleet, h), smtp_service="submission")
    if "OAUTHBEARER" not in offered.values.get("auth_after_tls", []):
        pytest.skip("the deployed stack does not offer OAUTHBEARER on 587 (no oauth2 passdb)")
    token = "x" * 3000  # refused, but only after the server has read it whole
    t = Target(name=h.name, address=h.address, mail_hostname=h.fqdn,
               ca_bundle=mail_fleet.ca_bundle,
               credentials=Credentials(f"alice@{h.mail_domain}", token=Secret(token)))
    result = probe("smtp", t, smtp_service="submission", smtp_auth=True, mechanism="OAUTHBEARER")
    assert "Line too long" not in result.error


@pytest.fixture()
def probe_vars(mail_fleet: MailFleet, tmp_path: Path) -> Path:
    """A second inventory source: probe account, CA bundle and the lab's resolver."""
    hosts = {
        h.name: {
            "mailfleet_probe_user": mail_fleet.user(h.name, "alice").address,
            "mailfleet_probe_password": mail_fleet.user(h.name, "alice").password,
            "mailfleet_ca_bundle": str(mail_fleet.ca_bundle),
            "mailfleet_probe_options": {"dns_resolvers": [mail_fleet.lab.config.gateway],
                                        "dns_tlsa_services": []},
            "mailfleet_checks": ["port", "tls", "imap_login", "smtp", "dns"],
        }
        for h in mail_fleet.hosts
    }
    path = tmp_path / "probe.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": hosts}}}}))
    return path


def test_mailfleet_probe_over_the_lab_inventory(mail_fleet: MailFleet, probe_vars: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["probe", "-i", str(mail_fleet.inventory), "-i", str(probe_vars),
                 "--format", "json"])
    results = json.loads(capsys.readouterr().out)
    assert {(r["target"], r["status"]) for r in results} == {
        (h.name, "ok") for h in mail_fleet.hosts}
    assert len(results) == 5 * len(mail_fleet.hosts)
    assert code == 0
    for h in mail_fleet.hosts:
        assert mail_fleet.user(h.name, "alice").password not in json.dumps(results)
    code = main(["probe", "-i", str(mail_fleet.inventory), "-i", str(probe_vars),
                 "--format", "nagios", "--check", "tls,imap_login,smtp"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"MAILFLEET OK - {3 * len(mail_fleet.hosts)} ok | "), out
    # Each line says what the check saw on the deployed servers.
    for h in mail_fleet.hosts:
        user = mail_fleet.user(h.name, "alice").address
        seen = [line for line in out.splitlines()[1:] if line.startswith(f"{h.name}: ")]
        assert len(seen) == 3, out
        assert re.fullmatch(rf"{h.name}: TLS OK - TLSv1\.3, CN={re.escape(h.fqdn)}, \d+ days? "
                            r"left \(\d{4}-\d\d-\d\d\)", seen[0]), seen
        assert re.fullmatch(rf"{h.name}: IMAP login OK - PLAIN as {re.escape(user)} in \d+ ms",
                            seen[1]), seen
        assert re.fullmatch(rf"{h.name}: SMTP OK - smtp 25: {re.escape(h.fqdn)}, STARTTLS to "
                            r"TLSv1\.3, in \d+ ms", seen[2]), seen
    assert re.search(rf"'{mail_fleet.hosts[0].name} tls days left'=[0-9.]+;30:;14:", out), out


def test_dns_preflight_passes_on_the_lab_and_stops_a_misnamed_host(mail_fleet: MailFleet
                                                                  ) -> None:
    # No resolver given: in a lab inventory the role asks the lab's DNS by default.
    ok = run_playbook(mail_fleet.inventory, "playbooks/dns_check.yml")
    assert ok.returncode == 0, ok.output[-3000:]
    h = mail_fleet.hosts[1]
    bad = run_playbook(mail_fleet.inventory, "playbooks/dns_check.yml", ["--limit", h.name],
                       extra_vars={"mail_hostname": "mx9.lab.test"})
    assert bad.returncode == 2
    assert f"PTR of {h.address} is {h.fqdn}, expected mx9.lab.test" in bad.output
    assert "DNS of mx9.lab.test is wrong:" in bad.output
