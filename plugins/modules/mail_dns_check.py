#!/usr/bin/python
"""Ansible module mailfleet.mail.mail_dns_check: a mail server's DNS, from mailfleet.checks.dns."""

from __future__ import annotations

import ipaddress

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: mail_dns_check
short_description: Check MX, A/AAAA, PTR, FCrDNS, SPF, DKIM, DMARC and TLSA of a mail server
description:
  - Runs mailfleet's C(checks.dns) on the controller and returns one finding per
    record (ok, warning or error, with what was seen and what was expected).
  - Never changes anything; never fails by itself (the role decides).
  - Needs the C(mailfleet) Python package in the interpreter that runs it
    (the role uses C(ansible_playbook_python)).
options:
  domains:
    description: Mail domains whose MX must point at I(mx_host).
    type: list
    elements: str
    default: []
  mx_host:
    description: The server's name (HELO name, expected PTR).
    type: str
    required: true
  addresses:
    description: The server's addresses; entries that are not IP addresses are ignored;
      when none is left, the A/AAAA records of I(mx_host) are used.
    type: list
    elements: str
    default: []
  resolvers:
    description: Resolvers to ask (C(ADDR) or C(ADDR:PORT)), each one; empty is the system's.
    type: list
    elements: str
    default: []
  tlsa_services:
    description: Compare TLSA records with the certificate served on these services
      (C(smtp), C(imaps), C(submissions)); needs an address.
    type: list
    elements: str
    default: []
  dkim_selectors:
    description: DKIM selectors the host signs with, checked for every domain in I(domains).
    type: list
    elements: str
    default: []
  dkim_retired_selectors:
    description: Retired selectors whose records stay published (missing is a warning).
    type: list
    elements: str
    default: []
  dkim_keys:
    description: Every DKIM key on the host, record name (C(SELECTOR._domainkey.DOMAIN)) to
      its C(p=) value; the record must hold that key. A selector with no key here is one
      this deployment makes, so its missing record is a warning.
    type: dict
    default: {}
  dkim_published_by_update:
    description: The deployment publishes the DKIM records by DNS update, so a missing or
      outdated record is a warning (it is set right in the same run).
    type: bool
    default: false
  timeout:
    description: Seconds for the whole check.
    type: float
    default: 10.0
author: mailfleet developers
"""

EXAMPLES = r"""
- name: Check the DNS of mx1.
  mailfleet.mail.mail_dns_check:
    domains: [example1.test]
    mx_host: mx1.lab.test
    addresses: [10.77.0.11]
    resolvers: [10.77.0.1]
  delegate_to: localhost
"""

RETURN = r"""
status:
  description: ok, warning or critical (the worst finding).
  type: str
  returned: always
findings:
  description: Every finding (check, subject, status, message, seen, expected, resolvers).
  type: list
  elements: dict
  returned: always
problems:
  description: The findings that are not ok.
  type: list
  elements: dict
  returned: always
table:
  description: The problems as a text table (empty when there are none).
  type: str
  returned: always
"""


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def main():
    module = AnsibleModule(
        argument_spec={
            "domains": {"type": "list", "elements": "str", "default": []},
            "mx_host": {"type": "str", "required": True},
            "addresses": {"type": "list", "elements": "str", "default": []},
            "resolvers": {"type": "list", "elements": "str", "default": []},
            "tlsa_services": {"type": "list", "elements": "str", "default": []},
            "dkim_selectors": {"type": "list", "elements": "str", "default": []},
            "dkim_retired_selectors": {"type": "list", "elements": "str", "default": []},
            "dkim_keys": {"type": "dict", "default": {}},
            "dkim_published_by_update": {"type": "bool", "default": False},
            "timeout": {"type": "float", "default": 10.0},
        },
        supports_check_mode=True,
    )
    try:
        from mailfleet.checks.dns import (
            DkimSpec,
            Resolvers,
            dns_report,
            format_table,
            parse_resolver,
            tlsa_fetcher,
        )
        from mailfleet.checks.target import Deadline, Target
    except ImportError as exc:
        module.fail_json(
            msg="mail_dns_check needs the mailfleet Python package on the controller "
            f"(run the playbook with the project's venv): {exc}"
        )
    p = module.params
    try:
        resolvers = [parse_resolver(r) for r in p["resolvers"]]
        deadline = Deadline(p["timeout"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    addresses = [a for a in p["addresses"] if _is_ip(str(a))]
    tlsa = []
    if p["tlsa_services"] and addresses:
        target = Target(name=p["mx_host"], address=addresses[0], mail_hostname=p["mx_host"])
        for service in p["tlsa_services"]:
            if service not in target.ports:
                module.fail_json(msg=f"unknown TLSA service {service!r}")
            owner = f"_{target.port(service)}._tcp.{p['mx_host'].rstrip('.').lower()}"
            tlsa.append((owner, tlsa_fetcher(target, service, deadline)))
    res = Resolvers(resolvers, deadline)
    dkim = None
    if p["dkim_selectors"] or p["dkim_retired_selectors"]:
        dkim = DkimSpec(p["dkim_selectors"], p["dkim_retired_selectors"],
                        {k.rstrip(".").lower(): str(v) for k, v in p["dkim_keys"].items()},
                        keyless_pending=True, updated=p["dkim_published_by_update"])
    report = dns_report(res, p["domains"], p["mx_host"], addresses, tlsa, dkim)
    findings = [f.to_dict() for f in report.findings]
    problems = [f for f in report.findings if f.status != "ok"]
    module.exit_json(
        changed=False,
        status=report.status.label,
        resolvers=res.labels,
        findings=findings,
        problems=[f.to_dict() for f in problems],
        table=format_table(problems) if problems else "",
    )


if __name__ == "__main__":
    main()
