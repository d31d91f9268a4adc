"""A DKIM key rotation as an operator without DNS updates does it: the new selector's
record is printed, not published; the dns check and the deploy preflight say so, by
selector, until the record is in DNS; the host then signs with the new key."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import dkim
import pytest

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Status, Target
from tests.integration.conftest import MailFleet, PlaybookRun, run_playbook
from tests.integration.test_mail_auth import (
    _authentication_results,
    _lab_txt,
    _message,
    _update_txt,
)
from tests.integration.test_mail_stack import wait_for_subject

pytestmark = pytest.mark.lab

SELECTOR = "rotated"
RSPAMD_ONLY = """\
---
- name: rspamd alone (its keys, records and configuration)
  hosts: mailservers
  gather_facts: false
  roles:
    - role: rspamd
"""


def _rspamd(fleet: MailFleet, host: str, tmp_path: Path, **extra: object) -> PlaybookRun:
    play = tmp_path / "rspamd.yml"
    play.write_text(RSPAMD_ONLY)
    run = run_playbook(fleet.inventory, str(play), ["--limit", host], dict(extra))
    assert run.returncode == 0, run.output[-4000:]
    return run


def _dns_check(fleet: MailFleet, host: str, domain: str, address: str,
               fqdn: str) -> tuple[Status, str]:
    target = Target(name=host, address=address, mail_hostname=fqdn, domains=(domain,))
    options = ProbeOptions(dns_resolvers=(fleet.lab.config.gateway,), dns_tlsa_services=(),
                           dns_dkim_selectors=(SELECTOR,), dns_dkim_retired_selectors=("mail",))
    result = PROBES["dns"](target, options, Deadline(10))
    return result.status, result.error


def test_a_rotated_selector_is_critical_until_its_printed_record_is_published(
    mail_fleet: MailFleet, tmp_path: Path
) -> None:
    h = mail_fleet.hosts[0]
    domain = h.mail_domain
    name = f"{SELECTOR}._domainkey.{domain}"
    rotate = {"rspamd_dkim_selector": SELECTOR, "rspamd_dkim_retired_selectors": ["mail"],
              "rspamd_dkim_dns_update": {}}
    try:
        run = _rspamd(mail_fleet, h.name, tmp_path, **rotate)
        assert "Publish these records at your DNS provider." in run.output
        printed = re.search(rf"{re.escape(name)}\. IN TXT\s+((?:\"[^\"]+\"\s*)+)", run.output)
        assert printed, run.output[-3000:]

        status, error = _dns_check(mail_fleet, h.name, domain, h.address, h.fqdn)
        assert status == Status.CRITICAL
        assert f"selector the host signs with '{SELECTOR}' at {name}" in error, error
        # The deploy preflight reads the key on the host and refuses to go on without its record.
        pre = run_playbook(mail_fleet.inventory, "playbooks/dns_check.yml", ["--limit", h.name],
                           rotate)
        assert pre.returncode == 2, pre.output[-3000:]
        assert f"no DKIM record for the selector the host signs with '{SELECTOR}'" in pre.output

        # The operator publishes the record as printed: 255-byte strings of one TXT record.
        strings = re.findall(r'"([^"]*)"', printed.group(1))  # the output wraps between them
        assert len(strings) == 2 and len(strings[0]) == 255, strings
        _update_txt(mail_fleet, domain, SELECTOR + "._domainkey",
                    " ".join(f'"{s}"' for s in strings))
        status, error = _dns_check(mail_fleet, h.name, domain, h.address, h.fqdn)
        assert status == Status.OK, error
        pre = run_playbook(mail_fleet.inventory, "playbooks/dns_check.yml", ["--limit", h.name],
                           rotate)
        assert pre.returncode == 0, pre.output[-3000:]

        # and the host's mail is signed with the new key: the receiver and dkimpy agree
        sender, receiver = mail_fleet.user(h.name), mail_fleet.user(mail_fleet.hosts[1].name)
        subject = f"rotated {uuid.uuid4()}"
        with mail_fleet.smtps(h.name) as smtp:
            smtp.login(sender.address, sender.password)
            smtp.send_message(_message(sender.address, receiver.address, subject))
        raw = wait_for_subject(mail_fleet, receiver, subject)
        results = _authentication_results(raw, mail_fleet.hosts[1].fqdn)
        assert f"dkim=pass header.d={domain} header.s={SELECTOR}" in results, results
        assert dkim.verify(raw, dnsfunc=lambda n, timeout=5: _lab_txt(mail_fleet, n))
    finally:
        _rspamd(mail_fleet, h.name, tmp_path)
        _update_txt(mail_fleet, domain, SELECTOR + "._domainkey", None)
