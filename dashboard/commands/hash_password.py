"""``mailfleet hash-password``: a USER:HASH line for ``mailfleet serve --auth-file``."""

from __future__ import annotations

import argparse
import getpass
import hmac
import sys
from typing import Any

from mailfleet.dashboard.auth import hash_password


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hash-password",
        help="print a USER:HASH line for mailfleet serve --auth-file",
        description="Read a password (twice from the terminal, or once from stdin) and "
        "print USER:HASH for the dashboard's --auth-file. The password is never printed.",
    )
    p.add_argument("user", help="the user name to log in with")
    p.set_defaults(func=_hash_password_command)


def _hash_password_command(args: argparse.Namespace) -> int:
    user = str(args.user)
    if ":" in user or not user.strip():
        print("mailfleet hash-password: a user name cannot be empty or contain ':'",
              file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {user}: ")
        if not hmac.compare_digest(first, getpass.getpass("again: ")):
            print("mailfleet hash-password: the passwords differ", file=sys.stderr)
            return 1
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("mailfleet hash-password: empty password", file=sys.stderr)
        return 1
    print(f"{user}:{hash_password(password)}")
    return 0
