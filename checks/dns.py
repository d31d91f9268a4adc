"""``dns``: MX, A/AAAA, PTR, forward-confirmed rDNS, SPF, DMARC and TLSA of a mail server.

Every finding is ok / warning / error with the record that was *seen* and
what was *expected*. When several resolvers are configured, each is asked and
a finding says which resolver said what when they disagree (rDNS "flapping to
not set" is usually one resolver among several; mail-in-a-box#628).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import CertInfo, served_chain
from mailfleet.checks.values import Values, declared

CHECK = "dns"

@declared
@dataclass(frozen=True)
class DnsValues(Values):
    """What ``dns`` found: one finding per record looked at, and a verdict per concern.

    A ``*_ok`` value is None when the concern was not looked at.
    """

    resolvers: Sequence[str] = ()
    findings: Sequence[Mapping[str, Any]] = ()  # Finding.to_dict
    mx_ok: bool | None = None
    a_ok: bool | None = None
    ptr_ok: bool | None = None
    fcrdns_ok: bool | None = None
    spf_ok: bool | None = None
    dmarc_ok: bool | None = None
    tlsa_ok: bool | None = None
    rdns_ok: bool | None = None  # PTR set and forward-confirmed

OK, WARNING, ERROR = "ok", "warning", "error"


# -- resolvers -----------------------------------------------------------------
@dataclass(frozen=True)
class ResolverAddress:
    address: str
    port: int = 53

    @property
    def label(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else (
            f"{self.address}:{self.port}")


def parse_resolver(text: str) -> ResolverAddress:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or a bare IPv6 address."""
    text = text.strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"resolver {text!r} is not an IP address[:port]") from None
    number = int(port) if port else 53
    if not 0 < number < 65536:
        raise ValueError(f"resolver {text!r}: port out of range")
    return ResolverAddress(host, number)


@dataclass(frozen=True)
class Answer:
    resolver: str
    outcome: str  # ok | nxdomain | nodata | timeout | error
    records: tuple[str, ...] = ()
    detail: str = ""

    def said(self) -> str:
        if self.outcome == "ok":
            return ", ".join(self.records)
        return {"nxdomain": "NXDOMAIN", "nodata": "no record", "timeout": "no answer"}.get(
            self.outcome, self.detail or self.outcome
        )


@dataclass(frozen=True)
class Lookup:
    """The merged view of all resolvers for one question."""

    name: str
    rdtype: str
    answers: tuple[Answer, ...]

    @property
    def records(self) -> tuple[str, ...]:
        for a in self.answers:
            if a.outcome == "ok":
                return a.records
        return ()

    @property
    def answered(self) -> bool:
        """Some resolver gave an authoritative answer (records, NXDOMAIN or no data)."""
        return any(a.outcome in ("ok", "nxdomain", "nodata") for a in self.answers)

    @property
    def disagree(self) -> bool:
        views = {(a.outcome if a.outcome != "ok" else "ok", tuple(sorted(a.records)))
                 for a in self.answers if a.outcome in ("ok", "nxdomain", "nodata")}
        return len(views) > 1

    def who_said_what(self) -> str:
        return "; ".join(f"{a.resolver} said {a.said()}" for a in self.answers)

    def failure(self) -> str:
        """Why there is no answer at all (every resolver timed out or failed)."""
        return "; ".join(
            f"{a.resolver}: {a.said() if a.outcome != 'timeout' else 'no answer'}"
            for a in self.answers
        )


def _normalize(rdtype: str, rdata: Any) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return f"{rdata.preference} {str(rdata.exchange).rstrip('.').lower() or '.'}"
    if rdtype in ("PTR", "CNAME"):
        return str(rdata.target).rstrip(".").lower()
    if rdtype == "TLSA":
        return f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"
    return str(rdata.to_text())


