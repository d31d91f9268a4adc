"""``mailfleet probe``: one sweep of the inventory's hosts, Nagios-style exit status.

The inventory is read with Ansible's own machinery (``ansible-inventory
--list`` through ``dashboard.targets``), so vault, group_vars and dynamic
inventories work. Probes run in a bounded thread pool (see
bench/probe_concurrency.py for why not asyncio); each has its own deadline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from mailfleet.checks import PROBES, Deadline, ProbeResult, Status
from mailfleet.checks.base import worst

FORMATS = ("table", "json", "nagios")


def register(subparsers: Any) -> None:
    from mailfleet.cli import add_inventory_arguments, add_selection_arguments

    p = subparsers.add_parser(
        "probe",
        help="probe the inventory's mail servers once (port, tls, imap_login, smtp, quota, dns)",
        description="Run the checks of every inventory host once and print the results; "
        "exit 0 ok, 1 warning, 2 critical, 3 unknown (as Nagios plugins do).",
    )
    add_inventory_arguments(p, "probe")
    add_selection_arguments(p, list(PROBES))
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="deadline of each probe (default: the host's options, 10 s)")
    p.add_argument("--workers", type=int, default=16, metavar="N",
                   help="probes running at once (default 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mailfleet.cli import limit_hosts, split_list
    from mailfleet.dashboard.targets import InventoryError, load_inventory

    wanted = split_list(args.check)
    unknown = [c for c in wanted if c not in PROBES]
    if unknown:
        print(f"mailfleet probe: unknown check {', '.join(unknown)} "
              f"(known: {', '.join(PROBES)})", file=sys.stderr)
        return int(Status.UNKNOWN)
    if args.workers < 1 or (args.timeout is not None and args.timeout <= 0):
        print("mailfleet probe: --workers and --timeout must be positive", file=sys.stderr)
        return int(Status.UNKNOWN)
    try:
        hosts = load_inventory(args.inventory, None if args.group == "all" else args.group,
                               args.vault_password_file, args.timeout)
    except InventoryError as exc:
        print(f"mailfleet probe: {exc}", file=sys.stderr)
        return int(Status.UNKNOWN)
    selected = set(limit_hosts([h.name for h in hosts], args.limit))
    jobs = []
    for host in hosts:
        if host.name not in selected:
            continue
        for check in wanted or list(host.checks):
            if check in PROBES:
                jobs.append((host, check))
    if not jobs:
        print("mailfleet probe: no host/check matched (see --limit, --check, --group)",
              file=sys.stderr)
        return int(Status.UNKNOWN)
    results = sweep(jobs, args.workers)
    print(render(results, args.format))
    return int(worst([r.status for r in results]))


def sweep(jobs: Sequence[tuple[Any, str]], workers: int) -> list[ProbeResult]:
    """Run (WatchedHost, check) jobs in a bounded pool; results in job order."""
    def one(job: tuple[Any, str]) -> ProbeResult:
        host, check = job
        result = PROBES[check](host.target, host.options, Deadline(host.options.timeout))
        return replace(result, target=host.name)

    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(one, jobs))


def render(results: Sequence[ProbeResult], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2, default=str)
    if fmt == "nagios":
        return nagios(results)
    return table(results)


def table(results: Sequence[ProbeResult]) -> str:
    rows = [("HOST", "CHECK", "STATUS", "TIME", "MESSAGE")]
    for r in results:
        rows.append((r.target, r.check, r.status.name, f"{r.phases.get('total', 0.0):.2f}s",
                     r.error or "ok"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4]
                     for row in rows)


def nagios(results: Sequence[ProbeResult]) -> str:
    """First line: status and the problems; then one line per result; perfdata in seconds."""
    status = worst([r.status for r in results])
    problems = [r for r in results if r.status != Status.OK]
    counts = {s: sum(1 for r in results if r.status == s) for s in Status}
    summary = ", ".join(f"{n} {s.label}" for s, n in counts.items() if n)
    head = f"MAILFLEET {status.name} - {summary}"
    if problems:
        head += ": " + "; ".join(f"{r.target} {r.check}: {r.error}" for r in problems[:5])
    perf = " ".join(f"'{r.target}_{r.check}'={r.phases.get('total', 0.0):.3f}s"
                    for r in results)
    lines = [f"{head} | {perf}"]
    lines += [f"{r.status.name} {r.target} {r.check}: {r.error or 'ok'}" for r in results]
    return "\n".join(lines)
