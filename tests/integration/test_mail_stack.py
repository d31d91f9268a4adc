"""The converged mail stack, used like a user would: real SMTP and IMAP clients
from the controller (and from another lab host) to lab addresses."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import imaplib
import json
import smtplib
import socket
import ssl
import time
import uuid
import warnings
from email.message import EmailMessage

import pytest

from tests.integration.conftest import MailFleet, MailUser

pytestmark = pytest.mark.lab

DELIVERY_TIMEOUT = 60.0


def _message(sender: str, recipient: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    # as a mail client writes it: a missing Date adds to rspamd's spam score
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = f"<{uuid.uuid4()}@mailfleet.test>"
    msg.set_content("Sent by the mailfleet integration tests.\n")
    return msg


def wait_for_subject(
    fleet: MailFleet, user: MailUser, subject: str, timeout: float = DELIVERY_TIMEOUT,
    mailbox: str = "INBOX",
) -> bytes:
    """Poll the user's ``mailbox`` over IMAPS until a message with `subject` is there."""
    deadline = time.monotonic() + timeout
    while True:
        imap = fleet.imaps(user.host.name)
        try:
            imap.login(user.address, user.password)
            status, _ = imap.select(f'"{mailbox}"', readonly=True)
            if status != "OK":  # a folder Sieve creates with its first message
                data: list[bytes] = [b""]
            else:
                _, data = imap.search(None, "SUBJECT", f'"{subject}"')
            ids = data[0].split()
            if ids:
                _, fetched = imap.fetch(ids[-1], "(RFC822)")
                first = fetched[0]
                assert isinstance(first, tuple)
                return first[1]
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()
        if time.monotonic() > deadline:
            pytest.fail(f"{subject!r} did not reach {mailbox} of {user.address}"
                        f" within {timeout:.0f} s")
        time.sleep(1)


def test_submission_on_a_is_delivered_via_b_mx_and_fetched_over_imaps(
    mail_fleet: MailFleet,
) -> None:
    a, b = mail_fleet.hosts[0], mail_fleet.hosts[1]
    sender = mail_fleet.user(a.name, "alice")
    recipient = mail_fleet.user(b.name, "bob")
    subject = f"cross-host {uuid.uuid4()}"
    with mail_fleet.smtp(a.name, 587) as smtp:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        smtp.login(sender.address, sender.password)
        refused = smtp.send_message(_message(sender.address, recipient.address, subject))
    assert refused == {}
    raw = wait_for_subject(mail_fleet, recipient, subject)
    # It travelled A -> B's MX over SMTP (lab DNS) and was delivered by LMTP on B.
    assert f"by {b.fqdn}".encode() in raw
    assert f"from {a.fqdn}".encode() in raw
    assert b"with LMTP" in raw


def test_submission_on_465_with_implicit_tls(mail_fleet: MailFleet) -> None:
    a = mail_fleet.hosts[0]
    sender = mail_fleet.user(a.name, "bob")
    recipient = mail_fleet.user(a.name, "alice")
    subject = f"implicit tls {uuid.uuid4()}"
    with mail_fleet.smtps(a.name, 465) as smtp:
        smtp.login(sender.address, sender.password)
        smtp.send_message(_message(sender.address, recipient.address, subject))
    wait_for_subject(mail_fleet, recipient, subject)


def test_special_use_folders_exist_on_first_login(mail_fleet: MailFleet) -> None:
    user = mail_fleet.user(mail_fleet.hosts[1].name, "alice")
    imap = mail_fleet.imaps(user.host.name)
    try:
        imap.login(user.address, user.password)
        _, listing = imap.list()
    finally:
        imap.logout()
    flags = b" ".join(line for line in listing if isinstance(line, bytes))
    for special in (b"\\Sent", b"\\Drafts", b"\\Junk", b"\\Trash"):
        assert special in flags, listing


# -- refused, each with the right error ----------------------------------------

RELAY_SCRIPT = """
import json, smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, timeout=20)
s.ehlo("mx-other.lab.test")
s.mail("someone@example9.test")
code, text = s.rcpt("victim@outside.invalid")
s.quit()
print(json.dumps([code, text.decode()]))
"""


def test_relay_to_an_outside_domain_without_auth_is_refused_from_another_lab_host(
    mail_fleet: MailFleet,
) -> None:
    a, b = mail_fleet.hosts[0], mail_fleet.hosts[1]
    proc = mail_fleet.lab.exec(b.name, ["python3", "-c", RELAY_SCRIPT, a.address])
    code, text = json.loads(proc.stdout)
    assert code == 554, text
    assert "Relay access denied" in text


def test_relay_without_auth_is_refused_from_the_controller_too(mail_fleet: MailFleet) -> None:
    a = mail_fleet.hosts[0]
    with smtplib.SMTP(a.address, 25, timeout=20) as smtp:
        smtp.ehlo("controller.lab.test")
        smtp.starttls(context=_unverified())
        smtp.ehlo("controller.lab.test")
        smtp.mail("someone@example9.test")
        code, text = smtp.rcpt("victim@outside.invalid")
    assert code == 554 and b"Relay access denied" in text


