"""Mail between the fleet's hosts as the receiving admin sees it: signed with DKIM by
the sender's rspamd, verified (SPF, DKIM, DMARC) by the receiver's, an independent
verifier (dkimpy) agreeing against the lab DNS; forged and spam mail treated as the
sender domain's DMARC policy and the scores say, during the SMTP dialogue."""

from __future__ import annotations

import contextlib
import email
import email.policy
import email.utils
import re
import smtplib
import socket
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dkim
import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest
import yaml

from tests.integration.conftest import MailFleet
from tests.integration.test_mail_stack import wait_for_subject

pytestmark = pytest.mark.lab

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _message(sender: str, recipient: str, subject: str, body: str = "") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = f"<{uuid.uuid4()}@{sender.split('@')[1]}>"
    msg.set_content(body or "Sent by the mailfleet integration tests.\n")
    return msg


def _lab_vars(fleet: MailFleet) -> dict[str, Any]:
    data = yaml.safe_load(fleet.inventory.read_text())
    return dict(data["all"]["vars"])


def _lab_dns(fleet: MailFleet) -> tuple[str, int]:
    update = _lab_vars(fleet)["rspamd_dkim_dns_update"]
    return str(update["server"]), int(update["port"])


def _lab_txt(fleet: MailFleet, name: bytes) -> bytes | None:
    """dkimpy's dnsfunc: TXT records asked of the lab DNS only (lab names exist nowhere else)."""
    server, port = _lab_dns(fleet)
    query = dns.message.make_query(name.decode().rstrip(".") + ".", dns.rdatatype.TXT)
    answer = dns.query.udp(query, server, port=port, timeout=5)
    for rrset in answer.answer:
        for rdata in rrset:
            return b"".join(rdata.strings)
    return None


def _authentication_results(raw: bytes, receiver: str) -> str:
    """The Authentication-Results header the receiving host added (unfolded)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for value in msg.get_all("Authentication-Results", []):
        text = re.sub(r"\s+", " ", str(value))
        if text.startswith(receiver):
            return text
    pytest.fail(f"no Authentication-Results of {receiver} in:\n"
                f"{raw.decode(errors='replace')[:3000]}")


def _send_from_outside(fleet: MailFleet, host: str, msg: EmailMessage) -> None:
    """Deliver to port 25 from the controller's lab address (outside every domain's SPF)."""
    with fleet.smtp(host, 25) as smtp:
        smtp.ehlo("client.outside.test")
        smtp.starttls(context=fleet.tls_context())
        smtp.ehlo("client.outside.test")
        smtp.send_message(msg)


@pytest.mark.parametrize(("sender_host", "receiver_host"), [("mx1", "mx2"), ("mx2", "mx1")])
def test_mail_between_hosts_passes_dkim_spf_and_dmarc(
    mail_fleet: MailFleet, sender_host: str, receiver_host: str
) -> None:
    sender = mail_fleet.user(sender_host)
    receiver = mail_fleet.user(receiver_host)
    subject = f"signed {uuid.uuid4()}"
    msg = _message(sender.address, receiver.address, subject)
    with mail_fleet.smtp(sender_host) as smtp:
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.login(sender.address, sender.password)
        smtp.send_message(msg)
    raw = wait_for_subject(mail_fleet, receiver, subject)
    results = _authentication_results(raw, mail_fleet.host(receiver_host).fqdn)
    domain = sender.address.split("@")[1]
    assert f"dkim=pass header.d={domain} header.s=mail" in results, results
    assert "spf=pass" in results and f"smtp.mailfrom={sender.address}" in results, results
    assert f"dmarc=pass (policy=quarantine) header.from={domain}" in results, results
    # an independent verifier, against the record the role published in the lab DNS
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: _lab_txt(mail_fleet, name)), (
        "dkimpy does not verify the signature")
    # Scanned without waiting on the internet (the lab turns the network checks off;
    # a block-list lookup with no answer would wait seconds).
    log = mail_fleet.lab.exec(receiver_host, ["grep", "-F", str(msg["Message-ID"]),
                                              "/var/log/rspamd/rspamd.log"]).stdout
    times = [float(x) for x in re.findall(rb"time: ([0-9.]+)ms", log)]
    assert times and max(times) < 1000, log.decode(errors="replace")


def test_forged_sender_is_marked_as_its_domains_dmarc_policy_says(mail_fleet: MailFleet) -> None:
    """example1.test publishes p=quarantine: mail claiming it from outside its SPF is
    marked as spam (X-Spam: Yes) and filed into Junk by the global Sieve script, the
    verdicts in Authentication-Results."""
    receiver = mail_fleet.user("mx2")
    subject = f"forged {uuid.uuid4()}"
    _send_from_outside(mail_fleet, "mx2",
                       _message(mail_fleet.user("mx1").address, receiver.address, subject))
    raw = wait_for_subject(mail_fleet, receiver, subject, mailbox="Junk")
    results = _authentication_results(raw, mail_fleet.host("mx2").fqdn)
    assert "spf=fail" in results and "dkim=none" in results, results
    assert "dmarc=fail" in results and "policy=quarantine" in results, results
    msg = email.message_from_bytes(raw)
    assert msg["X-Spam"] == "Yes", raw.decode(errors="replace")[:3000]


def _update_txt(fleet: MailFleet, domain: str, name: str, value: str | None) -> None:
    """Set (or, with None, remove) a TXT record of ``domain`` in the lab DNS, by a
    TSIG-signed update with the lab's key, as an operator would at their DNS."""
    update_vars = _lab_vars(fleet)["rspamd_dkim_dns_update"]
    keyring = dns.tsigkeyring.from_text({update_vars["key_name"]: update_vars["key_secret"]})
    upd = dns.update.UpdateMessage(domain, keyring=keyring,
                                   keyalgorithm=update_vars["key_algorithm"])
    if value is None:
        upd.delete(name, "TXT")
    else:
        upd.replace(name, 300, "TXT", value)
    reply = dns.query.tcp(upd, update_vars["server"], port=int(update_vars["port"]), timeout=5)
    assert reply.rcode() == 0, f"the lab DNS refused the update: {reply}"


