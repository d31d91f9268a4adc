"""``smtp``: banner, EHLO, STARTTLS, and AUTH offered only after TLS (optionally a login).

Port 25 (``smtp``), 587 (``submission``, STARTTLS) or 465 (``submissions``,
implicit TLS). A long SASL initial response (a 2-4 KB JWT) is never put on
the AUTH line past 998 octets: it goes after the ``334`` continuation, which
servers accept (Dovecot 2.3.19 submission answers ``500 5.5.2 Line too long``
otherwise).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailfleet.checks import sasl
from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.imap import redact, secret_for
from mailfleet.checks.net import Connection, tls_context
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.smtp_proto import (
    Reply,
    auth_mechanisms,
    banner_hostname,
    ehlo_keywords,
    parse_reply_line,
)
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import session_values
from mailfleet.checks.values import Values, declared

CHECK = "smtp"
MAX_REPLY_LINES = 200
MAX_COMMAND_LINE = 998  # RFC 5321 text line limit, CRLF excluded
SERVICES = ("smtp", "submission", "submissions")

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



class SmtpClient:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def reply(self, what: str) -> Reply:
        lines: list[str] = []
        code = 0
        for _ in range(MAX_REPLY_LINES):
            raw = self.conn.readline(what)
            parsed = parse_reply_line(raw)
            if parsed is None or (code and parsed.code != code):
                shown = raw[:80].decode("utf-8", "replace")
                raise ProbeFailure(f"not an SMTP reply to {what}: {shown!r}")
            code = parsed.code
            lines.append(parsed.text)
            if parsed.last:
                return Reply(code, tuple(lines))
        raise ProbeFailure(f"SMTP reply to {what} longer than {MAX_REPLY_LINES} lines")

    def command(self, line: bytes, what: str) -> Reply:
        self.conn.send(line + b"\r\n", what)
        return self.reply(what)

    def banner(self) -> Reply:
        reply = self.reply("greeting")
        if reply.code != 220:
            raise ProbeFailure(f"server refused the session: {reply.describe()}")
        return reply

    def ehlo(self, name: str) -> dict[str, str]:
        reply = self.command(b"EHLO " + name.encode(), "EHLO")
        if reply.code != 250:
            raise ProbeFailure(f"EHLO refused: {reply.describe()}")
        return ehlo_keywords(reply)

    def starttls(self, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
        reply = self.command(b"STARTTLS", "STARTTLS")
        if reply.code != 220:
            raise ProbeFailure(f"STARTTLS refused: {reply.describe()}")
        return self.conn.start_tls(ctx, hostname)

    def authenticate(self, mechanism: str, user: str, secret: str, host: str, port: int) -> None:
        if mechanism == "LOGIN":
            steps = [sasl.b64(user.encode()), sasl.b64(secret.encode())]
            initial: bytes | None = None
        else:
            if mechanism == "PLAIN":
                initial = sasl.plain(user, secret)
            elif mechanism == "XOAUTH2":
                initial = sasl.xoauth2(user, secret)
            elif mechanism == "OAUTHBEARER":
                initial = sasl.oauthbearer(user, secret, host, port)
            else:
                raise ProbeFailure(f"unknown mechanism {mechanism!r}", Status.UNKNOWN)
            steps = []
        line = b"AUTH " + mechanism.encode()
        if initial is not None:
            if len(line) + 1 + len(initial) <= MAX_COMMAND_LINE:
                line += b" " + initial
            else:
                steps = [initial]
        ack = sasl.FAILURE_ACK.get(mechanism)
        reply = self.command(line, f"AUTH {mechanism}")
        detail = ""
        while reply.code == 334:
            if steps:
                reply = self.command(steps.pop(0), f"AUTH {mechanism}")
            elif ack is not None and not detail:
                detail = sasl.describe_oauth_challenge(reply.text) or "token refused"
                reply = self.command(ack, f"AUTH {mechanism}")
            else:
                reply = self.command(b"*", f"AUTH {mechanism}")
        if reply.code != 235:
            why = redact(reply.describe(), [secret])
            raise ProbeFailure(f"{mechanism} rejected: {why}" + (f" ({detail})" if detail else ""))

    def quit(self) -> None:
        with contextlib.suppress(ProbeFailure):
            self.conn.send(b"QUIT\r\n", "QUIT")


def open_session(
    target: Target, service: str, helo: str, ca: Any, deadline: Deadline, acq: Acquisition,
    *, verify: bool = True,
) -> tuple[SmtpClient, ssl.SSLSocket | None]:
    """Connect, banner, EHLO, STARTTLS (or implicit TLS), EHLO again. Returns TLS socket."""
    if service not in SERVICES:
        raise ProbeFailure(f"smtp service must be one of {', '.join(SERVICES)}", Status.UNKNOWN)
    port = target.port(service)
    acq.values.update({"service": service, "port": port})
    ctx = tls_context(ca, verify=verify)
    with acq.measure("connect"):
        conn = Connection.open(target.address, port, deadline)
    client = SmtpClient(conn)
    tls = None
    try:
        if service == "submissions":
            with acq.measure("tls"):
                tls = _handshake(lambda: conn.start_tls(ctx, target.mail_hostname))
        with acq.measure("greeting"):
            banner = client.banner()
        acq.values["banner"] = banner.lines[0][:200] if banner.lines else ""
        acq.values["banner_hostname"] = banner_hostname(banner)
        with acq.measure("ehlo"):
            before = client.ehlo(helo)
        if tls is None:
            acq.values["extensions_before_tls"] = sorted(before)
            acq.values["auth_before_tls"] = auth_mechanisms(before)
            acq.values["starttls_offered"] = "STARTTLS" in before
            if "STARTTLS" not in before:
                raise ProbeFailure("STARTTLS not offered")
            with acq.measure("tls"):
                tls = _handshake(lambda: client.starttls(ctx, target.mail_hostname))
            with acq.measure("ehlo"):
                after = client.ehlo(helo)
        else:
            after = before
        acq.values.update(session_values(tls))
        acq.values["extensions_after_tls"] = sorted(after)
        acq.values["auth_after_tls"] = auth_mechanisms(after)
    except BaseException:
        conn.close()
        raise
    return client, tls


def _handshake(start: Any) -> ssl.SSLSocket:
    try:
        tls: ssl.SSLSocket = start()
        return tls
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(f"TLS certificate not accepted: {exc.verify_message}") from None


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
                raise ProbeFailure(f"server does not offer AUTH {mechanism} after STARTTLS")
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
