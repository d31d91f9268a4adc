"""Findings: one per record looked at, ok / warning / error, with what was seen and expected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mailfleet.checks.dns.lookups import Lookup
from mailfleet.checks.result import Reason, Status

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Finding:
    check: str  # mx, a, ptr, fcrdns, spf, dmarc, tlsa, resolver
    subject: str  # the domain, address or name the finding is about
    status: str  # ok | warning | error
    message: str
    seen: str = ""
    expected: str = ""
    resolvers: str = ""  # who said what, when it matters
    reason: str = ""  # a Reason: what kind of problem a warning or error is

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class DnsReport:
    findings: list[Finding] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        finding = Finding(*args, **kwargs)
        if finding.status != OK and not finding.reason:
            # Most problems are a record that is missing or wrong; the others say so.
            finding = Finding(**{**finding.to_dict(), "reason": Reason.DNS_RECORD})
        self.findings.append(finding)

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


def no_answer(report: DnsReport, check: str, subject: str, lk: Lookup, what: str) -> None:
    report.add(check, subject, ERROR, f"no DNS answer for {what}: {lk.failure()}",
               resolvers=lk.who_said_what(), reason=lk.failure_reason())


def several(report: DnsReport, check: str, subject: str, name: str, kind: str,
            records: Sequence[str]) -> bool:
    """An error when ``name`` holds more than one ``kind`` record (DKIM, DMARC); True then."""
    if len(records) <= 1:
        return False
    report.add(check, subject, ERROR, f"{name} has {len(records)} {kind} records",
               seen=" | ".join(records), expected="exactly one")
    return True


def flag_disagreement(report: DnsReport, check: str, subject: str, lk: Lookup) -> None:
    if lk.disagree:
        report.add(check, subject, WARNING,
                   f"resolvers disagree on {lk.rdtype} {lk.name}: {lk.who_said_what()}",
                   resolvers=lk.who_said_what())


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


def clean(findings: Sequence[Mapping[str, Any]], check: str) -> bool | None:
    """Every finding of one concern is OK (no warning, no error); None when none was made.

    ``findings`` as stored (``Finding.to_dict``). Stricter than ``DnsReport.ok``: a
    missing SPF or DMARC record is a warning, so ``ok`` holds and this does not.
    """
    relevant = [Finding(**f) for f in findings if Finding(**f).check == check]
    if not relevant:
        return None
    return all(f.status == OK for f in relevant)
