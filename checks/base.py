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

from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target


class Probe(Protocol):
    def __call__(self, target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
        ...


class ProbeFailure(Exception):
    """Acquisition cannot go on; ``message`` is what the admin reads."""

    def __init__(self, message: str, status: Status = Status.CRITICAL) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Verdict:
    status: Status
    message: str = ""


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
        verdict = Verdict(failure.status, failure.message)
    except Exception as exc:  # a bug must not take the sweep down
        verdict = Verdict(Status.UNKNOWN, f"probe error: {type(exc).__name__}: {exc}")
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
    )
