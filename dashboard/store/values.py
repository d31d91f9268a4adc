"""The declarations (``checks.VALUES``) the dashboard reads stored values through.

``checks.sync`` imports imapclient; a watcher without it (Debian 12 has no package
of it) runs no sync check, and ``checks.VALUES`` holds the bare ``Values`` base
for sync. ``SYNC_READABLE`` tells readers whether sync values can be read here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailfleet.checks import VALUES
from mailfleet.checks.dns import DnsValues
from mailfleet.checks.imap import ImapLoginValues
from mailfleet.checks.port import PortValues
from mailfleet.checks.quota import QuotaValues
from mailfleet.checks.server import ServerValues
from mailfleet.checks.smtp import SmtpValues
from mailfleet.checks.tls import TlsValues

if TYPE_CHECKING:
    from mailfleet.checks.sync import SyncValues
else:
    SyncValues = VALUES["sync"]

SYNC_READABLE: bool = "key" in vars(SyncValues)

__all__ = [
    "SYNC_READABLE",
    "VALUES",
    "DnsValues",
    "ImapLoginValues",
    "PortValues",
    "QuotaValues",
    "ServerValues",
    "SmtpValues",
    "SyncValues",
    "TlsValues",
]
