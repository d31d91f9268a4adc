"""The one result type every probe returns.

A probe never raises for a network fault: it returns a ``ProbeResult`` whose
``success`` is false and whose ``error`` says, in words an admin understands,
what went wrong ("connection refused", "no greeting within 5.0 s").
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class Status(enum.IntEnum):
    """Nagios-style status: the value is the plugin exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one target found.

    ``phases`` holds timings in seconds (``connect``, ``tls``, ``greeting``,
    ``auth``, ..., and ``total``); ``values`` holds what was measured
    (TLS version, certificate dates, capabilities, quota, ...). Neither ever
    contains a secret.
    """

    check: str
    target: str
    success: bool
    status: Status = Status.OK
    phases: Mapping[str, float] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", _frozen(self.phases))
        object.__setattr__(self, "values", _frozen(self.values))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (status as its lower-case label)."""
        return {
            "check": self.check,
            "target": self.target,
            "success": self.success,
            "status": self.status.label,
            "phases": dict(self.phases),
            "values": dict(self.values),
            "error": self.error,
            "started_at": self.started_at,
        }
