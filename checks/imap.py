"""``imap_login``: log in as a client would, over IMAPS (993) or STARTTLS (143).

Mechanisms: PLAIN (AUTHENTICATE PLAIN), LOGIN (the IMAP LOGIN command),
XOAUTH2 and OAUTHBEARER (token from the inventory or a token file). Secrets go
only to the socket; error messages quote the server, with any echo of a
secret replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mailfleet.checks import sasl
from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.imap_proto import Response, capabilities_of, literal_size, parse_line, quote
from mailfleet.checks.net import Connection, tls_context
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import CredentialsError, Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import session_values
from mailfleet.checks.values import Values, declared

CHECK = "imap_login"
# Send the SASL initial response on the command line (SASL-IR) only below this;
# longer ones (big JWTs) go in a continuation, which servers accept longer.
SASL_IR_MAX = 8000
MAX_RESPONSE_LINES = 10000

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



def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


class ImapClient:
    """A minimal IMAP client over a deadline-bound Connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._tag = 0
        self.capabilities: frozenset[str] = frozenset()

    def _next_tag(self) -> str:
        self._tag += 1
        return f"mf{self._tag}"

    def read_response(self, what: str) -> tuple[Response, bytes]:
        """One logical response: a line plus any literals it announces."""
        line = self.conn.readline(what)
        full = line
        while (size := literal_size(line)) is not None:
            full += b"\r\n" + self.conn.read_exact(size, what)
            line = self.conn.readline(what)
            full += line
        return parse_line(full), full

    def greeting(self) -> Response:
        resp, raw = self.read_response("greeting")
        if resp.kind != "untagged" or resp.status not in ("OK", "PREAUTH"):
            if resp.status == "BYE":
                raise ProbeFailure(f"server refused the connection: {resp.describe()}")
            shown = raw[:80].decode("utf-8", "replace")
            raise ProbeFailure(f"not an IMAP greeting: {shown!r}")
        caps = capabilities_of(resp)
        if caps is not None:
            self.capabilities = caps
        return resp

    def command(
        self, line: bytes, what: str, continuation: list[bytes] | None = None
    ) -> tuple[list[Response], Response]:
        """Send ``TAG line``; answer continuations from ``continuation``; return the tagged reply.

        Continuations beyond the given list are answered with ``*`` (cancel).
        """
        tag = self._next_tag()
        self.conn.send(tag.encode() + b" " + line + b"\r\n", what)
        pending = list(continuation or [])
        untagged: list[Response] = []
        for _ in range(MAX_RESPONSE_LINES):
            resp, _raw = self.read_response(f"reply to {what}")
            if resp.kind == "continuation":
                self.conn.send((pending.pop(0) if pending else b"*") + b"\r\n", what)
                untagged.append(resp)
                continue
            if resp.kind == "tagged" and resp.tag == tag:
                caps = capabilities_of(resp)
                if caps is not None:
                    self.capabilities = caps
                return untagged, resp
            if resp.kind == "untagged":
                caps = capabilities_of(resp)
                if caps is not None:
                    self.capabilities = caps
                if resp.status == "BYE":
                    raise ProbeFailure(f"server closed the session: {resp.describe()}")
            untagged.append(resp)
        raise ProbeFailure(f"no tagged reply to {what} after {MAX_RESPONSE_LINES} lines")

    def capability(self) -> frozenset[str]:
        _, done = self.command(b"CAPABILITY", "CAPABILITY")
        if not done.ok:
            raise ProbeFailure(f"CAPABILITY failed: {done.describe()}")
        return self.capabilities

    def starttls(self, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
        if "STARTTLS" not in self.capabilities:
            raise ProbeFailure("server does not offer STARTTLS")
        _, done = self.command(b"STARTTLS", "STARTTLS")
        if not done.ok:
            raise ProbeFailure(f"STARTTLS refused: {done.describe()}")
        tls = self.conn.start_tls(ctx, hostname)
        self.capabilities = frozenset()
        return tls

    def authenticate(self, mechanism: str, user: str, secret: str, host: str, port: int) -> None:
        """Log in or raise ProbeFailure("PLAIN rejected: [AUTHENTICATIONFAILED] ...")."""
        if mechanism == "LOGIN":
            if "LOGINDISABLED" in self.capabilities:
                raise ProbeFailure("LOGIN disabled by the server (LOGINDISABLED)")
            self._login(user, secret)
            return
        if f"AUTH={mechanism}" not in self.capabilities:
            offered = sorted(c[5:] for c in self.capabilities if c.startswith("AUTH="))
            raise ProbeFailure(
                f"server does not offer {mechanism} (offers: {', '.join(offered) or 'none'})"
            )
        if mechanism == "PLAIN":
            response = sasl.plain(user, secret)
        elif mechanism == "XOAUTH2":
            response = sasl.xoauth2(user, secret)
        elif mechanism == "OAUTHBEARER":
            response = sasl.oauthbearer(user, secret, host, port)
        else:
            raise ProbeFailure(f"unknown mechanism {mechanism!r}", Status.UNKNOWN)
        head = b"AUTHENTICATE " + mechanism.encode()
        if "SASL-IR" in self.capabilities and len(response) <= SASL_IR_MAX:
            line, steps = head + b" " + response, []
        else:
            line, steps = head, [response]
        ack = sasl.FAILURE_ACK.get(mechanism)
        if ack is not None:
            steps.append(ack)  # answers the JSON error challenge of a failed token
        untagged, done = self.command(line, f"AUTHENTICATE {mechanism}", steps)
        if not done.ok:
            detail = ""
            for resp in untagged:
                if resp.kind == "continuation" and resp.text:
                    detail = sasl.describe_oauth_challenge(resp.text) or detail
            why = redact(done.describe(), [secret])
            raise ProbeFailure(f"{mechanism} rejected: {why}" + (f" ({detail})" if detail else ""))

    def _login(self, user: str, password: str) -> None:
        # Quoted strings where possible, else synchronizing literals: the line
        # ends with {n}, the server answers "+", the raw value follows.
        chunks: list[bytes] = [b"LOGIN"]
        for value in (user, password):
            quoted = quote(value)
            if quoted is not None:
                chunks[-1] += b" " + quoted
            else:
                raw = value.encode()
                chunks[-1] += b" {%d}" % len(raw)
                chunks.append(raw)
        _, done = self.command(chunks[0], "LOGIN", chunks[1:])
        if not done.ok:
            raise ProbeFailure(f"LOGIN rejected: {redact(done.describe(), [password])}")

    def logout(self) -> None:
        # Best effort: the probe's verdict is already known.
        with contextlib.suppress(ProbeFailure):
            self.conn.send(b"mfz LOGOUT\r\n", "LOGOUT")


def open_session(
    target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition
) -> ImapClient:
    """Connect, TLS (implicit or STARTTLS), greeting, capabilities."""
    service = options.imap_service
    if service not in ("imaps", "imap"):
        raise ProbeFailure(f"imap_service must be imaps or imap, not {service!r}", Status.UNKNOWN)
    port = target.port(service)
    acq.values.update({"service": service, "port": port})
    ca = target.ca_bundle or options.ca_bundle
    ctx = tls_context(ca, verify=True)
    with acq.measure("connect"):
        conn = Connection.open(target.address, port, deadline)
    client = ImapClient(conn)
    try:
        if service == "imaps":
            with acq.measure("tls"):
                tls = _handshake(conn, ctx, target.mail_hostname)
            with acq.measure("greeting"):
                client.greeting()
        else:
            with acq.measure("greeting"):
                client.greeting()
                if not client.capabilities:
                    client.capability()
            with acq.measure("tls"):
                tls = _starttls(client, ctx, target.mail_hostname)
        session_ready(client, tls, acq)
    except BaseException:
        conn.close()
        raise
    return client


def session_ready(client: ImapClient, tls: ssl.SSLSocket, acq: Acquisition) -> None:
    """After TLS and the greeting: the session's TLS facts and the capabilities."""
    acq.values.update(session_values(tls))
    if not client.capabilities:
        with acq.measure("capability"):
            client.capability()
    acq.values["capabilities"] = sorted(client.capabilities)


def _handshake(conn: Connection, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
    try:
        return conn.start_tls(ctx, hostname)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(f"TLS certificate not accepted: {exc.verify_message}") from None


def _starttls(client: ImapClient, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
    try:
        return client.starttls(ctx, hostname)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(f"TLS certificate not accepted: {exc.verify_message}") from None


def secret_for(target: Target, mechanism: str) -> tuple[str, str]:
    """(user, password or token) for the mechanism; ProbeFailure(UNKNOWN) when missing."""
    creds = target.credentials
    if creds is None or not creds.user:
        raise ProbeFailure(
            f"no probe account for {target.name} (set mailfleet_probe_user)", Status.UNKNOWN
        )
    try:
        if mechanism in sasl.TOKEN_MECHANISMS:
            return creds.user, creds.secret_token()
        return creds.user, creds.secret_password()
    except CredentialsError as exc:
        raise ProbeFailure(str(exc), Status.UNKNOWN) from None


def login(
    client: ImapClient, target: Target, options: ProbeOptions, acq: Acquisition
) -> None:
    mechanism = options.mechanism.upper()
    if mechanism not in sasl.MECHANISMS:
        raise ProbeFailure(f"unknown mechanism {options.mechanism!r}", Status.UNKNOWN)
    user, secret = secret_for(target, mechanism)
    acq.values.update({"mechanism": mechanism, "user": user})
    with acq.measure("auth"):
        client.authenticate(
            mechanism, user, secret, target.mail_hostname, int(acq.values.get("port", 0))
        )
    acq.values["logged_in"] = True


def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    mechanism = options.mechanism.upper()
    secret_for(target, mechanism)  # fail fast (UNKNOWN) before touching the network
    client = open_session(target, options, deadline, acq)
    try:
        login(client, target, options, acq)
        client.logout()
    finally:
        client.conn.close()


def judge(values: dict[str, Any]) -> Verdict:
    return Verdict(Status.OK if values.get("logged_in") else Status.CRITICAL)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, options, deadline, acq), judge)
