"""Quotas that never lose mail, on a lab host converged with playbooks/site.yml.

One story on one mailbox (a test user with a 100K quota written into the
host's inventory): real messages fill it; crossing 80% alone brings the 80%
warning (a clean UTF-8 message), then crossing 95% the 95% one; the next
message that does not fit is refused at RCPT with the quota-status reply;
sent without SIZE it is accepted by Postfix, temporarily refused by LMTP and
kept in the queue; GETQUOTAROOT matches the bytes stored; raising the quota
in the inventory and re-running the playbook lets the queued and the next
message in, and leaves every stored message as it was.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import hashlib
import imaplib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
import yaml

from mailfleet.lab.hosts import LabHost
from tests.integration.conftest import MailFleet, lab_password
from tests.integration.hostvars import host_vars_path, inventory_vars, set_host_vars

pytestmark = [pytest.mark.lab]

LOCAL = "carol"
LIMIT_KIB = 100
RAISED_KIB = 300
FILLER_BYTES = 14_000
TOO_BIG_BYTES = 20_000
# Not ASCII on purpose: the warning must arrive readable (docker-mailserver#4697).
SUBJECT = "Ihr Postfach ist zu $percent% voll — bitte aufräumen"
BODY = "Grüße vom Mailserver: $user ist zu $percent% voll.\n"
WAIT = 60.0


@dataclass(frozen=True)
class QuotaBox:
    fleet: MailFleet
    host: LabHost
    address: str
    password: str

    @contextlib.contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4_SSL]:
        conn = self.fleet.imaps(self.host.name, timeout=30)
        try:
            conn.login(self.address, self.password)
            conn.select("INBOX")
            yield conn
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                conn.logout()

    def quota(self) -> tuple[int, int]:
        """(usage KiB, limit KiB) from GETQUOTAROOT INBOX."""
        with self.imap() as conn:
            typ, data = conn.getquotaroot("INBOX")
        assert typ == "OK", data
        text = b" ".join(x for part in data for x in part if isinstance(x, bytes)).decode()
        match = re.search(r"\(STORAGE (\d+) (\d+)\)", text)
        assert match, f"no STORAGE in GETQUOTAROOT: {text}"
        return int(match.group(1)), int(match.group(2))

    def messages(self) -> dict[int, tuple[int, str]]:
        """UID -> (RFC822.SIZE, sha256 of the whole message) of every message in INBOX."""
        out: dict[int, tuple[int, str]] = {}
        with self.imap() as conn:
            typ, data = conn.uid("FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[])")
            assert typ == "OK", data
            for item in data:
                if not isinstance(item, tuple):
                    continue
                meta = item[0].decode()
                uid = int(re.search(r"UID (\d+)", meta).group(1))  # type: ignore[union-attr]
                size = int(re.search(r"RFC822\.SIZE (\d+)", meta).group(1))  # type: ignore[union-attr]
                out[uid] = (size, hashlib.sha256(item[1]).hexdigest())
        return out

    def warnings(self) -> list[EmailMessage]:
        found: list[EmailMessage] = []
        with self.imap() as conn:
            typ, data = conn.uid("SEARCH", "HEADER", "X-Mailfleet-Quota-Warning", '""')
            assert typ == "OK", data
            for uid in data[0].split():
                typ, msg = conn.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                raw = next(x[1] for x in msg if isinstance(x, tuple))
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                found.append(parsed)
        return found

    def count(self) -> int:
        with self.imap() as conn:
            typ, data = conn.status("INBOX", "(MESSAGES)")
        assert typ == "OK", data
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))  # type: ignore[union-attr]

    def wait_count(self, at_least: int, timeout: float = WAIT) -> int:
        deadline = time.monotonic() + timeout
        while True:
            n = self.count()
            if n >= at_least or time.monotonic() > deadline:
                return n
            time.sleep(0.5)

    def queue(self) -> list[dict[str, Any]]:
        """Postfix's queue entries for this mailbox (postqueue -j)."""
        out = self.fleet.lab.exec(self.host, ["postqueue", "-j"]).stdout.decode()
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in entries
                if any(r.get("address") == self.address for r in e.get("recipients", []))]


def filler(to: str, size: int, tag: str) -> bytes:
    """A real message of about ``size`` bytes (incompressible text lines)."""
    msg = EmailMessage()
    msg["From"] = "filler@lab.test"
    msg["To"] = to
    msg["Subject"] = f"filler {tag}"
    # as a mail client writes them: without them rspamd scores it towards Junk
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain="lab.test")
    lines: list[str] = []
    while sum(len(x) + 1 for x in lines) < size - 300:
        lines.append(secrets.token_hex(38))
    msg.set_content("\n".join(lines) + "\n")
    return msg.as_bytes()


