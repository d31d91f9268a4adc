"""TLSA (DANE): the records of a service compared with the certificate it serves."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailfleet.checks.base import Acquisition, ProbeFailure
from mailfleet.checks.dns.lookups import Resolvers
from mailfleet.checks.dns.report import ERROR, OK, DnsReport
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import Reason
from mailfleet.checks.target import Deadline, Target
from mailfleet.checks.tls import handshake
from mailfleet.checks.tlsinfo import CertInfo, served_chain


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
                   f"{failure.message}", seen=", ".join(t.short() for t in records),
                   reason=failure.reason)
        return
    if not chain:
        report.add("tlsa", owner, ERROR, f"server sent no certificate to compare with {owner}",
                   reason=Reason.CERT_INVALID)
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


def tlsa_fetcher(target: Target, service: str, deadline: Deadline) -> Callable[[], list[CertInfo]]:
    def fetch() -> list[CertInfo]:
        conn, tls = handshake(target, service, tls_context(None, verify=False), deadline,
                              Acquisition())
        try:
            return served_chain(tls)
        except ssl.SSLError as exc:
            raise ProbeFailure(str(exc), reason=Reason.TLS_HANDSHAKE) from None
        finally:
            conn.close()

    return fetch
