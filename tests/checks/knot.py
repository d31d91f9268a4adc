"""A real knot (authoritative DNS) on a loopback address, with zones the test writes.

Started with its own config, rundir and control socket under a temp dir;
stopped by its PID (never by name).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.processes import stop_process

SOA = ("@ 300 IN SOA ns.dnstest.test. hostmaster.dnstest.test. 1 60 60 600 60\n"
       "@ 300 IN NS ns.dnstest.test.\n")


def knotd_path() -> str | None:
    return shutil.which("knotd") or ("/usr/sbin/knotd" if Path("/usr/sbin/knotd").exists()
                                     else None)


def free_port(address: str) -> int:
    """A port free for both UDP and TCP on address (knot needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((address, 0))
            port: int = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port on {address}")


class Knot:
    def __init__(self, directory: Path, address: str, zones: dict[str, str]) -> None:
        self.dir = directory
        self.address = address
        self.port = free_port(address)
        self.zones = zones
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def resolver(self) -> str:
        return f"{self.address}:{self.port}"

    def __enter__(self) -> Knot:
        binary = knotd_path()
        if binary is None:
            raise RuntimeError("knotd is not installed (apt-get install knot)")
        (self.dir / "zones").mkdir(parents=True, exist_ok=True)
        (self.dir / "db").mkdir(exist_ok=True)
        for name, body in self.zones.items():
            origin = f"$ORIGIN {name}.\n"
            (self.dir / "zones" / f"{name}.zone").write_text(origin + SOA + body)
        conf = self.dir / "knot.conf"
        conf.write_text(
            "server:\n"
            f"  listen: {self.address}@{self.port}\n"
            f"  rundir: {self.dir}\n"
            "log:\n  - target: stderr\n    any: warning\n"
            f"database:\n  storage: {self.dir}/db\n"
            f"control:\n  listen: {self.dir}/knot.sock\n"
            "template:\n  - id: default\n"
            f"    storage: {self.dir}/zones\n"
            '    file: "%s.zone"\n'
            "    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n"
            "zone:\n" + "".join(f"  - domain: {z}\n" for z in self.zones)
        )
        log = (self.dir / "knot.log").open("wb")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"knotd exited: {(self.dir / 'knot.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(
                (self.address, self.port), timeout=0.2
            ):
                time.sleep(0.2)  # zones load right after the listener opens
                return self
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"knotd did not listen on {self.resolver} within 10 s")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)  # our own child, by PID
