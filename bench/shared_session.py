"""tls + imap_login + quota per host: one connection and login, or quota on its own.

Our own Dovecot (bench/localmail.py, with a 1 MiB quota on the probe account) on N
loopback addresses; the scheduler sweeps the N hosts as `mailfleet serve` does, with
a real SQLite store. Variant "apart": quota opens its own connection, handshake and
login (as before quota joined the shared session); "shared": quota asks GETQUOTAROOT
on the session imap_login opened. CPU is this process's; each figure is the median of
the sweeps after a first, warm-up one.

    .venv/bin/python -m bench.shared_session [--hosts 200] [--sweeps 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from bench.localmail import QUOTA_CONFIG, LocalDovecot, loopback_addresses, running_dovecot
from mailfleet.checks import PROBES, quota
from mailfleet.checks.result import ProbeResult
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.scheduler import Probe, Scheduler
from mailfleet.dashboard.store import ResultStore
from tests.reliability.conftest import mail_host


def quota_alone(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """The quota probe, wrapped so the scheduler does not put it on the shared session."""
    return quota.probe(target, options, deadline)


def cpu_per_host(addresses: list[str], dc: LocalDovecot, probes: Mapping[str, Probe],
                 sweeps: int, db: Path) -> list[float]:
    hosts = [mail_host(f"h{i}", a, dc, ("tls", "imap_login", "quota"), 10.0)
             for i, a in enumerate(addresses)]
    store = ResultStore(db)
    sched = Scheduler(lambda: hosts, store, probes=probes, interval=600, concurrency=8)
    out = []
    for _ in range(sweeps):
        started = time.process_time()
        sweep = sched.sweep()
        assert sweep.failures == 0, [r.error for r in store.latest() if not r.success][:3]
        out.append((time.process_time() - started) * 1000 / len(hosts))
    store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--sweeps", type=int, default=4)
    args = p.parse_args(argv)
    addresses = loopback_addresses(args.hosts, base="127.79.0.1")
    apart_table = {**PROBES, "quota": quota_alone}
    with tempfile.TemporaryDirectory() as tmp, \
            running_dovecot(addresses, extra_config=QUOTA_CONFIG) as dc:
        apart = cpu_per_host(addresses, dc, apart_table, args.sweeps, Path(tmp) / "a.db")
        shared = cpu_per_host(addresses, dc, PROBES, args.sweeps, Path(tmp) / "s.db")
    a, s = statistics.median(apart[1:]), statistics.median(shared[1:])
    print(f"tls + imap_login + quota, {args.hosts} hosts, CPU ms per host and sweep:")
    print(f"  quota apart : {' '.join(f'{v:.2f}' for v in apart)} (median {a:.2f})")
    print(f"  one session : {' '.join(f'{v:.2f}' for v in shared)} (median {s:.2f})")
    print(f"  saved {a - s:.2f} ms per host and sweep; ratio {s / a:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
