"""Opening a TLS session to a mail service, the one way every probe does it.

Connect to the target's address, then TLS at once (``imaps``, ``submissions``)
or after STARTTLS (``imap``, ``smtp``, ``submission``), always sending and
verifying ``mail_hostname`` (SNI), never the address connected to.
``ssl.SSLCertVerificationError`` is let through: each check words it its way
(``cert_failure``), and the ``tls`` check fetches the certificates anyway
(``served_certificates``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from mailfleet.checks.base import ProbeFailure
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.net import Connection, tls_context
from mailfleet.checks.result import Reason, Status
from mailfleet.checks.smtp_client import SmtpClient
from mailfleet.checks.smtp_proto import Reply
from mailfleet.checks.target import Deadline, Target
from mailfleet.checks.tlsinfo import CertInfo, served_chain, session_values

IMAP_SERVICES = ("imaps", "imap")
SMTP_SERVICES = ("smtp", "submission", "submissions")
IMPLICIT_TLS = ("imaps", "submissions")
DEFAULT_HELO = "mailfleet-probe.invalid"

Phase = Callable[[str], AbstractContextManager[None]]


@dataclass
class Session:
    """What opening got to; a caller that passed one in can read it after a failure."""

    service: str = ""
    port: int = 0
    conn: Connection | None = None
    tls: ssl.SSLSocket | None = None
    imap: ImapClient | None = None
    smtp: SmtpClient | None = None
    banner: Reply | None = None
    ehlo_before: dict[str, str] | None = None  # STARTTLS ports: EHLO before TLS
    ehlo_after: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def cert_failure(exc: ssl.SSLCertVerificationError,
                 words: str = "TLS certificate not accepted") -> ProbeFailure:
    return ProbeFailure(f"{words}: {exc.verify_message}", reason=Reason.CERT_INVALID)


def open_tls(
    target: Target, service: str, ctx: ssl.SSLContext, deadline: Deadline, phase: Phase,
    *, helo: str = DEFAULT_HELO, greet: bool = False, ehlo_phase: str = "ehlo",
    session: Session | None = None,
) -> Session:
    """Connect and finish a TLS handshake; the greeting is read where it comes first.

    ``greet``: read the greeting (and EHLO) after implicit TLS too. Phases
    ``connect``, ``tls``, ``greeting``, ``capability`` (IMAP STARTTLS) and
    ``ehlo_phase`` (SMTP) go to ``phase``.
    """
    if service not in IMAP_SERVICES + SMTP_SERVICES:
        raise ProbeFailure(f"unknown service {service!r}", Status.UNKNOWN, Reason.NOT_CONFIGURED)
    s = session if session is not None else Session()
    s.service, s.port = service, target.port(service)
    with phase("connect"):
        s.conn = conn = Connection.open(target.address, s.port, deadline)
    try:
        if service in IMPLICIT_TLS:
            with phase("tls"):
                s.tls = conn.start_tls(ctx, target.mail_hostname)
        if service in IMAP_SERVICES:
            _imap(s, conn, ctx, target.mail_hostname, phase, greet)
        else:
            _smtp(s, conn, ctx, target.mail_hostname, phase, greet, helo, ehlo_phase)
    except BaseException:
        conn.close()
        raise
    assert s.tls is not None
    return s


def _imap(s: Session, conn: Connection, ctx: ssl.SSLContext, hostname: str, phase: Phase,
          greet: bool) -> None:
    s.imap = client = ImapClient(conn)
    if s.tls is not None:
        if greet:
            with phase("greeting"):
                client.greeting()
        return
    with phase("greeting"):
        client.greeting()
        if not client.capabilities:
            client.capability()
    with phase("tls"):
        s.tls = client.starttls(ctx, hostname)


def _smtp(s: Session, conn: Connection, ctx: ssl.SSLContext, hostname: str, phase: Phase,
          greet: bool, helo: str, ehlo_phase: str) -> None:
    s.smtp = client = SmtpClient(conn)
    if s.tls is not None and not greet:
        return
    with phase("greeting"):
        s.banner = client.banner()
    with phase(ehlo_phase):
        keywords = client.ehlo(helo)
    if s.tls is not None:
        s.ehlo_after = keywords
        return
    s.ehlo_before = keywords
    if "STARTTLS" not in keywords:
        raise ProbeFailure("STARTTLS not offered", reason=Reason.UNSUPPORTED)
    with phase("tls"):
        s.tls = client.starttls(ctx, hostname)
    if greet:
        with phase(ehlo_phase):
            s.ehlo_after = client.ehlo(helo)


def served_certificates(
    target: Target, service: str, deadline: Deadline, phase: Phase, helo: str = DEFAULT_HELO
) -> tuple[list[CertInfo], dict[str, Any]]:
    """Every certificate the service sends, unverified, and the session's TLS facts.

    For a chain that failed verification: its dates must still be known.
    """
    s = open_tls(target, service, tls_context(None, verify=False), deadline, phase, helo=helo,
                 ehlo_phase="greeting")
    try:
        assert s.tls is not None
        return served_chain(s.tls), session_values(s.tls)
    finally:
        s.close()
