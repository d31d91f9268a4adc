"""The declarations (``checks.VALUES``) the dashboard reads stored values through."""

from __future__ import annotations

from mailfleet.checks import VALUES
from mailfleet.checks.dns import DnsValues
from mailfleet.checks.imap import ImapLoginValues
from mailfleet.checks.port import PortValues
from mailfleet.checks.quota import QuotaValues
from mailfleet.checks.server import ServerValues
from mailfleet.checks.smtp import SmtpValues
from mailfleet.checks.sync import SyncValues
from mailfleet.checks.tls import TlsValues

__all__ = [
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
