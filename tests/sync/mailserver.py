"""Loopback mail servers for the sync probe: a submission server, and a scripted mailbox
that can stall at any IMAP command.

``Submission`` speaks SMTP with STARTTLS and AUTH PLAIN/LOGIN, and hands each
accepted message to ``deliver`` (with a real Dovecot: an IMAP APPEND into the
probe account's INBOX, so the IDLE pushes the probe times are Dovecot's own).
``ScriptedMailbox`` is a well-behaved IMAPS server up to the command named by
``stall``, where it goes silent: what a hostile or wedged server does.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.localmail import HOSTNAME as DOVECOT_HOSTNAME
from bench.localmail import LocalDovecot, dovecot_available, start_dovecot
from mailfleet.checks.target import Credentials, Secret, Target
from tests.checks.servers import LoopbackServer, tls_server_context
from tests.conftest import skip_or_fail

HOSTNAME = "mx1.lab.test"


class Submission:
    """SMTP submission on loopback; ``stall="DATA"`` never answers the message."""

    def __init__(self, ctx: ssl.SSLContext, user: str, password: str,
                 deliver: Callable[[bytes], None] | None = None, stall: str = "") -> None:
        self.ctx = ctx
        self.user = user
        self.password = password
        self.deliver = deliver
        self.stall = stall.upper()
        self.accepted: list[bytes] = []

    def __call__(self, conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        held = [conn]
        try:
            self._serve(held, stop)
        finally:
            for sock in held:
                sock.close()

    def _serve(self, held: list[socket.socket], stop: threading.Event) -> None:
        sock = held[0]
        reader = sock.makefile("rb")
        sock.sendall(b"220 " + HOSTNAME.encode() + b" ESMTP test submission\r\n")
        tls = False
        while not stop.is_set():
            line = reader.readline(65536)
            if not line:
                return
            verb, _, rest = line.strip().partition(b" ")
            verb = verb.upper()
            if verb == b"EHLO":
                last = b"250 AUTH PLAIN LOGIN\r\n" if tls else b"250 STARTTLS\r\n"
                sock.sendall(b"250-" + HOSTNAME.encode() + b"\r\n" + last)
            elif verb == b"STARTTLS":
                sock.sendall(b"220 2.0.0 go ahead\r\n")
                reader.close()
                sock = self.ctx.wrap_socket(sock, server_side=True)
                held.append(sock)
                reader = sock.makefile("rb")
                tls = True
            elif verb == b"AUTH":
                sock.sendall(self._auth(rest.split(), reader, sock))
            elif verb in (b"MAIL", b"RCPT"):
                sock.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == b"DATA":
                sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                message = self._message(reader)
                if self.stall == "DATA":
                    stop.wait()
                    return
                self.accepted.append(message)
                if self.deliver is not None:
                    self.deliver(message)
                sock.sendall(b"250 2.0.0 Ok: queued as 4Xq1Tz0abc\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                sock.sendall(b"502 5.5.2 Unknown command\r\n")

    def _auth(self, words: list[bytes], reader: object, sock: socket.socket) -> bytes:
        assert hasattr(reader, "readline")
        mechanism = words[0].upper() if words else b""
        if mechanism == b"PLAIN":
            if len(words) > 1:
                answer = words[1]
            else:
                sock.sendall(b"334 \r\n")
                answer = reader.readline(65536).strip()
            parts = base64.b64decode(answer).split(b"\0")
            user, password = (parts[1], parts[2]) if len(parts) == 3 else (b"", b"")
        elif mechanism == b"LOGIN":
            sock.sendall(b"334 VXNlcm5hbWU6\r\n")
            user = base64.b64decode(reader.readline(65536).strip())
            sock.sendall(b"334 UGFzc3dvcmQ6\r\n")
            password = base64.b64decode(reader.readline(65536).strip())
        else:
            return b"504 5.5.4 Unrecognized authentication type\r\n"
        if (user.decode(), password.decode()) == (self.user, self.password):
            return b"235 2.7.0 Authentication successful\r\n"
        return b"535 5.7.8 Error: authentication failed: wrong password\r\n"

    @staticmethod
    def _message(reader: object) -> bytes:
        assert hasattr(reader, "readline")
        lines = []
        while True:
            line = reader.readline(65536)
            if not line or line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)


def append_to_dovecot(address: str, port: int, ca: Path, user: str,
                      password: str) -> Callable[[bytes], None]:
    """Delivery into a real Dovecot: APPEND over IMAPS with the standard library's client."""

    def deliver(message: bytes) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False  # the test CA's name, reached by loopback address
        with imaplib.IMAP4_SSL(address, port, ssl_context=ctx, timeout=10) as imap:
            imap.login(user, password)
            imap.append("INBOX", "", imaplib.Time2Internaldate(0), message)
            imap.logout()

    return deliver


