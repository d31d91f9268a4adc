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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mailfleet.checks import PROBES, ProbeOptions, ProbeResult, Status
from mailfleet.checks.base import worst
from mailfleet.dashboard.commands import probe_text, probe_thresholds
from mailfleet.dashboard.sweep import MESH_CHECK, is_mesh_check

if TYPE_CHECKING:
    from mailfleet.dashboard.targets import WatchedHost

KNOWN_CHECKS = (*PROBES, MESH_CHECK)

FORMATS = ("table", "json", "nagios")
DEFAULT_OPTIONS = ProbeOptions()


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
    p.add_argument("--warning", metavar="NAME=N,...",
                   help="warning thresholds for every host: tls_lifetime_percent (share of "
                   "the certificate's lifetime used, default 66.7) once under tls_days days "
                   "left (default 30), quota_percent (storage used, default 80)")
    p.add_argument("--critical", metavar="NAME=N,...",
                   help="critical thresholds: tls_lifetime_percent (default 90), tls_days "
                   "(default 14), quota_percent (default 95)")
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
        warning = probe_thresholds.parse("--warning", args.warning)
        critical = probe_thresholds.parse("--critical", args.critical)
        hosts = load_inventory(args.inventory, None if args.group == "all" else args.group,
                               args.vault_password_file, args.timeout)
        hosts = [replace(h, options=probe_thresholds.apply(h.options, warning, critical))
                 for h in hosts]
    except (InventoryError, probe_thresholds.ThresholdError) as exc:
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
    options = {h.name: h.options for h in chosen}
    print(render(results, args.format, options))
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


def render(results: Sequence[ProbeResult], fmt: str,
           options: Mapping[str, ProbeOptions] | None = None) -> str:
    """``options``: each host's, for the thresholds in perfdata (default ones when absent)."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2, default=str)
    if fmt == "nagios":
        return nagios(results, options or {})
    return table(results)


def table(results: Sequence[ProbeResult]) -> str:
    rows = [("HOST", "CHECK", "STATUS", "TIME", "MESSAGE")]
    for r in results:
        rows.append((r.target, r.check, r.status.name, f"{r.phases.get('total', 0.0):.2f}s",
                     probe_text.seen(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4]
                     for row in rows)


def nagios(results: Sequence[ProbeResult], options: Mapping[str, ProbeOptions]) -> str:
    """First line: status, the problems, perfdata; then one line per result of what was seen.

    Perfdata (after ``|``) has every result's time and what tls, quota and sync measured,
    with units and the thresholds they were judged by.
    """
    status = worst([r.status for r in results])
    problems = [r for r in results if r.status != Status.OK]
    counts = {s: sum(1 for r in results if r.status == s) for s in Status}
    summary = ", ".join(f"{n} {s.label}" for s, n in counts.items() if n)
    head = f"MAILFLEET {status.name} - {summary}"
    if problems:
        head += ": " + "; ".join(f"{r.target} {r.check}: {r.error}" for r in problems[:5])
    perf = probe_text.perf_line([(r.target, r, options.get(r.target, DEFAULT_OPTIONS))
                                 for r in results])
    lines = [f"{head} | {perf}" if perf else head]
    lines += [f"{r.target}: {probe_text.line(r)}" for r in results]
    return "\n".join(lines)
