"""Sync latency: how long mail and changes take to reach a mail client.

Two measurements, both with the server's own notifications (IMAP IDLE):

* **delivery**: a client holds IDLE on the probe account's INBOX on host B, a
  uniquely tagged message is submitted on host A's submission port with SASL
  (A = B for the local case), and the time from "submission accepted" (the 250
  after DATA) to "IDLE reports the new message" (EXISTS, then confirmed by the
  tag header) is the delivery latency. Without IDLE it polls with
  ``UID SEARCH HEADER`` and says so (``values["method"] == "poll"``).
* **client**: two sessions on the same account; session A APPENDs a probe
  message and sets ``\\Seen`` on it; session B, in IDLE, measures how long until
  it sees each change. The ``sync`` check's A and B are the delivery measurement's
  two sessions, kept open: two logins per run, not four.

Hygiene (``checks.sync_hygiene``): the probe only ever touches messages that
carry its ``X-Mailfleet-Probe`` header, and removes only its own, with
``UID EXPUNGE``; leftovers of runs that must be over go at the next run.
Sessions (``checks.sync_session``) and waits (``checks.sync_watch``) go
through the protocol layer, bound to the deadline; removing the probe's own
message may take ``CLEANUP_GRACE`` seconds past it.

A timeout names the step that stalled: submission refused or unreachable,
accepted but never delivered, delivered but IDLE silent.

The fleet mesh (every host's submission to every host's mailbox) is scheduled
by ``mesh_round``: N probes per round, all N*(N-1) ordered pairs every N-1
rounds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import Any

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run, worst
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.mesh import mesh_round as mesh_round  # re-exported: sync.mesh_round
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.sync_hygiene import (
    FOLDER,
    TAG_HEADER,
    clean_leftovers,
    find_tagged,
    make_tag,
    probe_message,
    remove_uids,
    tag_is_stale,
)
from mailfleet.checks.sync_session import close, open_imap, submit
from mailfleet.checks.sync_watch import wait_exists, wait_for_flag, watch_for_tag
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.values import Values, declared

__all__ = [
    "FOLDER", "TAG_HEADER", "SyncValues", "find_tagged", "judge", "make_tag", "mesh_round",
    "open_imap", "probe", "probe_message", "probe_pair", "tag_is_stale",
]
WARNING_SECONDS = 10.0
CRITICAL_SECONDS = 30.0
CLEANUP_GRACE = 2.0  # seconds past the deadline a run may spend removing its own message

@declared
@dataclass(frozen=True)
class SyncValues(Values):
    """What ``sync`` (``kind`` local) and a mesh pair (``kind`` mesh) measured, in seconds."""

    kind: str = ""  # local | mesh
    source: str = ""  # mesh: the host the message was submitted on
    destination: str = ""  # mesh: the host whose mailbox received it
    method: str = ""  # idle | poll
    leftovers_removed: int = 0
    queue_id: str = ""
    message_id: str = ""
    submitted_at: float | None = None
    visible_at: float | None = None
    delivery_latency_seconds: float | None = None  # accepted -> visible to a client
    push_latency_seconds: float | None = None  # accepted -> IDLE reported it
    append_latency_seconds: float | None = None  # APPEND by one session -> EXISTS in another
    client_latency_seconds: float | None = None  # flag set by one session -> seen by another


# -- the measurements ----------------------------------------------------------------
def _close(client: ImapClient) -> None:
    with contextlib.suppress(ProbeFailure):
        close(client)


def _idle_done(client: ImapClient) -> None:
    with contextlib.suppress(ProbeFailure):
        client.idle_done()


def _with_grace(client: ImapClient, deadline: Deadline) -> bool:
    """May the session still remove the probe's own message (outlasting the deadline by
    CLEANUP_GRACE at most)? Not once it failed: a stalled server gets no more time, and
    the next run removes what is left."""
    if client.conn.failed:
        return False
    if deadline.remaining() < CLEANUP_GRACE:
        client.conn.deadline = Deadline(CLEANUP_GRACE)
    return True


@dataclass(frozen=True)
class Sessions:
    """The two logged-in sessions of a delivery measurement, ``FOLDER`` selected in both,
    kept open for the client-sync measurement (``idler`` None: the server has no IDLE)."""

    poller: ImapClient
    idler: ImapClient | None


def measure_delivery(
    source: Target, mailbox: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition,
    keep: contextlib.ExitStack | None = None,
) -> Sessions:
    """Submit on ``source``, watch ``mailbox`` with two sessions (poll and IDLE).

    Fills ``delivery_latency_seconds`` (accepted -> visible to a client) and,
    where the server offers IDLE, ``push_latency_seconds`` (accepted -> IDLE
    EXISTS, what a push client such as a phone experiences). With ``keep`` the
    sessions stay open (closed when ``keep`` closes) and are returned, out of IDLE.
    """
    if mailbox.credentials is None:
        raise ProbeFailure(f"no probe account on {mailbox.name}", Status.UNKNOWN,
                           Reason.NOT_CONFIGURED)
    recipient = mailbox.credentials.user
    tag = make_tag(deadline)
    with contextlib.ExitStack() as own:
        stack = keep if keep is not None else own
        with acq.measure("imap_login"):
            poller = open_imap(mailbox, options, deadline)
            stack.callback(_close, poller)
        with acq.measure("cleanup"):
            selected = poller.select(FOLDER)
            acq.values["leftovers_removed"] = clean_leftovers(poller)
            exists = selected - acq.values["leftovers_removed"]
        idler: ImapClient | None = None
        if "IDLE" in poller.capabilities:
            with acq.measure("imap_login"):
                idler = open_imap(mailbox, options, deadline)
                stack.callback(_close, idler)
            with acq.measure("idle"):
                if keep is not None and "CONDSTORE" in idler.capabilities:
                    idler.enable("CONDSTORE")  # as client sync wants it: before SELECT
                idler.select(FOLDER)
                idler.idle()
                stack.callback(_idle_done, idler)
        acq.values["method"] = "idle" if idler is not None else "poll"
        sender = source.credentials.user if source.credentials else ""
        message = probe_message(sender, recipient, tag)
        with acq.measure("submit"):
            sent = submit(source, recipient, message, options, deadline)
        acq.values["queue_id"] = sent.queue_id
        acq.values["message_id"] = message["Message-ID"]  # to find it in the servers' logs
        acq.values["submitted_at"] = sent.accepted_at
        arrival = watch_for_tag(poller, idler, tag, deadline, exists)
        if arrival.visible_mono is None:
            _diagnose_missing(poller, tag, source, mailbox, deadline)
        assert arrival.visible_mono is not None
        latency = arrival.visible_mono - sent.accepted_mono
        acq.phases["delivery"] = latency
        acq.values["delivery_latency_seconds"] = latency
        acq.values["visible_at"] = arrival.visible_at
        with acq.measure("cleanup"):
            if _with_grace(poller, deadline):
                remove_uids(poller, [arrival.uid])
        if idler is not None:
            if arrival.pushed_mono is None:
                raise ProbeFailure(
                    f"message delivered to {mailbox.name} in {latency:.3f} s but IMAP IDLE "
                    f"never reported it within {deadline.budget:.1f} s (IDLE silent)",
                    reason=Reason.TIMEOUT,
                )
            acq.values["push_latency_seconds"] = arrival.pushed_mono - sent.accepted_mono
            if keep is not None:
                idler.idle_done()
        return Sessions(poller, idler)


def _diagnose_missing(
    client: ImapClient, tag: str, source: Target, mailbox: Target, deadline: Deadline
) -> None:
    """At the deadline: say which step stalled (and remove the message if it came late)."""
    with contextlib.suppress(ProbeFailure):
        if _with_grace(client, deadline):
            remove_uids(client, find_tagged(client, tag))
    route = "" if source.name == mailbox.name else f" from {source.name}"
    raise ProbeFailure(
        f"message accepted{route} but not delivered to {mailbox.name} "
        f"within {deadline.budget:.1f} s",
        reason=Reason.TIMEOUT,
    )


def measure_client_sync(
    target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition,
    sessions: Sessions | None = None,
) -> None:
    """Session A appends and flags a message; session B (IDLE) times each change.

    ``sessions`` (the delivery measurement's, kept open) are A and B when given: two
    logins and handshakes fewer per run."""
    with contextlib.ExitStack() as stack:
        if sessions is not None and sessions.idler is not None:
            a, b = sessions.poller, sessions.idler  # logged in, FOLDER selected
        else:
            with acq.measure("imap_login"):
                a = open_imap(target, options, deadline)
            stack.callback(_close, a)
            with acq.measure("imap_login"):
                b = open_imap(target, options, deadline)
            stack.callback(_close, b)
            a.select(FOLDER)
            if "CONDSTORE" in b.capabilities:
                b.enable("CONDSTORE")
            b.select(FOLDER)
        if "IDLE" not in b.capabilities:
            raise ProbeFailure("server does not offer IDLE: client sync is not measurable",
                               Status.UNKNOWN, Reason.UNSUPPORTED)
        b.idle()
        user = target.credentials.user if target.credentials else ""
        tag = make_tag(deadline)
        msg = probe_message(user, user, tag)
        uid = 0
        try:
            uid = a.append(FOLDER, msg.as_bytes())
            appended = _monotonic()
            seq = wait_exists(b, deadline)
            if seq is None:
                raise ProbeFailure(
                    f"a message appended by one session was not seen by another within "
                    f"{deadline.budget:.1f} s (IDLE silent)",
                    reason=Reason.TIMEOUT,
                )
            acq.values["append_latency_seconds"] = _monotonic() - appended
            if not uid:
                uid = find_tagged(a, tag)[0]
            a.uid_store([uid], b"+FLAGS (\\Seen)")
            flagged = _monotonic()
            seen = wait_for_flag(b, seq, "\\Seen", deadline)
            if seen is None:
                raise ProbeFailure(
                    f"a flag set by one session was not seen by another within "
                    f"{deadline.budget:.1f} s (IDLE silent)",
                    reason=Reason.TIMEOUT,
                )
            acq.phases["client_sync"] = seen - flagged
            acq.values["client_latency_seconds"] = seen - flagged
        finally:
            _idle_done(b)
            with acq.measure("cleanup"), contextlib.suppress(ProbeFailure):
                if _with_grace(a, deadline):
                    remove_uids(a, [uid] if uid else find_tagged(a, tag))


# -- judgement and the registered probe ------------------------------------------------
def judge(values: dict[str, Any]) -> Verdict:
    statuses = [Status.OK]
    words = []
    kinds = (
        ("delivery_latency_seconds", "delivery"),
        ("push_latency_seconds", "push"),
        ("client_latency_seconds", "client"),
    )
    for key, kind in kinds:
        latency = values.get(key)
        if latency is None:
            continue
        if latency >= CRITICAL_SECONDS:
            statuses.append(Status.CRITICAL)
            words.append(f"{kind} latency {latency:.2f} s >= {CRITICAL_SECONDS:.0f} s")
        elif latency >= WARNING_SECONDS:
            statuses.append(Status.WARNING)
            words.append(f"{kind} latency {latency:.2f} s >= {WARNING_SECONDS:.0f} s")
    if values.get("method") == "poll":
        words.append("server has no IDLE: delivery measured by polling")
    status = worst(statuses)
    reason = Reason.NONE if status == Status.OK else Reason.THRESHOLD
    return Verdict(status, "; ".join(words), reason)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """The ``sync`` check: local delivery latency, then client-to-client latency."""

    def acquire(acq: Acquisition) -> None:
        acq.values["kind"] = "local"
        with contextlib.ExitStack() as keep:  # the delivery's sessions serve client sync
            sessions = measure_delivery(target, target, options, deadline, acq, keep)
            measure_client_sync(target, options, deadline, acq, sessions)

    return run("sync", target, acquire, judge)


def probe_pair(
    source: Target, mailbox: Target, options: ProbeOptions, deadline: Deadline
) -> ProbeResult:
    """One mesh pair: submitted on ``source``, over the real MX path, into ``mailbox``."""

    def acquire(acq: Acquisition) -> None:
        acq.values["kind"] = "mesh"
        acq.values["source"] = source.name
        acq.values["destination"] = mailbox.name
        measure_delivery(source, mailbox, options, deadline, acq)

    return run("sync", mailbox, acquire, judge)