class ScriptedMailbox:
    """IMAPS that answers every command properly until ``stall`` (``IDLE``, ``APPEND``,
    ``UID SEARCH``, ``UID FETCH``, ...), then never says another word on that session.

    ``leftover``: UID SEARCH finds one earlier probe message (so the probe FETCHes it).
    """

    CAPS = b"IMAP4rev1 AUTH=PLAIN SASL-IR IDLE UIDPLUS CONDSTORE ENABLE"

    def __init__(self, ctx: ssl.SSLContext, stall: str = "", leftover: bool = False) -> None:
        self.ctx = ctx
        self.stall = stall.upper().encode()
        self.leftover = leftover
        self.seen: list[bytes] = []

    def __call__(self, conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(10)
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            reader = tls.makefile("rb")
            tls.sendall(b"* OK [CAPABILITY " + self.CAPS + b"] scripted ready\r\n")
            while not stop.is_set():
                line = reader.readline(65536)
                if not line:
                    return
                tag, _, rest = line.strip().partition(b" ")
                words = rest.split(b" ")
                command = words[0].upper()
                if command == b"UID" and len(words) > 1:
                    command += b" " + words[1].upper()
                self.seen.append(command)
                if command == self.stall:
                    stop.wait()
                    return
                reply = self._answer(command, words, reader, tls)
                if reply is None:
                    return
                tls.sendall(reply.replace(b"TAG", tag))

    def _answer(self, command: bytes, words: list[bytes], reader: object,
                tls: ssl.SSLSocket) -> bytes | None:
        assert hasattr(reader, "readline") and hasattr(reader, "read")
        ok = b"TAG OK done\r\n"
        if command == b"AUTHENTICATE":
            return b"TAG OK [CAPABILITY " + self.CAPS + b"] logged in\r\n"
        if command == b"CAPABILITY":
            return b"* CAPABILITY " + self.CAPS + b"\r\n" + ok
        if command == b"SELECT":
            return b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\nTAG OK [READ-WRITE] selected\r\n"
        if command == b"UID SEARCH":
            return (b"* SEARCH 7\r\n" if self.leftover else b"* SEARCH\r\n") + ok
        if command == b"UID FETCH":
            header = b"X-Mailfleet-Probe: " + b"0" * 32 + b".1000000000000\r\n\r\n"
            return (b"* 1 FETCH (UID 7 BODY[HEADER.FIELDS (X-MAILFLEET-PROBE)] {%d}\r\n"
                    % len(header) + header + b")\r\n" + ok)
        if command == b"IDLE":
            tls.sendall(b"+ idling\r\n")
            reader.readline(65536)  # DONE
            return ok
        if command == b"APPEND":
            size = int(words[-1].strip(b"{}+"))
            tls.sendall(b"+ go ahead\r\n")
            reader.read(size + 2)
            return b"TAG OK [APPENDUID 1 9] appended\r\n"
        if command == b"LOGOUT":
            tls.sendall(b"* BYE bye\r\n" + ok)
            return None
        return ok


@dataclass(frozen=True)
class LocalMail:
    """A real Dovecot (bench/localmail.py) and a submission server delivering into it."""

    dovecot: LocalDovecot
    smtp_port: int
    address: str

    def target(self, name: str = "mx1") -> Target:
        d = self.dovecot
        return Target(
            name=name, address=self.address, mail_hostname=DOVECOT_HOSTNAME, ca_bundle=d.ca,
            ports={"imaps": d.port, "submission": self.smtp_port},
            credentials=Credentials(d.user, password=Secret(d.password)),
        )


@contextlib.contextmanager
def local_mail(extra_config: str = "") -> Iterator[LocalMail]:
    """Skipped where Dovecot cannot run here (a failure with MAILFLEET_REQUIRE_LAB=1)."""
    why = dovecot_available()
    if why:
        skip_or_fail(why)
    address = "127.0.0.1"  # where the loopback submission server listens too
    dovecot = start_dovecot([address], extra_config=extra_config)
    try:
        root = dovecot.root
        ctx = tls_server_context(root / "server.crt", root / "server.key")
        deliver = append_to_dovecot(address, dovecot.port, dovecot.ca, dovecot.user,
                                    dovecot.password)
        with LoopbackServer(Submission(ctx, dovecot.user, dovecot.password, deliver)) as smtp:
            yield LocalMail(dovecot, smtp.port, address)
    finally:
        dovecot.stop()
