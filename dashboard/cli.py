"""The ``mailfleet`` command.

Each sub-command lives in its own module that exposes
``register(subparsers: argparse._SubParsersAction) -> None`` and sets
``func`` on its parser; this module only assembles them. Modules are imported
lazily so that ``mailfleet lab ...`` does not pay for Flask or Ansible.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Module path of each sub-command group, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "lab.cli",
    "lab.demo",
    "dashboard.commands.serve",
    "dashboard.commands.probe",
    "dashboard.commands.dns_check",
    "dashboard.auth",  # hash-password
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailfleet",
        description="Deploy a Postfix + Dovecot mail fleet and watch it from the same inventory.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
