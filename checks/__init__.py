"""mailfleet's probe library: pure functions from a target to a ``ProbeResult``.

Every probe has the signature ``probe(target, options, deadline) -> ProbeResult``
and never raises for a network fault. ``PROBES`` maps the check names used by
the CLI, ``/probe`` and the metrics' ``check`` label to the probe functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from checks import dns, imap, port, quota, server, smtp, sync, tls
from checks.base import Probe
from checks.result import ProbeResult, Status
from checks.target import Credentials, Deadline, ProbeOptions, Secret, Target

PROBES: Mapping[str, Probe] = MappingProxyType(
    {
        "port": port.probe,
        "tls": tls.probe,
        "imap_login": imap.probe,
        "smtp": smtp.probe,
        "quota": quota.probe,
        "dns": dns.probe,
        "server": server.probe,
        "sync": sync.probe,
    }
)

# What a sweep runs when the inventory does not say (mailfleet_checks):
# the probes that need no probe account.
DEFAULT_CHECKS: tuple[str, ...] = ("port", "tls", "smtp", "dns")

__all__ = [
    "DEFAULT_CHECKS",
    "PROBES",
    "Credentials",
    "Deadline",
    "Probe",
    "ProbeOptions",
    "ProbeResult",
    "Secret",
    "Status",
    "Target",
]
