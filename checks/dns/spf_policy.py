"""SPF: is the domain's record valid, and does it authorise the mail host's addresses?

The record is parsed here first, so that a syntax error is reported in words
(``invalid ip4 term 'ip4:999.0.0.1'``) and a ``+all`` is flagged; then pyspf, the
reference implementation of RFC 7208, evaluates it for each of the host's
addresses: ``include:``, ``redirect=``, ``a``, ``mx``, ``ptr``, ``ip4``/``ip6``,
``exists``, macros, qualifiers, and the limits (10 DNS lookups, 2 void lookups)
that turn into a permerror.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import spf  # type: ignore[import-untyped]

from mailfleet.checks.dns.lookups import Lookup, Resolvers
from mailfleet.checks.dns.report import ERROR, OK, WARNING, DnsReport, no_answer
from mailfleet.checks.result import Reason

# -- the record's syntax ---------------------------------------------------------------
_MECH = re.compile(
    r"(?P<q>[-+~?]?)(?P<m>all|include|a|mx|ptr|ip4|ip6|exists)(?P<arg>[:/].*)?\Z", re.I
)
_MOD = re.compile(r"(?P<n>[a-z][a-z0-9_.-]*)=(?P<v>.*)\Z", re.I)


def _cidr_ok(text: str, v6: bool) -> bool:
    parts = text.split("/")
    if len(parts) not in (1, 2, 3) or not all(p.isdigit() for p in parts[1:]):
        return False
    return all(0 <= int(p) <= (128 if v6 else 32) for p in parts[1:2])


def _mechanism(word: str, m: re.Match[str]) -> tuple[tuple[str, str, str] | None, str]:
    """One mechanism as (qualifier, name, argument), or the words of its syntax error."""
    mech, arg, qualifier = m.group("m").lower(), m.group("arg") or "", m.group("q") or "+"
    if mech in ("ip4", "ip6"):
        value = arg[1:] if arg.startswith(":") else ""
        try:
            net = ipaddress.ip_network(value, strict=False)
            if (net.version == 4) != (mech == "ip4"):
                raise ValueError
        except ValueError:
            return None, f"invalid {mech} term {word!r}"
        return (qualifier, mech, value), ""
    if mech in ("include", "exists"):
        if not arg.startswith(":") or len(arg) < 2:
            return None, f"{mech} needs a domain: {word!r}"
        return (qualifier, mech, arg[1:]), ""
    if mech == "all":
        if arg:
            return None, f"'all' takes no argument: {word!r}"
        return (qualifier, mech, ""), ""
    # a, mx, ptr with optional :domain and /cidr
    dom, _, cidr = (arg[1:] if arg.startswith(":") else arg).partition("/")
    if arg.startswith(":") and not dom:
        return None, f"empty domain in {word!r}"
    if cidr and not _cidr_ok("/" + cidr, v6=False):
        return None, f"invalid prefix length in {word!r}"
    return (qualifier, mech, dom), ""


def parse_spf(record: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Terms as (qualifier, mechanism, argument) and a list of syntax errors (RFC 7208)."""
    words = record.split()
    errors: list[str] = []
    terms: list[tuple[str, str, str]] = []
    if not words or words[0].lower() != "v=spf1":
        return [], ["does not start with v=spf1"]
    seen_mods: set[str] = set()
    for word in words[1:]:
        m = _MECH.match(word)
        if m:
            term, error = _mechanism(word, m)
            if term is None:
                errors.append(error)
            else:
                terms.append(term)
            continue
        mod = _MOD.match(word)
        if mod:
            name = mod.group("n").lower()
            if name in ("redirect", "exp"):
                if name in seen_mods:
                    errors.append(f"{name}= appears twice")
                if not mod.group("v"):
                    errors.append(f"{name}= needs a domain")
                seen_mods.add(name)
                terms.append(("", name, mod.group("v")))
            continue  # unknown modifiers are allowed
        errors.append(f"unknown term {word!r}")
    return terms, errors


# -- pyspf's DNS, through the probe's resolvers -------------------------------------------
# pyspf's one DNS hook is the module-level function ``spf.DNSLookup`` (its own tests
# replace it). Probes run in threads, each with its own resolvers and deadline, so the
# hook installed here reads the running evaluation's lookup from a context variable
# (one per thread) and, outside an evaluation, hands over to pyspf's own lookup: other
# users of pyspf in the process see no change. Rejected: dnspython's default resolver
# (one for every thread and every dnspython user), and overriding ``query.dns``
# (it holds pyspf's CNAME following and void-lookup count, which would be copied).
_PyspfAnswers = list[tuple[tuple[str, str], Any]]
_current: contextvars.ContextVar[Callable[[str, str], _PyspfAnswers] | None] = (
    contextvars.ContextVar("mailfleet_spf_lookup", default=None))


def _hook(name: str, qtype: str, strict: Any = True, timeout: Any = 30) -> _PyspfAnswers:
    lookup = _current.get()
    if lookup is None:
        return _library_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    return lookup(name, qtype)


if getattr(spf.DNSLookup, "__module__", None) != __name__:
    _library_lookup = spf.DNSLookup
    spf.DNSLookup = _hook


class _Evaluation:
    """pyspf's answers from the probe's ``Resolvers`` (cached, several resolvers, deadline)."""

    def __init__(self, res: Resolvers) -> None:
        self.res = res
        self.unanswered: Lookup | None = None

    def __call__(self, name: str, qtype: str) -> _PyspfAnswers:
        if qtype not in ("A", "AAAA", "MX", "PTR", "TXT"):
            return []  # type SPF (99) is asked only in pyspf's harsh mode, never here
        lk = self.res.ask(name, qtype)
        if not lk.answered:
            self.unanswered = lk
            raise spf.TempError(f"no DNS answer for {qtype} {lk.name}: {lk.failure()}")
        return [((lk.name, qtype), _pyspf_value(qtype, r)) for r in lk.records]


