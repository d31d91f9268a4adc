"""Floors: what TLS + IMAP login costs in CPython here before any product code runs.

Three bare clients do what blackbox_exporter's ``tcp`` module does per target (verified
TLS 1.3 handshake, greeting, ``AUTHENTICATE PLAIN``, ``LOGOUT``) and nothing more: no
result objects, no chain analysis, no store. They say how far down the probe sweep can go
in this language and TLS library, and which shape of client gets there:

- ``seq``: blocking sockets, one target at a time (the per-target floor of the code as
  written: ``checks`` is blocking I/O with deadlines);
- ``threads``: the same client on ``--concurrency`` threads (the shape of the scheduler's
  worker pool): adds GIL hand-offs and a sleep/wake per blocking read;
- ``loop``: one thread, non-blocking sockets and a selector, ``--concurrency`` connections
  in flight: one ``epoll`` wakes for many sockets.

    .venv/bin/python -m bench.floors                   # N=1000, concurrency 50, + blackbox
    .venv/bin/python -m bench.floors --sizes 100,1000 --key rsa

Each floor runs in a child process of its own (CPU and peak RSS from ``wait4``), then
blackbox_exporter on the same targets; ratios floor/blackbox are printed last.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.localmail import HOSTNAME, loopback_addresses, running_dovecot
from bench.measure import ratio, self_cpu, wait_usage
from bench.sweep_vs_blackbox import run_blackbox

FLOORS = ("seq", "threads", "loop")


@dataclass
class Job:
    sock: socket.socket | ssl.SSLSocket
    state: str = "connect"
    buf: bytes = b""


def _read_until(f: io.BufferedReader, tag: bytes) -> bytes:
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag):
            return line


def blocking_one(address: str, port: int, ctx: ssl.SSLContext, auth: bytes) -> bool:
    with socket.create_connection((address, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOSTNAME) as s:
        s.getpeercert(True)
        f = s.makefile("rb")
        f.readline()  # greeting
        s.sendall(b"a AUTHENTICATE PLAIN " + auth + b"\r\n")
        ok = _read_until(f, b"a ").startswith(b"a OK")
        s.sendall(b"b LOGOUT\r\n")
        _read_until(f, b"b ")
        return ok


def floor_seq(addresses: list[str], port: int, ctx: ssl.SSLContext, auth: bytes,
              concurrency: int) -> int:
    return sum(blocking_one(a, port, ctx, auth) for a in addresses)


def floor_threads(addresses: list[str], port: int, ctx: ssl.SSLContext, auth: bytes,
                  concurrency: int) -> int:
    pending = list(addresses)
    lock = threading.Lock()
    ok = [0]

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                address = pending.pop()
            good = blocking_one(address, port, ctx, auth)
            with lock:
                ok[0] += good

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ok[0]


def floor_loop(addresses: list[str], port: int, ctx: ssl.SSLContext, auth: bytes,
               concurrency: int) -> int:
    sel = selectors.DefaultSelector()
    pending = list(addresses)
    active = ok = 0

    def finish(job: Job, good: bool) -> None:
        nonlocal active, ok
        sel.unregister(job.sock)
        job.sock.close()
        active -= 1
        ok += good

    def step(job: Job) -> None:
        if job.state == "connect":
            if job.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                finish(job, False)
                return
            sel.unregister(job.sock)
            job.sock = ctx.wrap_socket(job.sock, server_hostname=HOSTNAME,
                                       do_handshake_on_connect=False)
            sel.register(job.sock, selectors.EVENT_READ, job)
            job.state = "handshake"
        tls = job.sock
        assert isinstance(tls, ssl.SSLSocket)
        if job.state == "handshake":
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                sel.modify(tls, selectors.EVENT_READ, job)
                return
            except ssl.SSLWantWriteError:
                sel.modify(tls, selectors.EVENT_WRITE, job)
                return
            tls.getpeercert(True)
            sel.modify(tls, selectors.EVENT_READ, job)
            job.state = "greeting"
            # the greeting may have come with the handshake's last flight: fall through
        try:
            job.buf += tls.recv(65536)
        except ssl.SSLWantReadError:
            return
        if not job.buf.endswith(b"\r\n"):
            return
        lines, job.buf = job.buf, b""
        if job.state == "greeting":
            tls.send(b"a AUTHENTICATE PLAIN " + auth + b"\r\n")
            job.state = "auth"
        elif job.state == "auth" and b"\na " in b"\n" + lines:
            if b"\na OK" not in b"\n" + lines:
                finish(job, False)
                return
            tls.send(b"b LOGOUT\r\n")
            job.state = "logout"
        elif job.state == "logout" and b"\nb " in b"\n" + lines:
            finish(job, True)

    while pending or active:
        while pending and active < concurrency:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((pending.pop(), port))
            sel.register(sock, selectors.EVENT_WRITE, Job(sock))
            active += 1
        events = sel.select(10)
        if not events:
            raise TimeoutError("no progress in 10 s")
        for key, _ in events:
            job: Job = key.data
            try:
                step(job)
            except (OSError, ssl.SSLError):
                finish(job, False)
    sel.close()
    return ok


RUNNERS: dict[str, Callable[[list[str], int, ssl.SSLContext, bytes, int], int]] = {
    "seq": floor_seq, "threads": floor_threads, "loop": floor_loop,
}


def child_main(spec: dict[str, object]) -> int:
    addresses = [str(a) for a in spec["addresses"]]  # type: ignore[attr-defined]
    ctx = ssl.create_default_context(cafile=str(spec["ca"]))
    auth = base64.b64encode(f"\0{spec['user']}\0{spec['password']}".encode())
    floor_loop(addresses[:10], int(str(spec["port"])), ctx, auth, 10)  # warm: imports, CA
    cpu0, wall0 = self_cpu(), time.monotonic()
    ok = RUNNERS[str(spec["floor"])](addresses, int(str(spec["port"])), ctx, auth,
                                     int(str(spec["concurrency"])))
    print(json.dumps({"wall": time.monotonic() - wall0, "cpu": self_cpu() - cpu0, "ok": ok}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000")
    p.add_argument("--floors", default=",".join(FLOORS))
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--key", choices=("ecdsa", "rsa"), default="ecdsa")
    p.add_argument("--no-blackbox", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    sizes = [int(s) for s in args.sizes.split(",")]
    floors = [f for f in args.floors.split(",") if f]
    unknown = set(floors) - set(FLOORS)
    if unknown:
        p.error(f"unknown floor(s) {sorted(unknown)}; choose from {', '.join(FLOORS)}")
    addresses = loopback_addresses(max(sizes))
    rows: list[tuple[str, int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, \
            running_dovecot(addresses, key_type=args.key) as dc:
        print(f"Dovecot on {len(addresses)} loopback addresses, {args.key} key, "
              f"concurrency {args.concurrency}", flush=True)
        for n in sizes:
            for floor in floors:
                spec = {"floor": floor, "addresses": addresses[:n], "port": dc.port,
                        "ca": str(dc.ca), "user": dc.user, "password": dc.password,
                        "concurrency": args.concurrency}
                proc = subprocess.Popen([sys.executable, "-m", "bench.floors", "--child",
                                         json.dumps(spec)], stdout=subprocess.PIPE)
                out = proc.stdout.read() if proc.stdout else b""
                usage = wait_usage(proc, 600)
                if usage.returncode != 0:
                    raise SystemExit(f"floor {floor} N={n} failed (exit {usage.returncode})")
                got = json.loads(out)
                if got["ok"] != n:
                    print(f"  warning: {floor} N={n}: {n - got['ok']} logins failed")
                rows.append((floor, n, got["wall"], got["cpu"], usage.max_rss_kib / 1024))
                print(f"  {floor} N={n}: {got['wall']:.2f} s wall, {got['cpu']:.2f} s CPU",
                      flush=True)
            if not args.no_blackbox:
                run = run_blackbox(addresses[:n], dc.port, dc.ca, args.concurrency, Path(tmp),
                                   10.0, dc.pid)
                rows.append(("blackbox", n, run.wall, run.cpu, run.max_rss_mib))
                print(f"  blackbox N={n}: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU",
                      flush=True)
    print(f"\n{'client':10} {'N':>5} {'wall s':>7} {'cpu s':>6} {'cpu ms/target':>14} "
          f"{'RSS MiB':>8}")
    for name, n, wall, cpu, rss in rows:
        print(f"{name:10} {n:>5} {wall:7.2f} {cpu:6.2f} {1000 * cpu / n:14.3f} {rss:8.1f}")
    print("\nratios floor/blackbox (the sweep goal: wall <= 0.70x, cpu <= 0.60x):")
    for name, n, wall, cpu, _ in rows:
        bb = next((r for r in rows if r[0] == "blackbox" and r[1] == n), None)
        if bb is not None and name != "blackbox":
            print(f"  N={n:>5} {name:8} wall {ratio(wall, bb[2])}  cpu {ratio(cpu, bb[3])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
