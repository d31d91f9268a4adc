"""Fixtures of the reliability suite: a real Dovecot of our own on loopback, hostile
servers in a separate process, and counts of what a process holds (fds, threads, RSS).

The Dovecot is the bench's (bench/localmail.py): its own config and dirs in a
temp dir, passwd-file users, a test-CA certificate, loopback addresses only.
Where it cannot run (not root, Dovecot not installed) the tests that need it
are skipped — unless MAILFLEET_REQUIRE_LAB=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.localmail import (
    HOSTNAME,
    LocalDovecot,
    dovecot_available,
    loopback_addresses,
    start_dovecot,
)
from mailfleet.checks.target import Credentials, ProbeOptions, Secret, Target
from mailfleet.dashboard.targets import WatchedHost
from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
# The suite's own loopback range (the benches use 127.77.x.y).
GOOD_ADDRESSES = loopback_addresses(12, base="127.78.0.1")
VICTIM_ADDRESS = "127.78.1.1"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[LocalDovecot]:
    why = dovecot_available()
    if why:
        skip_or_fail(why)
    server = start_dovecot(GOOD_ADDRESSES)
    yield server
    server.stop()


def mail_host(
    name: str,
    address: str,
    dovecot: LocalDovecot,
    checks: tuple[str, ...] = ("port", "tls", "imap_login"),
    timeout: float = 3.0,
    port: int | None = None,
    ca: Path | None = None,
    **options: object,
) -> WatchedHost:
    """An inventory host served by ``dovecot`` (or by whatever listens on ``port``)."""
    return WatchedHost(
        name=name,
        target=Target(
            name=name, address=address, mail_hostname=HOSTNAME,
            ports={"imaps": port or dovecot.port}, ca_bundle=ca or dovecot.ca,
            credentials=Credentials(dovecot.user, password=Secret(dovecot.password)),
            checks=checks,
        ),
        options=ProbeOptions(timeout=timeout, **options),  # type: ignore[arg-type]
        groups=("mailservers",),
    )


@dataclass(frozen=True)
class Hostile:
    ports: dict[str, int]
    ca: Path  # trust anchor of the tls_garbage server's certificate


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """Ports of hostile servers (tarpit, garbage, stalled_tls, trickle, silent_dns, closed,
    tls_garbage) run by a child process that ends with the session."""
    workdir = tmp_path_factory.mktemp("hostile")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.hostile", str(workdir)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    ports: dict[str, int] = json.loads(line)
    yield Hostile(ports, workdir / "hostile-ca.pem")
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    proc.stdout.close()


@dataclass(frozen=True)
class Holdings:
    """What this process holds at one moment."""

    fds: int
    threads: int
    fd_targets: tuple[str, ...]
    probe_threads: int
    rss_kib: int

    @classmethod
    def now(cls) -> Holdings:
        rss = 0
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        names = [t.name for t in threading.enumerate()]
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return cls(
            fds=len(targets),
            fd_targets=tuple(sorted(targets)),
            threads=len(names),
            probe_threads=sum(1 for n in names if n.startswith("probe-")),
            rss_kib=rss,
        )


def wait_for_probe_threads_to_end(timeout: float = 5.0) -> Holdings:
    """Holdings once no scheduler probe thread is alive (or the timeout passed)."""
    import time

    end = time.monotonic() + timeout
    while True:
        held = Holdings.now()
        if held.probe_threads == 0 or time.monotonic() > end:
            return held
        time.sleep(0.05)
