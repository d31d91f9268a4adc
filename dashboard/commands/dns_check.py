"""``mailfleet dns-check``: MX, A/AAAA, PTR, forward-confirmed rDNS, SPF, DMARC (and TLSA).

Used by hand and by roles/mail_dns_check (through ``checks.dns`` directly).
Exit 0 ok, 1 warning, 2 error, 3 could not check.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from mailfleet.checks import Deadline, Status, Target
from mailfleet.checks.dns import Resolvers, dns_report, format_table, parse_resolver, tlsa_fetcher


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dns-check",
        help="check the DNS of a mail domain and its MX host (MX, PTR, FCrDNS, SPF, DMARC)",
        description="Check that DOMAIN's MX points at --mx-host, that the host's addresses "
        "have a PTR naming it which resolves back, that DOMAIN's SPF is valid and authorises "
        "those addresses (include: and redirect= followed, RFC 7208 limits), and that DMARC "
        "parses.",
    )
    p.add_argument("domain", nargs="+", metavar="DOMAIN", help="mail domain(s)")
    p.add_argument("--mx-host", required=True, metavar="NAME",
                   help="the server's host name (its HELO name, mail_hostname)")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR",
                   help="the server's address (repeatable; default: A/AAAA of --mx-host)")
    p.add_argument("--resolver", action="append", default=[], metavar="ADDR[:PORT]",
                   help="ask this resolver (repeatable: each is asked, disagreements shown); "
                   "default: the system resolver")
    p.add_argument("--tlsa", default="", metavar="SERVICE,...",
                   help="compare TLSA records with the certificate served on these services "
                   "(smtp, imaps, submissions; connects to --ip)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        resolvers = [parse_resolver(r) for r in args.resolver]
        for ip in args.ip:
            ipaddress.ip_address(ip)
        deadline = Deadline(args.timeout)
    except ValueError as exc:
        print(f"mailfleet dns-check: {exc}", file=sys.stderr)
        return int(Status.UNKNOWN)
    services = [s.strip() for s in args.tlsa.split(",") if s.strip()]
    if services and not args.ip:
        print("mailfleet dns-check: --tlsa needs --ip (where to fetch the certificate)",
              file=sys.stderr)
        return int(Status.UNKNOWN)
    res = Resolvers(resolvers, deadline)
    tlsa = []
    if services:
        target = Target(name=args.mx_host, address=args.ip[0], mail_hostname=args.mx_host)
        for service in services:
            if service not in target.ports:
                print(f"mailfleet dns-check: unknown service {service!r}", file=sys.stderr)
                return int(Status.UNKNOWN)
            owner = f"_{target.port(service)}._tcp.{args.mx_host.rstrip('.').lower()}"
            tlsa.append((owner, tlsa_fetcher(target, service, deadline)))
    report = dns_report(res, args.domain, args.mx_host, args.ip, tlsa)
    if args.format == "json":
        print(json.dumps({
            "domains": args.domain,
            "mx_host": args.mx_host,
            "resolvers": res.labels,
            "status": report.status.label,
            "findings": [f.to_dict() for f in report.findings],
        }, indent=2))
    else:
        print(format_table(report.findings))
    return int(report.status)
