"""The `dns` check's CPU per host and sweep, with and without the watcher's answer cache.

A real knot on loopback serves the zones of tests/checks (one mail domain, its MX,
SPF, DMARC, the host's A and PTR). N hosts of that domain are probed sweep after
sweep in one process, as `mailfleet serve` does: first asking every time
(`--dns-cache 0`), then with answers kept for their TTL (`--dns-cache 5m`, the
default). CPU is the process's (time.process_time), so the resolver's own work
(knot, another process) is not counted.

    .venv/bin/python -m bench.dns_cache [--hosts 200] [--sweeps 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Target
from mailfleet.checks.dns.lookups import share_answers
from tests.checks.conftest import zones
from tests.checks.knot import Knot


def sweeps(resolver: str, hosts: int, count: int) -> list[float]:
    """CPU ms per host of each sweep."""
    options = ProbeOptions(dns_resolvers=(resolver,))
    targets = [Target(name=f"mx{i}", address="192.0.2.10", mail_hostname="mx-good.dnstest.test",
                      domains=("good.test",)) for i in range(hosts)]
    out = []
    for _ in range(count):
        started = time.process_time()
        for target in targets:
            result = PROBES["dns"](target, options, Deadline(5))
            assert result.success, result.error
        out.append((time.process_time() - started) * 1000 / hosts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--sweeps", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Knot(Path(tmp), "127.0.5.60", zones()) as knot:
        sweeps(knot.resolver, 5, 1)  # imports, first connections
        share_answers(0)
        asked = sweeps(knot.resolver, args.hosts, args.sweeps)
        share_answers(300)
        cached = sweeps(knot.resolver, args.hosts, args.sweeps)
        share_answers(0)
    median = sorted(asked)[len(asked) // 2]
    warm = sorted(cached[1:])[len(cached[1:]) // 2] if len(cached) > 1 else cached[0]
    print(f"dns check, {args.hosts} hosts of one domain, {args.sweeps} sweeps, CPU ms per host:")
    print(f"  asking every time : {' '.join(f'{v:.2f}' for v in asked)} (median {median:.2f})")
    print(f"  answers cached    : {' '.join(f'{v:.2f}' for v in cached)} (warm median "
          f"{warm:.2f}; first sweep {cached[0]:.2f})")
    print(f"  ratio cached/asked: {warm / median:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