@contextlib.contextmanager
def _dmarc_policy(fleet: MailFleet, domain: str, policy: str) -> Iterator[None]:
    """Publish ``p=policy`` for ``domain`` in the lab DNS (TSIG-signed update) for a while."""

    def publish(p: str) -> None:
        _update_txt(fleet, domain, "_dmarc", f'"v=DMARC1; p={p}; rua=mailto:postmaster@{domain}"')

    publish(policy)
    try:
        yield
    finally:
        publish("quarantine")


def test_forged_sender_of_a_reject_domain_is_refused_at_smtp(mail_fleet: MailFleet) -> None:
    domain = mail_fleet.user("mx3").address.split("@")[1]
    receiver = mail_fleet.user("mx2")
    forged = _message(mail_fleet.user("mx3").address, receiver.address, f"forged {uuid.uuid4()}")
    with (_dmarc_policy(mail_fleet, domain, "reject"),
          pytest.raises(smtplib.SMTPDataError) as refused):
        _send_from_outside(mail_fleet, "mx2", forged)
    assert refused.value.smtp_code == 554 and b"DMARC" in refused.value.smtp_error, refused.value
    log = mail_fleet.lab.exec("mx2", ["tail", "-n", "200", "/var/log/rspamd/rspamd.log"]).stdout
    assert b"DMARC_POLICY_REJECT" in log, "rspamd's log does not name the DMARC policy"


def test_gtube_is_refused_during_the_smtp_dialogue(mail_fleet: MailFleet) -> None:
    receiver = mail_fleet.user("mx1")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send_from_outside(mail_fleet, "mx1", _message(
            "someone@outside.test", receiver.address, f"gtube {uuid.uuid4()}", GTUBE + "\n"))
    assert refused.value.smtp_code == 554
    assert b"Gtube" in refused.value.smtp_error, refused.value


@pytest.mark.parametrize("host", ["mx1", "mx2"])
def test_rspamd_listens_on_loopback_only_and_keeps_its_keys_closed(
    mail_fleet: MailFleet, host: str
) -> None:
    address = mail_fleet.host(host).address
    for port in (11332, 11333, 11334):
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=3).close()
    domain = mail_fleet.user(host).address.split("@")[1]
    stat = mail_fleet.lab.exec(host, ["stat", "-c", "%a %U", "/var/lib/rspamd/dkim",
                                      f"/var/lib/rspamd/dkim/{domain}.mail.key"]).stdout
    assert stat.decode().split("\n")[:2] == ["700 _rspamd", "600 _rspamd"], stat
