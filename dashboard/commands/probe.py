"""``mailfleet probe``: one sweep of the inventory's hosts, Nagios-style exit status.

The inventory is read with Ansible's own machinery (``ansible-inventory
--list`` through ``dashboard.targets``), so vault, group_vars and dynamic
inventories work. The sweep is one sweep of ``serve``'s engine
(``dashboard.scheduler``): the same checks (the fleet mesh included), the
same deadlines and hard ends (a probe that ignores its deadline is abandoned
and reported, and the command still returns), tls and imap_login on one
connection; the results go to the terminal instead of the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mailfleet.checks import PROBES, ProbeResult, Status
from mailfleet.checks.base import worst
from mailfleet.dashboard.sweep import MESH_CHECK, is_mesh_check

if TYPE_CHECKING:
    from mailfleet.dashboard.targets import WatchedHost

KNOWN_CHECKS = (*PROBES, MESH_CHECK)

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
    add_selection_arguments(p, KNOWN_CHECKS)
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
    unknown = [c for c in wanted if c not in KNOWN_CHECKS]
    if unknown:
        print(f"mailfleet probe: unknown check {', '.join(unknown)} "
              f"(known: {', '.join(KNOWN_CHECKS)})", file=sys.stderr)
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
    chosen = [_with_checks(h, wanted) for h in hosts if h.name in selected]
    chosen = [h for h in chosen if h.checks]
    if not chosen:
        print("mailfleet probe: no host/check matched (see --limit, --check, --group)",
              file=sys.stderr)
        return int(Status.UNKNOWN)
    results = sweep(chosen, args.workers)
    print(render(results, args.format))
    return int(worst([r.status for r in results]))


def _with_checks(host: WatchedHost, wanted: Sequence[str]) -> WatchedHost:
    """The host with the checks ``--check`` asks for (its own when none), known ones only."""
    checks = tuple(c for c in (wanted or host.checks) if c in KNOWN_CHECKS)
    return replace(host, target=replace(host.target, checks=checks))


def sweep(hosts: Sequence[WatchedHost], workers: int) -> list[ProbeResult]:
    """One sweep of the scheduler's engine; results by host, then in the host's check order.

    A mesh pair's result (stored as ``sync_mesh:<source>``) comes after its host's checks.
    """
    from mailfleet.dashboard.scheduler import CollectingSink, Scheduler

    sink = CollectingSink()
    Scheduler(lambda: hosts, sink, concurrency=workers).sweep()
    host_order = {h.name: i for i, h in enumerate(hosts)}
    check_order = {h.name: {c: i for i, c in enumerate(h.checks)} for h in hosts}

    def position(item: tuple[str, ProbeResult]) -> tuple[int, int, str]:
        host, result = item
        check = MESH_CHECK if is_mesh_check(result.check) else result.check
        return host_order[host], check_order[host].get(check, len(check_order[host])), result.check

    return [replace(result, target=host) for host, result in sorted(sink.results, key=position)]


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
