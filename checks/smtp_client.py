"""A minimal SMTP client over a deadline-bound ``Connection``: banner, EHLO, STARTTLS, AUTH,
MAIL/RCPT/DATA, QUIT.

A long SASL initial response (a 2-4 KB JWT) is never put on the AUTH line
past 998 octets: it goes after the ``334`` continuation, which servers accept
(Dovecot 2.3.19 submission answers ``500 5.5.2 Line too long`` otherwise).
"""

from __future__ import annotations

import contextlib
import ssl

from mailfleet.checks import sasl
from mailfleet.checks.base import AuthRejected, ProbeFailure
from mailfleet.checks.net import Connection
from mailfleet.checks.result import Reason, Status
from mailfleet.checks.smtp_proto import Reply, ehlo_keywords, parse_reply_line

MAX_REPLY_LINES = 200
MAX_COMMAND_LINE = 998  # RFC 5321 text line limit, CRLF excluded


def dot_stuffed(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, ended by ``.``."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body + b".\r\n"


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
                raise ProbeFailure(f"not an SMTP reply to {what}: {shown!r}",
                                   reason=Reason.PROTOCOL)
            code = parsed.code
            lines.append(parsed.text)
            if parsed.last:
                return Reply(code, tuple(lines))
        raise ProbeFailure(f"SMTP reply to {what} longer than {MAX_REPLY_LINES} lines",
                           reason=Reason.PROTOCOL)

    def command(self, line: bytes, what: str) -> Reply:
        self.conn.send(line + b"\r\n", what)
        return self.reply(what)

    def banner(self) -> Reply:
        reply = self.reply("greeting")
        if reply.code != 220:
            raise ProbeFailure(f"server refused the session: {reply.describe()}",
                               reason=Reason.REJECTED)
        return reply

    def ehlo(self, name: str) -> dict[str, str]:
        reply = self.command(b"EHLO " + name.encode(), "EHLO")
        if reply.code != 250:
            raise ProbeFailure(f"EHLO refused: {reply.describe()}", reason=Reason.REJECTED)
        return ehlo_keywords(reply)

    def starttls(self, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
        reply = self.command(b"STARTTLS", "STARTTLS")
        if reply.code != 220:
            raise ProbeFailure(f"STARTTLS refused: {reply.describe()}", reason=Reason.REJECTED)
        return self.conn.start_tls(ctx, hostname)

    def authenticate(self, mechanism: str, user: str, secret: str, host: str, port: int) -> None:
        """Log in or raise AuthRejected("PLAIN rejected: 535 ...")."""
        if mechanism not in sasl.MECHANISMS:
            raise ProbeFailure(f"unknown mechanism {mechanism!r}", Status.UNKNOWN,
                               Reason.NOT_CONFIGURED)
        initial = sasl.initial_response(mechanism, user, secret, host, port)
        steps = sasl.login_steps(user, secret) if initial is None else []
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
            why = sasl.redact(reply.describe(), [secret]) + (f" ({detail})" if detail else "")
            raise AuthRejected(f"{mechanism} rejected: {why}", why)

    def _expect(self, line: bytes, what: str, codes: tuple[int, ...], refused: str) -> Reply:
        reply = self.command(line, what)
        if reply.code not in codes:
            raise ProbeFailure(f"{refused}: {reply.describe()}", reason=Reason.REJECTED)
        return reply

    def send_message(self, sender: str, recipient: str, message: bytes) -> Reply:
        """MAIL, RCPT, DATA; the 250 that accepted the message."""
        self._expect(b"MAIL FROM:<" + sender.encode() + b">", "MAIL", (250,), "sender refused")
        self._expect(b"RCPT TO:<" + recipient.encode() + b">", "RCPT", (250, 251),
                     f"recipient {recipient} refused")
        self._expect(b"DATA", "DATA", (354,), "message refused")
        self.conn.send(dot_stuffed(message), "message")
        reply = self.reply("reply to DATA")
        if reply.code != 250:
            raise ProbeFailure(f"message refused: {reply.describe()}", reason=Reason.REJECTED)
        return reply

    def quit(self) -> None:
        with contextlib.suppress(ProbeFailure):
            self.conn.send(b"QUIT\r\n", "QUIT")
