"""What the store returns: plain frozen records, decoded from rows in one place."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailfleet.checks.result import Reason, Status

# The columns every ``StoredResult`` is read from, in ``decode``'s order.
RESULT_COLUMNS = (
    "r.host, r.check_name, r.started_at, r.success, r.status, r.duration, r.error, "
    'r.phases, r."values", r.reason'
)


@dataclass(frozen=True)
class StoredResult:
    """One probe result as stored; ``last_success_at`` only on ``latest`` rows."""

    host: str
    check: str
    started_at: float
    success: bool
    status: Status
    duration: float
    error: str
    phases: Mapping[str, float] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    last_success_at: float | None = None
    reason: Reason = Reason.NONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "check": self.check,
            "started_at": self.started_at,
            "success": self.success,
            "status": self.status.label,
            "duration": self.duration,
            "error": self.error,
            "reason": str(self.reason),
            "phases": dict(self.phases),
            "values": dict(self.values),
            "last_success_at": self.last_success_at,
        }


def reason_of(word: str) -> Reason:
    try:
        return Reason(word)
    except ValueError:  # a word a newer release wrote into the same schema
        return Reason.OTHER


def decode(row: Any, last_success: float | None = None) -> StoredResult:
    """A ``StoredResult`` from the ``RESULT_COLUMNS`` of one row."""
    return StoredResult(
        host=row[0],
        check=row[1],
        started_at=row[2],
        success=bool(row[3]),
        status=Status(row[4]),
        duration=row[5],
        error=row[6],
        phases=json.loads(row[7]),
        values=json.loads(row[8]),
        last_success_at=last_success,
        reason=reason_of(row[9]),
    )


@dataclass(frozen=True)
class Sweep:
    started_at: float
    duration: float
    probes: int
    failures: int
    overrun: bool


@dataclass(frozen=True)
class HostSummary:
    host: str
    status: Status  # the worst status of its latest results (UNKNOWN when none)
    checks: Mapping[str, StoredResult]
    last_probe_at: float | None


@dataclass(frozen=True)
class SeriesPoint:
    """The newest result of one chart bucket: its timings and the few values asked for."""

    started_at: float
    status: Status
    phases: Mapping[str, float]
    values: Mapping[str, Any]  # only the declared keys the caller named


@dataclass(frozen=True)
class MeshPair:
    """The newest result of one ordered pair of the sync mesh."""

    source: str
    destination: str
    status: Status
    delivery_latency_seconds: float | None
    error: str
    reason: Reason
    started_at: float


@dataclass(frozen=True)
class LatestIndex:
    """One row of ``latest`` without its result: enough to tell what changed."""

    host: str
    check: str
    result_id: int
    last_success_at: float | None


def worst(statuses: Iterable[Status]) -> Status:
    """CRITICAL > WARNING > UNKNOWN > OK (nagios ordering, unknown is not ok)."""
    order = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}
    found = list(statuses)
    return max(found, key=order.__getitem__) if found else Status.UNKNOWN
