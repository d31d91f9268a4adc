"""Sieve as the users and their admin meet it on the converged fleet: scripts uploaded
over ManageSieve (4190, STARTTLS before any login) file mail by header, answer with a
vacation message once per sender, forward with SPF kept; the global script files
spam-marked mail into Junk, and moving a message into or out of Junk trains rspamd's
Bayes classifier (IMAPSieve), while throwing spam away teaches nothing.

Each test uses bob's mailboxes (alice's are the other modules') and removes the
scripts it uploaded."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.integration.conftest import MailFleet, MailUser
from tests.integration.test_mail_auth import (
    _authentication_results,
    _message,
    _send_from_outside,
)
from tests.integration.test_mail_stack import wait_for_subject

pytestmark = pytest.mark.lab

MANAGESIEVE_PORT = 4190
HOSTS = ["mx1", "mx2"]  # Debian 12 (Pigeonhole 0.5), Debian 13 (2.4)


# -- ManageSieve -----------------------------------------------------------------------
def _sieve_connect(fleet: MailFleet, user: MailUser, *action: str) -> str:
    """Run Debian's sieve-connect as ``user`` against the user's host: TLS verified
    against the lab CA, the password on a file descriptor, never on the command line."""
    binary = shutil.which("sieve-connect")
    if binary is None:
        skip_or_fail("sieve-connect is missing: scripts/bootstrap.sh installs it")
    host = user.host
    read_fd, write_fd = os.pipe()
    os.write(write_fd, user.password.encode())
    os.close(write_fd)
    try:
        proc = subprocess.run(
            [binary, "--server", host.address, "--port", str(MANAGESIEVE_PORT),
             "--user", user.address, "--passwordfd", str(read_fd),
             "--tlscafile", str(fleet.ca_bundle), "--tlshostname", host.fqdn,
             "--noclearauth", *action],
            pass_fds=(read_fd,), capture_output=True, text=True, timeout=60, check=False)
    finally:
        os.close(read_fd)
    assert proc.returncode == 0, f"sieve-connect {' '.join(action)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@contextlib.contextmanager
def _active_script(fleet: MailFleet, user: MailUser, script: str) -> Iterator[None]:
    """Upload ``script`` over ManageSieve, make it the active one, remove it afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    with tempfile.NamedTemporaryFile("w", suffix=".sieve", delete=False) as f:
        f.write(script)
    try:
        _sieve_connect(fleet, user, "--localsieve", f.name, "--remotesieve", name, "--upload")
        _sieve_connect(fleet, user, "--remotesieve", name, "--activate")
        assert f'"{name}"' in _sieve_connect(fleet, user, "--list")
        yield
    finally:
        Path(f.name).unlink()
        with contextlib.suppress(AssertionError):
            _sieve_connect(fleet, user, "--deactivate")
        with contextlib.suppress(AssertionError):
            _sieve_connect(fleet, user, "--remotesieve", name, "--delete")


def _submit(fleet: MailFleet, sender: MailUser, recipient: str, subject: str,
            body: str = "") -> str:
    """Send as ``sender`` over submission; the Message-ID."""
    msg = _message(sender.address, recipient, subject, body)
    with fleet.smtp(sender.host.name) as smtp:
        smtp.starttls(context=fleet.tls_context())
        smtp.login(sender.address, sender.password)
        smtp.send_message(msg)
    return str(msg["Message-ID"])


