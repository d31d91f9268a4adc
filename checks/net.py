"""Sockets that obey a Deadline, and error messages an admin understands.

Every blocking call gets a socket timeout equal to the time left until the
deadline, so a server that accepts and never speaks, trickles bytes, or stalls
a TLS handshake cannot hold a probe past it (CPython's ssl module applies the
timeout to the whole read/handshake, not to each underlying recv).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import ssl
from pathlib import Path
from time import monotonic as _monotonic

from mailfleet.checks.base import ProbeFailure
from mailfleet.checks.result import Reason
from mailfleet.checks.target import Deadline

MAX_LINE = 64 * 1024  # longer lines are a broken or hostile server


def _within(deadline: Deadline) -> str:
    return f"within {deadline.budget:.1f} s"


def describe_oserror(exc: BaseException) -> str:
    """Short words for a socket error: "connection refused", "host unreachable", ..."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"name does not resolve ({exc.strerror})"
    if isinstance(exc, OSError):
        names = {
            errno.EHOSTUNREACH: "host unreachable",
            errno.ENETUNREACH: "network unreachable",
            errno.ECONNABORTED: "connection aborted",
        }
        if exc.errno in names:
            return names[exc.errno]
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def reason_of(exc: BaseException) -> Reason:
    """The class of a socket error: refused, unreachable, or the server broke the session."""
    if isinstance(exc, ConnectionRefusedError):
        return Reason.REFUSED
    if isinstance(exc, socket.gaierror):
        return Reason.UNREACHABLE
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN
    ):
        return Reason.UNREACHABLE
    return Reason.PROTOCOL


def connect(address: str, port: int, deadline: Deadline) -> socket.socket:
    """TCP connection to address:port, or ProbeFailure ("connection refused", ...)."""
    try:
        timeout = deadline.timeout()
        sock = socket.create_connection((address, port), timeout=timeout)
    except TimeoutError:
        raise ProbeFailure(f"no TCP connection to {address}:{port} {_within(deadline)}",
                           reason=Reason.TIMEOUT) from None
    except OSError as exc:
        raise ProbeFailure(f"{address}:{port}: {describe_oserror(exc)}",
                           reason=reason_of(exc)) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tls_context(ca_bundle: Path | None, verify: bool) -> ssl.SSLContext:
    """A client context: verifying (hostname + chain against ca_bundle or the system store).

    Contexts are shared (loading a CA store costs more than a handshake); a
    bundle changed on disk (new mtime) gets a fresh one.
    """
    stamp = 0
    if verify and ca_bundle is not None:
        with contextlib.suppress(OSError):
            stamp = ca_bundle.stat().st_mtime_ns
    return _context(ca_bundle if verify else None, verify, stamp)


