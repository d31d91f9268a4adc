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


class Reason(enum.StrEnum):
    """Why a probe did not pass, from a small fixed set: a metric label and a store column.

    Never free text (that is ``ProbeResult.error``); a probe that passes has ``NONE``.
    """

    NONE = ""
    REFUSED = "refused"  # the port answered with a reset: nothing listens
    UNREACHABLE = "unreachable"  # no route, host down
    TIMEOUT = "timeout"  # a step did not finish before the probe's deadline
    TLS_HANDSHAKE = "tls_handshake"  # no TLS session (not the certificate: the handshake)
    CERT_INVALID = "cert_invalid"  # untrusted chain, wrong name, not yet valid
    CERT_EXPIRED = "cert_expired"
    AUTH_FAILED = "auth_failed"  # the server refused the probe account's credentials
    DNS_NXDOMAIN = "dns_nxdomain"  # a name the check needs does not exist
    DNS_RECORD = "dns_record"  # a record is missing or says something else than it should
    PROTOCOL = "protocol"  # the server spoke, but not as the protocol says
    UNSUPPORTED = "unsupported"  # the server lacks what the check needs (IDLE, QUOTA, STARTTLS)
    REJECTED = "rejected"  # a well-formed "no" (5xx, NO, BAD) to a command other than login
    THRESHOLD = "threshold"  # measured fine, but past a warning or critical threshold
    LISTED = "listed"  # the server's address is on a DNS block list
    NOT_CONFIGURED = "not_configured"  # the inventory lacks what the check needs
    COMMAND_FAILED = "command_failed"  # the server check: a command on the host failed
    SERVICE_DOWN = "service_down"  # the server check: a daemon of the mail stack is not running
    DEADLINE = "deadline"  # abandoned by the scheduler past the probe's hard end
    CRASH = "crash"  # a bug in the probe
    UNKNOWN_CHECK = "unknown_check"
    OTHER = "other"


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
    reason: Reason = Reason.NONE

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
            "reason": str(self.reason),
            "started_at": self.started_at,
        }
