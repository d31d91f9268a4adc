"""The sync probe against a real Dovecot on loopback: IDLE and poll modes, and hygiene.

Delivery is Dovecot's own (an APPEND by the loopback submission server), so
the pushes, the batching of notifications and the flags seen by a second
session are what a mail client sees.
"""

from __future__ import annotations

import imaplib
import ssl
import time
from collections.abc import Iterator

import pytest

from mailfleet.checks import sync
from mailfleet.checks.net import Connection
from mailfleet.checks.result import Reason, Status
from mailfleet.checks.target import Deadline, ProbeOptions
from tests.sync.mailserver import LocalMail, local_mail

NO_IDLE = "imap_capability = IMAP4rev1 SASL-IR LITERAL+ UIDPLUS ENABLE CONDSTORE\n"


@pytest.fixture(scope="module")
def mail() -> Iterator[LocalMail]:
    with local_mail() as running:
        yield running


@pytest.fixture(scope="module")
def mail_without_idle() -> Iterator[LocalMail]:
    with local_mail(NO_IDLE) as running:
        yield running


def _imap(mail: LocalMail) -> imaplib.IMAP4_SSL:
    """The standard library's client, apart from the probe's own."""
    ctx = ssl.create_default_context(cafile=str(mail.dovecot.ca))
    ctx.check_hostname = False
    client = imaplib.IMAP4_SSL(mail.address, mail.dovecot.port, ssl_context=ctx, timeout=10)
    client.login(mail.dovecot.user, mail.dovecot.password)
    client.select("INBOX")
    return client


def _append(client: imaplib.IMAP4_SSL, headers: str, flags: str = "") -> None:
    message = f"{headers}Subject: x\r\n\r\nbody\r\n".encode()
    client.append("INBOX", flags, imaplib.Time2Internaldate(time.time()), message)


def _probe_messages(mail: LocalMail) -> list[int]:
    client = sync.open_imap(mail.target(), ProbeOptions(), Deadline(10))
    try:
        client.select(sync.FOLDER)
        return sync.find_tagged(client)
    finally:
        sync.close(client)


def test_push_and_client_sync_are_measured_and_nothing_is_left(mail: LocalMail) -> None:
    result = sync.probe(mail.target(), ProbeOptions(), Deadline(20))
    assert result.success, result.error
    assert result.values["method"] == "idle"
    assert result.values["queue_id"] == "4Xq1Tz0abc"
    latency = result.values["delivery_latency_seconds"]
    assert 0 < latency < 2
    assert result.values["push_latency_seconds"] >= latency  # Dovecot batches notifications
    assert 0 < result.values["client_latency_seconds"] < 2
    assert 0 < result.values["append_latency_seconds"] < 2
    assert set(result.phases) >= {"imap_login", "cleanup", "idle", "submit", "delivery",
                                  "client_sync", "total"}
    assert _probe_messages(mail) == []


def test_a_run_logs_in_twice_the_delivery_sessions_serve_client_sync(
    mail: LocalMail, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    open_connection = Connection.open.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Connection], address: str, port: int,
                 deadline: Deadline) -> Connection:
        opened.append(port)
        conn: Connection = open_connection(cls, address, port, deadline)
        return conn

    monkeypatch.setattr(Connection, "open", classmethod(counting))
    result = sync.probe(mail.target(), ProbeOptions(), Deadline(20))
    assert result.success, result.error
    assert result.values["client_latency_seconds"] is not None
    # two IMAP sessions (poll and IDLE) for both measurements, one SMTP submission
    assert sorted(opened) == sorted([mail.dovecot.port] * 2 + [mail.smtp_port]), opened
    assert _probe_messages(mail) == []


def test_only_stale_probe_messages_are_removed(mail: LocalMail) -> None:
    header = sync.TAG_HEADER
    stale = sync.make_tag(Deadline(0.001))
    running = sync.make_tag(Deadline(600))  # a run still under way: not ours to remove
    other = _imap(mail)
    try:
        _append(other, f"{header}: {stale}\r\n")
        _append(other, f"{header}: {running}\r\n")
        _append(other, "From: someone@example1.test\r\n", r"(\Deleted)")  # the user's own
        time.sleep(1.1)  # past the stale tag's grace
        result = sync.probe_pair(mail.target(), mail.target(), ProbeOptions(), Deadline(20))
        assert result.success, result.error
        assert result.values["leftovers_removed"] == 1
        other.noop()
        _, found = other.search(None, "ALL")
        assert len(found[0].split()) == 2  # the running probe's and the user's \Deleted one
        _, deleted = other.search(None, "DELETED")
        assert len(deleted[0].split()) == 1
    finally:
        other.store("1:*", "+FLAGS", r"(\Deleted)")
        other.expunge()
        other.logout()


def test_without_idle_delivery_is_polled_and_client_sync_unknown(
    mail_without_idle: LocalMail,
) -> None:
    target = mail_without_idle.target()
    pair = sync.probe_pair(target, target, ProbeOptions(), Deadline(20))
    assert pair.success, pair.error
    assert pair.values["method"] == "poll"
    assert "push_latency_seconds" not in pair.values
    assert "server has no IDLE: delivery measured by polling" in pair.error
    local = sync.probe(target, ProbeOptions(), Deadline(20))
    assert local.status == Status.UNKNOWN and local.reason == Reason.UNSUPPORTED
    assert local.error == "server does not offer IDLE: client sync is not measurable"
    assert _probe_messages(mail_without_idle) == []


def test_a_wrong_password_is_a_refused_login_naming_the_session(mail: LocalMail) -> None:
    from dataclasses import replace

    from mailfleet.checks.target import Credentials, Secret

    target = mail.target()
    wrong = replace(target, credentials=Credentials(mail.dovecot.user,
                                                    password=Secret("wrong-password")))
    result = sync.probe(wrong, ProbeOptions(), Deadline(10))
    assert result.reason == Reason.AUTH_FAILED
    assert result.error.startswith(f"IMAP {target.address}:{target.port('imaps')}: PLAIN login "
                                   "rejected: ")
    assert "wrong-password" not in result.error
    pair = sync.probe_pair(wrong, target, ProbeOptions(), Deadline(10))
    assert pair.error.startswith(f"submission on mx1 ({target.address}:"
                                 f"{target.port('submission')}): login refused: 535")
    assert pair.reason == Reason.AUTH_FAILED