class Resolvers:
    """Asks every configured resolver, within the deadline; remembers dead ones."""

    def __init__(self, addresses: Sequence[ResolverAddress], deadline: Deadline,
                 attempts: int = 2) -> None:
        self.deadline = deadline
        self.attempts = max(1, attempts)
        self._resolvers: list[tuple[str, dns.resolver.Resolver]] = []
        if not addresses:
            self._resolvers.append(("system", dns.resolver.Resolver()))
        for addr in addresses:
            r = dns.resolver.Resolver(configure=False)
            r.nameservers = [addr.address]
            r.port = addr.port
            r.retry_servfail = False
            self._resolvers.append((addr.label, r))
        self._dead: set[str] = set()
        self._cache: dict[tuple[str, str], Lookup] = {}

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self._resolvers]

    def ask(self, name: str, rdtype: str) -> Lookup:
        key = (name.lower().rstrip("."), rdtype)
        if key in self._cache:
            return self._cache[key]
        answers = tuple(self._ask_one(label, r, key[0], rdtype) for label, r in self._resolvers)
        result = Lookup(key[0], rdtype, answers)
        self._cache[key] = result
        return result

    def _ask_one(self, label: str, r: dns.resolver.Resolver, name: str, rdtype: str) -> Answer:
        """One resolver's answer; a server failure (SERVFAIL, REFUSED) is asked again.

        Transient failures are what makes rDNS "flap to not set"; a timeout,
        though, marks the resolver dead for the rest of the probe.
        """
        answer = Answer(label, "error", detail="not asked")
        for attempt in range(self.attempts):
            answer = self._ask_once(label, r, name, rdtype)
            if answer.outcome != "error" or attempt + 1 == self.attempts:
                break
            if self.deadline.remaining() < 0.5:
                break
            time.sleep(0.1)
        return answer

    def _ask_once(self, label: str, r: dns.resolver.Resolver, name: str, rdtype: str) -> Answer:
        if label in self._dead:
            return Answer(label, "timeout", detail="skipped: did not answer earlier")
        remaining = self.deadline.remaining()
        if remaining <= 0.05:
            return Answer(label, "timeout", detail="deadline reached")
        # A dead resolver must not eat the whole budget: each question gets a share.
        lifetime = min(remaining, max(1.0, self.deadline.budget / 3))
        r.timeout = lifetime / self.attempts
        try:
            result = r.resolve(dns.name.from_text(name), rdtype, lifetime=lifetime,
                               raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(label, "nxdomain")
        except dns.resolver.LifetimeTimeout:
            self._dead.add(label)
            return Answer(label, "timeout", detail=f"no answer within {lifetime:.1f} s")
        except dns.resolver.NoNameservers as exc:
            return Answer(label, "error", detail=f"server failure ({_short(exc)})")
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return Answer(label, "error", detail=_short(exc))
        if result.rrset is None:
            return Answer(label, "nodata")
        records = tuple(sorted(_normalize(rdtype, rd) for rd in result.rrset))
        return Answer(label, "ok", records)

    def addresses(self, name: str) -> tuple[set[str], list[Lookup]]:
        lookups = [self.ask(name, "A"), self.ask(name, "AAAA")]
        found: set[str] = set()
        for lk in lookups:
            found.update(_canon_ip(r) for r in lk.records)
        return found, lookups


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _canon_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _host(name: str) -> str:
    return name.rstrip(".").lower()


# -- findings ------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    check: str  # mx, a, ptr, fcrdns, spf, dmarc, tlsa, resolver
    subject: str  # the domain, address or name the finding is about
    status: str  # ok | warning | error
    message: str
    seen: str = ""
    expected: str = ""
    resolvers: str = ""  # who said what, when it matters

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class DnsReport:
    findings: list[Finding] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.findings.append(Finding(*args, **kwargs))

    def ok(self, check: str) -> bool | None:
        relevant = [f for f in self.findings if f.check == check]
        if not relevant:
            return None
        return all(f.status != ERROR for f in relevant)

    @property
    def status(self) -> Status:
        kinds = {f.status for f in self.findings}
        if ERROR in kinds:
            return Status.CRITICAL
        if WARNING in kinds:
            return Status.WARNING
        return Status.OK


def _no_answer(report: DnsReport, check: str, subject: str, lk: Lookup, what: str) -> None:
    report.add(check, subject, ERROR, f"no DNS answer for {what}: {lk.failure()}",
               resolvers=lk.who_said_what())


def _flag_disagreement(report: DnsReport, check: str, subject: str, lk: Lookup) -> None:
    if lk.disagree:
        report.add(check, subject, WARNING,
                   f"resolvers disagree on {lk.rdtype} {lk.name}: {lk.who_said_what()}",
                   resolvers=lk.who_said_what())


# -- MX and A ----------------------------------------------------------------------
def check_mx(res: Resolvers, report: DnsReport, domain: str, mx_host: str,
             addresses: set[str]) -> None:
    lk = res.ask(domain, "MX")
    expected = f"{mx_host} ({', '.join(sorted(addresses))})" if addresses else mx_host
    if not lk.answered:
        _no_answer(report, "mx", domain, lk, f"MX {domain}")
        return
    _flag_disagreement(report, "mx", domain, lk)
    exchanges = [r.split(" ", 1)[1] for r in lk.records if " " in r]
    if not exchanges:
        report.add("mx", domain, ERROR, f"no MX for {domain}, expected {mx_host}",
                   seen="none", expected=expected, resolvers=lk.who_said_what())
        return
    if exchanges == ["."]:
        report.add("mx", domain, ERROR, f"{domain} has a null MX (it accepts no mail)",
                   seen="0 .", expected=expected)
        return
    seen_parts = []
    for host in exchanges:
        ips, _ = res.addresses(host)
        seen_parts.append(f"{host} ({', '.join(sorted(ips)) or 'no address'})")
        if _host(host) == _host(mx_host) or (addresses and ips & addresses):
            report.add("mx", domain, OK, f"MX of {domain} is {host}",
                       seen=", ".join(exchanges), expected=expected)
            return
    seen = ", ".join(seen_parts)
    report.add("mx", domain, ERROR, f"MX of {domain} is {seen}, expected {expected}",
               seen=seen, expected=expected, resolvers=lk.who_said_what())


def check_a(res: Resolvers, report: DnsReport, mx_host: str, addresses: set[str]) -> None:
    found, lookups = res.addresses(mx_host)
    for lk in lookups:
        _flag_disagreement(report, "a", mx_host, lk)
    if not any(lk.answered for lk in lookups):
        _no_answer(report, "a", mx_host, lookups[0], f"A/AAAA {mx_host}")
        return
    if not found:
        report.add("a", mx_host, ERROR, f"{mx_host} has no A/AAAA record",
                   seen="none", expected=", ".join(sorted(addresses)))
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


# -- PTR and forward-confirmed rDNS ---------------------------------------------
def check_ptr(res: Resolvers, report: DnsReport, address: str, mx_host: str) -> None:
    rname = dns.reversename.from_address(address).to_text()
    lk = res.ask(rname, "PTR")
    expected = _host(mx_host)
    if not lk.answered:
        _no_answer(report, "ptr", address, lk, f"PTR {address}")
        return
    _flag_disagreement(report, "ptr", address, lk)
    names = list(lk.records)
    if not names:
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
        if _canon_ip(address) in ips:
            report.add("fcrdns", address, OK,
                       f"PTR {name} of {address} resolves back to it",
                       seen=", ".join(sorted(ips)), expected=address)
            return
        back.append(f"{name} -> {', '.join(sorted(ips)) or 'no address'}")
    report.add("fcrdns", address, ERROR,
               f"PTR of {address} ({seen}) does not resolve back to {address} "
               f"({'; '.join(back)})",
               seen="; ".join(back), expected=address)


# -- SPF and DMARC -----------------------------------------------------------------
_SPF_MECH = re.compile(
    r"(?P<q>[-+~?]?)(?P<m>all|include|a|mx|ptr|ip4|ip6|exists)(?P<arg>[:/].*)?\Z", re.I
)
_SPF_MOD = re.compile(r"(?P<n>[a-z][a-z0-9_.-]*)=(?P<v>.*)\Z", re.I)
_DOMAIN_SPEC = re.compile(r"[^\s]+")


def _cidr_ok(text: str, v6: bool) -> bool:
    parts = text.split("/")
    if len(parts) not in (1, 2, 3) or not all(p.isdigit() for p in parts[1:]):
        return False
    return all(0 <= int(p) <= (128 if v6 else 32) for p in parts[1:2])


def parse_spf(record: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Terms as (qualifier, mechanism, argument) and a list of syntax errors (RFC 7208)."""
    words = record.split()
    errors: list[str] = []
    terms: list[tuple[str, str, str]] = []
    if not words or words[0].lower() != "v=spf1":
        return [], ["does not start with v=spf1"]
    seen_mods: set[str] = set()
    for word in words[1:]:
        m = _SPF_MECH.match(word)
        if m:
            mech, arg = m.group("m").lower(), m.group("arg") or ""
            if mech in ("ip4", "ip6"):
                value = arg[1:] if arg.startswith(":") else ""
                try:
                    net = ipaddress.ip_network(value, strict=False)
                    if (net.version == 4) != (mech == "ip4"):
                        raise ValueError
                except ValueError:
                    errors.append(f"invalid {mech} term {word!r}")
                    continue
                terms.append((m.group("q") or "+", mech, value))
            elif mech in ("include", "exists"):
                if not arg.startswith(":") or len(arg) < 2:
                    errors.append(f"{mech} needs a domain: {word!r}")
                    continue
                terms.append((m.group("q") or "+", mech, arg[1:]))
            elif mech == "all":
                if arg:
                    errors.append(f"'all' takes no argument: {word!r}")
                    continue
                terms.append((m.group("q") or "+", mech, ""))
            else:  # a, mx, ptr with optional :domain and /cidr
                dom, _, cidr = (arg[1:] if arg.startswith(":") else arg).partition("/")
                if arg.startswith(":") and not dom:
                    errors.append(f"empty domain in {word!r}")
                    continue
                if cidr and not _cidr_ok("/" + cidr, v6=False):
                    errors.append(f"invalid prefix length in {word!r}")
                    continue
                terms.append((m.group("q") or "+", mech.lower(), dom))
            continue
        mod = _SPF_MOD.match(word)
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


def check_spf(res: Resolvers, report: DnsReport, domain: str, addresses: set[str],
              mx_host: str) -> None:
    lk = res.ask(domain, "TXT")
    if not lk.answered:
        _no_answer(report, "spf", domain, lk, f"TXT {domain}")
        return
    records = [r for r in lk.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if not records:
        report.add("spf", domain, WARNING, f"no SPF record for {domain}", seen="none",
                   expected="v=spf1 ... (authorizing this server)")
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
    verdict = _spf_authorizes(res, domain, terms, addresses, mx_host)
    if verdict is None:
        report.add("spf", domain, OK, f"SPF of {domain} parses (not fully evaluated)",
                   seen=record)
    elif verdict:
        report.add("spf", domain, OK, f"SPF of {domain} authorizes the server", seen=record,
                   expected=", ".join(sorted(addresses)))
    else:
        report.add("spf", domain, WARNING,
                   f"SPF of {domain} does not authorize {', '.join(sorted(addresses))}",
                   seen=record, expected=", ".join(sorted(addresses)))


def _spf_authorizes(res: Resolvers, domain: str, terms: list[tuple[str, str, str]],
                    addresses: set[str], mx_host: str) -> bool | None:
    """First matching term decides (one level only: include/exists/ptr stop the evaluation)."""
    if not addresses:
        return None
    ips = {ipaddress.ip_address(a) for a in addresses}
    for qualifier, mech, arg in terms:
        matched: bool | None
        if mech in ("ip4", "ip6"):
            net = ipaddress.ip_network(arg, strict=False)
            matched = any(ip.version == net.version and ip in net for ip in ips)
        elif mech == "a":
            found, _ = res.addresses(arg or domain)
            matched = bool(found & addresses)
        elif mech == "mx":
            mx = res.ask(arg or domain, "MX")
            hosts = [r.split(" ", 1)[1] for r in mx.records if " " in r]
            matched = any(res.addresses(h)[0] & addresses for h in hosts)
        elif mech == "all":
            matched = True
        elif mech in ("redirect", "exp"):
            continue
        else:
            return None
        if matched:
            return qualifier == "+"
    return None if any(m == "redirect" for _, m, _ in terms) else False


_DMARC_POLICIES = ("none", "quarantine", "reject")


def parse_dmarc(record: str) -> tuple[dict[str, str], list[str]]:
    tags: dict[str, str] = {}
    errors: list[str] = []
    parts = [p.strip() for p in record.split(";") if p.strip()]
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not name:
            errors.append(f"malformed tag {part!r}")
            continue
        if i == 0 and (name != "v" or value != "DMARC1"):
            errors.append("does not start with v=DMARC1")
        tags[name] = value
    if "p" not in tags:
        errors.append("no p= policy")
    elif tags["p"].lower() not in _DMARC_POLICIES:
        errors.append(f"p={tags['p']} is not none, quarantine or reject")
    if "sp" in tags and tags["sp"].lower() not in _DMARC_POLICIES:
        errors.append(f"sp={tags['sp']} is not none, quarantine or reject")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        errors.append(f"pct={tags['pct']} is not 0-100")
    for tag in ("adkim", "aspf"):
        if tag in tags and tags[tag].lower() not in ("r", "s"):
            errors.append(f"{tag}={tags[tag]} is not r or s")
    return tags, errors


def check_dmarc(res: Resolvers, report: DnsReport, domain: str) -> None:
    name = f"_dmarc.{domain}"
    lk = res.ask(name, "TXT")
    if not lk.answered:
        _no_answer(report, "dmarc", domain, lk, f"TXT {name}")
        return
    records = [r for r in lk.records if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if not records:
        report.add("dmarc", domain, WARNING, f"no DMARC record at {name}", seen="none",
                   expected="v=DMARC1; p=...")
        return
    if len(records) > 1:
        report.add("dmarc", domain, ERROR, f"{name} has {len(records)} DMARC records",
                   seen=" | ".join(records), expected="exactly one")
        return
    tags, errors = parse_dmarc(records[0])
    if errors:
        report.add("dmarc", domain, ERROR, f"DMARC of {domain} is invalid: {'; '.join(errors)}",
                   seen=records[0], expected="RFC 7489 syntax")
        return
    report.add("dmarc", domain, OK, f"DMARC of {domain}: p={tags['p']}", seen=records[0])


# -- TLSA (DANE) ---------------------------------------------------------------------
@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: str  # hex

    @classmethod
    def parse(cls, text: str) -> Tlsa | None:
        parts = text.split()
        if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), "".join(parts[3:]).lower())

    def short(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data[:16]}…"


def tlsa_digest(cert: CertInfo, selector: int, mtype: int) -> str | None:
    data = cert.der if selector == 0 else cert.spki_der() if selector == 1 else None
    if data is None:
        return None
    if mtype == 0:
        return data.hex()
    if mtype == 1:
        return hashlib.sha256(data).hexdigest()
    if mtype == 2:
        return hashlib.sha512(data).hexdigest()
    return None


def tlsa_matches(record: Tlsa, chain: Sequence[CertInfo]) -> bool:
    """Usage 1/3 match the server's certificate, 0/2 any certificate of the chain it sent."""
    candidates = chain[:1] if record.usage in (1, 3) else chain
    return any(tlsa_digest(c, record.selector, record.mtype) == record.data for c in candidates)


def check_tlsa(res: Resolvers, report: DnsReport, owner: str, fetch: Callable[[], list[CertInfo]]
               ) -> None:
    lk = res.ask(owner, "TLSA")
    if not lk.records:
        return  # no DANE for this service: nothing to compare
    records = [t for t in (Tlsa.parse(r) for r in lk.records) if t is not None]
    try:
        chain = fetch()
    except ProbeFailure as failure:
        report.add("tlsa", owner, ERROR,
                   f"cannot fetch the served certificate to compare with TLSA {owner}: "
                   f"{failure.message}", seen=", ".join(t.short() for t in records))
        return
    if not chain:
        report.add("tlsa", owner, ERROR, f"server sent no certificate to compare with {owner}")
        return
    seen = ", ".join(t.short() for t in records)
    for t in records:
        if tlsa_matches(t, chain):
            report.add("tlsa", owner, OK,
                       f"TLSA {owner} ({t.short()}) matches the served certificate",
                       seen=seen)
            return
    first = records[0] if records else Tlsa(3, 1, 1, "")
    actual = tlsa_digest(chain[0], first.selector, first.mtype) or ""
    expected = f"{first.usage} {first.selector} {first.mtype} {actual[:16]}…"
    report.add("tlsa", owner, ERROR,
               f"TLSA {owner} ({seen}) does not match the served certificate ({expected})",
               seen=seen, expected=expected)


# -- the whole report --------------------------------------------------------------
def dns_report(
    res: Resolvers,
    domains: Iterable[str],
    mx_host: str,
    addresses: Iterable[str],
    tlsa: Sequence[tuple[str, Callable[[], list[CertInfo]]]] = (),
) -> DnsReport:
    """All findings for one server: its domains, its name and its addresses."""
    report = DnsReport()
    mx_host = _host(mx_host)
    addrs = {_canon_ip(a) for a in addresses}
    if not addrs:
        found, _ = res.addresses(mx_host)
        addrs = found
    domain_list = [_host(d) for d in domains]
    for domain in domain_list:
        check_mx(res, report, domain, mx_host, addrs)
    check_a(res, report, mx_host, addrs)
    for address in sorted(addrs):
        check_ptr(res, report, address, mx_host)
    for domain in domain_list:
        check_spf(res, report, domain, addrs, mx_host)
        check_dmarc(res, report, domain)
    for owner, fetch in tlsa:
        check_tlsa(res, report, owner, fetch)
    return report


def format_table(findings: Sequence[Finding], only_problems: bool = False) -> str:
    rows = [f for f in findings if not only_problems or f.status != OK]
    if not rows:
        return "no findings"
    head = ("STATUS", "CHECK", "SUBJECT", "FINDING")
    table = [head] + [(f.status.upper(), f.check, f.subject, f.message) for f in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    return "\n".join(
        "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in table
    )


# -- the probe ---------------------------------------------------------------------
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def tlsa_fetcher(target: Target, service: str, deadline: Deadline) -> Callable[[], list[CertInfo]]:
    def fetch() -> list[CertInfo]:
        from mailfleet.checks.tls import handshake  # late: tls imports imap/smtp clients

        conn, tls = handshake(target, service, tls_context(None, verify=False), deadline,
                              Acquisition())
        try:
            return served_chain(tls)
        except ssl.SSLError as exc:
            raise ProbeFailure(str(exc)) from None
        finally:
            conn.close()

    return fetch


def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    try:
        addresses = [parse_resolver(r) for r in options.dns_resolvers]
    except ValueError as exc:
        raise ProbeFailure(str(exc), Status.UNKNOWN) from None
    res = Resolvers(addresses, deadline, options.dns_attempts)
    tlsa = [
        (f"_{target.port(s)}._tcp.{_host(target.mail_hostname)}",
         tlsa_fetcher(target, s, deadline))
        for s in options.dns_tlsa_services
    ]
    with acq.measure("dns"):
        report = dns_report(res, target.domains, target.mail_hostname,
                            [target.address] if _is_ip(target.address) else [], tlsa)
    acq.values["resolvers"] = res.labels
    acq.values["findings"] = [f.to_dict() for f in report.findings]
    for check in ("mx", "a", "ptr", "fcrdns", "spf", "dmarc", "tlsa"):
        acq.values[f"{check}_ok"] = report.ok(check)
    ptr, fc = report.ok("ptr"), report.ok("fcrdns")
    acq.values["rdns_ok"] = None if ptr is None and fc is None else bool(ptr) and fc is not False


def judge(values: dict[str, Any]) -> Verdict:
    findings = values.get("findings") or []
    errors = [f["message"] for f in findings if f["status"] == ERROR]
    warnings = [f["message"] for f in findings if f["status"] == WARNING]
    if errors:
        return Verdict(Status.CRITICAL, "; ".join(errors))
    if warnings:
        return Verdict(Status.WARNING, "; ".join(warnings))
    return Verdict(Status.OK)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, options, deadline, acq), judge)
