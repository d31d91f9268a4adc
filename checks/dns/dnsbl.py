"""DNS block lists (RFC 5782): is the server's address on a list receivers consult?

A list is asked for the reversed address under its zone (``4.3.2.1.zen.example`` for
1.2.3.4, nibbles for IPv6). NXDOMAIN: not listed. An A record from 127.0.0.2 on in
127.0.0.0/8: listed, and the TXT record says why. Answers in 127.255.255.0/24 are the
list refusing the query (Spamhaus: .254 asked through a public or open resolver, .255
too many queries, .252 a typo in the zone name): they say nothing about the address,
so they are "unknown", never "listed" (misreading them has flagged healthy hosts
elsewhere). An answer outside 127.0.0.0/8 (a lapsed list domain answering everything)
or 127.0.0.1 (RFC 5782 reserves it) is unknown too.

Findings: ``error`` when listed (the dns check goes CRITICAL, ``dnsbl_ok`` false), a
``warning`` when the list refused or did not answer (fix the resolver, not the host),
``ok`` when not listed.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name
import dns.reversename

from mailfleet.checks.dns.lookups import Resolvers, bare_name
from mailfleet.checks.dns.report import ERROR, OK, WARNING, DnsReport
from mailfleet.checks.result import Reason

LISTED = ipaddress.ip_network("127.0.0.0/8")
REFUSED = ipaddress.ip_network("127.255.255.0/24")
RESERVED = ipaddress.ip_address("127.0.0.1")


def valid_zone(zone: str) -> bool:
    """A list's zone: a DNS name of at least two labels, no wildcard, no address."""
    name = bare_name(zone)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return False
    try:
        labels = dns.name.from_text(name).labels
    except dns.exception.DNSException:
        return False
    return len(labels) >= 3 and all(
        lbl and lbl != b"*" and all(chr(c).isalnum() or chr(c) in "-_" for c in lbl)
        for lbl in labels[:-1]
    )


def query_name(address: str, zone: str) -> str:
    """``1.2.3.4`` on ``zen.example`` -> ``4.3.2.1.zen.example`` (nibbles for IPv6)."""
    reverse = dns.reversename.from_address(address)
    labels = [lbl.decode() for lbl in reverse.labels[:-3]]  # drop in-addr|ip6, arpa, root
    return ".".join([*labels, bare_name(zone)])


def _kind(record: str) -> str:
    """listed | refused | bogus, for one A record of a list's answer."""
    try:
        ip = ipaddress.ip_address(record)
    except ValueError:
        return "bogus"
    if ip in REFUSED:
        return "refused"
    if ip in LISTED and ip != RESERVED:
        return "listed"
    return "bogus"


def check_dnsbl(res: Resolvers, report: DnsReport, address: str, zone: str) -> None:
    zone = bare_name(zone)
    subject = f"{address} on {zone}"
    name = query_name(address, zone)
    lk = res.ask(name, "A")
    if not lk.answered:
        report.add("dnsbl", subject, WARNING,
                   f"unknown whether {address} is on {zone}: {lk.failure()}",
                   resolvers=lk.who_said_what(), reason=lk.failure_reason())
        return
    if not lk.records:  # NXDOMAIN (or no A record): not listed
        report.add("dnsbl", subject, OK, f"{address} is not on {zone}", seen="NXDOMAIN")
        return
    kinds = {_kind(r) for r in lk.records}
    seen = ", ".join(lk.records)
    if kinds == {"listed"}:
        why = res.ask(name, "TXT").records
        because = f": {why[0][:200]}" if why else ""
        report.add("dnsbl", subject, ERROR, f"{address} is listed on {zone} ({seen}){because}",
                   seen=seen, expected="NXDOMAIN", resolvers=lk.who_said_what(),
                   reason=Reason.LISTED)
        return
    if "refused" in kinds:
        report.add("dnsbl", subject, WARNING,
                   f"unknown whether {address} is on {zone}: the list refused the query "
                   f"({seen}; lists refuse queries through public resolvers and past a "
                   "query limit: ask through your own resolver)",
                   seen=seen, resolvers=lk.who_said_what(), reason=Reason.DNS_RECORD)
        return
    report.add("dnsbl", subject, WARNING,
               f"unknown whether {address} is on {zone}: it answered {seen}, not an address "
               "in 127.0.0.0/8 a list answers with (a lapsed list domain answers every "
               "query: remove it from the lists)",
               seen=seen, resolvers=lk.who_said_what(), reason=Reason.DNS_RECORD)
