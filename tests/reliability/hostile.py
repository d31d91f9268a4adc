"""Hostile loopback servers in a process of their own (so they never pollute the fd and
thread counts of the process under test).

    python -m tests.reliability.hostile   # prints {"tarpit": port, ...} then serves

It stops when its stdin closes (the test ended or died) or after ``LIFETIME``
seconds, whichever comes first: nothing outlives a test run.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from pathlib import Path

from tests.checks import servers
from tests.sync.mailserver import ScriptedMailbox, Submission

LIFETIME = 600.0
GARBAGE = b"\x00\xff\xfe HTTP/1.1 400 Bad Request\r\n" + bytes(range(256)) + b"\r\n"


def never_accepting_listener() -> socket.socket:
    """A tarpit with no thread: the kernel completes the TCP handshake, nobody ever speaks."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s


def main() -> int:
    from tests.checks.certs import make_ca, make_leaf, write_chain

    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    with contextlib.ExitStack() as stack:
        tarpit = stack.enter_context(contextlib.closing(never_accepting_listener()))
        garbage = stack.enter_context(servers.serving(servers.garbage(GARBAGE)))
        stalled = stack.enter_context(servers.serving(servers.stalled_tls))
        trickle = stack.enter_context(servers.serving(servers.trickle))
        silent_dns = stack.enter_context(servers.SilentDns())
        ports = {
            "tarpit": tarpit.getsockname()[1],
            "garbage": garbage.port,
            "stalled_tls": stalled.port,
            "trickle": trickle.port,
            "silent_dns": silent_dns.port,
            "closed": servers.closed_port(),
        }
        if workdir is not None:
            # A TLS server whose certificate is fine but which answers IMAP with garbage.
            ca = make_ca("hostile CA")
            cert, key = write_chain(workdir, "hostile", make_leaf(ca, ["imap.bench.test"]))
            (workdir / "hostile-ca.pem").write_bytes(ca.pem)
            ctx = servers.tls_server_context(cert, key)
            tls_garbage = stack.enter_context(
                servers.serving(servers.tls_greeter(ctx, GARBAGE))
            )
            ports["tls_garbage"] = tls_garbage.port
            # The sync probe's steps, each stalled by a mailbox or submission server that
            # behaves until then (same certificate: trusted through hostile-ca.pem).
            for name, stall, leftover in (("stall_idle", "IDLE", False),
                                          ("stall_search", "UID SEARCH", False),
                                          ("stall_fetch", "UID FETCH", True),
                                          ("mailbox", "", False)):
                mailbox = ScriptedMailbox(ctx, stall, leftover)
                ports[name] = stack.enter_context(servers.serving(mailbox)).port
            data = Submission(ctx, "probe", "probe-secret-1", stall="DATA")
            ports["stall_data"] = stack.enter_context(servers.serving(data)).port
        print(json.dumps(ports), flush=True)
        done = threading.Event()

        def watch_stdin() -> None:
            sys.stdin.read()
            done.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        done.wait(LIFETIME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
