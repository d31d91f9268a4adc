"""The ``dns`` probe: acquire the report of one server, judge it by its worst finding."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.dns.dkim import check_alignment, check_dkim_domain
from mailfleet.checks.dns.dmarc import check_dmarc
from mailfleet.checks.dns.dnsbl import check_dnsbl, valid_zone
from mailfleet.checks.dns.hosts import check_a, check_mx, check_ptr
from mailfleet.checks.dns.lookups import Resolvers, bare_name, canon_ip, is_ip, parse_resolver
from mailfleet.checks.dns.report import ERROR, OK, WARNING, DnsReport
from mailfleet.checks.dns.spf_policy import check_spf
from mailfleet.checks.dns.tlsa import check_tlsa, tlsa_fetcher
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import CertInfo
from mailfleet.checks.values import Values, declared

CHECK = "dns"
# Each with its <concern>_ok value from the findings (dnsbl_ok apart: see acquire).
CONCERNS = ("mx", "a", "ptr", "fcrdns", "spf", "dmarc", "dkim", "tlsa")


@declared
@dataclass(frozen=True)
class DnsValues(Values):
    """What ``dns`` found: one finding per record looked at, and a verdict per concern.

    ``findings`` holds ``Finding.to_dict()`` mappings (check, subject, status,
    message, seen, expected, resolvers, reason). A ``*_ok`` value is None when the
    concern was not looked at, false when it has an error finding: for ``spf_ok``
    an invalid record (permerror) or none that could be evaluated (temperror); an
    SPF that does not authorise the host (fail, softfail, neutral) is a warning.
    """

    resolvers: Sequence[str] = ()
    findings: Sequence[Mapping[str, Any]] = ()  # Finding.to_dict
    mx_ok: bool | None = None
    a_ok: bool | None = None
    ptr_ok: bool | None = None
    fcrdns_ok: bool | None = None
    spf_ok: bool | None = None
    dmarc_ok: bool | None = None
    dkim_ok: bool | None = None
    tlsa_ok: bool | None = None
    dnsbl_ok: bool | None = None  # on none of the lists that answered (None: none answered)
    rdns_ok: bool | None = None  # PTR set and forward-confirmed


@dataclass(frozen=True)
class DkimSpec:
    """What the host signs with: selectors, retired selectors, record name -> p= value.

    ``keyless_pending``: ``keys`` is every key on the host (the deploy preflight
    read them there), so a selector with no key is one this deploy will make;
    ``updated``: the deploy publishes the records by DNS update.
    """

    selectors: Sequence[str] = ()
    retired: Sequence[str] = ()
    keys: Mapping[str, str] = field(default_factory=dict)
    keyless_pending: bool = False
    updated: bool = False  # the deployment publishes the records by DNS update

    @classmethod
    def of(cls, options: ProbeOptions) -> DkimSpec | None:
        if not options.dns_dkim_selectors and not options.dns_dkim_retired_selectors:
            return None
        keys = {}
        for entry in options.dns_dkim_keys:
            name, eq, value = entry.partition("=")
            if not eq or "._domainkey." not in name:
                raise ProbeFailure(
                    f"dns_dkim_keys entry {entry[:60]!r} is not SELECTOR._domainkey.DOMAIN=KEY",
                    Status.UNKNOWN, Reason.NOT_CONFIGURED)
            keys[bare_name(name)] = value
        return cls(options.dns_dkim_selectors, options.dns_dkim_retired_selectors, keys)


def dns_report(
    res: Resolvers,
    domains: Iterable[str],
    mx_host: str,
    addresses: Iterable[str],
    tlsa: Sequence[tuple[str, Callable[[], list[CertInfo]]]] = (),
    dkim: DkimSpec | None = None,
    blocklists: Sequence[str] = (),
) -> DnsReport:
    """All findings for one server: its domains, its name and its addresses."""
    report = DnsReport()
    mx_host = bare_name(mx_host)
    addrs = {canon_ip(a) for a in addresses}
    if not addrs:
        found, _ = res.addresses(mx_host)
        addrs = found
    domain_list = [bare_name(d) for d in domains]
    for domain in domain_list:
        check_mx(res, report, domain, mx_host, addrs)
    check_a(res, report, mx_host, addrs)
    for address in sorted(addrs):
        check_ptr(res, report, address, mx_host)
    for domain in domain_list:
        check_spf(res, report, domain, addrs, mx_host)
        if dkim is not None:
            check_dkim_domain(res, report, domain, dkim.selectors, dkim.retired, dkim.keys,
                              dkim.keyless_pending, dkim.updated)
        check_dmarc(res, report, domain)
        check_alignment(report, domain, dkim is not None and bool(dkim.selectors))
    for owner, fetch in tlsa:
        check_tlsa(res, report, owner, fetch)
    for zone in blocklists:
        for address in sorted(addrs):
            check_dnsbl(res, report, address, zone)
    return report


def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    try:
        addresses = [parse_resolver(r) for r in options.dns_resolvers]
    except ValueError as exc:
        raise ProbeFailure(str(exc), Status.UNKNOWN, Reason.NOT_CONFIGURED) from None
    dkim = DkimSpec.of(options)
    bad = [z for z in options.dns_blocklists if not valid_zone(z)]
    if bad:
        raise ProbeFailure(f"dns_blocklists: {bad[0][:80]!r} is not a block list's zone name "
                           "(write its DNS zone, e.g. zen.spamhaus.org)",
                           Status.UNKNOWN, Reason.NOT_CONFIGURED)
    res = Resolvers(addresses, deadline, options.dns_attempts)
    tlsa = [
        (f"_{target.port(s)}._tcp.{bare_name(target.mail_hostname)}",
         tlsa_fetcher(target, s, deadline))
        for s in options.dns_tlsa_services
    ]
    with acq.measure("dns"):
        report = dns_report(res, target.domains, target.mail_hostname,
                            [target.address] if is_ip(target.address) else [], tlsa, dkim,
                            options.dns_blocklists)
    values = DnsValues.key
    acq.values[values.resolvers] = res.labels
    acq.values[values.findings] = [f.to_dict() for f in report.findings]
    for check in CONCERNS:
        acq.values[getattr(values, f"{check}_ok")] = report.ok(check)
    # A list that refused or did not answer says nothing either way: dnsbl_ok is known
    # only from lists that answered.
    answered = [f for f in report.findings if f.check == "dnsbl" and f.status != WARNING]
    acq.values[values.dnsbl_ok] = (all(f.status == OK for f in answered) if answered
                                   else None)
    ptr, fc = report.ok("ptr"), report.ok("fcrdns")
    acq.values[values.rdns_ok] = (None if ptr is None and fc is None
                                  else bool(ptr) and fc is not False)


def judge(values: dict[str, Any]) -> Verdict:
    """Every problem in words, worst first; the reason is that of the first worst finding."""
    findings = DnsValues.of(values).findings
    for status, level in ((Status.CRITICAL, ERROR), (Status.WARNING, WARNING)):
        worst = [f for f in findings if f["status"] == level]
        if worst:
            reason = Reason(worst[0].get("reason") or Reason.DNS_RECORD)
            return Verdict(status, "; ".join(f["message"] for f in worst), reason)
    return Verdict(Status.OK)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, options, deadline, acq), judge)
