"""Probe sweep: mailfleet vs Prometheus' blackbox_exporter, on the same targets.

One real Dovecot of our own (bench/localmail.py) answers IMAPS on N loopback
addresses. Each tool probes every target once with the same concurrency budget:

- blackbox_exporter (Debian's), ``tcp`` module: TLS (chain + hostname
  verified against the test CA) then ``query_response`` greeting / LOGIN /
  LOGOUT; driven by N ``/probe`` requests, ``--concurrency`` at a time.
- mailfleet: one ``Scheduler.sweep()`` (the code ``mailfleet serve`` runs,
  results into a real SQLite store) over N inventory hosts, each with the
  ``tls`` check (full handshake, chain analysis, expiry) and ``imap_login``
  (greeting, capabilities, AUTHENTICATE PLAIN, LOGOUT): more work per target,
  on one connection (checks/tls_login.py), two results per target.

Each tool runs as a child process of this one, one after the other; measured:
wall time of the sweep, CPU seconds of the tool's process during the sweep
(and over its whole life, from wait4), peak RSS. Ratios mailfleet/blackbox are
printed last.

    sudo .venv/bin/python -m bench.sweep_vs_blackbox              # N = 100, 1000
    .venv/bin/python -m bench.sweep_vs_blackbox --sizes 1000 --variants full,full+ctx+resume
    .venv/bin/python -m bench.sweep_vs_blackbox --profile 1000    # cProfile of the sweep

Variants (``--variants``): ``full`` (tls + imap_login), ``login`` (imap_login
only: the same work as blackbox), with ``+ctx`` / ``+resume`` tunings from
bench/tuning.py (prototypes of fixes proposed for checks/). ``--profile`` is
cProfile of the sweeping thread only: the probes run on worker threads, so
profile them with ``py-spy record --gil`` (Python) or without ``--gil``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.localmail import HOSTNAME, PASSWORD, USER, loopback_addresses, running_dovecot
from bench.measure import cpu_seconds, ratio, self_cpu, status_kib, tree_cpu, wait_usage

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
DEFAULT_VARIANTS = "full,login"
ROOT = Path(__file__).resolve().parent.parent

BLACKBOX_CONFIG = """\
modules:
  imaps_login:
    prober: tcp
    timeout: {timeout}s
    tcp:
      preferred_ip_protocol: ip4
      tls: true
      tls_config:
        ca_file: {ca}
        server_name: {hostname}
      query_response:
        - expect: "^\\\\* OK"
        - send: "a1 LOGIN {user} {password}"
        - expect: "^a1 OK"
        - send: "a2 LOGOUT"
        - expect: "^\\\\* BYE"