@pytest.mark.parametrize("host", HOSTS)
def test_managesieve_offers_no_login_before_starttls(mail_fleet: MailFleet, host: str) -> None:
    user = mail_fleet.user(host, "bob")
    with socket.create_connection((mail_fleet.host(host).address, MANAGESIEVE_PORT),
                                  timeout=15) as raw:
        reader = raw.makefile("rb")
        capabilities = []
        while not (line := reader.readline()).startswith(b"OK"):
            assert line, "the ManageSieve greeting ended early"
            capabilities.append(line.decode().strip())
        assert '"STARTTLS"' in capabilities, capabilities
        assert not any(c.startswith('"SASL"') and "PLAIN" in c for c in capabilities), (
            f"{host}:4190 offers PLAIN before STARTTLS: {capabilities}")
        token = base64.b64encode(f"\0{user.address}\0{user.password}".encode()).decode()
        raw.sendall(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
        answer = reader.readline()
        assert answer.startswith(b"NO"), f"{host}:4190 accepted a login before STARTTLS: {answer!r}"


@pytest.mark.parametrize("host", HOSTS)
def test_an_uploaded_script_files_mail_by_header(mail_fleet: MailFleet, host: str) -> None:
    user = mail_fleet.user(host, "bob")
    sender = mail_fleet.user("mx2" if host == "mx1" else "mx1")
    tag = uuid.uuid4().hex[:8]
    script = ('require ["fileinto", "mailbox"];\n'
              f'if header :contains "Subject" "[project-{tag}]" {{\n'
              f'  fileinto :create "Projects/{tag}";\n}}\n')
    with _active_script(mail_fleet, user, script):
        _submit(mail_fleet, sender, user.address, f"[project-{tag}] filed")
        _submit(mail_fleet, sender, user.address, f"not filed {tag}")
        wait_for_subject(mail_fleet, user, f"[project-{tag}] filed", mailbox=f"Projects/{tag}")
        wait_for_subject(mail_fleet, user, f"not filed {tag}")
    imap = mail_fleet.imaps(host)
    try:
        imap.login(user.address, user.password)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "SUBJECT", f'"[project-{tag}]"')
        assert found[0] == b"", "the filed message is in INBOX too"
        imap.delete(f'"Projects/{tag}"')
    finally:
        imap.logout()


def _dovecot_log_line(fleet: MailFleet, host: str, pattern: str, timeout: float = 60) -> str:
    """Wait until Dovecot's info log on ``host`` has a line matching ``pattern``."""
    line = fleet.log_line(host, "/var/log/dovecot-info.log", pattern, timeout)
    if line is None:
        pytest.fail(f"no line /{pattern}/ in {host}'s Dovecot log within {timeout:.0f} s")
    return line


def test_vacation_answers_each_sender_once_per_days(mail_fleet: MailFleet) -> None:
    away = mail_fleet.user("mx2", "bob")
    first, second = mail_fleet.user("mx1", "alice"), mail_fleet.user("mx1", "bob")
    reply = f"Away {uuid.uuid4().hex[:8]}"  # its own vacation handle: earlier runs count not
    script = ('require ["vacation"];\n'
              f'vacation :days 1 :subject "{reply}" "I am away until Monday.";\n')
    with _active_script(mail_fleet, away, script):
        _submit(mail_fleet, first, away.address, f"to the away one {reply}")
        wait_for_subject(mail_fleet, first, reply)
        again = _submit(mail_fleet, first, away.address, f"again {reply}")
        # the second message from the same sender within :days gets no answer
        _dovecot_log_line(mail_fleet, "mx2", f"msgid={re.escape(again)}.*discarded duplicate "
                                             "vacation response")
        # another sender gets an answer of their own
        _submit(mail_fleet, second, away.address, f"someone else {reply}")
        wait_for_subject(mail_fleet, second, reply)
    imap = mail_fleet.imaps("mx1")
    try:
        imap.login(first.address, first.password)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "SUBJECT", f'"{reply}"', "NOT", "SUBJECT", '"again"')
        replies = [i for i in found[0].split() if i]
        assert len(replies) == 1, f"{first.address} got {len(replies)} vacation replies"
        _, fetched = imap.fetch(replies[0], "(BODY.PEEK[HEADER.FIELDS (AUTO-SUBMITTED FROM)])")
        headers = fetched[0][1] if isinstance(fetched[0], tuple) else b""
        assert b"auto-replied" in headers.lower() and away.address.encode() in headers, headers
    finally:
        imap.logout()


def test_redirect_keeps_spf_for_the_forwarding_host_and_dmarc_through_dkim(
    mail_fleet: MailFleet,
) -> None:
    """alice@example2 writes to bob@example1, whose script forwards to bob@example3:
    at mx3 SPF passes for the forwarder's address (the envelope sender Sieve uses),
    DKIM still verifies example2's signature, so DMARC passes for example2."""
    sender, forwarder = mail_fleet.user("mx2"), mail_fleet.user("mx1", "bob")
    final = mail_fleet.user("mx3", "bob")
    subject = f"forwarded {uuid.uuid4()}"
    with _active_script(mail_fleet, forwarder, f'redirect "{final.address}";\n'):
        _submit(mail_fleet, sender, forwarder.address, subject)
        raw = wait_for_subject(mail_fleet, final, subject)
    results = _authentication_results(raw, mail_fleet.host("mx3").fqdn)
    assert re.search(rf"spf=pass (\([^)]*\) )?smtp\.mailfrom={re.escape(forwarder.address)}",
                     results), results
    assert "dkim=pass header.d=example2.test" in results, results
    assert "dmarc=pass" in results and "header.from=example2.test" in results, results


