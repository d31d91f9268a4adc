"""What bench/exporter_bench.py leaves out: ``/metrics`` while a real sweep is running,
and ``/probe`` overhead for a TLS + login module.

bench/exporter_bench.py measures /metrics at 1000 hosts on a quiet exporter and
/probe for the ``port`` module. Here ``mailfleet serve`` sweeps N targets of our own
loopback Dovecot (port, tls, imap_login each) back to back, and we measure:

* /metrics scrape time (p50, p90, max) and size, between sweeps vs during a sweep
  (Prometheus scrapes whenever it likes; a scrape that waits for the sweep's
  threads is a scrape that may time out);
* /probe?module=imap_login (over HTTP, sequential) vs the bare ``checks.imap.probe``
  call on the same target: the exporter's overhead per request.

    .venv/bin/python -m bench.scrape_under_load [--targets 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench.localmail import HOSTNAME, loopback_addresses, running_dovecot
from mailfleet.checks import PROBES, Credentials, Deadline, ProbeOptions, Secret, Target
from tests.reliability.test_bad_input import running_serve
from tests.reliability.test_soak import write_inventory


def sweeping(db: Path) -> bool:
    """True while a sweep runs: results newer than the last recorded sweep's end."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        last = conn.execute("SELECT MAX(started_at + duration) FROM sweeps").fetchone()[0] or 0
        newest = conn.execute("SELECT MAX(started_at) FROM results").fetchone()[0] or 0
        return bool(newest > last)
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--probes", type=int, default=50, help="sequential /probe requests")
    args = p.parse_args(argv)
    addresses = loopback_addresses(args.targets, base="127.80.0.1")
    quiet: list[float] = []
    busy: list[float] = []
    size = 0
    with tempfile.TemporaryDirectory() as tmp, running_dovecot(addresses) as dc:
        workdir = Path(tmp)
        inv = workdir / "inventory.py"
        write_inventory(inv, addresses, dc.port, dc.ca, dc.user, dc.password)
        db = workdir / "results.sqlite3"
        argv_serve = ["-i", str(inv), "--db", str(db), "--interval", "1s", "--timeout", "10s",
                      "--inventory-refresh", "1h"]
        with running_serve(argv_serve, workdir) as (_proc, base):
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                during = sweeping(db)
                t0 = time.monotonic()
                with urllib.request.urlopen(base + "/metrics", timeout=60) as reply:
                    body = reply.read()
                took = time.monotonic() - t0
                if len(body) > size:
                    size = len(body)
                (busy if during else quiet).append(took)
                time.sleep(0.25)
            # /probe vs the bare probe, on one target, sequentially.
            name = "soak0000"
            target = Target(name=name, address=addresses[0], mail_hostname=HOSTNAME,
                            ports={"imaps": dc.port}, ca_bundle=dc.ca,
                            credentials=Credentials(dc.user, password=Secret(dc.password)))
            bare: list[float] = []
            for _ in range(args.probes):
                t0 = time.monotonic()
                result = PROBES["imap_login"](target, ProbeOptions(), Deadline(10))
                bare.append(time.monotonic() - t0)
                assert result.success, result.error
            http: list[float] = []
            query = urllib.parse.urlencode({"target": name, "module": "imap_login"})
            for _ in range(args.probes):
                t0 = time.monotonic()
                with urllib.request.urlopen(f"{base}/probe?{query}", timeout=30) as reply:
                    text = reply.read().decode()
                http.append(time.monotonic() - t0)
                assert "mailfleet_probe_success" in text
    print()
    print(f"targets: {args.targets} (port, tls, imap_login each), sweeps back to back")
    print(f"metrics_size_bytes: {size}")
    for label, values in (("between sweeps", quiet), ("during a sweep", busy)):
        if values:
            print(f"metrics_scrape_seconds {label}: n={len(values)} p50={pct(values, .5):.3f} "
                  f"p90={pct(values, .9):.3f} max={max(values):.3f}")
    print("(the /probe numbers below are taken while sweeps keep running)")
    print(f"bare imap_login probe: median {1000 * statistics.median(bare):.1f} ms")
    print(f"/probe?module=imap_login: median {1000 * statistics.median(http):.1f} ms")
    print(f"/probe overhead per request: "
          f"{1000 * (statistics.median(http) - statistics.median(bare)):.1f} ms")
    if busy and quiet:
        print(f"ratio scrape p50 during/between sweeps: "
              f"{pct(busy, .5) / pct(quiet, .5):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
