"""The probe account's IMAP session as the probes open it: TLS, greeting, capabilities, login.

Shared by ``imap_login``, ``quota`` and ``tls_login``, which record the same
values on the way in (``ImapLoginValues``).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from mailfleet.checks import sasl
from mailfleet.checks.base import Acquisition, ProbeFailure
from mailfleet.checks.credentials import secret_for
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import Reason, Status
from mailfleet.checks.session import IMAP_SERVICES, cert_failure, open_tls
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import session_values
from mailfleet.checks.values import Values, declared


@declared
@dataclass(frozen=True)
class ImapLoginValues(Values):
    """What ``imap_login`` measured (``quota`` measures it too, on its way in)."""

    service: str = ""
    port: int | None = None
    tls_version: str = ""
    tls_cipher: str = ""
    capabilities: Sequence[str] = ()
    mechanism: str = ""
    user: str = ""  # the probe account (an inventory setting, not a secret)
    logged_in: bool = False


def open_session(
    target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition
) -> ImapClient:
    """Connect, TLS (implicit or STARTTLS), greeting, capabilities."""
    service = options.imap_service
    if service not in IMAP_SERVICES:
        raise ProbeFailure(f"imap_service must be imaps or imap, not {service!r}", Status.UNKNOWN,
                           Reason.NOT_CONFIGURED)
    acq.values.update({"service": service, "port": target.port(service)})
    ctx = tls_context(target.ca_bundle or options.ca_bundle, verify=True)
    try:
        session = open_tls(target, service, ctx, deadline, acq.measure, greet=True)
    except ssl.SSLCertVerificationError as exc:
        raise cert_failure(exc) from None
    assert session.imap is not None and session.tls is not None
    try:
        session_ready(session.imap, session.tls, acq)
    except BaseException:
        session.close()
        raise
    return session.imap


def session_ready(client: ImapClient, tls: ssl.SSLSocket, acq: Acquisition) -> None:
    """After TLS and the greeting: the session's TLS facts and the capabilities."""
    acq.values.update(session_values(tls))
    if not client.capabilities:
        with acq.measure("capability"):
            client.capability()
    acq.values["capabilities"] = sorted(client.capabilities)


def login(
    client: ImapClient, target: Target, options: ProbeOptions, acq: Acquisition
) -> None:
    mechanism = options.mechanism.upper()
    if mechanism not in sasl.MECHANISMS:
        raise ProbeFailure(f"unknown mechanism {options.mechanism!r}", Status.UNKNOWN,
                           Reason.NOT_CONFIGURED)
    user, secret = secret_for(target, mechanism)
    acq.values.update({"mechanism": mechanism, "user": user})
    with acq.measure("auth"):
        client.authenticate(
            mechanism, user, secret, target.mail_hostname, int(acq.values.get("port", 0))
        )
    acq.values["logged_in"] = True
