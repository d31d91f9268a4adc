"""ManageSieve's STARTTLS (RFC 5804) done on a scanner's behalf.

sslyze speaks STARTTLS for SMTP, IMAP and a few more, not for ManageSieve. This
relay listens on loopback; for each connection it opens one to the server, reads
the greeting, sends STARTTLS and waits for its OK, then passes bytes both ways
untouched, so the TLS handshake the scanner makes is with the server itself."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

TIMEOUT = 15.0


def managesieve_starttls(sock: socket.socket) -> None:
    """Read the greeting on ``sock`` and upgrade it: the server's next byte is TLS."""
    sock.settimeout(TIMEOUT)
    _read_reply(sock)
    sock.sendall(b"STARTTLS\r\n")
    reply = _read_reply(sock)
    if not reply.startswith(b"OK"):
        raise ConnectionError(f"ManageSieve refused STARTTLS: {reply!r}")


def _read_reply(sock: socket.socket) -> bytes:
    """Lines up to the one that ends a response (OK, NO or BYE), read byte by byte
    so that nothing past it (the server's TLS records) is taken from the socket."""
    line = b""
    while True:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("ManageSieve closed the connection")
        line += byte
        if byte == b"\n":
            if line.startswith((b"OK", b"NO", b"BYE")):
                return line
            line = b""


class StartTLSRelay:
    """``with StartTLSRelay(address, 4190) as port:`` scans 127.0.0.1:port."""

    def __init__(self, address: str, port: int) -> None:
        self._target = (address, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> int:
        self._thread.start()
        port: int = self._listener.getsockname()[1]
        return port

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            try:
                server = socket.create_connection(self._target, timeout=TIMEOUT)
            except OSError:
                return
            with server:
                try:
                    managesieve_starttls(server)
                except OSError:
                    return
                client.settimeout(TIMEOUT)
                back = threading.Thread(target=_pipe, args=(server, client), daemon=True)
                back.start()
                _pipe(client, server)
                back.join(timeout=TIMEOUT)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until either side closes or stays silent for TIMEOUT."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (sink, source):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
