"""mailfleet's probe library: pure functions from a target to a ``ProbeResult``.

Every probe has the signature ``probe(target, options, deadline) -> ProbeResult``
and never raises for a network fault. ``PROBES`` maps the check names used by
the CLI, ``/probe`` and the metrics' ``check`` label to the probe functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailfleet.checks import dns, imap, port, quota, server, smtp, sync, tls
from mailfleet.checks.base import Probe
from mailfleet.checks.dns import DnsValues
from mailfleet.checks.imap import ImapLoginValues
from mailfleet.checks.port import PortValues
from mailfleet.checks.quota import QuotaValues
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.server import ServerValues
from mailfleet.checks.smtp import SmtpValues
from mailfleet.checks.sync import SyncValues
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
from mailfleet.checks.tls import TlsValues
from mailfleet.checks.values import Values

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

# Each check's declaration of its values (checks.values): what readers use instead of keys.
# A mesh pair (sync_mesh) is a sync measurement between two hosts.
VALUES: Mapping[str, type[Values]] = MappingProxyType(
    {
        "port": PortValues,
        "tls": TlsValues,
        "imap_login": ImapLoginValues,
        "smtp": SmtpValues,
        "quota": QuotaValues,
        "dns": DnsValues,
        "server": ServerValues,
        "sync": SyncValues,
        "sync_mesh": SyncValues,
    }
)

# What a sweep runs when the inventory does not say (mailfleet_checks):
# the probes that need no probe account.
DEFAULT_CHECKS: tuple[str, ...] = ("port", "tls", "smtp", "dns")

__all__ = [
    "DEFAULT_CHECKS",
    "PROBES",
    "VALUES",
    "Credentials",
    "Deadline",
    "Probe",
    "ProbeOptions",
    "ProbeResult",
    "Reason",
    "Secret",
    "Status",
    "Target",
    "Values",
]
