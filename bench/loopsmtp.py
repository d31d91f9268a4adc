"""An SMTP responder on many loopback addresses, for the fleet bench's `smtp` check.

It answers what the `smtp` check asks of a mail host's port 25: a banner naming the
host, EHLO (STARTTLS offered, AUTH not before TLS), STARTTLS with the bench CA's
certificate, EHLO again (AUTH PLAIN LOGIN offered), QUIT. It accepts no mail (there is
no DATA here: the sync check's delivery is measured against our own Dovecot in
bench/fleet_checks.py). One asyncio process serves every address, so the bench's own
process pays only for the client side. Postfix is not used for this: a real Postfix
instance per address would be thousands of processes for a reply of four lines.

    python -m bench.loopsmtp --hosts FILE --port PORT --cert CERT --key KEY

FILE has one "ADDRESS HOSTNAME" line per host. It prints "ready" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from pathlib import Path


class Responder:
    def __init__(self, names: dict[str, str], ctx: ssl.SSLContext) -> None:
        self.names = names
        self.ctx = ctx

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = self.names.get(writer.get_extra_info("sockname")[0], "mx.bench.test")
        tls = False
        try:
            writer.write(f"220 {name} ESMTP bench\r\n".encode())
            await writer.drain()
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    ext = ["PIPELINING", "SIZE 10240000", "8BITMIME"]
                    ext += ["AUTH PLAIN LOGIN"] if tls else ["STARTTLS"]
                    reply = [f"250-{name}"] + [f"250-{e}" for e in ext[:-1]] + [f"250 {ext[-1]}"]
                    writer.write(("\r\n".join(reply) + "\r\n").encode())
                elif verb == b"STAR" and not tls:
                    writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                    await writer.drain()
                    await writer.start_tls(self.ctx)
                    tls = True
                    continue
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                elif verb in (b"NOOP", b"RSET"):
                    writer.write(b"250 2.0.0 Ok\r\n")
                else:
                    writer.write(b"502 5.5.2 Not here\r\n")
                await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def main_async(hosts: Path, port: int, cert: Path, key: Path) -> None:
    names: dict[str, str] = {}
    for line in hosts.read_text().splitlines():
        address, name = line.split()
        names[address] = name
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    responder = Responder(names, ctx)
    servers = [await asyncio.start_server(responder.serve, address, port, backlog=256)
               for address in names]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    args = p.parse_args(argv)
    for address in (line.split()[0] for line in args.hosts.read_text().splitlines()):
        if not address.startswith("127."):
            raise SystemExit(f"{address} is not a loopback address")
    asyncio.run(main_async(args.hosts, args.port, args.cert, args.key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
