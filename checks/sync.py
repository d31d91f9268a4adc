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
  it sees each change.

Hygiene: the probe only ever touches messages that carry its
``X-Mailfleet-Probe`` header; it removes its own with ``UID EXPUNGE`` (never a
plain EXPUNGE, which would also purge the user's own ``\\Deleted`` messages).
Every tag embeds the deadline of the run that made it, so a later run removes
any leftover whose run must be over (killed half-way, or timed out).

A timeout names the step that stalled: submission refused or unreachable,
accepted but never delivered, delivered but IDLE silent.

The fleet mesh (every host's submission to every host's mailbox) is scheduled
by ``mesh_round``: N probes per round, all N*(N-1) ordered pairs every N-1
rounds.
"""

from __future__ import annotations

import contextlib
import re
import select
import smtplib
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run, worst
from mailfleet.checks.mesh import mesh_round as mesh_round  # re-exported: sync.mesh_round
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import CredentialsError, Deadline, ProbeOptions, Target
from mailfleet.checks.values import Values, declared

TAG_HEADER = "X-Mailfleet-Probe"
SUBJECT = "mailfleet sync probe"
FOLDER = "INBOX"
POLL_INTERVAL = 0.01  # seconds between NOOPs while waiting for a message (first 2 s)
WARNING_SECONDS = 10.0
CRITICAL_SECONDS = 30.0
_TAG_RE = re.compile(r"^([0-9a-f]{32})\.(\d{10,16})$")
_QUEUED_RE = re.compile(rb"queued as ([0-9A-Za-z]+)")
_APPENDUID_RE = re.compile(rb"APPENDUID \d+ (\d+)")

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



# -- tags ------------------------------------------------------------------------
def make_tag(deadline: Deadline) -> str:
    """A unique tag that also says until when its run may still be using it."""
    ends_ms = int((time.time() + deadline.remaining()) * 1000)
    return f"{uuid.uuid4().hex}.{ends_ms}"


def tag_is_stale(tag: str, now: float, grace: float = 1.0) -> bool:
    """True when the run that made ``tag`` is certainly over (or the tag is not ours)."""
    match = _TAG_RE.match(tag.strip())
    if match is None:
        return True  # a malformed tag in our header: a broken earlier version; remove it
    return now > int(match.group(2)) / 1000 + grace


# -- connections -------------------------------------------------------------------
class _SNIContext(ssl.SSLContext):
    """A client context that always sends (and verifies) one server name.

    Probes connect to an inventory address but must verify the certificate for
    the host's ``mail_hostname``; imapclient and smtplib pass the address they
    connected to as ``server_hostname``, so the context substitutes the name.
    """

    sni: str = ""

    def wrap_socket(  # type: ignore[override]
        self,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
            self.sni or server_hostname, session,
        )


def sni_context(target: Target, options: ProbeOptions) -> ssl.SSLContext:
    ctx = _SNIContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.sni = target.mail_hostname
    bundle = target.ca_bundle or options.ca_bundle
    if bundle is not None:
        ctx.load_verify_locations(cafile=str(bundle))
    else:
        ctx.load_default_certs()
    return ctx


def _remaining(deadline: Deadline, step: str) -> float:
    try:
        return deadline.timeout()
    except TimeoutError:
        raise ProbeFailure(f"timed out before {step} ({deadline.budget:.1f} s budget)") from None


def open_imap(target: Target, options: ProbeOptions, deadline: Deadline) -> IMAPClient:
    """A logged-in IMAP session on the target's probe account, bound to the deadline."""
    creds = target.credentials
    if creds is None:
        raise ProbeFailure("no probe account configured (mailfleet_probe_user)", Status.UNKNOWN)
    left = _remaining(deadline, "the IMAP connection")
    ctx = sni_context(target, options)
    starttls = options.imap_service == "imap"
    port = target.port(options.imap_service)
    where = f"IMAP {target.address}:{port}"
    try:
        client = IMAPClient(
            target.address, port=port, ssl=not starttls, ssl_context=ctx,
            timeout=SocketTimeout(connect=left, read=left),
        )
        if starttls:
            client.starttls(ctx)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(f"{where}: certificate not trusted: {exc.verify_message}") from None
    except (OSError, IMAPClientError) as exc:
        raise ProbeFailure(f"{where}: {_words(exc)}") from None
    try:
        _set_timeout(client, deadline, "login")
        mechanism = options.mechanism.upper()
        if mechanism == "XOAUTH2":
            client.oauth2_login(creds.user, creds.secret_token())
        elif mechanism == "OAUTHBEARER":
            client.oauthbearer_login(creds.user, creds.secret_token())
        elif mechanism == "PLAIN":
            client.plain_login(creds.user, creds.secret_password())
        else:
            client.login(creds.user, creds.secret_password())
    except CredentialsError as exc:
        _close(client)
        raise ProbeFailure(str(exc), Status.UNKNOWN) from None
    except LoginError as exc:
        _close(client)
        raise ProbeFailure(f"{where}: {mechanism} login rejected: {_words(exc)}") from None
    except (OSError, IMAPClientError) as exc:
        _close(client)
        raise ProbeFailure(f"{where}: login failed: {_words(exc)}") from None
    return client


def _set_timeout(client: IMAPClient, deadline: Deadline, step: str) -> None:
    client.socket().settimeout(_remaining(deadline, step))


def _close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.logout()
    with contextlib.suppress(Exception):
        client.shutdown()


def _words(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) or text == "timed out":
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = text.removeprefix("b'").removeprefix('b"').rstrip("'\"")
    return text or type(exc).__name__


# -- probe messages ----------------------------------------------------------------
def probe_message(sender: str, recipient: str, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"{SUBJECT} {tag[:8]}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{tag}@mailfleet.invalid>"
    msg["Auto-Submitted"] = "auto-generated"
    msg[TAG_HEADER] = tag
    msg.set_content(
        "This message measures how fast mail reaches a client. mailfleet removes it "
        "within seconds; if you see it, a probe run was interrupted and the next run "
        "will remove it.\n"
    )
    return msg


def find_tagged(client: IMAPClient, tag: str = "") -> list[int]:
    """UIDs of probe messages (with ``tag``: only that one) in the selected folder."""
    return [int(u) for u in client.search(["HEADER", TAG_HEADER, tag])]


def remove_uids(client: IMAPClient, uids: Sequence[int]) -> None:
    """Delete exactly these messages: \\Deleted, then UID EXPUNGE of just them."""
    if not uids:
        return
    client.delete_messages(list(uids))
    client.uid_expunge(list(uids))


def clean_leftovers(client: IMAPClient, now: float | None = None) -> int:
    """Remove probe messages whose run is over; returns how many were removed."""
    uids = find_tagged(client)
    if not uids:
        return 0
    now = time.time() if now is None else now
    fetched = client.fetch(uids, [f"BODY.PEEK[HEADER.FIELDS ({TAG_HEADER})]"])
    stale: list[int] = []
    for uid, data in fetched.items():
        raw = b""
        for key, value in data.items():
            if key.startswith(b"BODY[HEADER.FIELDS") and isinstance(value, bytes):
                raw = value
        header = raw.decode(errors="replace").partition(":")[2].strip()
        if tag_is_stale(header, now):
            stale.append(int(uid))
    remove_uids(client, stale)
    return len(stale)


# -- submission --------------------------------------------------------------------
@dataclass(frozen=True)
class Submission:
    accepted_at: float  # wall clock, when the 250 after DATA arrived
    accepted_mono: float
    queue_id: str


def submit(
    source: Target, recipient: str, msg: EmailMessage, options: ProbeOptions, deadline: Deadline
) -> Submission:
    """Submit on the source's submission port (587 STARTTLS) with SASL, as its probe account."""
    creds = source.credentials
    if creds is None:
        raise ProbeFailure(f"no probe account on {source.name} to submit with", Status.UNKNOWN)
    port = source.port("submission")
    where = f"submission on {source.name} ({source.address}:{port})"
    try:
        password = creds.secret_password()
    except CredentialsError as exc:
        raise ProbeFailure(str(exc), Status.UNKNOWN) from None
    try:
        with smtplib.SMTP(
            source.address, port, local_hostname="mailfleet-probe.invalid",
            timeout=_remaining(deadline, "submission"),
        ) as smtp:
            smtp.ehlo()
            smtp.starttls(context=sni_context(source, options))
            smtp.ehlo()
            smtp.login(creds.user, password)
            if smtp.sock is not None:
                smtp.sock.settimeout(_remaining(deadline, "submission"))
            code, reply = smtp.mail(creds.user)
            if code != 250:
                raise ProbeFailure(f"{where}: sender refused: {code} {_text(reply)}")
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise ProbeFailure(f"{where}: recipient {recipient} refused: {code} {_text(reply)}")
            code, reply = smtp.data(msg.as_bytes())
            accepted_at, accepted_mono = time.time(), time.monotonic()
            if code != 250:
                raise ProbeFailure(f"{where}: message refused: {code} {_text(reply)}")
    except ProbeFailure:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise ProbeFailure(
            f"{where}: login refused: {exc.smtp_code} {_text(exc.smtp_error)}"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise ProbeFailure(f"{where}: refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailure(f"{where}: certificate not trusted: {exc.verify_message}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise ProbeFailure(f"{where}: {_words(exc)}") from None
    queued = _QUEUED_RE.search(reply)
    return Submission(accepted_at, accepted_mono, queued.group(1).decode() if queued else "")


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


# -- waiting for the server to tell us ---------------------------------------------
@dataclass(frozen=True)
class Arrival:
    """When the tagged message became visible (polling) and was pushed (IDLE)."""

    visible_mono: float | None
    visible_at: float | None
    pushed_mono: float | None
    uid: int


def watch_for_tag(
    poller: IMAPClient,
    idler: IMAPClient | None,
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
            ready, _, _ = select.select([idler.socket()], [], [], pause)
            if ready and _has_exists(idler.idle_check(timeout=0)):
                pushed_mono = time.monotonic()
        else:
            time.sleep(pause)
        if visible_mono is None and not deadline.expired:
            _set_timeout(poller, deadline, "polling")
            asked_mono, asked_at = time.monotonic(), time.time()
            _, responses = poller.noop()
            count = _exists_count(responses)
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


def _has_exists(responses: Sequence[Any]) -> bool:
    return _exists_count(responses) is not None


def _exists_count(responses: Sequence[Any]) -> int | None:
    count = None
    for response in responses:
        if len(response) > 1 and response[1] == b"EXISTS" and isinstance(response[0], int):
            count = response[0]
    return count


def wait_for_flag(client: IMAPClient, seq: int, flag: bytes, deadline: Deadline) -> float | None:
    """In IDLE: the monotonic time the server reported ``flag`` on message ``seq``."""
    while True:
        left = deadline.remaining()
        if left <= 0:
            return None
        for response in client.idle_check(timeout=min(left, 1.0)):
            if len(response) > 2 and response[1] == b"FETCH" and response[0] == seq:
                flags = _fetch_item(response[2], b"FLAGS")
                if isinstance(flags, tuple) and flag in flags:
                    return time.monotonic()


def _fetch_item(items: Any, name: bytes) -> Any:
    if not isinstance(items, tuple):
        return None
    for key, value in zip(items[::2], items[1::2], strict=False):
        if key == name:
            return value
    return None


# -- the measurements ----------------------------------------------------------------
def measure_delivery(
    source: Target, mailbox: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition
) -> None:
    """Submit on ``source``, watch ``mailbox`` with two sessions (poll and IDLE).

    Fills ``delivery_latency_seconds`` (accepted -> visible to a client) and,
    where the server offers IDLE, ``push_latency_seconds`` (accepted -> IDLE
    EXISTS, what a push client such as a phone experiences).
    """
    if mailbox.credentials is None:
        raise ProbeFailure(f"no probe account on {mailbox.name}", Status.UNKNOWN)
    recipient = mailbox.credentials.user
    tag = make_tag(deadline)
    with contextlib.ExitStack() as stack:
        with acq.measure("imap_login"):
            poller = open_imap(mailbox, options, deadline)
            stack.callback(_close, poller)
        with acq.measure("cleanup"):
            _set_timeout(poller, deadline, "selecting INBOX")
            selected = poller.select_folder(FOLDER)
            acq.values["leftovers_removed"] = clean_leftovers(poller)
            exists = int(selected.get(b"EXISTS", 0)) - acq.values["leftovers_removed"]
        idler: IMAPClient | None = None
        if poller.has_capability("IDLE"):
            with acq.measure("imap_login"):
                idler = open_imap(mailbox, options, deadline)
                stack.callback(_close, idler)
            with acq.measure("idle"):
                _set_timeout(idler, deadline, "IDLE")
                idler.select_folder(FOLDER)
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
            _set_timeout(poller, deadline, "cleanup")
            remove_uids(poller, [arrival.uid])
        if idler is not None:
            if arrival.pushed_mono is None:
                raise ProbeFailure(
                    f"message delivered to {mailbox.name} in {latency:.3f} s but IMAP IDLE "
                    f"never reported it within {deadline.budget:.1f} s (IDLE silent)"
                )
            acq.values["push_latency_seconds"] = arrival.pushed_mono - sent.accepted_mono


def _idle_done(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.idle_done()


def _diagnose_missing(
    client: IMAPClient, tag: str, source: Target, mailbox: Target, deadline: Deadline
) -> None:
    """At the deadline: say which step stalled (and remove the message if it came late)."""
    with contextlib.suppress(Exception):
        client.socket().settimeout(2.0)
        remove_uids(client, find_tagged(client, tag))
    route = "" if source.name == mailbox.name else f" from {source.name}"
    raise ProbeFailure(
        f"message accepted{route} but not delivered to {mailbox.name} "
        f"within {deadline.budget:.1f} s"
    )


def measure_client_sync(
    target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition
) -> None:
    """Session A appends and flags a message; session B (IDLE) times each change."""
    with acq.measure("imap_login"):
        a = open_imap(target, options, deadline)
    with contextlib.ExitStack() as stack:
        stack.callback(_close, a)
        with acq.measure("imap_login"):
            b = open_imap(target, options, deadline)
        stack.callback(_close, b)
        _set_timeout(a, deadline, "selecting INBOX")
        a.select_folder(FOLDER)
        _set_timeout(b, deadline, "selecting INBOX")
        if b.has_capability("CONDSTORE"):
            b.enable("CONDSTORE")
        b.select_folder(FOLDER)
        if not b.has_capability("IDLE"):
            raise ProbeFailure("server does not offer IDLE: client sync is not measurable",
                               Status.UNKNOWN)
        b.idle()
        user = target.credentials.user if target.credentials else ""
        tag = make_tag(deadline)
        msg = probe_message(user, user, tag)
        uid = 0
        try:
            reply = a.append(FOLDER, msg.as_bytes())
            appended = time.monotonic()
            match = _APPENDUID_RE.search(reply if isinstance(reply, bytes) else b"")
            uid = int(match.group(1)) if match else 0
            seq = _wait_exists(b, deadline)
            if seq is None:
                raise ProbeFailure(
                    f"a message appended by one session was not seen by another within "
                    f"{deadline.budget:.1f} s (IDLE silent)"
                )
            acq.values["append_latency_seconds"] = time.monotonic() - appended
            if not uid:
                uid = find_tagged(a, tag)[0]
            a.add_flags([uid], [b"\\Seen"])
            flagged = time.monotonic()
            seen = wait_for_flag(b, seq, b"\\Seen", deadline)
            if seen is None:
                raise ProbeFailure(
                    f"a flag set by one session was not seen by another within "
                    f"{deadline.budget:.1f} s (IDLE silent)"
                )
            acq.phases["client_sync"] = seen - flagged
            acq.values["client_latency_seconds"] = seen - flagged
        finally:
            with contextlib.suppress(Exception):
                b.idle_done()
            with acq.measure("cleanup"), contextlib.suppress(Exception):
                a.socket().settimeout(max(2.0, deadline.remaining()))
                remove_uids(a, [uid] if uid else find_tagged(a, tag))


def _wait_exists(client: IMAPClient, deadline: Deadline) -> int | None:
    """In IDLE: the new message count from the next EXISTS, or None at the deadline."""
    while True:
        left = deadline.remaining()
        if left <= 0:
            return None
        for response in client.idle_check(timeout=min(left, 1.0)):
            if len(response) > 1 and response[1] == b"EXISTS":
                return int(response[0])


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
    return Verdict(worst(statuses), "; ".join(words))


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """The ``sync`` check: local delivery latency, then client-to-client latency."""

    def acquire(acq: Acquisition) -> None:
        acq.values["kind"] = "local"
        measure_delivery(target, target, options, deadline, acq)
        measure_client_sync(target, options, deadline, acq)

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