def test_auth_on_587_before_starttls_is_refused(mail_fleet: MailFleet) -> None:
    user = mail_fleet.user(mail_fleet.hosts[0].name)
    with mail_fleet.smtp(user.host.name, 587) as smtp:
        smtp.ehlo("client.lab.test")
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth"), "AUTH must not be offered before TLS"
        blob = base64.b64encode(f"\0{user.address}\0{user.password}".encode()).decode()
        code, text = smtp.docmd("AUTH", f"PLAIN {blob}")
    assert code == 530, text
    assert b"STARTTLS" in text


def test_port_25_offers_starttls_but_no_auth(mail_fleet: MailFleet) -> None:
    with mail_fleet.smtp(mail_fleet.hosts[0].name, 25) as smtp:
        smtp.ehlo("client.lab.test")
        assert smtp.has_extn("starttls")
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        assert not smtp.has_extn("auth"), "port 25 is for MX traffic, not submission"


def test_imap_login_with_a_wrong_password_is_refused(mail_fleet: MailFleet) -> None:
    user = mail_fleet.user(mail_fleet.hosts[0].name)
    imap = mail_fleet.imaps(user.host.name)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(user.address, user.password + "-wrong")
    finally:
        imap.shutdown()


def test_imap_on_143_is_off(mail_fleet: MailFleet) -> None:
    h = mail_fleet.hosts[0]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((h.address, 143), timeout=5).close()


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _old_tls(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = _unverified()
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer TLS 1.0/1.1 at all
    with warnings.catch_warnings():  # setting TLS 1.0/1.1 warns: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def _starttls_socket(address: str, port: int) -> socket.socket:
    """A socket past the server's STARTTLS go-ahead, ready for a TLS handshake."""
    sock = socket.create_connection((address, port), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"EHLO client.lab.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    sock.sendall(b"STARTTLS\r\n")
    assert f.readline().startswith(b"220")
    return sock


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
@pytest.mark.parametrize("port", [993, 465, 587, 25])
def test_tls_1_0_and_1_1_handshakes_are_refused(
    mail_fleet: MailFleet, port: int, version: ssl.TLSVersion
) -> None:
    h = mail_fleet.hosts[0]
    sock = (
        _starttls_socket(h.address, port)
        if port in (25, 587)
        else socket.create_connection((h.address, port), timeout=10)
    )
    with sock, pytest.raises(ssl.SSLError) as err:
        _old_tls(version).wrap_socket(sock, server_hostname=h.fqdn)
    # The server refused the version (an alert, or Dovecot just hangs up): not this
    # client's own policy, which would fail before sending (NO_PROTOCOLS_AVAILABLE).
    assert isinstance(err.value, ssl.SSLEOFError) or "PROTOCOL_VERSION" in str(err.value), err.value
    # ... and TLS 1.2 works on the same port.
    sock = (
        _starttls_socket(h.address, port)
        if port in (25, 587)
        else socket.create_connection((h.address, port), timeout=10)
    )
    with mail_fleet.tls_context().wrap_socket(sock, server_hostname=h.fqdn) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_mail_to_an_unknown_user_is_rejected_at_rcpt(mail_fleet: MailFleet) -> None:
    b = mail_fleet.hosts[1]
    with mail_fleet.smtp(b.name, 25) as smtp:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        smtp.mail("someone@example9.test")
        code, text = smtp.rcpt(f"nobody-{uuid.uuid4().hex[:8]}@{b.mail_domain}")
        known_code, _ = smtp.rcpt(mail_fleet.user(b.name).address)
    assert code == 550, text
    assert b"User unknown" in text
    assert known_code == 250


# -- the certificate ------------------------------------------------------------


def _served_cert(fleet: MailFleet, host: str, port: int) -> dict[str, object]:
    """Handshake verifying chain and hostname; return the served leaf."""
    h = fleet.host(host)
    if port in (25, 587):
        sock = _starttls_socket(h.address, port)
    else:
        sock = socket.create_connection((h.address, port), timeout=10)
    with fleet.tls_context().wrap_socket(sock, server_hostname=h.fqdn) as tls:
        cert = tls.getpeercert()
    assert cert
    return dict(cert)


@pytest.mark.parametrize("port", [993, 465, 587])
def test_served_certificate_chains_to_the_lab_ca_and_names_the_host(
    mail_fleet: MailFleet, port: int
) -> None:
    for h in mail_fleet.hosts:
        cert = _served_cert(mail_fleet, h.name, port)
        names = [value for kind, value in cert["subjectAltName"] if kind == "DNS"]  # type: ignore[attr-defined]
        assert h.fqdn in names
