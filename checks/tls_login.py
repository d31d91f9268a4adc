"""``tls``, ``imap_login`` (and ``quota``) on one IMAPS connection: one handshake and one
login per target and sweep, not two or three.

A host watched with both checks on the same implicit-TLS port pays for two
full TLS handshakes per sweep when they run apart — and the handshake is
most of a probe's CPU (bench/README.md). Here one connection does the
``tls`` check's work (verified handshake, chain, expiry) and then the
``imap_login`` check's (greeting, capabilities, login, logout), and two
results come back under the two check names, with the values, phases and
errors each probe gives alone:

* no connection, or a failed handshake: both fail with the same words;
* an untrusted or expired certificate: ``imap_login`` fails as it does alone
  ("TLS certificate not accepted: ..."), ``tls`` fetches the certificates
  without verification on a second connection, as it does alone;
* login refused, or a broken IMAP server behind good TLS: ``tls`` is judged
  on its own, only ``imap_login`` fails.

Both share one deadline: the ``imap_login`` probe alone already does the
handshake within its deadline, and the ``tls`` part only adds local work.

With ``with_quota`` a third result, ``quota``, asks GETQUOTAROOT on the same
logged-in session (as ``quota`` alone would after its own connection and login):
it carries the login's values and phases, fails with the login's words when the
login failed, and is judged on its own otherwise.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from mailfleet.checks import imap, imap_session, quota, tls
from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, crashed
from mailfleet.checks.credentials import secret_for
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.session import Session, cert_failure, open_tls
from mailfleet.checks.target import Deadline, ProbeOptions, Target

CHECKS = (tls.CHECK, imap.CHECK)
WITH_QUOTA = (*CHECKS, quota.CHECK)
SERVICE = "imaps"


def shares_connection(options: ProbeOptions) -> bool:
    """Do both checks look at the same implicit-TLS service (so one connection does)?"""
    return options.tls_service == SERVICE and options.imap_service == SERVICE


class _Part:
    """One of the two results: its own scratch space, judged as ``checks.base.run`` does."""

    def __init__(self, check: str, target: Target, started_at: float, start: float) -> None:
        self.check = check
        self.target = target
        self.started_at = started_at
        self.start = start
        self.acq = Acquisition()
        self.result: ProbeResult | None = None

    def run(self, acquire: Callable[[Acquisition], None],
            judge: Callable[[dict[str, Any]], Verdict]) -> None:
        try:
            acquire(self.acq)
            verdict = judge(self.acq.values)
        except ProbeFailure as failure:
            verdict = Verdict(failure.status, failure.message, failure.reason)
        except Exception as exc:  # a bug must not take the other result down
            verdict = crashed(exc)
        self.end(verdict)

    def end(self, verdict: Verdict) -> None:
        if self.result is not None:
            return
        self.acq.phases["total"] = time.monotonic() - self.start
        self.result = ProbeResult(
            check=self.check,
            target=self.target.name,
            success=verdict.status in (Status.OK, Status.WARNING),
            status=verdict.status,
            phases=self.acq.phases,
            values=self.acq.values,
            error=verdict.message,
            started_at=self.started_at,
            reason=verdict.why(),
        )


@contextlib.contextmanager
def _measure(phase: str, *parts: _Part) -> Iterator[None]:
    """Time one phase both results went through (each alone would have timed its own)."""
    start = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - start
        for part in parts:
            part.acq.phases[phase] = part.acq.phases.get(phase, 0.0) + took


def probe(target: Target, options: ProbeOptions, deadline: Deadline,
          with_quota: bool = False) -> tuple[ProbeResult, ...]:
    """The ``tls`` and ``imap_login`` results (and ``quota``'s), from one connection when
    they can share it."""
    try:
        if not shares_connection(options):
            raise ProbeFailure("not on one service", reason=Reason.OTHER)
        # imap_login fails without touching the network when it has no account: alone, then.
        secret_for(target, options.mechanism.upper())
    except ProbeFailure:
        alone = (tls.probe(target, options, deadline), imap.probe(target, options, deadline))
        return (*alone, quota.probe(target, options, deadline)) if with_quota else alone
    started_at = time.time()
    start = time.monotonic()
    cert = _Part(tls.CHECK, target, started_at, start)
    login = _Part(imap.CHECK, target, started_at, start)
    usage = _Part(quota.CHECK, target, started_at, start) if with_quota else None
    parts = (cert, login) if usage is None else (cert, login, usage)
    session: Session | None = None
    try:
        ca = tls.describe(target, options, cert.acq)
        for part in parts[1:]:  # what imap_login and quota each record before connecting
            part.acq.values.update({"service": SERVICE, "port": target.port(SERVICE)})
        try:
            session = open_tls(target, SERVICE, tls_context(ca, verify=True), deadline,
                               lambda phase: _measure(phase, *parts))
        except ssl.SSLCertVerificationError as exc:
            refused = Verdict(Status.CRITICAL, cert_failure(exc).message, Reason.CERT_INVALID)
            for part in parts[1:]:
                part.end(refused)
            error = tls.verify_error_of(exc)
            cert.run(lambda acq: tls.acquire_unverified(target, SERVICE, deadline, error, acq),
                     tls.judge_for(options))
        else:
            sock, client = session.tls, session.imap
            assert sock is not None and client is not None
            cert.run(lambda acq: tls.analyse(sock, target, "", acq), tls.judge_for(options))
            login.run(lambda acq: _log_in(client, sock, target, options, acq,
                                          logout=usage is None), imap.judge)
            if usage is not None:
                _quota(client, login, usage, options)
    except ProbeFailure as failure:  # no connection, no handshake: no check got anywhere
        for part in parts:
            part.end(Verdict(failure.status, failure.message, failure.reason))
    except Exception as exc:
        for part in parts:
            part.end(crashed(exc))
    finally:
        if session is not None:
            session.close()
    results: list[ProbeResult] = []
    for part in parts:
        assert part.result is not None  # every path above ends every part
        results.append(part.result)
    return tuple(results)


def _log_in(client: ImapClient, sock: ssl.SSLSocket, target: Target, options: ProbeOptions,
            acq: Acquisition, logout: bool = True) -> None:
    with acq.measure("greeting"):
        client.greeting()
    imap_session.session_ready(client, sock, acq)
    imap_session.login(client, target, options, acq)
    if logout:
        client.logout()


def _quota(client: ImapClient, login: _Part, usage: _Part, options: ProbeOptions) -> None:
    """``quota`` on the session ``login`` opened: what ``quota`` alone measures after its login."""
    assert login.result is not None
    usage.acq.values.update(login.acq.values)
    usage.acq.phases.update({k: v for k, v in login.acq.phases.items() if k != "total"})
    if not login.result.success:  # quota alone would have failed at the same login
        usage.end(Verdict(login.result.status, login.result.error, login.result.reason))
        return

    def acquire(acq: Acquisition) -> None:
        quota.read_quota(client, acq)
        client.logout()

    usage.run(acquire, quota.judge_for(options))
