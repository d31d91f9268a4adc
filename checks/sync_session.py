"""The sync probe's sessions: a logged-in IMAP session, and a submission over SMTP.

Both go through the protocol layer (``checks.session``: the target's address,
TLS with ``mail_hostname`` as SNI and verified name), bound to the probe's
deadline. Failures name where they happened: ``IMAP 10.77.0.12:993: ...``,
``submission on mx1 (10.77.0.11:587): login refused: 535 ...``.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage

from mailfleet.checks import sasl
from mailfleet.checks.base import AuthRejected, ProbeFailure
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import Reason, Status
from mailfleet.checks.session import Session, cert_failure, open_tls
from mailfleet.checks.smtp_proto import auth_mechanisms
from mailfleet.checks.target import CredentialsError, Deadline, ProbeOptions, Target

_QUEUED_RE = re.compile(r"queued as ([0-9A-Za-z]+)")


def remaining(deadline: Deadline, step: str) -> float:
    try:
        return deadline.timeout()
    except TimeoutError:
        raise ProbeFailure(f"timed out before {step} ({deadline.budget:.1f} s budget)",
                           reason=Reason.TIMEOUT) from None


def _at(where: str, peer: str, failure: ProbeFailure) -> ProbeFailure:
    """The failure, said with where it happened (the peer once, not twice)."""
    words = failure.message.removeprefix(f"{peer}: ")
    return ProbeFailure(f"{where}: {words}", failure.status, failure.reason)


def _open(target: Target, service: str, options: ProbeOptions, deadline: Deadline,
          where: str) -> Session:
    ctx = tls_context(target.ca_bundle or options.ca_bundle, verify=True)
    peer = f"{target.address}:{target.port(service)}"
    try:
        return open_tls(target, service, ctx, deadline, lambda _phase: contextlib.nullcontext(),
                        greet=True)
    except ssl.SSLCertVerificationError as exc:
        raise _at(where, peer, cert_failure(exc, "certificate not trusted")) from None
    except ProbeFailure as failure:
        raise _at(where, peer, failure) from None


def open_imap(target: Target, options: ProbeOptions, deadline: Deadline) -> ImapClient:
    """A logged-in IMAP session on the target's probe account, bound to the deadline."""
    creds = target.credentials
    if creds is None:
        raise ProbeFailure("no probe account configured (mailfleet_probe_user)", Status.UNKNOWN,
                           Reason.NOT_CONFIGURED)
    remaining(deadline, "the IMAP connection")
    service = options.imap_service
    port = target.port(service)
    where = f"IMAP {target.address}:{port}"
    client = _open(target, service, options, deadline, where).imap
    assert client is not None
    mechanism = options.mechanism.upper()
    try:
        remaining(deadline, "login")
    except ProbeFailure:
        close(client)
        raise
    try:
        if not client.capabilities:
            client.capability()
        secret = (creds.secret_token() if mechanism in sasl.TOKEN_MECHANISMS
                  else creds.secret_password())
        before = client.capabilities
        client.authenticate(mechanism, creds.user, secret, target.mail_hostname, port)
        if client.capabilities is before:  # the login reply did not say what is offered now
            client.capability()
    except CredentialsError as exc:
        close(client)
        raise ProbeFailure(str(exc), Status.UNKNOWN, Reason.NOT_CONFIGURED) from None
    except AuthRejected as exc:
        close(client)
        raise ProbeFailure(f"{where}: {mechanism} login rejected: {exc.why}",
                           reason=Reason.AUTH_FAILED) from None
    except ProbeFailure as failure:
        close(client)
        raise _at(f"{where}: login failed", f"{target.address}:{port}", failure) from None
    return client


def close(client: ImapClient) -> None:
    client.logout()
    client.conn.close()


@dataclass(frozen=True)
class Submission:
    accepted_at: float  # wall clock, when the 250 after DATA arrived
    accepted_mono: float
    queue_id: str


def submit(
    source: Target, recipient: str, msg: EmailMessage, options: ProbeOptions, deadline: Deadline
) -> Submission:
    """Submit on the source's submission port (587 STARTTLS) with SASL, as its probe account."""
    creds = source.credentials
    if creds is None:
        raise ProbeFailure(f"no probe account on {source.name} to submit with", Status.UNKNOWN,
                           Reason.NOT_CONFIGURED)
    port = source.port("submission")
    where = f"submission on {source.name} ({source.address}:{port})"
    try:
        password = creds.secret_password()
    except CredentialsError as exc:
        raise ProbeFailure(str(exc), Status.UNKNOWN, Reason.NOT_CONFIGURED) from None
    remaining(deadline, "submission")
    session = _open(source, "submission", options, deadline, where)
    smtp = session.smtp
    assert smtp is not None
    try:
        offered = auth_mechanisms(session.ehlo_after)
        mechanism = "PLAIN" if "PLAIN" in offered or "LOGIN" not in offered else "LOGIN"
        smtp.authenticate(mechanism, creds.user, password, source.mail_hostname, port)
        reply = smtp.send_message(creds.user, recipient, msg.as_bytes())
        accepted_at, accepted_mono = time.time(), time.monotonic()
        smtp.quit()
    except AuthRejected as exc:
        raise ProbeFailure(f"{where}: login refused: {exc.why}",
                           reason=Reason.AUTH_FAILED) from None
    except ProbeFailure as failure:
        raise _at(where, f"{source.address}:{port}", failure) from None
    finally:
        session.close()
    queued = _QUEUED_RE.search(reply.text)
    return Submission(accepted_at, accepted_mono, queued.group(1) if queued else "")
