"""Exporter at scale: ``mailfleet serve`` watching 1000 targets.

What it measures, in one process tree, on loopback only:

* a real ``mailfleet serve`` whose inventory (read by ansible-inventory) holds
  1000 hosts at 1000 loopback addresses (127.77.x.y: Linux routes all of
  127.0.0.0/8 to ``lo``), each a listener of this script; the store is
  pre-filled with a realistic latest result of six checks per host, and the
  scheduler sweeps the ``port`` check of all 1000 for real;
* its resident memory (VmRSS) after the sweep and after the scrapes;
* ``/metrics`` scrape time (median and p90 of 20) and size, series count; the
  fleet part is cached between store changes, so the time to render it after a
  change is measured on its own (in this process, same store);
* ``/probe?module=port`` over HTTP against the bare ``checks.port.probe`` call:
  what the exporter adds per probe.

Numbers are printed last, one ``name: value`` per line.

    .venv/bin/python -m bench.exporter_bench [--hosts 1000] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
BASE = ipaddress.IPv4Address("127.77.0.1")


def addresses(count: int) -> list[str]:
    out: list[str] = []
    n = int(BASE)
    while len(out) < count:
        a = ipaddress.IPv4Address(n)
        if 0 < int(a) & 0xFF < 255:
            out.append(str(a))
        n += 1
    return out


class Listeners:
    """One TCP listener per loopback address, all on one port; accepts and closes."""

    def __init__(self, addrs: list[str]) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, len(addrs) + 512)), hard))
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        first = socket.socket()
        first.bind((addrs[0], 0))
        self.port: int = first.getsockname()[1]
        self._add(first)
        for a in addrs[1:]:
            s = socket.socket()
            s.bind((a, self.port))
            self._add(s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _add(self, s: socket.socket) -> None:
        s.listen(64)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        self.socks.append(s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(timeout=0.2):
                with contextlib.suppress(OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s in self.socks:
            s.close()


def synthetic_results(host: str, address: str, now: float) -> list[ProbeResult]:
    day = 86400.0
    common = {"started_at": now - 30, "target": address}
    return [
        ProbeResult(check="port", success=True, phases={"connect": 0.0004, "total": 0.0005},
                    values={"open": True, "port": 993}, **common),  # type: ignore[arg-type]
        ProbeResult(check="tls", success=True,
                    phases={"connect": 0.0004, "tls": 0.004, "total": 0.005},
                    values={"cert_not_after": now + 60 * day, "cert_not_before": now - 30 * day,
                            "chain_earliest_not_after": now + 60 * day,
                            "served_earliest_not_after": now + 60 * day,
                            "chain_verified": True, "hostname_match": True,
                            "tls_version": "TLSv1.3", "cert_subject": f"CN={host}"},
                    **common),  # type: ignore[arg-type]
        ProbeResult(check="imap_login", success=True,
                    phases={"connect": 0.0004, "tls": 0.004, "greeting": 0.001, "auth": 0.02,
                            "total": 0.03},
                    values={"mechanism": "PLAIN", "logged_in": True}, **common),  # type: ignore[arg-type]
        ProbeResult(check="smtp", success=True,
                    phases={"connect": 0.0004, "greeting": 0.002, "tls": 0.004, "total": 0.01},
                    values={"starttls_offered": True, "auth_before_tls": []},
                    **common),  # type: ignore[arg-type]
        ProbeResult(check="quota", success=True, status=Status.OK,
                    phases={"total": 0.03},
                    values={"storage_used_bytes": 10_000_000, "storage_limit_bytes": 1 << 30,
                            "messages_used": 12, "messages_limit": 10000},
                    **common),  # type: ignore[arg-type]
        ProbeResult(check="dns", success=True, phases={"dns": 0.01, "total": 0.01},
                    values={"mx_ok": True, "rdns_ok": True, "spf_ok": True, "dmarc_ok": True},
                    **common),  # type: ignore[arg-type]
    ]


def write_inventory(path: Path, hosts: list[tuple[str, str]], port: int) -> None:
    data = {"all": {"children": {"mailservers": {
        "hosts": {name: {"ansible_host": addr, "mail_hostname": f"{name}.bench.test"}
                  for name, addr in hosts},
        "vars": {"mailfleet_checks": ["port"], "mailfleet_ports": {"imaps": port},
                 "mailfleet_probe_options": {"timeout": 2}},
    }}}}
    path.write_text(yaml.safe_dump(data))


def rss_bytes(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) * 1024 if m else 0


def fetch(url: str, timeout: float = 60) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
    return time.perf_counter() - t0, body


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.contextmanager
def serve(
    inventory: Path, db: Path, port: int, interval: float
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailfleet", "serve", "-i", str(inventory),
         "--listen", f"127.0.0.1:{port}", "--interval", f"{interval}s", "--db", str(db),
         "--concurrency", "64"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def cold_render(db: Path, hosts: list[tuple[str, str]], port: int) -> dict[str, float | int]:
    """In this process: render the fleet part of /metrics after each store change."""
    from mailfleet.dashboard.app import create_app
    from mailfleet.dashboard.exporter import MetricsPage
    from mailfleet.dashboard.targets import WatchedHost

    watched = [
        WatchedHost(name=n, target=Target(name=n, address=a, ports={"imaps": port}),
                    options=ProbeOptions(), groups=("mailservers",))
        for n, a in hosts
    ]
    app = create_app({"MAILFLEET_HOSTS": watched, "MAILFLEET_DB": str(db)})
    page: MetricsPage = app.extensions["mailfleet_metrics"]
    page.max_staleness = 0
    times = []
    for _ in range(5):
        page.monitor.store.generation += 1  # as if a result had just been stored
        t0 = time.perf_counter()
        page.fleet_text()
        times.append(time.perf_counter() - t0)
    return {"metrics_render_after_change_median_ms": round(statistics.median(times) * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()

    addrs = addresses(args.hosts)
    hosts = [(f"mx{i:04d}", a) for i, a in enumerate(addrs, 1)]
    listeners = Listeners(addrs)
    results: dict[str, float | int | str] = {"hosts": args.hosts}
    with tempfile.TemporaryDirectory(prefix="mailfleet-exporter-bench-") as tmp:
        work = Path(tmp)
        inventory = work / "hosts.yml"
        write_inventory(inventory, hosts, listeners.port)
        db = work / "results.sqlite3"
        store = ResultStore(db)
        now = time.time()
        for name, addr in hosts:
            store.record_many((name, r) for r in synthetic_results(name, addr, now))
        store.close()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with serve(inventory, db, port, interval=3600) as proc:
            deadline = time.monotonic() + 180
            text = ""
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    _, body = fetch(f"{base}/metrics")
                    text = body.decode()
                    if (metric(text, "mailfleet_sweeps_total") or 0) >= 1:
                        break
                time.sleep(0.5)
            else:
                print("exporter did not finish its first sweep in 180 s", file=sys.stderr)
                return 1
            results["sweep_seconds_1000_port_probes"] = round(
                metric(text, "mailfleet_sweep_duration_seconds") or -1, 3)
            results["rss_after_sweep_mib"] = round(rss_bytes(proc.pid) / 2**20, 1)
            times = []
            for _ in range(args.scrapes):
                seconds, body = fetch(f"{base}/metrics")
                times.append(seconds)
            text = body.decode()
            results["metrics_scrape_median_ms"] = round(statistics.median(times) * 1000, 1)
            results["metrics_scrape_p90_ms"] = round(
                statistics.quantiles(times, n=10)[-1] * 1000, 1)
            results["metrics_bytes"] = len(body)
            results["metrics_series"] = sum(
                1 for line in text.splitlines() if line and not line.startswith("#"))
            results["rss_after_scrapes_mib"] = round(rss_bytes(proc.pid) / 2**20, 1)

            # /probe over HTTP against the bare probe call, same target, same check
            name, addr = hosts[0]
            from mailfleet.checks import PROBES

            target = Target(name=name, address=addr, ports={"imaps": listeners.port})
            bare = []
            for _ in range(args.probes):
                t0 = time.perf_counter()
                r = PROBES["port"](target, ProbeOptions(), Deadline(2))
                bare.append(time.perf_counter() - t0)
                assert r.success, r.error
            http = []
            for _ in range(args.probes):
                seconds, body = fetch(f"{base}/probe?target={name}&module=port")
                http.append(seconds)
                assert b'mailfleet_probe_success{check="port"} 1.0' in body, body[:300]
            b, h = statistics.median(bare), statistics.median(http)
            results["bare_port_probe_median_ms"] = round(b * 1000, 2)
            results["http_probe_median_ms"] = round(h * 1000, 2)
            results["probe_overhead_ms"] = round((h - b) * 1000, 2)
            results["probe_http_over_bare_ratio"] = round(h / b, 1)
        results.update(cold_render(db, hosts, listeners.port))
    listeners.close()
    print()
    for key, value in results.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