"""


@dataclass
class Run:
    tool: str
    n: int
    wall: float
    cpu: float  # during the sweep
    cpu_total: float  # whole process life (wait4)
    max_rss_mib: float
    ok: int
    failed: int
    server_cpu: float = 0.0  # Dovecot's CPU during the sweep
    note: str = ""


# -- blackbox_exporter -----------------------------------------------------------------
def _free_local_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def run_blackbox(addresses: list[str], dport: int, ca: Path, concurrency: int, workdir: Path,
                 timeout: float, server_pid: int) -> Run:
    config = workdir / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG.format(
        ca=ca, hostname=HOSTNAME, user=USER, password=PASSWORD, timeout=int(timeout)))
    port = _free_local_port()
    proc = subprocess.Popen(
        [BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        end = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/-/healthy")
                if c.getresponse().status == 200:
                    break
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError("blackbox_exporter did not start")
            time.sleep(0.05)
        out = workdir / "bb-out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        urls = workdir / "bb-urls.cfg"
        urls.write_text("".join(
            f'url = "http://127.0.0.1:{port}/probe?module=imaps_login&target={a}:{dport}"\n'
            f'output = "{out}/{i}"\n'
            for i, a in enumerate(addresses)
        ))
        server0 = tree_cpu(server_pid)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        # The driver is curl (C, --parallel): a Python driver's CPU would slow blackbox down.
        driver = subprocess.Popen(
            ["curl", "-s", "--parallel", "--parallel-max", str(concurrency), "--config", str(urls)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        driver_usage = wait_usage(driver, 600)
        wall, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
        server = tree_cpu(server_pid) - server0
        hwm = status_kib(proc.pid, "VmHWM")
        results = [
            "\nprobe_success 1" in f.read_text() for f in out.iterdir()
        ] + [False] * (len(addresses) - len(list(out.iterdir())))
    finally:
        proc.terminate()
    usage = wait_usage(proc, 15)
    ok = sum(results)
    return Run("blackbox", len(addresses), wall, cpu, usage.cpu,
               max(hwm, usage.max_rss_kib) / 1024, ok, len(results) - ok, server,
               f"driver (curl) cpu {driver_usage.cpu:.2f} s")


# -- mailfleet (child process) ------------------------------------------------------------
def child_main(args: argparse.Namespace) -> int:
    """In the child: build the hosts, sweep once, print a JSON line."""
    from bench import tuning

    parts = args.variant.split("+")
    tuning.apply(",".join(parts[1:]))
    cpu_start = self_cpu()
    from mailfleet.checks import Credentials, ProbeOptions, Secret, Target
    from mailfleet.dashboard.scheduler import Scheduler
    from mailfleet.dashboard.store import ResultStore
    from mailfleet.dashboard.targets import WatchedHost

    checks = ("imap_login",) if parts[0] == "login" else ("tls", "imap_login")
    probes = None
    if "onecon" in parts:
        from mailfleet.checks import PROBES

        checks, probes = ("imaps",), {**PROBES, "imaps": tuning.imaps_probe}
    addresses = loopback_addresses(args.n)
    options = ProbeOptions(timeout=args.timeout)
    creds = Credentials(USER, password=Secret(PASSWORD))
    hosts = [
        WatchedHost(
            name=f"t{i:05d}",
            target=Target(name=f"t{i:05d}", address=a, mail_hostname=HOSTNAME,
                          ports={"imaps": args.port}, ca_bundle=Path(args.ca),
                          credentials=creds, checks=checks),
            options=options, groups=("mailservers",),
        )
        for i, a in enumerate(addresses)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "results.sqlite3")
        scheduler = Scheduler(lambda: hosts, store, probes=probes, interval=3600,
                              concurrency=args.concurrency, per_host=2)
        profiler = cProfile.Profile() if args.profile else None
        cpu0, t0 = self_cpu(), time.monotonic()
        if profiler:
            profiler.enable()
        sweep = scheduler.sweep()
        if profiler:
            profiler.disable()
        wall, cpu = time.monotonic() - t0, self_cpu() - cpu0
        latest = store.latest()
        failed = [r for r in latest if not r.success]
        store.close()
    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
    print(json.dumps({
        "wall": wall, "cpu": cpu, "cpu_before": cpu_start, "probes": sweep.probes,
        "failures": sweep.failures, "ok": len(latest) - len(failed), "failed": len(failed),
        "errors": sorted({r.error for r in failed})[:5],
        "hwm_kib": status_kib(os.getpid(), "VmHWM"),
    }))
    return 0


def run_mailfleet(variant: str, n: int, dport: int, ca: Path, concurrency: int, timeout: float,
                  server_pid: int, profile: bool = False) -> Run:
    argv = [sys.executable, "-m", "bench.sweep_vs_blackbox", "--child", "--variant", variant,
            "--n", str(n), "--port", str(dport), "--ca", str(ca),
            "--concurrency", str(concurrency), "--timeout", str(timeout)]
    if profile:
        argv.append("--profile")
    server0 = tree_cpu(server_pid)
    with tempfile.TemporaryFile("w+") as errfile:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=None if profile else errfile, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()  # the child ends after printing; wait4 then reaps it
        usage = wait_usage(proc, 600)
        server = tree_cpu(server_pid) - server0  # includes the child's start-up: ~0
        errfile.seek(0)
        err = errfile.read()
    if usage.returncode != 0:
        raise RuntimeError(f"mailfleet child failed: {err[-2000:]}")
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    note = "; ".join(data["errors"])
    return Run(f"mailfleet[{variant}]", n, data["wall"], data["cpu"], usage.cpu,
               max(usage.max_rss_kib, data["hwm_kib"]) / 1024, data["ok"], data["failed"], server,
               note)


def median_runs(runs: list[Run]) -> list[Run]:
    """One row per (tool, N): the run with the median wall time."""
    groups: dict[tuple[str, int], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.tool, r.n), []).append(r)
    out = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r.wall)
        out.append(ordered[len(ordered) // 2])
    return out


def show(runs: list[Run]) -> None:
    print(f"{'tool':38} {'N':>5} {'wall s':>7} {'cpu s':>6} {'cpu tot':>7} {'RSS MiB':>7} "
          f"{'dovecot cpu':>11} {'ok':>5} {'fail':>4}")
    for r in runs:
        print(f"{r.tool:38} {r.n:5d} {r.wall:7.2f} {r.cpu:6.2f} {r.cpu_total:7.2f} "
              f"{r.max_rss_mib:7.1f} {r.server_cpu:11.2f} {r.ok:5d} {r.failed:4d}"
              + (f"  {r.note}" if r.note else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--key", choices=("ecdsa", "rsa"), default="ecdsa",
                   help="server key type (default ecdsa)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--profile", type=int, metavar="N", help="only profile mailfleet at N")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="full", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ca", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.profile = bool(args.profile)
        return child_main(args)

    sizes = [args.profile] if args.profile else [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    addresses = loopback_addresses(max(sizes))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp, running_dovecot(addresses, key_type=args.key) as dc:
        print(f"Dovecot pid {dc.pid} on {len(addresses)} loopback addresses "
              f"({addresses[0]}..{addresses[-1]}) port {dc.port}, {args.key} key; "
              f"concurrency {args.concurrency}; {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        if args.profile:
            run_mailfleet(variants[0], args.profile, dc.port, dc.ca, args.concurrency,
                          args.timeout, dc.pid, profile=True)
            return 0
        # Warm-up: both binaries and Dovecot's login/imap processes paged in.
        run_blackbox(addresses[:50], dc.port, dc.ca, args.concurrency, Path(tmp), args.timeout,
                     dc.pid)
        run_mailfleet(variants[0], 50, dc.port, dc.ca, args.concurrency, args.timeout, dc.pid)
        for rep in range(args.repeat):
            for n in sizes:
                # Alternate who goes first, so neither always gets the warmer server.
                order: list[str | None] = [None, *variants]
                if rep % 2:
                    order.reverse()
                for v in order:
                    if v is None:
                        run = run_blackbox(addresses[:n], dc.port, dc.ca, args.concurrency,
                                           Path(tmp), args.timeout, dc.pid)
                    else:
                        run = run_mailfleet(v, n, dc.port, dc.ca, args.concurrency,
                                            args.timeout, dc.pid)
                    runs.append(run)
                    print(f"  [{rep + 1}/{args.repeat}] {run.tool} N={n}: {run.wall:.2f} s wall, "
                          f"{run.cpu:.2f} s CPU, {run.failed} failed", flush=True)
    rows = median_runs(runs)
    print(f"\nmedian of {args.repeat} run(s) per row; cpu = the tool's process during the sweep "
          "(blackbox: its server process; mailfleet: the sweeping process), cpu tot = whole "
          "process life incl. start-up, dovecot cpu = the server's, during the sweep")
    show(rows)
    print("\nratios mailfleet/blackbox (goal: wall <= 0.70x, cpu <= 0.60x):")
    bases = {r.n: r for r in rows if r.tool == "blackbox"}
    for r in rows:
        base = bases.get(r.n)
        if r.tool == "blackbox" or base is None:
            continue
        print(f"  N={r.n:5d} {r.tool:38} wall {ratio(r.wall, base.wall)}  "
              f"cpu {ratio(r.cpu, base.cpu)}  peak RSS {ratio(r.max_rss_mib, base.max_rss_mib)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
