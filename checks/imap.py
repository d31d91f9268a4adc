"""``imap_login``: log in as a client would, over IMAPS (993) or STARTTLS (143).

Mechanisms: PLAIN (AUTHENTICATE PLAIN), LOGIN (the IMAP LOGIN command),
XOAUTH2 and OAUTHBEARER (token from the inventory or a token file). Secrets go
only to the socket; error messages quote the server, with any echo of a
secret replaced by ``***``.
"""

from __future__ import annotations

from typing import Any

from mailfleet.checks.base import Acquisition, Verdict, run
from mailfleet.checks.credentials import secret_for
from mailfleet.checks.imap_session import ImapLoginValues, login, open_session
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target

CHECK = "imap_login"
__all__ = ["CHECK", "ImapLoginValues", "acquire", "judge", "probe"]


def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    mechanism = options.mechanism.upper()
    secret_for(target, mechanism)  # fail fast (UNKNOWN) before touching the network
    client = open_session(target, options, deadline, acq)
    try:
        login(client, target, options, acq)
        client.logout()
    finally:
        client.conn.close()


def judge(values: dict[str, Any]) -> Verdict:
    return Verdict(Status.OK if values.get("logged_in") else Status.CRITICAL)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, options, deadline, acq), judge)