def smtp_send(box: QuotaBox, message: bytes, size: bool = True) -> tuple[int, bytes]:
    """Send over port 25; returns the RCPT reply (and finishes DATA when it was accepted)."""
    with box.fleet.smtp(box.host.name, port=25, timeout=30) as smtp:
        smtp.ehlo("tester.lab.test")
        smtp.starttls(context=box.fleet.tls_context())
        smtp.ehlo("tester.lab.test")
        options = [f"SIZE={len(message)}"] if size else []
        code, text = smtp.mail("filler@lab.test", options)
        assert code == 250, text
        code, text = smtp.rcpt(box.address)
        if code == 250:
            data_code, data_text = smtp.data(message)
            assert data_code == 250, data_text
        return code, text


def deliver(box: QuotaBox, size: int, tag: str) -> None:
    before = box.count()
    code, text = smtp_send(box, filler(box.address, size, tag))
    assert code == 250, f"message {tag} refused: {code} {text!r}"
    assert box.wait_count(before + 1) >= before + 1, f"message {tag} not delivered in {WAIT}s"


def wait_warnings(box: QuotaBox, percents: list[str], timeout: float = WAIT) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while True:
        found = box.warnings()
        seen = sorted(str(m["X-Mailfleet-Quota-Warning"]) for m in found)
        if seen == sorted(percents) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _mail_users_without(box_host: str, fleet: MailFleet, address: str) -> list[dict[str, Any]]:
    """The fleet's mail_users (group_vars), without any earlier run's copy or test user."""
    path = host_vars_path(fleet, box_host)
    if path.exists():
        current = yaml.safe_load(path.read_text()) or {}
        current.pop("mail_users", None)
        path.write_text(yaml.safe_dump(current, sort_keys=True, allow_unicode=True))
    users: list[dict[str, Any]] = inventory_vars(fleet, box_host)["mail_users"]
    return [u for u in users if u["name"] != address]


