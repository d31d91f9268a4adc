"""``mailfleet demo``: a lab fleet, the playbooks deployed on it, then the dashboard."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time

from mailfleet.lab.cli import format_status
from mailfleet.lab.config import LabConfig
from mailfleet.lab.fleet import Lab, describe_error


def _say(line: str) -> None:
    print(f"==> {line}", file=sys.stderr, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    config = LabConfig.from_env()
    lab = Lab(config)
    timings: list[tuple[str, float]] = []
    started = time.monotonic()
    try:
        lab.up(args.hosts, progress=_say)
    except Exception as exc:
        print(f"mailfleet demo: {describe_error(exc)}", file=sys.stderr)
        return 2
    timings.append(("lab up", time.monotonic() - started))
    site = config.root / "playbooks" / "site.yml"
    if site.exists():
        _say(f"deploying {site.relative_to(config.root)} on the lab")
        t0 = time.monotonic()
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(config.inventory_dir), str(site)],
            cwd=config.root,
            env={**os.environ, "ANSIBLE_CONFIG": str(config.root / "ansible.cfg")},
            check=False,
        )
        timings.append(("site.yml", time.monotonic() - t0))
        if proc.returncode != 0:
            print("mailfleet demo: playbooks/site.yml failed (see above)", file=sys.stderr)
            return proc.returncode
    print()
    print(format_status(lab, lab.status()))
    print("timings: " + ", ".join(f"{name} {secs:.1f}s" for name, secs in timings))
    print(
        "next:\n"
        f"  ansible -i {config.inventory_dir} all -m ping\n"
        "  mailfleet lab shell mx1\n"
        "  mailfleet lab down            # removes everything the lab made"
    )
    if args.no_serve or importlib.util.find_spec("mailfleet.dashboard.commands.serve") is None:
        return 0
    listen = args.listen
    _say(f"dashboard and exporter on http://{listen}/ (metrics: /metrics; Ctrl-C stops it)")
    os.execvp(
        "mailfleet",
        ["mailfleet", "serve", "-i", str(config.inventory_dir), "--listen", listen,
         "--interval", str(args.interval)],
    )
    return 0  # not reached


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser(
        "demo", help="lab fleet up, playbooks deployed, dashboard served"
    )
    demo.add_argument("--hosts", type=int, default=3, help="lab hosts (default 3)")
    demo.add_argument("--listen", default="127.0.0.1:9865", help="dashboard address")
    demo.add_argument("--interval", type=float, default=15.0, help="probe interval (s)")
    demo.add_argument("--no-serve", action="store_true", help="stop after deploying")
    demo.set_defaults(func=run_demo)
