"""Loopback servers the probe tests start and stop themselves: real TLS, and hostile ones.

Each server listens on 127.0.0.1 with a kernel-chosen port, serves every
connection in a daemon thread, and on exit closes the listener and every
connection it accepted, so nothing outlives the test.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

Handler = Callable[[socket.socket, threading.Event], None]


class LoopbackServer:
    def __init__(self, handler: Handler, proto: int = socket.SOCK_STREAM) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, proto)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoopbackServer:
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            self.handler(conn, self.stop)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._threads[0].join(timeout=2)  # the accept loop: no new connection after this
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        for t in self._threads:
            t.join(timeout=2)


def tarpit(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and never say a word."""
    stop.wait(30)


def garbage(payload: bytes) -> Handler:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(payload)
        stop.wait(30)

    return handler


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    """One byte every 0.2 s, never a line end: per-recv timeouts alone would never fire."""
    while not stop.wait(0.2):
        conn.sendall(b"*")


def stalled_tls(conn: socket.socket, stop: threading.Event) -> None:
    """Read the ClientHello, then stall mid-handshake."""
    conn.settimeout(5)
    with contextlib.suppress(OSError):
        conn.recv(4096)
    stop.wait(30)


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_greeter(ctx: ssl.SSLContext, greeting: bytes = b"* OK [CAPABILITY IMAP4rev1] ready\r\n"
                ) -> Handler:
    """Implicit TLS, then an IMAP-ish greeting; waits for the client to go away."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(5)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(greeting)
            with contextlib.suppress(OSError):
                tls.recv(1024)

    return handler


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class SilentDns:
    """A UDP+TCP 'DNS server' that reads every query and never answers."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port: int = self.udp.getsockname()[1]
        self.stop = threading.Event()
        self.queries = 0

    def __enter__(self) -> SilentDns:
        self.udp.settimeout(0.1)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.udp.recvfrom(4096)
                self.queries += 1

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        time.sleep(0.15)
        self.udp.close()


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[LoopbackServer]:
    with LoopbackServer(handler) as server:
        yield server


class LineLimitedSmtp:
    """An SMTP submission server that, like Dovecot 2.3.19 submission, refuses long lines.

    It offers STARTTLS, then AUTH PLAIN OAUTHBEARER; any complete SASL exchange
    succeeds. ``longest`` is the longest command line it received.
    """

    LIMIT = 998

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.longest = 0

    def __call__(self, conn: socket.socket, stop: threading.Event) -> None:
        # Each connection keeps its own socket: the previous one's handler may still be
        # closing when the next connection arrives.
        conn.settimeout(5)
        held = [conn]
        try:
            self._serve(held, stop)
        finally:
            held[-1].close()

    def _serve(self, held: list[socket.socket], stop: threading.Event) -> None:
        sock = held[0]
        reader = sock.makefile("rb")
        sock.sendall(b"220 mx1.lab.test ESMTP line-limited\r\n")
        tls = False
        while not stop.is_set():
            line = reader.readline(65536)
            if not line:
                reader.close()
                return
            self.longest = max(self.longest, len(line.rstrip(b"\r\n")))
            if len(line.rstrip(b"\r\n")) > self.LIMIT:
                sock.sendall(b"500 5.5.2 Line too long\r\n")
                continue
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                auth = b"250-AUTH PLAIN OAUTHBEARER\r\n" if tls else b""
                sock.sendall(b"250-mx1.lab.test\r\n" + auth + b"250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                sock.sendall(b"220 2.0.0 go ahead\r\n")
                sock = self.ctx.wrap_socket(sock, server_side=True)
                held.append(sock)
                reader.close()
                reader = sock.makefile("rb")
                tls = True
            elif verb == b"AUTH":
                parts = line.split()
                if len(parts) == 2:  # no initial response: ask for it
                    sock.sendall(b"334 \r\n")
                    response = reader.readline(65536)
                    if len(response.rstrip(b"\r\n")) > self.LIMIT * 8:
                        sock.sendall(b"500 5.5.2 Line too long\r\n")
                        continue
                sock.sendall(b"235 2.7.0 Logged in\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                reader.close()
                return
            else:
                sock.sendall(b"502 5.5.2 Unknown command\r\n")


class FlakyDns:
    """A UDP DNS server that answers SERVFAIL to every other query (a flapping resolver;
    ``flapping=False``: never), counting the questions it was asked in ``asked``.

    Real answers come from ``records``: (name, type) -> list of rdata texts, with ``ttl``.
    """

    def __init__(self, records: dict[tuple[str, str], list[str]], flapping: bool = True,
                 ttl: int = 60, negative_ttl: int | None = None) -> None:
        self.records = records
        self.flapping = flapping
        self.ttl = ttl
        self.negative_ttl = negative_ttl  # NXDOMAIN carries an SOA with it (RFC 2308)
        self.asked: collections.Counter[tuple[str, str]] = collections.Counter()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port: int = self.udp.getsockname()[1]
        self.stop = threading.Event()
        self.queries = 0

    def __enter__(self) -> FlakyDns:
        self.udp.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        while not self.stop.is_set():
            try:
                data, peer = self.udp.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.queries += 1
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.flags |= 0x0400  # AA
            question = query.question[0]
            key = (question.name.to_text().rstrip(".").lower(),
                   dns.rdatatype.to_text(question.rdtype))
            self.asked[key] += 1
            if self.flapping and self.queries % 2 == 1:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif key in self.records:
                response.answer.append(dns.rrset.from_text_list(
                    question.name, self.ttl, "IN", key[1], self.records[key]))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
                if self.negative_ttl is not None:
                    response.authority.append(dns.rrset.from_text(
                        "test.", self.negative_ttl, "IN", "SOA",
                        f"ns.test. hostmaster.test. 1 3600 600 86400 {self.negative_ttl}"))
            self.udp.sendto(response.to_wire(), peer)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.udp.close()