# -- Junk and training ---------------------------------------------------------------------
def _learns(fleet: MailFleet, host: str) -> dict[str, int]:
    """rspamd's Bayes learn counters, as its classifier reads them from Redis (rspamc
    stat's per-statfile figures are refreshed only every few minutes)."""
    run = fleet.lab.exec(host, ["redis-cli", "--raw", "HMGET", "RS", "learns_spam", "learns_ham"])
    spam, ham = (int(v or 0) for v in run.stdout.decode().split("\n")[:2])
    return {"spam": spam, "ham": ham}


def _learned_in_log(fleet: MailFleet, host: str, message_id: str) -> str:
    run = fleet.lab.exec(host, ["grep", "-F", "learned message as", "/var/log/rspamd/rspamd.log"])
    lines = [line for line in run.stdout.decode(errors="replace").splitlines()
             if message_id.strip("<>") in line]
    return lines[-1] if lines else ""


def _words(n: int = 60) -> str:
    """A body with enough distinct words for Bayes to learn from (and unique, so rspamd
    never answers "already learned")."""
    return " ".join(f"tok{uuid.uuid4().hex[:10]}" for _ in range(n)) + "\n"


def _move(fleet: MailFleet, user: MailUser, source: str, subject: str, target: str) -> None:
    """MOVE the message with ``subject`` from ``source`` to ``target``: the IMAPSieve
    script runs within the command, so its learning is done when MOVE answers."""
    imap = fleet.imaps(user.host.name)
    try:
        imap.login(user.address, user.password)
        imap.select(f'"{source}"')
        _, found = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')  # type: ignore[arg-type]
        uids = found[0].split()
        assert len(uids) == 1, f"{subject!r} is {len(uids)} times in {source}"
        status, answer = imap.uid("MOVE", uids[0].decode(), f'"{target}"')
        assert status == "OK", answer
    finally:
        imap.logout()


@pytest.mark.parametrize("host", HOSTS)
def test_spam_lands_in_junk_and_moves_train_rspamd(mail_fleet: MailFleet, host: str) -> None:
    user = mail_fleet.user(host, "bob")
    sender = mail_fleet.user("mx2" if host == "mx1" else "mx1")
    before = _learns(mail_fleet, host)
    # a forged message of a p=quarantine domain, from outside its SPF: marked as spam,
    # the global script files it into Junk
    forged = _message(sender.address, user.address, f"spam {uuid.uuid4()}", _words())
    _send_from_outside(mail_fleet, host, forged)
    raw = wait_for_subject(mail_fleet, user, str(forged["Subject"]), mailbox="Junk")
    assert b"\nX-Spam: Yes" in raw, raw.decode(errors="replace")[:2000]
    # the user says it is not spam: moved to INBOX, rspamd learns ham
    _move(mail_fleet, user, "Junk", str(forged["Subject"]), "INBOX")
    after_ham = _learns(mail_fleet, host)
    assert after_ham == {**before, "ham": before["ham"] + 1}, (before, after_ham)
    assert "as ham" in _learned_in_log(mail_fleet, host, str(forged["Message-ID"]))
    # a message the filter let through, moved into Junk: rspamd learns spam
    missed = f"missed {uuid.uuid4()}"
    missed_id = _submit(mail_fleet, sender, user.address, missed, _words())
    wait_for_subject(mail_fleet, user, missed)
    _move(mail_fleet, user, "INBOX", missed, "Junk")
    after_spam = _learns(mail_fleet, host)
    assert after_spam == {**after_ham, "spam": after_ham["spam"] + 1}, (after_ham, after_spam)
    assert "as spam" in _learned_in_log(mail_fleet, host, missed_id)
    # thrown away from Junk into Trash: that says nothing about ham
    _move(mail_fleet, user, "Junk", missed, "Trash")
    assert _learns(mail_fleet, host) == after_spam
