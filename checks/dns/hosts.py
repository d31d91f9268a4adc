"""The mail host's names: MX of each domain, A/AAAA of the host, PTR and forward-confirmed rDNS."""

from __future__ import annotations

import dns.reversename

from mailfleet.checks.dns.lookups import Lookup, Resolvers, bare_name, canon_ip
from mailfleet.checks.dns.report import ERROR, OK, DnsReport, flag_disagreement, no_answer
from mailfleet.checks.result import Reason


def _missing(lookups: list[Lookup]) -> Reason:
    """A name that does not exist is a different mistake from a name without the record."""
    return Reason.DNS_NXDOMAIN if all(lk.nxdomain for lk in lookups) else Reason.DNS_RECORD


def check_mx(res: Resolvers, report: DnsReport, domain: str, mx_host: str,
             addresses: set[str]) -> None:
    lk = res.ask(domain, "MX")
    expected = f"{mx_host} ({', '.join(sorted(addresses))})" if addresses else mx_host
    if not lk.answered:
        no_answer(report, "mx", domain, lk, f"MX {domain}")
        return
    flag_disagreement(report, "mx", domain, lk)
    exchanges = [r.split(" ", 1)[1] for r in lk.records if " " in r]
    if not exchanges:
        report.add("mx", domain, ERROR, f"no MX for {domain}, expected {mx_host}",
                   seen="none", expected=expected, resolvers=lk.who_said_what(),
                   reason=_missing([lk]))
        return
    if exchanges == ["."]:
        report.add("mx", domain, ERROR, f"{domain} has a null MX (it accepts no mail)",
                   seen="0 .", expected=expected)
        return
    seen_parts = []
    for host in exchanges:
        ips, _ = res.addresses(host)
        seen_parts.append(f"{host} ({', '.join(sorted(ips)) or 'no address'})")
        if bare_name(host) == bare_name(mx_host) or (addresses and ips & addresses):
            report.add("mx", domain, OK, f"MX of {domain} is {host}",
                       seen=", ".join(exchanges), expected=expected)
            return
    seen = ", ".join(seen_parts)
    report.add("mx", domain, ERROR, f"MX of {domain} is {seen}, expected {expected}",
               seen=seen, expected=expected, resolvers=lk.who_said_what())


def check_a(res: Resolvers, report: DnsReport, mx_host: str, addresses: set[str]) -> None:
    found, lookups = res.addresses(mx_host)
    for lk in lookups:
        flag_disagreement(report, "a", mx_host, lk)
    if not any(lk.answered for lk in lookups):
        no_answer(report, "a", mx_host, lookups[0], f"A/AAAA {mx_host}")
        return
    if not found:
        report.add("a", mx_host, ERROR, f"{mx_host} has no A/AAAA record",
                   seen="none", expected=", ".join(sorted(addresses)), reason=_missing(lookups))
        return
    missing = addresses - found
    if missing:
        seen = ", ".join(sorted(found))
        report.add("a", mx_host, ERROR,
                   f"A/AAAA of {mx_host} is {seen}, expected {', '.join(sorted(missing))}",
                   seen=seen, expected=", ".join(sorted(addresses)))
        return
    report.add("a", mx_host, OK, f"{mx_host} resolves to {', '.join(sorted(found))}",
               seen=", ".join(sorted(found)), expected=", ".join(sorted(addresses)))


def check_ptr(res: Resolvers, report: DnsReport, address: str, mx_host: str) -> None:
    rname = dns.reversename.from_address(address).to_text()
    lk = res.ask(rname, "PTR")
    expected = bare_name(mx_host)
    if not lk.answered:
        no_answer(report, "ptr", address, lk, f"PTR {address}")
        return
    flag_disagreement(report, "ptr", address, lk)
    names = list(lk.records)
    if not names:
        # The address exists whatever its reverse zone says: a missing PTR is a missing record.
        report.add("ptr", address, ERROR, f"no PTR for {address}, expected {expected}",
                   seen="none", expected=expected, resolvers=lk.who_said_what())
        return
    seen = ", ".join(names)
    if expected in names:
        report.add("ptr", address, OK, f"PTR of {address} is {expected}",
                   seen=seen, expected=expected)
    else:
        report.add("ptr", address, ERROR, f"PTR of {address} is {seen}, expected {expected}",
                   seen=seen, expected=expected, resolvers=lk.who_said_what())
    # Forward-confirmed: some PTR name must resolve back to the address.
    back: list[str] = []
    for name in names:
        ips, _ = res.addresses(name)
        if canon_ip(address) in ips:
            report.add("fcrdns", address, OK,
                       f"PTR {name} of {address} resolves back to it",
                       seen=", ".join(sorted(ips)), expected=address)
            return
        back.append(f"{name} -> {', '.join(sorted(ips)) or 'no address'}")
    report.add("fcrdns", address, ERROR,
               f"PTR of {address} ({seen}) does not resolve back to {address} "
               f"({'; '.join(back)})",
               seen="; ".join(back), expected=address)
