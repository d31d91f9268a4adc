"""The ``mailfleet`` command.

Each sub-command lives in its own module that exposes
``register(subparsers: argparse._SubParsersAction) -> None`` and sets
``func`` on its parser; this module assembles them and defines the flags that
several sub-commands share (the inventory, which hosts, which checks). Modules
are imported lazily so that ``mailfleet lab ...`` does not pay for Flask or
Ansible.

``lab`` and ``demo`` come from ``mailfleet.lab``, which runs from a checkout of
the repository and is not in the wheel: an installed watcher has no lab
commands, and ``--help`` says where they are.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from mailfleet import __version__

# Module path of each sub-command group, in the order ``--help`` lists them.
LAB_MODULES: tuple[str, ...] = ("mailfleet.lab.cli", "mailfleet.lab.demo")
COMMAND_MODULES: tuple[str, ...] = (
    "mailfleet.dashboard.commands.serve",
    "mailfleet.dashboard.commands.probe",
    "mailfleet.dashboard.commands.dns_check",
    "mailfleet.dashboard.commands.hash_password",
)


def lab_available() -> bool:
    """Is ``mailfleet.lab`` importable (a checkout, not an installed wheel)?"""
    return importlib.util.find_spec("mailfleet.lab") is not None


def add_inventory_arguments(p: argparse.ArgumentParser, what: str = "watch") -> None:
    """``-i``, ``--vault-password-file`` and ``--group``: where the hosts come from."""
    p.add_argument("-i", "--inventory", action="append", required=True, metavar="INVENTORY",
                   help="Ansible inventory source (repeatable), anything ansible-inventory reads")
    p.add_argument("--vault-password-file", default=None, metavar="FILE",
                   help="vault password file for the inventory")
    p.add_argument("--group", default="mailservers",
                   help=f"inventory group to {what} ('all' for every host; default mailservers)")


def add_selection_arguments(p: argparse.ArgumentParser, known_checks: Sequence[str]) -> None:
    """``--limit`` and ``--check``: which of the inventory's hosts and checks."""
    p.add_argument("--limit", metavar="HOST", default="",
                   help="only these hosts: comma-separated names or shell patterns (mx1,mx[23])")
    p.add_argument("--check", metavar="NAME,...", default="",
                   help=f"only these checks ({', '.join(known_checks)}); default: each host's "
                   "mailfleet_checks")


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in value.split(",") if item.strip()]


def limit_hosts(names: Sequence[str], limit: str) -> list[str]:
    """The names ``--limit`` selects (all of them when it is empty)."""
    patterns = split_list(limit)
    if not patterns:
        return list(names)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def build_parser() -> argparse.ArgumentParser:
    lab = lab_available()
    parser = argparse.ArgumentParser(
        prog="mailfleet",
        description="Deploy a Postfix + Dovecot mail fleet and watch it from the same inventory.",
        epilog=None if lab else "The lab fleet (mailfleet lab, mailfleet demo) runs from a "
        "checkout of the mailfleet repository: pip install -e '.[lab]'.",
    )
    parser.add_argument("--version", action="version", version=f"mailfleet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in (LAB_MODULES if lab else ()) + COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


# Sub-commands a monitoring system runs as a plugin: their exit status is Nagios'
# (0 ok, 1 warning, 2 critical, 3 unknown), so a usage error must be 3, not argparse's 2.
PLUGIN_COMMANDS = frozenset({"probe"})


def _command(argv: Sequence[str]) -> str:
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:
        if exc.code == 2 and _command(words) in PLUGIN_COMMANDS:
            return 3  # argparse has printed the usage and the error
        raise
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