def password_hash(fleet: MailFleet, host: LabHost, password: str) -> str:
    """A SHA512-CRYPT hash made by Dovecot itself (doveadm pw) on the host."""
    out = fleet.lab.exec(host, ["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password])
    return out.stdout.decode().strip()


@pytest.fixture(scope="module")
def box(mail_fleet: MailFleet) -> QuotaBox:
    host = mail_fleet.hosts[-1]
    address = f"{LOCAL}@{host.mail_domain}"
    password = lab_password(LOCAL, host.index)
    # A kept lab: start from an empty mailbox and an empty queue for the test user.
    lab = mail_fleet.lab
    lab.exec(host, ["rm", "-rf", f"/var/vmail/{host.mail_domain}/{LOCAL}"])
    box = QuotaBox(mail_fleet, host, address, password)
    for entry in box.queue():
        lab.exec(host, ["postsuper", "-d", entry["queue_id"]], check=False)
    users = _mail_users_without(host.name, mail_fleet, address)
    hashed = password_hash(mail_fleet, host, password)
    set_host_vars(mail_fleet, host.name, {
        "mail_users": [*users, {"name": address, "password_hash": hashed,
                                "quota": f"{LIMIT_KIB}K"}],
        "dovecot_quota_warning_subject": SUBJECT,
        "dovecot_quota_warning_body": BODY,
    })
    return box


def test_quota_story(box: QuotaBox) -> None:
    limit = LIMIT_KIB * 1024
    usage, quota_limit = box.quota()
    assert (usage, quota_limit) == (0, LIMIT_KIB), "a fresh mailbox with the inventory's quota"

    # 1. Fill below 80%: no warning yet.
    n = 0
    while (box.quota()[0] * 1024 + FILLER_BYTES + 1500) < 0.80 * limit:
        n += 1
        deliver(box, FILLER_BYTES, f"fill-{n}")
    assert box.warnings() == [], "no warning below 80%"

    # 2. The message that crosses 80% (and not 95%) brings the 80% warning only.
    n += 1
    deliver(box, FILLER_BYTES, f"fill-{n}")
    used = box.quota()[0] * 1024
    assert 0.80 * limit <= used < 0.95 * limit, used
    found = wait_warnings(box, ["80"])
    assert [str(m["X-Mailfleet-Quota-Warning"]) for m in found] == ["80"]
    warning = found[0]
    assert str(warning["Subject"]) == "Ihr Postfach ist zu 80% voll — bitte aufräumen"
    assert warning.get_content_type() == "text/plain"
    assert warning.get_content_charset() == "utf-8"
    body = warning.get_content().replace("\r\n", "\n")  # IMAP serves CRLF lines
    assert body == f"Grüße vom Mailserver: {box.address} ist zu 80% voll.\n"
    assert str(warning["Auto-Submitted"]) == "auto-generated"

    # 3. A message that lands between 95% and 100% brings the 95% warning.
    used = box.quota()[0] * 1024
    step = int(0.975 * limit - used) - 1200  # delivery adds Received/Return-Path headers
    assert step > 1000, f"no room left to cross 95% alone (used {used} of {limit})"
    deliver(box, step, "cross-95")
    found = wait_warnings(box, ["80", "95"])
    assert sorted(str(m["X-Mailfleet-Quota-Warning"]) for m in found) == ["80", "95"]
    used, _ = box.quota()
    assert used * 1024 >= 0.95 * limit

    # 4. The next message that does not fit is refused at RCPT (quota-status, SIZE).
    stored_before = box.messages()
    big = filler(box.address, TOO_BIG_BYTES, "too-big")
    code, text = smtp_send(box, big)
    assert code == 552, (code, text)
    assert b"5.2.2" in text and b"Mailbox is full" in text, text

    # 5. Without SIZE it passes RCPT, but LMTP refuses it temporarily: kept in the queue.
    code, text = smtp_send(box, big, size=False)
    assert code == 250, (code, text)
    deadline = time.monotonic() + WAIT
    reason = ""
    while time.monotonic() < deadline:
        queued = box.queue()
        reasons = [r.get("delay_reason", "") for e in queued for r in e["recipients"]]
        if reasons and any(reasons):
            reason = next(r for r in reasons if r)
            break
        time.sleep(1)
    assert reason, "the over-quota message is not in Postfix's deferred queue"
    assert re.search(r"\b4\.2\.2\b|[Qq]uota", reason), reason
    assert box.messages() == stored_before, "nothing was added or lost"

    # 6. GETQUOTAROOT reports what is stored (virtual sizes, KiB).
    used, quota_limit = box.quota()
    stored = sum(size for size, _ in stored_before.values())
    assert quota_limit == LIMIT_KIB
    assert used == -(-stored // 1024), (used, stored)  # KiB, rounded up by Dovecot

    # 7. Raise the quota in the inventory and re-run the playbook.
    users = _mail_users_without(box.host.name, box.fleet, box.address)
    hashed = password_hash(box.fleet, box.host, box.password)
    set_host_vars(box.fleet, box.host.name, {"mail_users": [
        *users, {"name": box.address, "password_hash": hashed, "quota": f"{RAISED_KIB}K"}]})
    assert box.quota()[1] == RAISED_KIB

    # The queued message goes in at the next try, the next one is accepted at once.
    box.fleet.lab.exec(box.host, ["postqueue", "-f"])
    assert box.wait_count(len(stored_before) + 1) == len(stored_before) + 1
    deliver(box, FILLER_BYTES, "after-raise")
    after = box.messages()
    assert len(after) == len(stored_before) + 2
    for uid, (size, digest) in stored_before.items():
        assert after.get(uid) == (size, digest), f"message UID {uid} changed"
    assert box.queue() == []


@pytest.mark.parametrize(
    ("bad_vars", "message"),
    [
        ({"mail_users": [{"name": "erin@example1.test", "password_hash": "{SHA512-CRYPT}$6$s$h",
                          "quota": "2 GB"}]}, "is not a size"),
        ({"dovecot_quota_default": "lots"}, "is not a size"),
        ({"dovecot_quota_status_overquota": "552 4.2.2 Mailbox is full"},
         "code and enhanced status agree"),
        ({"dovecot_quota_warnings": [80, 180]}, "distinct percentages 1-100"),
    ],
    ids=["user-quota", "default-quota", "reply-class-mismatch", "warning-percent"],
)
def test_a_malformed_quota_setting_stops_the_run_before_any_host(
    mail_fleet: MailFleet, bad_vars: dict[str, object], message: str
) -> None:
    unreachable = str(mail_fleet.lab.config.subnet.network_address + 250)
    run = mail_fleet.playbook(extra_vars={**bad_vars, "ansible_host": unreachable},
                              playbook="playbooks/mail.yml")
    assert run.returncode != 0
    assert message in run.output, run.output[-4000:]
    assert "UNREACHABLE" not in run.output, "a host was contacted before the input was checked"
