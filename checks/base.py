"""What every probe shares: phase timing, failures, and the acquire → judge → result run.

A probe is split nagiosplugin-style: *acquisition* talks to the server and
fills ``Acquisition.values`` (raising ``ProbeFailure`` when it cannot go on),
*judgement* turns values into a ``Verdict`` (status + words) using the
thresholds in ``ProbeOptions``; ``run`` puts them together and guarantees the
probe never raises.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target


class Probe(Protocol):
    def __call__(self, target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        ...


class ProbeFailure(Exception):
    """Acquisition cannot go on; ``message`` is what the admin reads, ``reason`` its class."""

    def __init__(self, message: str, status: Status = Status.CRITICAL,
                 reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason if reason is not None else guess_reason(message, status)


class AuthRejected(ProbeFailure):
    """The server refused the login; ``why`` is its answer (secrets redacted)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message, reason=Reason.AUTH_FAILED)
        self.why = why


@dataclass(frozen=True)
class Verdict:
    status: Status
    message: str = ""
    reason: Reason | None = None  # None: NONE when OK, THRESHOLD otherwise

    def why(self) -> Reason:
        if self.reason is not None:
            return self.reason
        return Reason.NONE if self.status == Status.OK else Reason.THRESHOLD


# A failure raised without a reason is classed by its words. The library's own probes
# always give one (tests/test_architecture.py holds them to it); this serves probes
# brought in from outside (a custom probe table) and the SSH errors of the server check
# that only words tell apart (refused, unreachable).
_REASON_WORDS: tuple[tuple[Reason, tuple[str, ...]], ...] = (
    (Reason.REFUSED, ("connection refused",)),
    (Reason.UNREACHABLE, ("unreachable", "no route", "host is down", "network is down")),
    (Reason.TIMEOUT, ("timed out", "timeout", "within", "deadline")),
    (Reason.CERT_EXPIRED, ("expired",)),
    (Reason.CERT_INVALID, ("certificate",)),
    (Reason.TLS_HANDSHAKE, ("tls", "ssl", "handshake")),
    (Reason.AUTH_FAILED, ("auth", "login", "credential", "password", "token")),
    (Reason.DNS_RECORD, ("dns", "nxdomain", "ptr", "mx ", "resolve", "spf", "dmarc", "tlsa")),
    (Reason.PROTOCOL, ("greeting", "garbage", "unexpected", "protocol", "banner")),
    (Reason.REJECTED, ("refused", "rejected")),
)


def guess_reason(message: str, status: Status = Status.CRITICAL) -> Reason:
    """A reason for a failure raised without one, from its words."""
    if status == Status.UNKNOWN and ("configured" in message or "no probe account" in message):
        return Reason.NOT_CONFIGURED
    text = message.lower()
    for reason, words in _REASON_WORDS:
        if any(w in text for w in words):
            return reason
    return Reason.OTHER


@dataclass
class Acquisition:
    """Mutable scratch space of one probe run: timings and measured values."""

    phases: dict[str, float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + (time.monotonic() - start)


def worst(statuses: list[Status]) -> Status:
    """Nagios order: CRITICAL > WARNING > UNKNOWN > OK."""
    order = [Status.OK, Status.UNKNOWN, Status.WARNING, Status.CRITICAL]
    return max(statuses, key=order.index, default=Status.OK)


def run(
    check: str,
    target: Target,
    acquire: Callable[[Acquisition], None],
    judge: Callable[[dict[str, Any]], Verdict],
) -> ProbeResult:
    """Run acquisition then judgement; never raises (bugs become UNKNOWN results)."""
    started_at = time.time()
    start = time.monotonic()
    acq = Acquisition()
    try:
        acquire(acq)
        verdict = judge(acq.values)
    except ProbeFailure as failure:
        verdict = Verdict(failure.status, failure.message, failure.reason)
    except Exception as exc:  # a bug must not take the sweep down
        verdict = crashed(exc)
    acq.phases["total"] = time.monotonic() - start
    return ProbeResult(
        check=check,
        target=target.name,
        success=verdict.status in (Status.OK, Status.WARNING),
        status=verdict.status,
        phases=acq.phases,
        values=acq.values,
        error=verdict.message,
        started_at=started_at,
        reason=verdict.why(),
    )


def crashed(exc: Exception) -> Verdict:
    """The verdict on a probe that raised something other than ProbeFailure: a bug."""
    return Verdict(Status.UNKNOWN, f"probe error: {type(exc).__name__}: {exc}", Reason.CRASH)
