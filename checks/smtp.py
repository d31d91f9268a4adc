"""``smtp``: banner, EHLO, STARTTLS, and AUTH offered only after TLS (optionally a login).

Port 25 (``smtp``), 587 (``submission``, STARTTLS) or 465 (``submissions``,
implicit TLS). The client (``checks.smtp_client``) keeps a long SASL initial
response off the AUTH line past 998 octets.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.credentials import secret_for
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.session import SMTP_SERVICES, Session, cert_failure, open_tls
from mailfleet.checks.smtp_client import SmtpClient
from mailfleet.checks.smtp_proto import auth_mechanisms, banner_hostname
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import session_values
from mailfleet.checks.values import Values, declared

CHECK = "smtp"
SERVICES = SMTP_SERVICES

@declared
@dataclass(frozen=True)
class SmtpValues(Values):
    """What ``smtp`` measured. The ``*_before_tls`` values exist only on STARTTLS ports."""

    service: str = ""
    port: int | None = None
    banner: str = ""
    banner_hostname: str = ""
    extensions_before_tls: Sequence[str] | None = None
    auth_before_tls: Sequence[str] | None = None
    starttls_offered: bool | None = None
    tls_version: str = ""
    tls_cipher: str = ""
    extensions_after_tls: Sequence[str] = ()
    auth_after_tls: Sequence[str] = ()
    mechanism: str = ""
    logged_in: bool = False



def open_session(
    target: Target, service: str, helo: str, ca: Any, deadline: Deadline, acq: Acquisition,
    *, verify: bool = True,
) -> tuple[SmtpClient, ssl.SSLSocket | None]:
    """Connect, banner, EHLO, STARTTLS (or implicit TLS), EHLO again. Returns TLS socket."""
    if service not in SMTP_SERVICES:
        raise ProbeFailure(f"smtp service must be one of {', '.join(SMTP_SERVICES)}",
                           Status.UNKNOWN, Reason.NOT_CONFIGURED)
    acq.values.update({"service": service, "port": target.port(service)})
    ctx = tls_context(ca, verify=verify)
    session = Session()
    try:
        open_tls(target, service, ctx, deadline, acq.measure, helo=helo, greet=True,
                 session=session)
    except ssl.SSLCertVerificationError as exc:
        raise cert_failure(exc) from None
    finally:
        _record(session, acq)
    assert session.smtp is not None and session.tls is not None
    acq.values.update(session_values(session.tls))
    acq.values["extensions_after_tls"] = sorted(session.ehlo_after)
    acq.values["auth_after_tls"] = auth_mechanisms(session.ehlo_after)
    return session.smtp, session.tls


def _record(session: Session, acq: Acquisition) -> None:
    """What the session showed, also when it stopped half-way (STARTTLS not offered)."""
    if session.banner is not None:
        banner = session.banner
        acq.values["banner"] = banner.lines[0][:200] if banner.lines else ""
        acq.values["banner_hostname"] = banner_hostname(banner)
    before = session.ehlo_before
    if before is not None:
        acq.values["extensions_before_tls"] = sorted(before)
        acq.values["auth_before_tls"] = auth_mechanisms(before)
        acq.values["starttls_offered"] = "STARTTLS" in before


def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    mechanism = options.mechanism.upper()
    if options.smtp_auth:
        secret_for(target, mechanism)
    ca = target.ca_bundle or options.ca_bundle
    client, _tls = open_session(target, options.smtp_service, options.smtp_helo, ca, deadline, acq)
    try:
        if options.smtp_auth:
            user, secret = secret_for(target, mechanism)
            acq.values["mechanism"] = mechanism
            if mechanism not in acq.values["auth_after_tls"]:
                raise ProbeFailure(f"server does not offer AUTH {mechanism} after STARTTLS",
                                   reason=Reason.UNSUPPORTED)
            with acq.measure("auth"):
                client.authenticate(mechanism, user, secret, target.mail_hostname,
                                    int(acq.values["port"]))
            acq.values["logged_in"] = True
        client.quit()
    finally:
        client.conn.close()


def judge_for(target: Target, options: ProbeOptions) -> Any:
    def judge(values: dict[str, Any]) -> Verdict:
        problems: list[tuple[Status, str]] = []
        if values.get("auth_before_tls"):
            problems.append((Status.WARNING, "AUTH offered before STARTTLS "
                             f"({', '.join(values['auth_before_tls'])})"))
        if values.get("service") in ("submission", "submissions") and not values.get(
            "auth_after_tls"
        ):
            problems.append((Status.CRITICAL, "AUTH not offered after TLS on the submission port"))
        name = values.get("banner_hostname", "")
        expected = target.mail_hostname.lower().rstrip(".")
        if expected and name != expected:
            problems.append((Status.WARNING, f"banner names {name or 'nothing'!s}, "
                             f"expected {expected}"))
        if not problems:
            return Verdict(Status.OK)
        status = max(s for s, _ in problems)
        return Verdict(status, "; ".join(m for _, m in problems))

    return judge


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(
        CHECK, target, lambda acq: acquire(target, options, deadline, acq),
        judge_for(target, options),
    )
