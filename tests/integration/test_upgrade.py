"""playbooks/upgrade.yml on a lab of its own: two Debian 12 hosts converged by site.yml,
mail in mx1's mailboxes, then mx1 upgraded in place to Debian 13.

The first run fails part way (dpkg refuses to run): it names the host and the step,
leaves mx1's daemons stopped and mx2 untouched. Mail sent to mx1 meanwhile waits in
mx2's queue. The re-run continues and finishes; afterwards every message, flag,
folder, UIDVALIDITY and UID is as before, quota usage too, passwords and OAuth2 tokens
log in, the same certificate is served, the waiting message arrived exactly once, and
site.yml changes nothing.

Its own lab (not the session's mixed fleet) because it turns a host into another
release; the tests of this module run in order and share that lab.
"""

from __future__ import annotations

import contextlib
import email
import imaplib
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import own_lab
from tests.integration.conftest import (
    MailFleet,
    PlaybookRun,
    changed_tasks,
    fleet_users,
    run_playbook,
)
from tests.integration.test_mail_stack import _message, wait_for_subject
from tests.integration.test_oauth2 import imap_token_login, token

pytestmark = pytest.mark.lab

# The package upgrade of a whole host through the lab's apt proxy; a cold proxy
# fetches every package from the Debian mirror first.
UPGRADE_TIMEOUT = 1500.0
FAIL_HOOK = "/etc/apt/apt.conf.d/99mailfleet-test-refuse-dpkg"
UPGRADE_DIR = "/var/lib/mailfleet/upgrade-to-trixie"


@dataclass
class Snapshot:
    """What a client sees of a mailbox account, and what the server counts."""

    folders: dict[str, tuple[str, list[tuple[int, str, str]]]]  # name: (UIDVALIDITY, msgs)
    quota: str
    imaps_cert: str
    smtp_cert: str


def _sh(fleet: MailFleet, host: str, script: str, check: bool = True) -> str:
    proc = fleet.lab.exec(host, ["sh", "-c", script], check=False, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode(errors="replace")


def _release(fleet: MailFleet, host: str) -> str:
    return _sh(fleet, host, ". /etc/os-release && echo $VERSION_ID").strip()


def _open(fleet: MailFleet, host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(
            (fleet.host(host).address, port), timeout=3):
        return True
    return False


def _cert_sha256(fleet: MailFleet, host: str, port: int) -> str:
    """The served certificate's fingerprint, as a client on the other host sees it."""
    h = fleet.host(host)
    starttls = "-starttls smtp " if port == 25 else ""
    digest = _sh(fleet, "mx2" if host != "mx2" else "mx1",
                 f"openssl s_client -connect {h.address}:{port} {starttls}-servername {h.fqdn}"
                 " </dev/null 2>/dev/null | openssl x509 -outform DER | sha256sum")
    return digest.split()[0]


_FETCH_RE = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)")


def snapshot(fleet: MailFleet, host: str) -> Snapshot:
    user = fleet.user(host, "alice")
    folders: dict[str, tuple[str, list[tuple[int, str, str]]]] = {}
    with fleet.imaps(host) as conn:
        conn.login(user.address, user.password)
        _, listing = conn.list()
        names = {line.decode().rsplit(' "/" ', 1)[1].strip('"'): b"\\Noselect" in line
                 for line in listing if isinstance(line, bytes)}
        for name, noselect in sorted(names.items()):
            if noselect:  # a parent of folders, with no messages of its own
                folders[name] = ("", [])
                continue
            typ, _ = conn.select(f'"{name}"', readonly=True)
            assert typ == "OK", name
            _, validity = conn.response("UIDVALIDITY")
            _, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            msgs = []
            for part in data:
                if isinstance(part, tuple):
                    m = _FETCH_RE.search(part[0])
                    assert m, part[0]
                    msgid = email.message_from_bytes(part[1])["Message-ID"]
                    flags = " ".join(sorted(m.group(2).decode().split()))
                    msgs.append((int(m.group(1)), msgid, flags))
            folders[name] = (validity[0].decode(), sorted(msgs))
        _, quota = conn.getquotaroot("INBOX")
    return Snapshot(folders, repr(quota[1]), _cert_sha256(fleet, host, 993),
                    _cert_sha256(fleet, host, 25))


@pytest.fixture(scope="module")
def fleet() -> Iterator[MailFleet]:
    lab = own_lab("upgrade", "10.77.248.0/24", "MAILFLEET_UPGRADE_TEST")
    config = lab.config
    lab.down()  # always from scratch: a kept lab of an earlier run has mx1 on Debian 13
    hosts = lab.up(2, releases=["12"])
    lab.require_up()
    try:
        run = run_playbook(config.inventory_path, "playbooks/site.yml")
        assert run.returncode == 0, run.output[-6000:]
        fleet = MailFleet(lab, config.inventory_path, hosts, fleet_users(hosts),
                          config.state_dir / "ca" / "ca.crt", run)
        fleet.record("converge_seconds", run.seconds)
        yield fleet
    finally:
        if os.environ.get("MAILFLEET_KEEP_LAB") != "1":
            lab.down()


@pytest.fixture(scope="module")
def before(fleet: MailFleet) -> Snapshot:
    """alice@example1.test with mail in INBOX and in a folder of her own, flags set."""
    alice = fleet.user("mx1", "alice")
    subjects = [f"before the upgrade {i} {uuid.uuid4()}" for i in range(4)]
    with fleet.smtp("mx1", 25) as smtp:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=fleet.tls_context())
        smtp.ehlo("client.lab.test")
        for subject in subjects:
            smtp.send_message(_message("tester@example9.test", alice.address, subject))
    for subject in subjects:
        wait_for_subject(fleet, alice, subject)
    with fleet.imaps("mx1") as conn:
        conn.login(alice.address, alice.password)
        assert conn.create("Projects/2026")[0] == "OK"
        conn.select("INBOX")
        assert conn.uid("STORE", "1", "+FLAGS", r"(\Seen \Flagged)")[0] == "OK"
        assert conn.uid("STORE", "2", "+FLAGS", r"($Important \Answered)")[0] == "OK"
        assert conn.uid("MOVE", "3", "Projects/2026")[0] == "OK"
    return snapshot(fleet, "mx1")


