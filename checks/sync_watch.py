"""Waiting for the server to tell a client: the new message (NOOP polling, IDLE push), a flag.

Every wait ends at the probe's deadline; a server that stays silent gives
``None`` (the caller says which step stalled), never a hang.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mailfleet.checks.imap_client import ImapClient, counted, exists_count
from mailfleet.checks.imap_proto import tokens
from mailfleet.checks.sync_hygiene import find_tagged
from mailfleet.checks.sync_session import remaining
from mailfleet.checks.target import Deadline

POLL_INTERVAL = 0.01  # seconds between NOOPs while waiting for a message (first 2 s)


@dataclass(frozen=True)
class Arrival:
    """When the tagged message became visible (polling) and was pushed (IDLE)."""

    visible_mono: float | None
    visible_at: float | None
    pushed_mono: float | None
    uid: int


def watch_for_tag(
    poller: ImapClient,
    idler: ImapClient | None,
    tag: str,
    deadline: Deadline,
    exists: int,
) -> Arrival:
    """Until both are known or the deadline: when the message became visible, and pushed.

    ``poller`` (a selected session, ``exists`` messages at the start) sends NOOP
    every POLL_INTERVAL (every 0.1 s after the first 2 s): the first NOOP that
    shows the tagged message bounds the moment the server made it visible (taken
    as the middle of that NOOP's round trip).
    ``idler`` (already in IDLE) times the EXISTS push. Dovecot batches change
    notifications (0.5 s in 2.3), which is why the two differ.
    """
    visible_mono: float | None = None
    visible_at: float | None = None
    pushed_mono: float | None = None
    uid = 0
    started = time.monotonic()
    while not deadline.expired:
        want_push = idler is not None and pushed_mono is None
        if visible_mono is not None and not want_push:
            break
        pause = POLL_INTERVAL if time.monotonic() - started < 2 else 0.1
        if visible_mono is not None:
            pause = 1.0  # only the push is missing: just wait for it
        pause = min(pause, deadline.remaining())
        if want_push and idler is not None:
            if exists_count(idler.idle_check(pause)) is not None:
                pushed_mono = time.monotonic()
        else:
            time.sleep(pause)
        if visible_mono is None and not deadline.expired:
            remaining(deadline, "polling")
            asked_mono, asked_at = time.monotonic(), time.time()
            count = exists_count(poller.noop())
            if count is not None and count > exists:
                exists = count
                # The server answered this NOOP somewhere between our send and our
                # receipt: the midpoint, so a loaded network or client does not add
                # its whole round trip to the latency.
                mono = (asked_mono + time.monotonic()) / 2
                at = (asked_at + time.time()) / 2
                uids = find_tagged(poller, tag)
                if uids:
                    visible_mono, visible_at, uid = mono, at, uids[0]
    return Arrival(visible_mono, visible_at, pushed_mono, uid)


def wait_exists(client: ImapClient, deadline: Deadline) -> int | None:
    """In IDLE: the new message count from the next EXISTS, or None at the deadline."""
    while not deadline.expired:
        count = exists_count(client.idle_check(min(deadline.remaining(), 1.0)))
        if count is not None:
            return count
    return None


def wait_for_flag(client: ImapClient, seq: int, flag: str, deadline: Deadline) -> float | None:
    """In IDLE: the monotonic time the server reported ``flag`` on message ``seq``."""
    while not deadline.expired:
        for resp in client.idle_check(min(deadline.remaining(), 1.0)):
            item = counted(resp)
            if item is None or item[1] != "FETCH" or item[0] != seq:
                continue
            if flag.upper() in (f.upper() for f in fetch_flags(item[2])):
                return time.monotonic()
    return None


def fetch_flags(items: str) -> list[str]:
    """The FLAGS of a FETCH response's item list: ``(UID 4 FLAGS (\\Seen))`` -> [\\Seen]."""
    parsed = tokens(items)
    inner = parsed[0] if parsed and isinstance(parsed[0], list) else parsed
    for key, value in zip(inner[::2], inner[1::2], strict=False):
        if isinstance(key, str) and key.upper() == "FLAGS" and isinstance(value, list):
            return [f for f in value if isinstance(f, str)]
    return []
