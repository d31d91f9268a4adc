"""A minimal IMAP client over a deadline-bound ``Connection``: what the probes say to a server.

Greeting, CAPABILITY, STARTTLS, login (SASL through ``checks.sasl``, or the
LOGIN command), and for the sync probe SELECT, ENABLE, NOOP, IDLE, APPEND and
the UID commands (SEARCH, FETCH, STORE, EXPUNGE). Every read and write is
bounded by the connection's deadline; secrets go only to the socket.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import Sequence

from mailfleet.checks import sasl
from mailfleet.checks.base import AuthRejected, ProbeFailure
from mailfleet.checks.imap_proto import Response, capabilities_of, literal_size, parse_line, quote
from mailfleet.checks.net import Connection
from mailfleet.checks.result import Reason, Status

# Send the SASL initial response on the command line (SASL-IR) only below this;
# longer ones (big JWTs) go in a continuation, which servers accept longer.
SASL_IR_MAX = 8000
MAX_RESPONSE_LINES = 10000
# DOTALL: a FETCH response carries its literals (header lines) inline
_COUNT_RE = re.compile(r"^(\d{1,10}) (EXISTS|EXPUNGE|RECENT|FETCH)\b(.*)$",
                       re.IGNORECASE | re.DOTALL)
_APPENDUID_RE = re.compile(r"APPENDUID \d+ (\d+)", re.IGNORECASE)


def counted(resp: Response) -> tuple[int, str, str] | None:
    """``* 5 EXISTS`` -> (5, "EXISTS", ""); ``* 3 FETCH (FLAGS (\\Seen))`` -> (3, "FETCH", ...)."""
    if resp.kind != "untagged" or resp.status:
        return None
    m = _COUNT_RE.match(resp.text)
    return (int(m.group(1)), m.group(2).upper(), m.group(3).strip()) if m else None


def exists_count(responses: Sequence[Response]) -> int | None:
    """The last ``EXISTS`` count among the responses, or None."""
    count = None
    for resp in responses:
        item = counted(resp)
        if item is not None and item[1] == "EXISTS":
            count = item[0]
    return count


class ImapClient:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._tag = 0
        self.capabilities: frozenset[str] = frozenset()
        self._idle_tag = ""

    def _next_tag(self) -> str:
        self._tag += 1
        return f"mf{self._tag}"

    def _note(self, resp: Response) -> None:
        caps = capabilities_of(resp)
        if caps is not None:
            self.capabilities = caps

    def read_response(self, what: str) -> tuple[Response, bytes]:
        """One logical response: a line plus any literals it announces."""
        line = self.conn.readline(what)
        full = line
        while (size := literal_size(line)) is not None:
            full += b"\r\n" + self.conn.read_exact(size, what)
            line = self.conn.readline(what)
            full += line
        return parse_line(full), full

    # -- session -------------------------------------------------------------------
    def greeting(self) -> Response:
        resp, raw = self.read_response("greeting")
        if resp.kind != "untagged" or resp.status not in ("OK", "PREAUTH"):
            if resp.status == "BYE":
                raise ProbeFailure(f"server refused the connection: {resp.describe()}",
                                   reason=Reason.REJECTED)
            shown = raw[:80].decode("utf-8", "replace")
            raise ProbeFailure(f"not an IMAP greeting: {shown!r}", reason=Reason.PROTOCOL)
        self._note(resp)
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
            self._note(resp)
            if resp.kind == "tagged" and resp.tag == tag:
                return untagged, resp
            if resp.kind == "untagged" and resp.status == "BYE":
                raise ProbeFailure(f"server closed the session: {resp.describe()}",
                                   reason=Reason.PROTOCOL)
            untagged.append(resp)
        raise ProbeFailure(f"no tagged reply to {what} after {MAX_RESPONSE_LINES} lines",
                           reason=Reason.PROTOCOL)

    def checked(self, line: bytes, what: str,
                continuation: list[bytes] | None = None) -> tuple[list[Response], Response]:
        """``command``, with a NO/BAD answer raised as ``"WHAT failed: ..."`` (REJECTED)."""
        untagged, done = self.command(line, what, continuation)
        if not done.ok:
            raise ProbeFailure(f"{what} failed: {done.describe()}", reason=Reason.REJECTED)
        return untagged, done

    def capability(self) -> frozenset[str]:
        self.checked(b"CAPABILITY", "CAPABILITY")
        return self.capabilities

    def starttls(self, ctx: ssl.SSLContext, hostname: str) -> ssl.SSLSocket:
        if "STARTTLS" not in self.capabilities:
            raise ProbeFailure("server does not offer STARTTLS", reason=Reason.UNSUPPORTED)
        _, done = self.command(b"STARTTLS", "STARTTLS")
        if not done.ok:
            raise ProbeFailure(f"STARTTLS refused: {done.describe()}", reason=Reason.REJECTED)
        tls = self.conn.start_tls(ctx, hostname)
        self.capabilities = frozenset()
        return tls

    def authenticate(self, mechanism: str, user: str, secret: str, host: str, port: int) -> None:
        """Log in or raise AuthRejected("PLAIN rejected: [AUTHENTICATIONFAILED] ...")."""
        if mechanism == "LOGIN":
            if "LOGINDISABLED" in self.capabilities:
                raise ProbeFailure("LOGIN disabled by the server (LOGINDISABLED)",
                                   reason=Reason.UNSUPPORTED)
            self._login(user, secret)
            return
        if mechanism not in sasl.MECHANISMS:
            raise ProbeFailure(f"unknown mechanism {mechanism!r}", Status.UNKNOWN,
                               Reason.NOT_CONFIGURED)
        if f"AUTH={mechanism}" not in self.capabilities:
            offered = sorted(c[5:] for c in self.capabilities if c.startswith("AUTH="))
            raise ProbeFailure(
                f"server does not offer {mechanism} (offers: {', '.join(offered) or 'none'})",
                reason=Reason.UNSUPPORTED,
            )
        response = sasl.initial_response(mechanism, user, secret, host, port) or b""
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
            why = sasl.redact(done.describe(), [secret]) + (f" ({detail})" if detail else "")
            raise AuthRejected(f"{mechanism} rejected: {why}", why)

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
            why = sasl.redact(done.describe(), [password])
            raise AuthRejected(f"LOGIN rejected: {why}", why)

    def logout(self) -> None:
        # Best effort: the probe's verdict is already known.
        with contextlib.suppress(ProbeFailure):
            self.conn.send(b"mfz LOGOUT\r\n", "LOGOUT")

    # -- mailbox -------------------------------------------------------------------
    def enable(self, extension: str) -> None:
        self.checked(b"ENABLE " + extension.encode(), "ENABLE")

    def select(self, mailbox: str) -> int:
        """SELECT; the number of messages (EXISTS)."""
        untagged, _ = self.checked(b"SELECT " + (quote(mailbox) or b'""'), f"SELECT {mailbox}")
        return exists_count(untagged) or 0

    def noop(self) -> list[Response]:
        untagged, _ = self.checked(b"NOOP", "NOOP")
        return untagged

    def uid_search(self, criteria: bytes) -> list[int]:
        untagged, _ = self.checked(b"UID SEARCH " + criteria, "UID SEARCH")
        uids: list[int] = []
        for resp in untagged:
            if resp.kind == "untagged" and resp.text.upper().startswith("SEARCH"):
                uids += [int(w) for w in resp.text.split()[1:] if w.isdigit() and len(w) < 11]
        return uids

    def uid_fetch(self, uids: Sequence[int], items: bytes) -> list[Response]:
        """The FETCH responses (literals inlined in ``raw``)."""
        untagged, _ = self.checked(b"UID FETCH " + _set(uids) + b" " + items, "UID FETCH")
        return [r for r in untagged if (c := counted(r)) is not None and c[1] == "FETCH"]

    def uid_store(self, uids: Sequence[int], change: bytes) -> None:
        self.checked(b"UID STORE " + _set(uids) + b" " + change, "UID STORE")

    def uid_expunge(self, uids: Sequence[int]) -> None:
        self.checked(b"UID EXPUNGE " + _set(uids), "UID EXPUNGE")

    def append(self, mailbox: str, message: bytes) -> int:
        """APPEND as a synchronizing literal; the new UID (APPENDUID) or 0."""
        head = b"APPEND " + (quote(mailbox) or b'""') + b" {%d}" % len(message)
        _, done = self.checked(head, "APPEND", [message])
        m = _APPENDUID_RE.search(done.code)
        return int(m.group(1)) if m else 0

    # -- IDLE ----------------------------------------------------------------------
    def idle(self) -> None:
        """Enter IDLE (RFC 2177): the server's ``+`` ends the command, pushes follow."""
        if "IDLE" not in self.capabilities:
            raise ProbeFailure("server does not offer IDLE", reason=Reason.UNSUPPORTED)
        tag = self._next_tag()
        self.conn.send(tag.encode() + b" IDLE\r\n", "IDLE")
        for _ in range(MAX_RESPONSE_LINES):
            resp, _raw = self.read_response("reply to IDLE")
            if resp.kind == "continuation":
                self._idle_tag = tag
                return
            if resp.kind == "tagged" and resp.tag == tag:
                raise ProbeFailure(f"IDLE refused: {resp.describe()}", reason=Reason.REJECTED)
        raise ProbeFailure("no continuation to IDLE", reason=Reason.PROTOCOL)

    def idle_check(self, seconds: float) -> list[Response]:
        """What the server pushed within ``seconds`` (never past the deadline): maybe nothing."""
        pushed: list[Response] = []
        while self.conn.wait_for_line(seconds if not pushed else 0.001, "IDLE notification"):
            resp, _raw = self.read_response("IDLE notification")
            if resp.kind == "untagged" and resp.status == "BYE":
                raise ProbeFailure(f"server closed the session: {resp.describe()}",
                                   reason=Reason.PROTOCOL)
            pushed.append(resp)
        return pushed

    def idle_done(self) -> None:
        """Leave IDLE: DONE, then the IDLE command's tagged reply."""
        tag, self._idle_tag = self._idle_tag, ""
        if not tag:
            return
        self.conn.send(b"DONE\r\n", "DONE")
        for _ in range(MAX_RESPONSE_LINES):
            resp, _raw = self.read_response("reply to DONE")
            if resp.kind == "tagged" and resp.tag == tag:
                return
        raise ProbeFailure("no tagged reply to IDLE after DONE", reason=Reason.PROTOCOL)


def _set(uids: Sequence[int]) -> bytes:
    return b",".join(b"%d" % u for u in uids)