def upgrade(fleet: MailFleet, *args: str) -> PlaybookRun:
    return run_playbook(fleet.inventory, "playbooks/upgrade.yml", args,
                        timeout=UPGRADE_TIMEOUT)


def test_a_failing_package_step_stops_at_that_host_and_step(
    fleet: MailFleet, before: Snapshot
) -> None:
    assert [_release(fleet, h.name) for h in fleet.hosts] == ["12", "12"]
    mx2_conf = _sh(fleet, "mx2", "sha256sum /etc/dovecot/dovecot.conf")
    # dpkg refuses to start: apt has fetched the packages, none is installed
    _sh(fleet, "mx1", f"echo 'DPkg::Pre-Invoke {{ \"echo refused by the test >&2; exit 1\"; }};'"
                      f" > {FAIL_HOOK}")
    try:
        run = upgrade(fleet)
    finally:
        _sh(fleet, "mx1", f"rm -f {FAIL_HOOK}")
    fleet.record("upgrade_failed_run_seconds", run.seconds)
    assert run.returncode != 0
    assert ('The upgrade of mx1 to Debian 13 stopped at "Upgrade every package to Debian 13'
            in run.output), run.output[-6000:]
    assert "its Postfix and Dovecot stay stopped" in run.output
    assert "The hosts after it were not touched" in run.output
    # mx1 is out of service, mid-upgrade; mx2 was never started on
    assert not _open(fleet, "mx1", 25) and not _open(fleet, "mx1", 993)
    assert _sh(fleet, "mx1", f"ls {UPGRADE_DIR}").split() == ["mailboxes.before",
                                                              "packages-started"]
    assert run.recap()["mx2"]["changed"] == 0
    assert _release(fleet, "mx2") == "12"
    assert _sh(fleet, "mx2", "dovecot --version").startswith("2.3.")
    assert _sh(fleet, "mx2", "sha256sum /etc/dovecot/dovecot.conf") == mx2_conf
    assert _sh(fleet, "mx2", f"test -e {UPGRADE_DIR} && echo yes || echo no").strip() == "no"
    assert _open(fleet, "mx2", 25) and _open(fleet, "mx2", 993)


