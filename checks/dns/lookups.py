"""Asking DNS: several resolvers, each asked again on a server failure, and who said what.

rDNS that "flaps to not set" is usually one resolver among several
(mail-in-a-box#628), so every configured resolver is asked every question and a
``Lookup`` keeps each one's answer for the findings to quote.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from mailfleet.checks.result import Reason
from mailfleet.checks.target import Deadline


class AnswerCache:
    """One resolver's answers as this module reads them (``Answer``: records normalised),
    each kept for its TTL (NXDOMAIN: the SOA's negative TTL) and at most ``max_seconds``,
    so a watcher notices a fixed record at most that long after it changed, even where
    the zone's TTL is a day. Least recently used first out past ``max_size``.

    Not dnspython's own cache (``dns.resolver.LRUCache``): it keeps each whole response
    and answers a hit through the full resolution machinery; at 3,000 hosts that was
    190 MiB and about 1 ms per host and sweep (bench/fleet_checks.py), this a dictionary.
    """

    def __init__(self, max_seconds: float, max_size: int = 100_000) -> None:
        self.max_seconds = max_seconds
        self.max_size = max_size
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()

    def known(self, name: str, rdtype: str) -> Answer | None:
        """The answer read for this question, while its lifetime lasts."""
        with self._lock:
            found = self._answers.get((name, rdtype))
            if found is None:
                return None
            if found[0] <= time.time():
                del self._answers[(name, rdtype)]
                return None
            self._answers.move_to_end((name, rdtype))
            return found[1]

    def remember(self, name: str, rdtype: str, expiration: float, answer: Answer) -> None:
        expires = min(expiration, time.time() + self.max_seconds)
        with self._lock:
            self._answers[(name, rdtype)] = (expires, answer)
            self._answers.move_to_end((name, rdtype))
            while len(self._answers) > self.max_size:
                self._answers.popitem(last=False)


# Answers shared by every probe of this process, per resolver (so "who said what"
# stays each resolver's own answer): off unless a long-running watcher turns it on.
_SHARED: dict[str, AnswerCache] = {}
_SHARED_LOCK = threading.Lock()
_shared_seconds = 0.0


def share_answers(max_seconds: float) -> None:
    """Keep DNS answers across probes and hosts for their TTL, at most ``max_seconds``
    (0: ask every time). A fleet's domains are asked once per TTL, not once per host and
    sweep; ``mailfleet serve`` turns it on (``--dns-cache``)."""
    global _shared_seconds
    with _SHARED_LOCK:
        _shared_seconds = max(0.0, max_seconds)
        _SHARED.clear()


def _shared_cache(label: str) -> AnswerCache | None:
    with _SHARED_LOCK:
        if _shared_seconds <= 0:
            return None
        cache = _SHARED.get(label)
        if cache is None:
            cache = _SHARED[label] = AnswerCache(_shared_seconds)
        return cache


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
    def nxdomain(self) -> bool:
        """Every resolver that answered said the name does not exist."""
        outcomes = {a.outcome for a in self.answers if a.outcome in ("ok", "nxdomain", "nodata")}
        return outcomes == {"nxdomain"}

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

    def failure_reason(self) -> Reason:
        """TIMEOUT when no resolver answered in time; a server failure is the zone's fault."""
        if all(a.outcome == "timeout" for a in self.answers):
            return Reason.TIMEOUT
        return Reason.DNS_RECORD


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
        self._caches = {label: _shared_cache(label) for label, _ in self._resolvers}
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
        cache = self._caches.get(label)
        if cache is not None:
            known = cache.known(name, rdtype)
            if known is not None:
                return known
        remaining = self.deadline.remaining()
        if remaining <= 0.05:
            return Answer(label, "timeout", detail="deadline reached")
        # A dead resolver must not eat the whole budget: each question gets a share.
        lifetime = min(remaining, max(1.0, self.deadline.budget / 3))
        r.timeout = lifetime / self.attempts
        try:
            result = r.resolve(dns.name.from_text(name), rdtype, lifetime=lifetime,
                               raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            answer = Answer(label, "nxdomain")
            expiration = _negative_expiration(exc)
            if cache is not None and expiration is not None:
                cache.remember(name, rdtype, expiration, answer)
            return answer
        except dns.resolver.LifetimeTimeout:
            self._dead.add(label)
            return Answer(label, "timeout", detail=f"no answer within {lifetime:.1f} s")
        except dns.resolver.NoNameservers as exc:
            return Answer(label, "error", detail=f"server failure ({_short(exc)})")
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return Answer(label, "error", detail=_short(exc))
        if result.rrset is None:
            answer = Answer(label, "nodata")
        else:
            records = tuple(sorted(_normalize(rdtype, rd) for rd in result.rrset))
            answer = Answer(label, "ok", records)
        if cache is not None:
            cache.remember(name, rdtype, result.expiration, answer)
        return answer

    def addresses(self, name: str) -> tuple[set[str], list[Lookup]]:
        lookups = [self.ask(name, "A"), self.ask(name, "AAAA")]
        found: set[str] = set()
        for lk in lookups:
            found.update(canon_ip(r) for r in lk.records)
        return found, lookups


def _negative_expiration(exc: dns.resolver.NXDOMAIN) -> float | None:
    """Until when an NXDOMAIN may be kept: the SOA's negative TTL (RFC 2308), None without
    an SOA in the answer."""
    ttls = []
    responses: dict[Any, Any] = exc.kwargs.get("responses") or {}
    for response in responses.values():
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                ttls.append(min(rrset.ttl, *(rd.minimum for rd in rrset)))
    return time.time() + min(ttls) if ttls else None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def canon_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def bare_name(name: str) -> str:
    """A DNS name as the findings show it: lower case, no trailing dot."""
    return name.rstrip(".").lower()
