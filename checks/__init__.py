"""mailfleet's probe library: pure functions from a target to a ``ProbeResult``.

Every probe has the signature ``probe(target, options, deadline) -> ProbeResult``
and never raises for a network fault. ``PROBES`` maps the check names used by
the CLI, ``/probe`` and the metrics' ``check`` label to the probe functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailfleet.checks import dns, imap, port, quota, server, smtp, tls
from mailfleet.checks.base import Probe
from mailfleet.checks.dns import DnsValues
from mailfleet.checks.imap import ImapLoginValues
from mailfleet.checks.port import PortValues
from mailfleet.checks.quota import QuotaValues
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.server import ServerValues
from mailfleet.checks.smtp import SmtpValues
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
from mailfleet.checks.tls import TlsValues
from mailfleet.checks.values import Values


def sync_unavailable(check: str, target: Target) -> ProbeResult | None:
    """An UNKNOWN result saying why, when ``checks.sync`` cannot be imported here.

    The sync probe needs imapclient; a watcher that lacks it (Debian 12 has no
    package of it) still runs every other check instead of failing to start.
    """
    try:
        from mailfleet.checks import sync  # noqa: F401
    except ImportError as exc:
        return ProbeResult(
            check=check, target=target.name, success=False, status=Status.UNKNOWN,
            error=f"the {check} check needs the Python package imapclient on the watching "
                  f"host ({exc}); install it (pip install imapclient) or drop the check",
        )
    return None


def _sync_probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """``checks.sync.probe``, imported when first used (see ``sync_unavailable``)."""
    missing = sync_unavailable("sync", target)
    if missing is not None:
        return missing
    from mailfleet.checks import sync

    return sync.probe(target, options, deadline)


def _sync_values() -> type[Values]:
    # SyncValues sits in checks.sync, which imports imapclient: read its declaration without
    # importing the probe where imapclient is missing.
    try:
        from mailfleet.checks.sync import SyncValues
    except ImportError:
        return Values
    return SyncValues


PROBES: Mapping[str, Probe] = MappingProxyType(
    {
        "port": port.probe,
        "tls": tls.probe,
        "imap_login": imap.probe,
        "smtp": smtp.probe,
        "quota": quota.probe,
        "dns": dns.probe,
        "server": server.probe,
        "sync": _sync_probe,
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
        "sync": _sync_values(),
        "sync_mesh": _sync_values(),
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