@pytest.fixture(scope="module")
def waiting(fleet: MailFleet) -> tuple[str, float]:
    """A message for bob@example1.test submitted on mx2 while mx1 is down: it waits in
    mx2's queue. Returns its subject and when it was submitted."""
    sender, bob = fleet.user("mx2", "alice"), fleet.user("mx1", "bob")
    subject = f"sent during the upgrade {uuid.uuid4()}"
    submitted = time.time()
    with fleet.smtp("mx2", 587) as smtp:
        smtp.starttls(context=fleet.tls_context())
        smtp.login(sender.address, sender.password)
        smtp.send_message(_message(sender.address, bob.address, subject))
    deadline = time.monotonic() + 60
    while "example1.test" not in _sh(fleet, "mx2", "postqueue -j"):
        assert time.monotonic() < deadline, "the message never reached mx2's queue"
        time.sleep(0.5)
    return subject, submitted


def test_the_rerun_continues_and_keeps_every_message_flag_folder_and_uid(
    fleet: MailFleet, before: Snapshot, waiting: tuple[str, float]
) -> None:
    run = upgrade(fleet, "--limit", "mx1")
    assert run.returncode == 0, run.output[-6000:]
    fleet.record("upgrade_seconds_per_host", run.seconds)
    assert _release(fleet, "mx1") == "13"
    assert _sh(fleet, "mx1", "dovecot --version").startswith("2.4.")
    assert _sh(fleet, "mx1", "/usr/sbin/postconf -h mail_version").startswith("3.10.")
    assert _sh(fleet, "mx1", f"test -e {UPGRADE_DIR} && echo yes || echo no").strip() == "no"
    after = snapshot(fleet, "mx1")
    assert after.folders == before.folders
    assert after.quota == before.quota
    assert (after.imaps_cert, after.smtp_cert) == (before.imaps_cert, before.smtp_cert)


def test_mail_sent_during_the_upgrade_arrives_exactly_once(
    fleet: MailFleet, waiting: tuple[str, float]
) -> None:
    subject, submitted = waiting
    bob = fleet.user("mx1", "bob")
    wait_for_subject(fleet, bob, subject)
    with fleet.imaps("mx1") as conn:
        conn.login(bob.address, bob.password)
        conn.select("INBOX", readonly=True)
        _, found = conn.search(None, "SUBJECT", f'"{subject}"')
    assert len(found[0].split()) == 1, found
    fleet.record("upgrade_mail_waited_seconds", time.time() - submitted)
    assert "example1.test" not in _sh(fleet, "mx2", "postqueue -j")


def test_passwords_and_tokens_log_in_after_the_upgrade(fleet: MailFleet) -> None:
    for local in ("alice", "bob"):
        user = fleet.user("mx1", local)
        with fleet.imaps("mx1") as conn:
            assert conn.login(user.address, user.password)[0] == "OK"
        imap_token_login(fleet, user, "XOAUTH2", token(user.address))
        imap_token_login(fleet, user, "OAUTHBEARER", token(user.address))
    with fleet.imaps("mx1") as conn, pytest.raises(imaplib.IMAP4.error):
        conn.login(fleet.user("mx1", "alice").address, "not the password")


def test_site_yml_afterwards_changes_nothing(fleet: MailFleet) -> None:
    again = run_playbook(fleet.inventory, "playbooks/site.yml")
    assert again.returncode == 0, again.output[-6000:]
    assert again.changed() == 0, "; ".join(changed_tasks(again))


def test_a_rerun_on_the_upgraded_host_leaves_it_alone(fleet: MailFleet) -> None:
    master = _sh(fleet, "mx1", "pgrep -o -x dovecot").strip()
    run = upgrade(fleet, "--limit", "mx1")
    assert run.returncode == 0, run.output[-6000:]
    assert run.recap()["mx1"]["changed"] == 0
    # the daemons were not stopped: the same master process serves
    assert _sh(fleet, "mx1", "pgrep -o -x dovecot").strip() == master
