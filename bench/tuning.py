"""Prototypes of performance fixes for ``checks``, applied at run time by the benches.

The checks library belongs to another engineer; these patches let the bench
measure a proposed change before it is made there. Each is a function that
patches the live modules and can be turned on by name (``--tune ctx,resume``).

``ctx``     one ``SSLContext`` per (CA bundle, verify) instead of one per probe:
            ``load_verify_locations`` parses the bundle each time.
``resume``  the ``imap_login`` probe offers the TLS session of the latest
            verified handshake with the same server (address, port, SNI), so
            its handshake is an abbreviated one (no certificate to send, sign
            or verify). The ``tls`` probe keeps doing full handshakes: it is
            the one that looks at the certificate chain.
``certs``   parsed certificates cached by their DER bytes (a fleet serves the
            same few certificates sweep after sweep; parsing is ~60 us each).
``onecon``  a combined ``imaps`` check: one connection does the ``tls`` work
            (full verified handshake, chain, expiry) then greeting,
            capabilities, login and logout — one handshake per target instead
            of two. (Applied by the bench through the probe table.)
``pool``    the scheduler's probe threads come from a pool of ``concurrency``
            threads instead of one new thread per probe.
``batch``   results are written to SQLite in batches (one transaction per
            ~100 results or 0.2 s) instead of one transaction per result.

``certs``, ``pool``, ``batch`` and ``onecon`` are in the product now
(checks/tlsinfo.py, dashboard/scheduler.py, checks/tls_login.py): the bench's
``full`` variant includes them, and ``pool`` and ``batch`` are no-ops kept so
old command lines still run (the scheduler no longer starts a thread per probe
nor calls ``ResultStore.record``; their prototypes are in git history, commit
156ecdc). ``onecon`` still measures the old prototype (one ``imaps`` result per
target).
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mailfleet import checks
from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target

_sessions: dict[tuple[str, str, int], ssl.SSLSession] = {}
_sessions_lock = threading.Lock()
_offer = threading.local()
T = TypeVar("T")


def tune_ctx() -> None:
    original = checks.net.tls_context

    @functools.lru_cache(maxsize=64)
    def cached(ca_bundle: Path | None, verify: bool) -> ssl.SSLContext:
        return original(ca_bundle, verify)

    checks.net.tls_context = cached  # type: ignore[assignment]
    # and every module of the layer that took the name at import
    for module in (checks.tls, checks.imap_session, checks.smtp, checks.session,
                   checks.sync_session):
        module.tls_context = cached  # type: ignore[attr-defined]


def tune_resume() -> None:
    tune_ctx()  # sessions only resume on the context that made them
    start_tls = checks.net.Connection.start_tls
    close = checks.net.Connection.close

    def key(
        conn: checks.net.Connection, hostname: str | None, ctx: ssl.SSLContext
    ) -> tuple[str, str, int]:
        return (conn.peer, hostname or "", id(ctx))

    def patched_start_tls(
        self: checks.net.Connection, ctx: ssl.SSLContext, server_hostname: str | None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        k = key(self, server_hostname, ctx)
        self._mf_session_key = k  # type: ignore[attr-defined]
        if session is None and getattr(_offer, "on", False):
            with _sessions_lock:
                session = _sessions.get(k)
        return start_tls(self, ctx, server_hostname, session)

    def patched_close(self: checks.net.Connection) -> None:
        k = getattr(self, "_mf_session_key", None)
        sock = self.sock
        if k is not None and isinstance(sock, ssl.SSLSocket):
            try:
                session = sock.session
            except (ssl.SSLError, ValueError, OSError):
                session = None
            if session is not None and session.has_ticket:
                with _sessions_lock:
                    _sessions[k] = session
        close(self)

    def offering(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> T:
            _offer.on = True
            try:
                return fn(*args, **kwargs)
            finally:
                _offer.on = False

        return wrapper

    checks.net.Connection.start_tls = patched_start_tls  # type: ignore[method-assign]
    checks.net.Connection.close = patched_close  # type: ignore[method-assign]
    # the imap_login probe's session (not the tls check's): the one that resumes
    checks.imap_session.open_tls = offering(  # type: ignore[attr-defined]
        checks.imap_session.open_tls  # type: ignore[attr-defined]
    )


def tune_certs() -> None:
    checks.tlsinfo.cert_info = functools.lru_cache(maxsize=4096)(  # type: ignore[assignment]
        checks.tlsinfo.cert_info
    )


def imaps_probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """Prototype ``imaps`` check: the ``tls`` probe's work and ``imap_login`` on one connection."""

    def acquire(acq: Acquisition) -> None:
        ca = target.ca_bundle or options.ca_bundle
        user, secret = checks.credentials.secret_for(target, options.mechanism.upper())
        acq.values.update({"service": "imaps", "port": target.port("imaps"),
                           "hostname": target.mail_hostname})
        ctx = checks.net.tls_context(ca, verify=True)
        try:
            conn, tls = checks.tls.handshake(target, "imaps", ctx, deadline, acq)
        except ssl.SSLCertVerificationError as exc:
            raise ProbeFailure(f"TLS certificate not accepted: {exc.verify_message}") from None
        try:
            served = checks.tlsinfo.served_chain(tls)
            verified = checks.tlsinfo.verified_chain(tls)
            acq.values.update(checks.tlsinfo.session_values(tls))
            acq.values["chain_verified"] = True
            acq.values["verify_error"] = ""
            acq.values["served_certs"] = [c.to_dict() for c in served]
            acq.values["served_earliest_not_after"] = checks.tlsinfo.earliest(served)
            acq.values["chain_earliest_not_after"] = checks.tlsinfo.earliest(verified)
            if served:
                leaf = served[0]
                acq.values.update({
                    "cert_not_after": leaf.not_after,
                    "hostname_match": checks.tlsinfo.hostname_matches(target.mail_hostname, leaf),
                })
            client = checks.imap_client.ImapClient(conn)
            with acq.measure("greeting"):
                client.greeting()
            if not client.capabilities:
                with acq.measure("capability"):
                    client.capability()
            acq.values["capabilities"] = sorted(client.capabilities)
            del user, secret
            checks.imap_session.login(client, target, options, acq)
            client.logout()
        finally:
            conn.close()

    tls_judge = checks.tls.judge_for(options)

    def judge(values: dict[str, object]) -> Verdict:
        verdict: Verdict = tls_judge(values)
        if not values.get("logged_in"):
            return Verdict(Status.CRITICAL, "not logged in")
        return verdict

    return run("imaps", target, acquire, judge)


def _in_the_product() -> None:
    pass


TUNINGS: dict[str, Callable[[], None]] = {
    "ctx": tune_ctx, "resume": tune_resume, "certs": tune_certs, "pool": _in_the_product,
    "batch": _in_the_product, "onecon": lambda: None,
}


def apply(names: str) -> list[str]:
    applied = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        TUNINGS[name]()
        applied.append(name)
    return applied


def resumed_count() -> int:
    return len(_sessions)