def _pyspf_value(qtype: str, record: str) -> Any:
    """A normalized record in the shape pyspf's dnspython lookup gives it."""
    if qtype == "TXT":
        return (record.encode("utf-8"),)
    if qtype == "MX":
        preference, _, exchange = record.partition(" ")
        return (int(preference), exchange)
    return record


class _ChainQuery(spf.query):  # type: ignore[misc]
    """pyspf's query that remembers the records it walked: the chain a finding shows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chain: list[str] = []
        self._depth = -1

    def check1(self, record: Any, domain: str, recursion: int) -> Any:
        # include: goes one level down; redirect= replaces the record at the same level.
        if not self.chain:
            self.chain.append(domain)
        elif recursion > self._depth:
            self.chain.append(f"include:{domain}")
        else:
            self.chain.append(f"redirect={domain}")
        outer, self._depth = self._depth, recursion
        try:
            return super().check1(record, domain, recursion)
        finally:
            self._depth = outer


@dataclass(frozen=True)
class SpfOutcome:
    address: str
    result: str  # pass fail softfail neutral none permerror temperror
    problem: str  # pyspf's words for a permerror or temperror
    mechanism: str  # the top-level term that decided ("" when none matched)
    chain: tuple[str, ...]
    reason: Reason

    def describe(self) -> str:
        by = f" by {self.mechanism}" if self.mechanism else ""
        problem = f" ({self.problem})" if self.problem else ""
        return f"{self.result}{problem}{by} (chain: {' -> '.join(self.chain)})"


def evaluate_spf(res: Resolvers, domain: str, address: str, helo: str) -> SpfOutcome:
    """RFC 7208 check_host() of ``address`` for mail from ``postmaster@domain``."""
    lookups = _Evaluation(res)
    token = _current.set(lookups)
    try:
        # querytime bounds pyspf's own accounting by what is left of the probe's deadline.
        query = _ChainQuery(i=address, s=f"postmaster@{domain}", h=helo,
                            querytime=max(0.05, res.deadline.remaining()))
        try:
            result, _code, _text = query.check()
        except AssertionError:  # pyspf's recursion guard, unreachable below 10 lookups
            result, query.prob = "permerror", "too many levels of recursion"
    finally:
        _current.reset(token)
    reason = Reason.NONE
    if result == "temperror":
        reason = lookups.unanswered.failure_reason() if lookups.unanswered else Reason.TIMEOUT
    elif result != "pass":
        reason = Reason.DNS_RECORD
    problem = str(getattr(query, "prob", "") or "") if result.endswith("error") else ""
    return SpfOutcome(address, result, problem, str(query.mechanism or ""), tuple(query.chain),
                      reason)


# Worst first: what the finding reports when the host has several addresses.
_ORDER = ("permerror", "temperror", "fail", "softfail", "neutral", "none", "pass")


def check_spf(res: Resolvers, report: DnsReport, domain: str, addresses: Iterable[str],
              mx_host: str) -> None:
    lk = res.ask(domain, "TXT")
    if not lk.answered:
        no_answer(report, "spf", domain, lk, f"TXT {domain}")
        return
    records = [r for r in lk.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if not records:
        report.add("spf", domain, WARNING, f"no SPF record for {domain}", seen="none",
                   expected="v=spf1 ... (authorizing this server)",
                   reason=Reason.DNS_NXDOMAIN if lk.nxdomain else Reason.DNS_RECORD)
        return
    if len(records) > 1:
        report.add("spf", domain, ERROR,
                   f"{domain} has {len(records)} SPF records (permerror, RFC 7208 4.5)",
                   seen=" | ".join(records), expected="exactly one")
        return
    record = records[0]
    terms, errors = parse_spf(record)
    if errors:
        report.add("spf", domain, ERROR, f"SPF of {domain} is invalid: {'; '.join(errors)}",
                   seen=record, expected="RFC 7208 syntax")
        return
    if ("+", "all", "") in terms:
        report.add("spf", domain, WARNING,
                   f"SPF of {domain} has +all: it authorizes every host on the internet",
                   seen=record, expected="-all or ~all")
    _judge_evaluation(res, report, domain, record, sorted(addresses), mx_host)


def _judge_evaluation(res: Resolvers, report: DnsReport, domain: str, record: str,
                      addresses: list[str], mx_host: str) -> None:
    if not addresses:
        report.add("spf", domain, OK, f"SPF of {domain} parses (not fully evaluated)",
                   seen=record)
        return
    outcomes = [evaluate_spf(res, domain, a, mx_host) for a in addresses]
    worst = min(outcomes, key=lambda o: _ORDER.index(o.result) if o.result in _ORDER else 0)
    expected = ", ".join(addresses)
    if worst.result == "pass":
        report.add("spf", domain, OK, f"SPF of {domain} authorizes the server", seen=record,
                   expected=expected)
    elif worst.result == "permerror":
        report.add("spf", domain, ERROR, f"SPF of {domain} is invalid: {worst.describe()}",
                   seen=record, expected="RFC 7208 evaluation", reason=worst.reason)
    elif worst.result == "temperror":
        report.add("spf", domain, ERROR,
                   f"SPF of {domain} could not be evaluated: {worst.describe()}",
                   seen=record, expected=expected, reason=worst.reason)
    else:
        report.add("spf", domain, WARNING,
                   f"SPF of {domain} does not authorize {worst.address}: {worst.describe()}",
                   seen=record, expected=expected, reason=worst.reason)
