"""Which is cheaper for a sweep of many probes: a bounded thread pool or asyncio?

Runs the same work both ways against a real TLS server on loopback (in a
separate process, so the CPU time measured here is the prober's only):
connect, TLS handshake, read the greeting, parse the served certificate.

- ``threads``: ``checks.tls.probe`` (blocking, deadline-bound) in a
  ``ThreadPoolExecutor(max_workers=W)``;
- ``asyncio``: an equivalent native coroutine (``asyncio.open_connection``
  with TLS, ``wait_for`` deadline) under a ``Semaphore(W)``.

A share of the targets can be tarpits (accept, never speak) to show that a
hostile server costs its deadline in one worker and nothing elsewhere.

    .venv/bin/python bench/probe_concurrency.py --probes 400 --workers 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Target  # noqa: E402
from mailfleet.checks.tlsinfo import (  # noqa: E402
    hostname_matches,
    served_chain,
    session_values,
    verified_chain,
)
from tests.checks.certs import make_ca, make_leaf, write_bundle, write_chain  # noqa: E402

SERVER = r"""
import asyncio, ssl, sys
cert, key, tarpit_port_file = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
async def tls(reader, writer):
    writer.write(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
    try:
        await asyncio.wait_for(reader.read(100), 10)
    except Exception:
        pass
    writer.close()
async def tarpit(reader, writer):
    await asyncio.sleep(30); writer.close()
async def main():
    a = await asyncio.start_server(tls, "127.0.0.1", 0, ssl=ctx, backlog=1024)
    b = await asyncio.start_server(tarpit, "127.0.0.1", 0, backlog=1024)
    print(a.sockets[0].getsockname()[1], b.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def threads_sweep(targets: list[Target], workers: int, budget: float) -> list[bool]:
    probe = PROBES["tls"]
    options = ProbeOptions()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(probe, t, options, Deadline(budget)) for t in targets]
        return [f.result().success for f in futures]


async def _async_tls(target: Target, ctx: ssl.SSLContext, budget: float) -> bool:
    async def work() -> bool:
        reader, writer = await asyncio.open_connection(
            target.address, target.port("imaps"), ssl=ctx, server_hostname=target.mail_hostname
        )
        try:
            await reader.readline()
            tls = writer.get_extra_info("ssl_object")
            # the same extraction checks.tls does: both chains, session, hostname
            served = served_chain(tls)
            verified_chain(tls)
            session_values(tls)
            return hostname_matches(target.mail_hostname, served[0])
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(work(), budget)
    except (TimeoutError, OSError, ssl.SSLError):
        return False


def asyncio_sweep(targets: list[Target], workers: int, budget: float, ca: Path) -> list[bool]:
    ctx = ssl.create_default_context(cafile=str(ca))

    async def main() -> list[bool]:
        sem = asyncio.Semaphore(workers)

        async def one(t: Target) -> bool:
            async with sem:
                return await _async_tls(t, ctx, budget)

        return list(await asyncio.gather(*(one(t) for t in targets)))

    return asyncio.run(main())


def measure(name: str, fn: Any) -> dict[str, Any]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok = fn()
    return {
        "mode": name,
        "wall_s": round(time.perf_counter() - wall0, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
        "ok": sum(ok),
        "probes": len(ok),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--tarpits", type=float, default=0.0, help="share of tarpit targets, 0-1")
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        ca = make_ca("bench CA")
        leaf = make_leaf(ca, ["mx.bench.test"])
        cert, key = write_chain(Path(d), "leaf", leaf)
        bundle = write_bundle(Path(d), "ca", ca)
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(cert), str(key), ""],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            tls_port, tarpit_port = (int(x) for x in server.stdout.readline().split())
            n_tarpit = int(args.probes * args.tarpits)
            targets = [
                Target(name=f"h{i}", address="127.0.0.1", mail_hostname="mx.bench.test",
                       ports={"imaps": tarpit_port if i < n_tarpit else tls_port},
                       ca_bundle=bundle)
                for i in range(args.probes)
            ]
            # warm up both paths (imports, OpenSSL init)
            threads_sweep(targets[-4:], 4, args.budget)
            asyncio_sweep(targets[-4:], 4, args.budget, bundle)
            rows = []
            for _ in range(args.rounds):
                rows.append(measure("threads", lambda: threads_sweep(
                    targets, args.workers, args.budget)))
                rows.append(measure("asyncio", lambda: asyncio_sweep(
                    targets, args.workers, args.budget, bundle)))
        finally:
            server.terminate()
            server.wait(timeout=5)
    for mode in ("threads", "asyncio"):
        mine = [r for r in rows if r["mode"] == mode]
        best = min(mine, key=lambda r: r["wall_s"])
        print(json.dumps({**best, "workers": args.workers, "tarpit_share": args.tarpits,
                          "cpu_per_probe_ms": round(1000 * min(r["cpu_s"] for r in mine)
                                                    / args.probes, 3),
                          "cpus": os.cpu_count()}))
    t = min(r["cpu_s"] for r in rows if r["mode"] == "threads")
    a = min(r["cpu_s"] for r in rows if r["mode"] == "asyncio")
    print(f"cpu ratio threads/asyncio: {t / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
