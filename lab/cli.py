"""``mailfleet lab up|down|status|shell``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from mailfleet.lab.config import DEFAULT_RELEASES, RELEASES, LabConfig, parse_releases
from mailfleet.lab.fleet import Lab, LabStatus, describe_error
from mailfleet.lab.podman import podman_env


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def format_status(lab: Lab, status: LabStatus) -> str:
    cfg = lab.config
    rows = [("HOST", "FQDN", "ADDRESS", "RELEASE", "CONTAINER", "STATE", "SSH")]
    for hs in status.hosts:
        h = hs.host
        rows.append((h.name, h.fqdn, h.address, h.debian.label, h.container, hs.state,
                     "open" if hs.ssh else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
    dns = f"knot pid {status.dns_pid}" if status.dns_pid else "not running"
    apt = f"apt-cacher-ng pid {status.apt_proxy_pid}" if status.apt_proxy_pid else "not running"
    return (
        f"lab {cfg.name!r}: network {cfg.network} {cfg.subnet} "
        f"({'present' if status.network else 'absent'}), {len(status.hosts)} host(s)\n"
        f"{table}\n"
        f"DNS {cfg.gateway}:{cfg.dns_port}: {dns}; "
        f"apt proxy {cfg.gateway}:{cfg.apt_proxy_port}: {apt}\n"
        f"inventory: {cfg.inventory_path if cfg.inventory_path.exists() else '(none)'}"
    )


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig.from_env())
    started = time.monotonic()
    releases = parse_releases(args.release) if args.release else None
    lab.up(args.hosts, progress=_progress, releases=releases)
    print(format_status(lab, lab.status()))
    print(f"lab up took {time.monotonic() - started:.1f}s; next: "
          f"ansible -i {lab.config.inventory_path} all -m ping")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig.from_env())
    started = time.monotonic()
    lab.down(progress=_progress)
    print(f"lab {lab.config.name!r} is down ({time.monotonic() - started:.1f}s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig.from_env())
    status = lab.status()
    print(format_status(lab, status))
    return 0 if status.up and status.hosts else 1


def cmd_shell(args: argparse.Namespace) -> int:
    lab = Lab(LabConfig.from_env())
    host = lab.host(args.host)
    argv = ["podman", "exec", "-it", host.container, "/bin/bash", "-l"]
    os.execvpe("podman", argv, podman_env(lab.config.containers_conf))
    return 0  # not reached


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except Exception as exc:  # report every lab failure as one clear line
            print(f"mailfleet lab: {describe_error(exc)}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser(
        "lab",
        help="the lab fleet: Debian 12 and 13 hosts as podman containers",
        description="The lab fleet. MAILFLEET_LAB names the lab (default 'mailfleet'), "
        "MAILFLEET_LAB_SUBNET its /24 inside 10.77.0.0/16 (default 10.77.0.0/24).",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True
    up = sub.add_parser("up", help="build what is missing and start the hosts")
    up.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3)")
    up.add_argument(
        "--release", metavar="N,...",
        help=f"the Debian release of each host, in order ({' or '.join(RELEASES)}; hosts past "
        f"the list get its last one; default {','.join(DEFAULT_RELEASES)}; hosts that exist "
        "keep theirs), e.g. --release 12,13,13",
    )
    up.set_defaults(func=_guarded(cmd_up))
    sub.add_parser("down", help="remove everything the lab made").set_defaults(
        func=_guarded(cmd_down)
    )
    sub.add_parser("status", help="show the hosts and lab services").set_defaults(
        func=_guarded(cmd_status)
    )
    shell = sub.add_parser("shell", help="open a root shell in a host")
    shell.add_argument("host")
    shell.set_defaults(func=_guarded(cmd_shell))
