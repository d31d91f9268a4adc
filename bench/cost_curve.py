"""Cost curve: one mailfleet sweep (tls + imap_login per target, the scheduler and a real
SQLite store, as ``mailfleet serve`` runs it) at N = 10, 100, 1000, 3000 targets on our
own loopback Dovecot; wall time, CPU and peak RSS, and how each grows per target.

    .venv/bin/python -m bench.cost_curve                       # as the code is
    .venv/bin/python -m bench.cost_curve --variant onecon+certs+pool+batch --blackbox

The last lines print the growth: time and RSS per added target between sizes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

from bench.localmail import loopback_addresses, running_dovecot
from bench.sweep_vs_blackbox import Run, median_runs, run_blackbox, run_mailfleet, show


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,100,1000,3000")
    p.add_argument("--variant", default="full", help="see bench/sweep_vs_blackbox.py")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--blackbox", action="store_true", help="blackbox_exporter at each N too")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    addresses = loopback_addresses(max(sizes))
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp, running_dovecot(addresses) as dc:
        print(f"Dovecot on {len(addresses)} loopback addresses, port {dc.port}; "
              f"concurrency {args.concurrency}; load {os.getloadavg()[0]:.2f}", flush=True)
        run_mailfleet(args.variant, 20, dc.port, dc.ca, args.concurrency, args.timeout, dc.pid)
        for _ in range(args.repeat):
            for n in sizes:
                runs.append(run_mailfleet(args.variant, n, dc.port, dc.ca, args.concurrency,
                                          args.timeout, dc.pid))
                print(f"  {runs[-1].tool} N={n}: {runs[-1].wall:.2f} s", flush=True)
                if args.blackbox:
                    runs.append(run_blackbox(addresses[:n], dc.port, dc.ca, args.concurrency,
                                             Path(tmp), args.timeout, dc.pid))
                    print(f"  blackbox N={n}: {runs[-1].wall:.2f} s", flush=True)
    rows = median_runs(runs)
    print()
    show(rows)
    print("\ngrowth per target (between consecutive sizes):")
    for tool in dict.fromkeys(r.tool for r in rows):
        mine = sorted((r for r in rows if r.tool == tool), key=lambda r: r.n)
        for a, b in itertools.pairwise(mine):
            dn = b.n - a.n
            print(f"  {tool:30} N {a.n:>5} -> {b.n:<5}  wall {1000 * (b.wall - a.wall) / dn:6.2f} "
                  f"ms/target  cpu {1000 * (b.cpu - a.cpu) / dn:6.2f} ms/target  "
                  f"RSS {1024 * (b.max_rss_mib - a.max_rss_mib) / dn:6.1f} KiB/target")
        if mine:
            big = mine[-1]
            print(f"  {tool:30} at N={big.n}: {1000 * big.wall / big.n:.2f} ms wall and "
                  f"{1000 * big.cpu / big.n:.2f} ms CPU per target, "
                  f"peak RSS {big.max_rss_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
