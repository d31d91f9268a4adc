"""Every check of a fleet, swept as `mailfleet serve` sweeps it: CPU per host and check,
wall time, RSS and file descriptors at N = 100, 1000, 3000, and the ratios to the goals.

The simulated fleet, all on loopback (127.81.x.y, one address per host):

* our own Dovecot (bench/localmail.py, a 1 MiB quota on the probe account) answering
  IMAPS on every address: `port`, `tls`, `imap_login`, `quota`;
* bench/loopsmtp.py answering SMTP on every address (banner with the host's name,
  STARTTLS, AUTH only after TLS): `smtp`;
* knot serving `bench.test` and its reverse zone: host hN.bench.test (A, PTR) is the MX
  of domain dN.bench.test (MX, SPF "mx", DMARC): `dns`.

Each measurement is a child process that builds the N hosts, sweeps them with the real
scheduler and SQLite store (concurrency 32, DNS answers kept as serve keeps them), once
to warm up and twice measured; its figures are the measured sweeps' median, from the
child's own CPU clock and /proc. One child per check (CPU per host of that check alone)
and one with every check together (what one watcher spends per sweep, its RSS and fds).

Not here, and why: `sync` (a delivery per host and sweep needs a mailbox per host: it is
measured per run against our own Dovecot and a loopback submission server, in the same
process), `server` (an sshd per host: measured on the lab by bench/ssh_keep.py, whose
figure `--server-ms` adds to the totals), tls + imap_login against blackbox_exporter
(bench/sweep_vs_blackbox.py).

    .venv/bin/python -m bench.fleet_checks [--sizes 100,1000,3000] [--server-ms 10.1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.localmail import QUOTA_CONFIG, loopback_addresses, running_dovecot

ROOT = Path(__file__).resolve().parents[1]
BASE = "127.81.0.1"
KNOT_ADDRESS = "127.82.0.53"
CHECK_SETS: dict[str, tuple[str, ...]] = {
    "port": ("port",),
    "tls+imap_login+quota": ("tls", "imap_login", "quota"),
    "smtp": ("smtp",),
    "dns": ("dns",),
}
EVERY = ("port", "tls", "imap_login", "quota", "smtp", "dns")
GOAL_CHECKS_MS = 5.0  # every check but sync, per host and sweep
GOAL_SYNC_MS = 15.0
GOAL_RSS_MIB = 300.0
INTERVAL = 60.0


def zones(addresses: list[str]) -> dict[str, str]:
    forward = []
    reverse = []
    for i, address in enumerate(addresses):
        forward.append(f"h{i} 300 IN A {address}\n"
                       f"d{i} 300 IN MX 10 h{i}.bench.test.\n"
                       f'd{i} 300 IN TXT "v=spf1 mx -all"\n'
                       f'_dmarc.d{i} 300 IN TXT "v=DMARC1; p=none"\n')
        octets = address.split(".")
        reverse.append(f"{octets[3]}.{octets[2]} 300 IN PTR h{i}.bench.test.\n")
    return {"bench.test": "".join(forward), "81.127.in-addr.arpa": "".join(reverse)}


# -- the child: one watcher sweeping N hosts ---------------------------------------------
def child(config: dict[str, Any], n: int, checks: tuple[str, ...], sweeps: int) -> None:
    from mailfleet.checks import PROBES
    from mailfleet.checks.dns.lookups import share_answers
    from mailfleet.checks.target import Credentials, ProbeOptions, Secret, Target
    from mailfleet.dashboard.scheduler import Scheduler
    from mailfleet.dashboard.store import ResultStore
    from mailfleet.dashboard.targets import WatchedHost

    share_answers(300)  # as serve does (--dns-cache 5m)
    options = ProbeOptions(timeout=10, dns_resolvers=(config["resolver"],))
    hosts = [
        WatchedHost(
            name=f"h{i}",
            target=Target(
                name=f"h{i}", address=address, mail_hostname=f"h{i}.bench.test",
                domains=(f"d{i}.bench.test",),
                ports={"imaps": config["imaps"], "smtp": config["smtp"]},
                ca_bundle=Path(config["ca"]),
                credentials=Credentials(config["user"], password=Secret(config["password"])),
                checks=checks,
            ),
            options=options, groups=("mailservers",))
        for i, address in enumerate(config["addresses"][:n])
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "results.sqlite3")
        sched = Scheduler(lambda: hosts, store, probes=PROBES, interval=INTERVAL,
                          concurrency=32)
        cpu, wall, failures = [], [], []
        errors: set[str] = set()
        for _ in range(sweeps + 1):
            c0, w0 = time.process_time(), time.monotonic()
            sweep = sched.sweep()
            cpu.append(time.process_time() - c0)
            wall.append(time.monotonic() - w0)
            failures.append(sweep.failures)
            errors |= {f"{r.check}: {r.error}" for r in store.latest() if not r.success}
        fds = len(os.listdir("/proc/self/fd"))
        store.close()
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text()
               .splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({
        "cpu": statistics.median(cpu[1:]), "wall": statistics.median(wall[1:]),
        "failures": max(failures[1:]), "warmup_failures": failures[0],
        "errors": sorted(errors)[:3], "rss_mib": hwm / 1024, "fds": fds,
    }))


def run_child(config_file: Path, n: int, checks: tuple[str, ...], sweeps: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fleet_checks", "--child", str(config_file), "--n", str(n),
         "--checks", ",".join(checks), "--sweeps", str(sweeps)],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- sync, per run -------------------------------------------------------------------------
def sync_cpu_ms(runs: int) -> float:
    """Thread CPU of one sync run against our own Dovecot and a loopback submission server
    (the server's threads and Dovecot are not counted)."""
    from mailfleet.checks import sync
    from mailfleet.checks.target import Deadline, ProbeOptions
    from tests.sync.mailserver import local_mail

    with local_mail() as mail:
        target, options = mail.target(), ProbeOptions(timeout=10)
        cpu = []
        for i in range(runs + 3):
            started = time.thread_time()
            result = sync.probe(target, options, Deadline(10))
            if i >= 3:
                cpu.append((time.thread_time() - started) * 1000)
            if not result.success:
                raise RuntimeError(f"sync failed: {result.error}")
    return statistics.median(cpu)


# -- the parent ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000,3000")
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--sync-runs", type=int, default=20)
    p.add_argument("--server-ms", type=float, default=None,
                   help="the server check's CPU per probe from bench/ssh_keep.py (kept)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--checks", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(json.loads(args.child.read_text()), args.n, tuple(args.checks.split(",")),
              args.sweeps)
        return 0
    from tests.checks.knot import Knot

    sizes = [int(s) for s in args.sizes.split(",")]
    addresses = loopback_addresses(max(sizes), base=BASE)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            running_dovecot(addresses, extra_config=QUOTA_CONFIG, login_processes=4) as dc, \
            Knot(Path(tmp) / "knot", KNOT_ADDRESS, zones(addresses)) as knot:
        hosts_file = Path(tmp) / "hosts"
        hosts_file.write_text("".join(f"{a} h{i}.bench.test\n" for i, a in enumerate(addresses)))
        smtp_port = dc.port + 1
        smtp = subprocess.Popen(
            [sys.executable, "-m", "bench.loopsmtp", "--hosts", str(hosts_file), "--port",
             str(smtp_port), "--cert", str(dc.root / "server.crt"),
             "--key", str(dc.root / "server.key")],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert smtp.stdout is not None
            if smtp.stdout.readline().strip() != "ready":
                raise RuntimeError("the SMTP responder did not start")
            config = {"addresses": addresses, "imaps": dc.port, "smtp": smtp_port,
                      "ca": str(dc.ca), "user": dc.user, "password": dc.password,
                      "resolver": knot.resolver}
            config_file = Path(tmp) / "config.json"
            config_file.write_text(json.dumps(config))
            print(f"{len(addresses)} hosts on loopback: Dovecot :{dc.port}, SMTP :{smtp_port}, "
                  f"knot {knot.resolver}; load {os.getloadavg()[0]:.2f}", flush=True)
            for n in sizes:
                for label, checks in [*CHECK_SETS.items(), ("every check", EVERY)]:
                    row = run_child(config_file, n, checks, args.sweeps)
                    rows[(n, label)] = row
                    print(f"N={n:5d} {label:22} CPU {row['cpu'] * 1000 / n:6.2f} ms/host  "
                          f"wall {row['wall']:6.2f} s  RSS {row['rss_mib']:6.1f} MiB  "
                          f"fds {row['fds']:5d}  failed {row['failures']}"
                          + (f"  ({'; '.join(row['errors'])})" if row['failures'] else ""),
                          flush=True)
        finally:
            smtp.terminate()
            smtp.wait(10)
    sync_ms = sync_cpu_ms(args.sync_runs)
    print(f"sync: {sync_ms:.2f} ms of CPU per run (median of {args.sync_runs})")
    print()
    print("Goals (ratio = measured / goal; at most 1 meets it):")
    for n in sizes:
        every = rows[(n, "every check")]
        per_host = every["cpu"] * 1000 / n
        server = args.server_ms or 0.0
        checks_ms = per_host + server
        sweep_cpu = (checks_ms + sync_ms) * n / 1000
        print(f"  N={n}: every check but sync {checks_ms:.2f} ms/host "
              f"({'with' if server else 'without'} server) -> {checks_ms / GOAL_CHECKS_MS:.2f}; "
              f"sync {sync_ms:.2f} ms -> {sync_ms / GOAL_SYNC_MS:.2f}; "
              f"one core every {INTERVAL:.0f} s: {sweep_cpu:.1f} s of CPU per sweep -> "
              f"{sweep_cpu / INTERVAL:.2f}; RSS {every['rss_mib']:.0f} MiB -> "
              f"{every['rss_mib'] / GOAL_RSS_MIB:.2f}; failures {every['failures']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
