"""``dns``: MX, A/AAAA, PTR, forward-confirmed rDNS, SPF, DKIM, DMARC and TLSA of a mail server.

Every finding is ok / warning / error with the record that was *seen* and
what was *expected*. When several resolvers are configured, each is asked and
a finding says which resolver said what when they disagree.

One module per concern: ``lookups`` (resolvers), ``hosts`` (MX, A, PTR, FCrDNS),
``spf_policy``, ``dkim`` (keys, DMARC alignment), ``dmarc``, ``tlsa``, ``report``
(findings) and ``prober`` (the probe).
"""

from mailfleet.checks.dns.dkim import check_alignment, check_dkim, parse_tags, public_key_der
from mailfleet.checks.dns.dmarc import check_dmarc, parse_dmarc
from mailfleet.checks.dns.hosts import check_a, check_mx, check_ptr
from mailfleet.checks.dns.lookups import (
    Answer,
    Lookup,
    ResolverAddress,
    Resolvers,
    parse_resolver,
)
from mailfleet.checks.dns.prober import (
    CHECK,
    DkimSpec,
    DnsValues,
    acquire,
    dns_report,
    judge,
    probe,
)
from mailfleet.checks.dns.report import ERROR, OK, WARNING, DnsReport, Finding, format_table
from mailfleet.checks.dns.spf_policy import SpfOutcome, check_spf, evaluate_spf, parse_spf
from mailfleet.checks.dns.tlsa import Tlsa, check_tlsa, tlsa_digest, tlsa_fetcher, tlsa_matches

__all__ = [
    "CHECK", "ERROR", "OK", "WARNING", "Answer", "DkimSpec", "DnsReport", "DnsValues",
    "Finding", "Lookup", "ResolverAddress", "Resolvers", "SpfOutcome", "Tlsa", "acquire",
    "check_a", "check_alignment", "check_dkim", "check_dmarc", "check_mx", "check_ptr",
    "check_spf", "check_tlsa", "dns_report", "evaluate_spf", "format_table", "judge",
    "parse_dmarc", "parse_resolver", "parse_spf", "parse_tags", "probe", "public_key_der",
    "tlsa_digest", "tlsa_fetcher", "tlsa_matches",
]
