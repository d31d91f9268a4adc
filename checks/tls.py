"""``tls``: handshake, version, certificate chain, hostname and expiry.

The first handshake verifies as a mail client does (chain against the CA
bundle, hostname = ``mail_hostname``). When that fails, a second handshake
without verification fetches the certificates anyway, so an expired or
untrusted certificate still reports its dates (blackbox_exporter#1119).

Two expiries are reported: ``chain_earliest_not_after`` over the *verified*
chain (the path to the trust anchor, what matters) and
``served_earliest_not_after`` over every certificate the server sent (an
extra old root or a second chain shows up here only; blackbox_exporter#340).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.net import Connection, tls_context
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.session import DEFAULT_HELO, open_tls, served_certificates
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import (
    CertInfo,
    earliest,
    hostname_matches,
    served_chain,
    session_values,
    span,
    utc,
    verified_chain,
)
from mailfleet.checks.values import Values, declared

CHECK = "tls"
SERVICES = ("imaps", "imap", "smtp", "submission", "submissions")

@declared
@dataclass(frozen=True)
class TlsValues(Values):
    """What ``tls`` measured. Timestamps are seconds since the epoch (UTC)."""

    service: str = ""
    port: int | None = None
    hostname: str = ""  # the name verified (mail_hostname), also the SNI sent
    ca_bundle: str = ""  # the trust anchor's path, or "system"
    tls_version: str = ""
    tls_cipher: str = ""
    chain_verified: bool | None = None
    verify_error: str = ""
    served_certs: Sequence[Mapping[str, Any]] = ()  # every certificate sent (CertInfo.to_dict)
    served_earliest_not_after: float | None = None  # over everything the server sent
    chain_earliest_not_after: float | None = None  # over the verified path only
    cert_subject: str = ""
    cert_issuer: str = ""
    cert_sans: Sequence[str] = ()
    cert_not_before: float | None = None
    cert_not_after: float | None = None
    cert_days_left: float | None = None
    hostname_match: bool | None = None



def handshake(
    target: Target, service: str, ctx: ssl.SSLContext, deadline: Deadline, acq: Acquisition,
    helo: str = DEFAULT_HELO,
) -> tuple[Connection, ssl.SSLSocket]:
    """Connect to the service and complete a TLS handshake (STARTTLS for imap/smtp/submission).

    ``ssl.SSLCertVerificationError`` propagates; the caller owns the Connection.
    """
    session = open_tls(target, service, ctx, deadline, acq.measure, helo=helo,
                       ehlo_phase="greeting")
    assert session.conn is not None and session.tls is not None
    return session.conn, session.tls


def describe(target: Target, options: ProbeOptions, acq: Acquisition) -> Path | None:
    """What is looked at (service, port, name, trust anchor) into ``acq``; the CA bundle."""
    service = options.tls_service
    if service not in SERVICES:
        raise ProbeFailure(f"tls_service must be one of {', '.join(SERVICES)}", Status.UNKNOWN,
                           Reason.NOT_CONFIGURED)
    ca = target.ca_bundle or options.ca_bundle
    acq.values.update(
        {
            "service": service,
            "port": target.port(service),
            "hostname": target.mail_hostname,
            "ca_bundle": str(ca) if ca else "system",
        }
    )
    return ca


def verify_error_of(exc: ssl.SSLCertVerificationError) -> str:
    return str(exc.verify_message or exc.reason or exc)


def analyse(tls: ssl.SSLSocket, target: Target, verify_error: str, acq: Acquisition) -> None:
    """The certificate facts of a finished handshake into ``acq`` (the connection stays open).

    ``verify_error`` is empty when the handshake verified the chain (then the
    verified path is known too).
    """
    verified = verified_chain(tls) if not verify_error else []
    record(served_chain(tls), verified, session_values(tls), target, verify_error, acq)


def record(served: list[CertInfo], verified: list[CertInfo], session: dict[str, Any],
           target: Target, verify_error: str, acq: Acquisition) -> None:
    acq.values.update(session)
    acq.values["chain_verified"] = not verify_error
    acq.values["verify_error"] = verify_error
    acq.values["served_certs"] = [c.to_dict() for c in served]
    acq.values["served_earliest_not_after"] = earliest(served)
    acq.values["chain_earliest_not_after"] = earliest(verified) if verified else None
    if served:
        leaf = served[0]
        acq.values.update(
            {
                "cert_subject": leaf.subject,
                "cert_issuer": leaf.issuer,
                "cert_sans": list(leaf.sans),
                "cert_not_before": leaf.not_before,
                "cert_not_after": leaf.not_after,
                "cert_days_left": round((leaf.not_after - time.time()) / 86400, 2),
                "hostname_match": hostname_matches(target.mail_hostname, leaf),
            }
        )


def acquire_unverified(
    target: Target, service: str, deadline: Deadline, verify_error: str, acq: Acquisition
) -> None:
    """After a failed verification: fetch the certificates anyway, the dates must be known."""
    served, session = served_certificates(target, service, deadline, acq.measure)
    record(served, [], session, target, verify_error, acq)


def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    ca = describe(target, options, acq)
    service = options.tls_service
    try:
        conn, tls = handshake(target, service, tls_context(ca, verify=True), deadline, acq)
    except ssl.SSLCertVerificationError as exc:
        acquire_unverified(target, service, deadline, verify_error_of(exc), acq)
        return
    try:
        analyse(tls, target, "", acq)
    finally:
        conn.close()


def judge_for(options: ProbeOptions, now: float | None = None) -> Any:
    def judge(values: dict[str, Any]) -> Verdict:
        return judge_tls(values, options, time.time() if now is None else now)

    return judge


def judge_tls(values: dict[str, Any], options: ProbeOptions, now: float) -> Verdict:
    host = values.get("hostname", "")
    served = values.get("served_certs") or []
    if not served:
        return Verdict(Status.CRITICAL, "server sent no certificate", Reason.CERT_INVALID)
    leaf = served[0]
    if leaf["not_after"] < now:
        return Verdict(
            Status.CRITICAL,
            f"certificate for {host} expired {span(now - leaf['not_after'])} ago "
            f"(not after {utc(leaf['not_after'])})",
            Reason.CERT_EXPIRED,
        )
    if leaf["not_before"] > now:
        return Verdict(
            Status.CRITICAL,
            f"certificate for {host} is not valid until {utc(leaf['not_before'])} "
            f"(in {span(leaf['not_before'] - now)})",
            Reason.CERT_INVALID,
        )
    if not values.get("hostname_match"):
        names = ", ".join(leaf["sans"]) or leaf["subject"]
        return Verdict(Status.CRITICAL, f"certificate is for {names}, not {host}",
                       Reason.CERT_INVALID)
    if not values.get("chain_verified"):
        why = values.get("verify_error") or "verification failed"
        for cert in served[1:]:
            if cert["not_after"] < now:
                why += (f"; {cert['subject']} in the chain expired "
                        f"{span(now - cert['not_after'])} ago")
        trust = values.get("ca_bundle", "system")
        store = "the system CA store" if trust == "system" else trust
        return Verdict(Status.CRITICAL,
                       f"certificate chain for {host} is not trusted by {store}: {why}",
                       Reason.CERT_INVALID)
    expiry = values.get("chain_earliest_not_after") or leaf["not_after"]
    left = expiry - now
    used = lifetime_used_percent(leaf["not_before"], leaf["not_after"], expiry, now)
    for status, percent, days in (
        (Status.CRITICAL, options.tls_critical_lifetime_percent, options.tls_critical_days),
        (Status.WARNING, options.tls_warning_lifetime_percent, options.tls_warning_days),
    ):
        if used >= percent and left < days * 86400:
            lifetime = leaf["not_after"] - leaf["not_before"]
            return Verdict(status, f"certificate chain for {host} expires in {span(left)} "
                           f"({utc(expiry)}): {used:.0f}% of its lifetime of "
                           f"{span(lifetime)} used", Reason.THRESHOLD)
    return Verdict(Status.OK)


def lifetime_used_percent(not_before: float, not_after: float, expiry: float,
                          now: float) -> float:
    """How much of the leaf's lifetime is used, counting to ``expiry`` (the chain's
    earliest end: an intermediate that ends first shortens what is left). The same
    formula as the certificate alerts in prometheus/rules/mailfleet.yml."""
    lifetime = not_after - not_before
    if lifetime <= 0:
        return 100.0
    return 100.0 * (1 - (expiry - now) / lifetime)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, options, deadline, acq),
               judge_for(options))