@functools.lru_cache(maxsize=64)
def _context(ca_bundle: Path | None, verify: bool, _stamp: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_bundle is not None:
            ctx.load_verify_locations(cafile=str(ca_bundle))
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Connection:
    """A line-oriented client connection (IMAP, SMTP) bound to a deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline, peer: str) -> None:
        self.sock: socket.socket = sock
        self.deadline = deadline
        self.peer = peer
        self._buffer = b""
        self.failed = False  # a read or write failed: what the stream holds is unknown

    @classmethod
    def open(cls, address: str, port: int, deadline: Deadline) -> Connection:
        return cls(connect(address, port, deadline), deadline, f"{address}:{port}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- TLS ---------------------------------------------------------------------
    def start_tls(self, ctx: ssl.SSLContext, server_hostname: str | None,
                  session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        """Handshake on the current socket (implicit TLS or after STARTTLS).

        ``session``: one to resume. ``ssl.SSLCertVerificationError`` is let
        through: the caller reports it.
        """
        if self._buffer:
            # Bytes after the STARTTLS reply and before the handshake: an injection attempt.
            raise ProbeFailure("server sent data before the TLS handshake (STARTTLS injection?)",
                               reason=Reason.PROTOCOL)
        tls = ctx.wrap_socket(
            self.sock, server_hostname=server_hostname or None, do_handshake_on_connect=False,
            session=session,
        )
        self.sock = tls
        try:
            tls.settimeout(self.deadline.timeout())
            tls.do_handshake()
        except ssl.SSLCertVerificationError:
            raise
        except TimeoutError:
            raise ProbeFailure(f"TLS handshake did not finish {_within(self.deadline)}",
                               reason=Reason.TIMEOUT) from None
        except ssl.SSLError as exc:
            raise ProbeFailure(f"TLS handshake failed: {exc.reason or exc}",
                               reason=Reason.TLS_HANDSHAKE) from None
        except OSError as exc:
            raise ProbeFailure(f"TLS handshake failed: {describe_oserror(exc)}",
                               reason=Reason.TLS_HANDSHAKE) from None
        return tls

    # -- I/O -----------------------------------------------------------------------
    def send(self, data: bytes, what: str = "command") -> None:
        try:
            self._send(data, what)
        except ProbeFailure:
            self.failed = True
            raise

    def _send(self, data: bytes, what: str) -> None:
        try:
            self.sock.settimeout(self.deadline.timeout())
            self.sock.sendall(data)
        except TimeoutError:
            raise ProbeFailure(f"could not send {what} {_within(self.deadline)}",
                               reason=Reason.TIMEOUT) from None
        except OSError as exc:
            raise ProbeFailure(f"sending {what}: {describe_oserror(exc)}",
                               reason=reason_of(exc)) from None

    def _fill(self, what: str, wait: float | None = None) -> bool:
        try:
            return self._recv(what, wait)
        except ProbeFailure:
            self.failed = True
            raise

    def _recv(self, what: str, wait: float | None) -> bool:
        """Read more into the buffer.

        With ``wait``: False when nothing came within it (or by the deadline)
        instead of a failure.
        """
        try:
            left = self.deadline.timeout()
            self.sock.settimeout(left if wait is None else min(wait, left))
            chunk = self.sock.recv(16384)
        except TimeoutError:
            if wait is not None:
                return False
            raise ProbeFailure(f"no {what} {_within(self.deadline)}",
                               reason=Reason.TIMEOUT) from None
        except ssl.SSLError as exc:
            raise ProbeFailure(f"TLS error while waiting for {what}: {exc.reason or exc}",
                               reason=Reason.TLS_HANDSHAKE) from None
        except OSError as exc:
            raise ProbeFailure(f"waiting for {what}: {describe_oserror(exc)}",
                               reason=reason_of(exc)) from None
        if not chunk:
            raise ProbeFailure(f"connection closed by the server while waiting for {what}",
                               reason=Reason.PROTOCOL)
        self._buffer += chunk
        return True

    def has_line(self) -> bool:
        return b"\n" in self._buffer

    def wait_for_line(self, seconds: float, what: str) -> bool:
        """Is a whole line readable within ``seconds`` (never past the deadline)?

        For unsolicited data (IMAP IDLE): False when nothing came in time; a
        partial line stays buffered for the next read.
        """
        end = self.deadline.remaining() if seconds <= 0 else seconds
        stop = _monotonic() + max(0.0, min(end, self.deadline.remaining()))
        while not self.has_line():
            if len(self._buffer) > MAX_LINE:
                raise ProbeFailure(f"{what} longer than {MAX_LINE} bytes without a line end",
                                   reason=Reason.PROTOCOL)
            left = stop - _monotonic()
            if left <= 0 or not self._fill(what, left):
                return self.has_line()
        return True

    def readline(self, what: str = "response") -> bytes:
        """One line without its CRLF (a bare LF ends a line too)."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                return line.rstrip(b"\r")
            if len(self._buffer) > MAX_LINE:
                raise ProbeFailure(f"{what} longer than {MAX_LINE} bytes without a line end",
                                   reason=Reason.PROTOCOL)
            self._fill(what)

    def read_exact(self, count: int, what: str = "literal") -> bytes:
        if count > 16 * MAX_LINE:
            raise ProbeFailure(f"server announced a {count}-byte {what}; refusing to read it",
                               reason=Reason.PROTOCOL)
        while len(self._buffer) < count:
            self._fill(what)
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data
