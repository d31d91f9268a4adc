"""The `server` check's CPU per probe: a new SSH connection each time, or the kept one.

Two lab hosts (Debian 12 and 13) set up as tests/integration/test_server_check.py sets
them up (Postfix, Dovecot, the least-privilege probe user roles/mailfleet_probe_access
makes); the check runs against each host again and again in this process, first with a
new connection per probe (`serve --keep-ssh 0`), then with connections kept
(`--keep-ssh`, the default). CPU is this process's: the key exchange, the public-key
signature, five channels, parsing, and the certificate comparison's TLS handshake.

    MAILFLEET_LAB=sshbench MAILFLEET_LAB_SUBNET=10.77.10.0/24 \\
        .venv/bin/python -m bench.ssh_keep [--probes 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mailfleet.checks.server.ssh import POOL, keep_connections
from mailfleet.lab.config import LabConfig
from mailfleet.lab.fleet import Lab
from tests.integration.test_server_check import ServerLab, prepared_server_lab


def cpu_ms(sl: ServerLab, name: str, probes: int) -> list[float]:
    out = []
    for _ in range(probes):
        started = time.process_time()
        result = sl.probe(name)
        out.append((time.process_time() - started) * 1000)
        assert result.success, result.error
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", type=int, default=20)
    args = p.parse_args(argv)
    os.environ.setdefault("MAILFLEET_LAB", "sshbench")
    os.environ.setdefault("MAILFLEET_LAB_SUBNET", "10.77.10.0/24")
    with tempfile.TemporaryDirectory() as tmp:
        labs = prepared_server_lab(Lab(LabConfig.from_env()), Path(tmp))
        sl = next(labs)
        try:
            for name in sorted(sl.hosts):  # sshd may still restart after the set-up
                sl.wait_for(name, lambda r: r.success, "a working server check", 60)
            for name in sorted(sl.hosts):
                keep_connections(0)
                cpu_ms(sl, name, 2)  # imports, first handshakes
                fresh = statistics.median(cpu_ms(sl, name, args.probes))
                keep_connections(16)
                kept_runs = cpu_ms(sl, name, args.probes + 1)[1:]  # the first one connects
                kept = statistics.median(kept_runs)
                keep_connections(0)
                print(f"{name}: server check CPU ms per probe: new connection {fresh:.2f}, "
                      f"kept {kept:.2f} (ratio {kept / fresh:.2f}); "
                      f"{POOL.connects} connections made in all")
        finally:
            keep_connections(0)
            next(labs, None)  # the lab goes down unless MAILFLEET_KEEP_LAB=1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
