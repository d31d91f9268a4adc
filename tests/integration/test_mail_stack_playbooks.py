"""Running the playbooks on a converged fleet: idempotence, check mode, bad input
refused before any host is touched, a bad config never installed, and a
replaced certificate served by both daemons after a reload that an open IMAP
IDLE session survives."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import imaplib
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import MailFleet, changed_tasks
from tests.integration.test_mail_stack import _message, _starttls_socket, wait_for_subject

pytestmark = pytest.mark.lab


def _file_sha256(fleet: MailFleet, host: str, path: str) -> str:
    return hashlib.sha256(fleet.lab.exec(host, ["cat", path]).stdout).hexdigest()


def deliver(fleet: MailFleet, host: str, local: str = "alice") -> str:
    """Send one message to a user over the host's port 25 and wait until it is in."""
    user = fleet.user(host, local)
    subject = f"playbook tests {uuid.uuid4()}"
    with fleet.smtp(host, 25) as smtp:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=fleet.tls_context())
        smtp.ehlo("client.lab.test")
        smtp.send_message(_message("tester@example9.test", user.address, subject))
    wait_for_subject(fleet, user, subject)
    return subject


def test_the_first_rerun_changes_nothing_and_never_touches_maildirs(mail_fleet: MailFleet) -> None:
    """The session's first re-run of site.yml (tests/integration/conftest.py), made
    right after the converge with a message delivered to every host."""
    run = mail_fleet.first_rerun
    assert run is not None
    assert run.returncode == 0, run.output[-6000:]
    assert set(run.recap()) >= {h.name for h in mail_fleet.hosts}
    assert run.changed() == 0, "first re-run changed: " + "; ".join(changed_tasks(run))
    before, after = mail_fleet.maildirs_around_first_rerun
    assert set(before) == {h.name for h in mail_fleet.hosts}
    assert all("/Maildir/" in listing for listing in before.values())
    assert after == before


def test_check_diff_on_a_converged_fleet_is_clean(mail_fleet: MailFleet) -> None:
    # One host of each Debian release: the roles take the same paths on the others, and
    # the hosts run on the same 2 cores as ansible, so a third host is a third more time.
    first_of_each = {h.release: h.name for h in reversed(mail_fleet.hosts)}
    run = mail_fleet.playbook("--check", "--diff", "--limit", ",".join(first_of_each.values()))
    assert run.returncode == 0, run.output[-6000:]
    assert run.changed() == 0, run.output[-6000:]
    assert "--- before" not in run.output, run.output[-6000:]


# -- bad input is refused before any host is touched ----------------------------------------


def _unreachable(fleet: MailFleet) -> str:
    """A lab address nobody uses: a task that contacted a host would be UNREACHABLE."""
    return str(fleet.lab.config.subnet.network_address + 250)


@pytest.mark.parametrize(
    ("bad_vars", "message"),
    [
        (
            {"mail_users": [{"name": "not-an-address", "password_hash": "{SHA512-CRYPT}$6$s$h"}]},
            "not-an-address",
        ),
        (
            {"mail_users": [{"name": "carol@example1.test", "password_hash": "hunter2"}]},
            "never a password",
        ),
        ({"mail_users": [{"name": "carol@example1.test"}]}, "password_hash"),
        ({"dovecot_imaps_port": "nine-nine-three"}, "dovecot_imaps_port"),
        ({"mail_tls_source": "self_signed"}, "mail_tls_source"),
    ],
    ids=["malformed-address", "clear-text-password", "missing-hash", "port-type", "tls-source"],
)
def test_invalid_variables_fail_before_any_host_is_touched(
    mail_fleet: MailFleet, bad_vars: dict[str, object], message: str
) -> None:
    run = mail_fleet.playbook(
        extra_vars={**bad_vars, "ansible_host": _unreachable(mail_fleet)},
        playbook="playbooks/mail.yml",
    )
    assert run.returncode != 0
    assert message in run.output, run.output[-4000:]
    assert "UNREACHABLE" not in run.output, "a host was contacted before the input was checked"
    assert "Deploy the mail stack (certificate" not in run.output.split("PLAY RECAP")[0]


# -- a host on a release the roles do not support ------------------------------------------

# What /etc/os-release and /etc/debian_version say on the releases a user may point
# the playbooks at by mistake.
UNSUPPORTED_RELEASES = {
    "debian-11": ('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\n'
                  'VERSION_ID="11"\nVERSION="11 (bullseye)"\nVERSION_CODENAME=bullseye\n'
                  'ID=debian\n',
                  "11.11\n", "Debian 11"),
    "debian-14": ('PRETTY_NAME="Debian GNU/Linux 14 (forky)"\nNAME="Debian GNU/Linux"\n'
                  'VERSION_ID="14"\nVERSION="14 (forky)"\nVERSION_CODENAME=forky\nID=debian\n',
                  "14.0\n", "Debian 14"),
    "ubuntu-24.04": ('PRETTY_NAME="Ubuntu 24.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
                     'VERSION="24.04.3 LTS (Noble Numbat)"\nVERSION_CODENAME=noble\nID=ubuntu\n'
                     'ID_LIKE=debian\nUBUNTU_CODENAME=noble\n', "trixie/sid\n", "Ubuntu 24.04"),
}


@contextlib.contextmanager
def _release_faked(fleet: MailFleet, host: str, os_release: str, debian_version: str
                   ) -> Iterator[None]:
    """The host says it runs another release (its os-release files replaced) until the end."""
    keep = "/root/.mailfleet-release-kept"
    fleet.lab.exec(host, ["sh", "-c", f"mkdir -p {keep} && cp -a /etc/os-release "
                                      f"/etc/debian_version {keep}/"])
    try:
        fleet.lab.exec(host, ["sh", "-c", "rm -f /etc/os-release && cat > /etc/os-release"],
                       input=os_release.encode())
        fleet.lab.exec(host, ["sh", "-c", "cat > /etc/debian_version"],
                       input=debian_version.encode())
        yield
    finally:
        fleet.lab.exec(host, ["sh", "-c", f"rm -f /etc/os-release && cp -a {keep}/os-release "
                                          f"{keep}/debian_version /etc/ && rm -r {keep}"])


@pytest.mark.parametrize("release", sorted(UNSUPPORTED_RELEASES))
def test_a_host_on_an_unsupported_release_stops_the_run_before_any_host_changes(
    mail_fleet: MailFleet, release: str
) -> None:
    os_release, debian_version, says = UNSUPPORTED_RELEASES[release]
    host = mail_fleet.hosts[-1].name
    before = {h.name: _file_sha256(mail_fleet, h.name, "/etc/dovecot/dovecot.conf")
              for h in mail_fleet.hosts}
    with _release_faked(mail_fleet, host, os_release, debian_version):
        run = mail_fleet.playbook(playbook="playbooks/mail.yml")
    assert run.returncode != 0
    assert f"{host} runs {says}" in run.output, run.output[-4000:]
    assert "support Debian 12 (bookworm) and Debian 13 (trixie) only" in run.output, (
        run.output[-4000:])
    assert "Deploy the mail stack (certificate" not in run.output.split("PLAY RECAP")[0]
    assert run.changed() == 0
    assert before == {h.name: _file_sha256(mail_fleet, h.name, "/etc/dovecot/dovecot.conf")
                      for h in mail_fleet.hosts}


# -- a config that does not validate is never installed -------------------------------------


@pytest.mark.parametrize(
    ("bad_vars", "path", "complaint"),
    [
        (
            {"dovecot_settings": {"not_a_dovecot_setting": "1"}},
            "/etc/dovecot/dovecot.conf",
            "Unknown setting",
        ),
        (
            {"postfix_main_cf": {"not_a_postfix_parameter": "1"}},
            "/etc/postfix/main.cf",
            "unused parameter",
        ),
        (
            {
                "postfix_master_cf_services": [
                    {"name": "broken", "type": "inet", "command": "smtpd", "private": "maybe"}
                ]
            },
            "/etc/postfix/master.cf",
            "master.cf",
        ),
    ],
    ids=["dovecot.conf", "main.cf", "master.cf"],
)
def test_a_config_that_does_not_validate_is_not_installed_and_daemons_keep_serving(
    mail_fleet: MailFleet, bad_vars: dict[str, object], path: str, complaint: str
) -> None:
    host = mail_fleet.hosts[0].name
    before = _file_sha256(mail_fleet, host, path)
    run = mail_fleet.playbook("--limit", host, extra_vars=bad_vars)
    assert run.returncode != 0, run.output[-4000:]
    assert complaint in run.output, run.output[-4000:]
    assert _file_sha256(mail_fleet, host, path) == before
    # Both daemons still serve: an IMAPS login and a message accepted over SMTP.
    deliver(mail_fleet, host)


# -- certificate replacement --------------------------------------------------------------


def _served_fingerprint(fleet: MailFleet, host: str, port: int) -> str:
    h = fleet.host(host)
    sock = (
        _starttls_socket(h.address, port)
        if port in (25, 587)
        else socket.create_connection((h.address, port), timeout=10)
    )
    with fleet.tls_context().wrap_socket(sock, server_hostname=h.fqdn) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return hashlib.sha256(der).hexdigest()


def _file_fingerprint(fleet: MailFleet, host: str) -> str:
    pem = fleet.lab.exec(host, ["cat", "/etc/ssl/mailfleet/cert.pem"]).stdout.decode()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@contextlib.contextmanager
def _idle_session(fleet: MailFleet, host: str) -> Iterator[imaplib.IMAP4_SSL]:
    """An IMAPS session of alice in IDLE on INBOX (Python 3.11's imaplib has no idle())."""
    user = fleet.user(host)
    imap = fleet.imaps(host)
    imap.login(user.address, user.password)
    imap.select("INBOX")
    tag = imap._new_tag()  # imaplib has no public IDLE before 3.14
    imap.send(tag + b" IDLE\r\n")
    assert imap.readline().startswith(b"+"), "server did not enter IDLE"
    try:
        yield imap
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.send(b"DONE\r\n")
            imap.shutdown()


def _wait_exists(imap: imaplib.IMAP4_SSL, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        imap.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            line = imap.readline()
        except TimeoutError:
            break
        if not line:
            pytest.fail("the IDLE session was closed")
        if line.endswith(b"EXISTS\r\n"):
            return line
    pytest.fail(f"no EXISTS on the IDLE session within {timeout:.0f} s")


def test_a_replaced_certificate_is_served_after_reload_and_idle_survives(
    mail_fleet: MailFleet,
) -> None:
    host = mail_fleet.hosts[0].name
    ports = (993, 465, 587)
    old = {port: _served_fingerprint(mail_fleet, host, port) for port in ports}
    assert set(old.values()) == {_file_fingerprint(mail_fleet, host)}
    with _idle_session(mail_fleet, host) as idle:
        # Renew now: every certificate is "due" when 400 days must be left.
        run = mail_fleet.playbook("--limit", host, extra_vars={"mail_tls_renew_days_left": 400})
        assert run.returncode == 0, run.output[-6000:]
        assert "Reload dovecot" in run.output and "Reload postfix" in run.output
        assert "Restart dovecot" not in run.output and "Restart postfix" not in run.output
        new_file = _file_fingerprint(mail_fleet, host)
        assert new_file not in old.values()
        for port in ports:
            assert _served_fingerprint(mail_fleet, host, port) == new_file, port
        # The session opened before the reload still gets news.
        user = mail_fleet.user(host)
        with smtplib.SMTP(mail_fleet.host(host).address, 25, timeout=20) as smtp:
            smtp.ehlo("client.lab.test")
            smtp.send_message(_message("tester@example9.test", user.address, "after reload"))
        assert b"EXISTS" in _wait_exists(idle, 60)


# -- the role refuses a certificate that does not fit --------------------------------------


def _provided_files(tmp_path: Path, name: str, days: int) -> dict[str, object]:
    """A self-signed certificate for `name`, valid `days` days, and its key."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {
        "mail_tls_source": "provided",
        "mail_tls_provided_cert_src": str(cert_path),
        "mail_tls_provided_key_src": str(key_path),
    }


@pytest.mark.parametrize(
    ("name", "days", "complaint"),
    [("wrong.lab.test", 365, "but not mx"), (None, 5, "less than")],
    ids=["other-name", "expires-soon"],
)
def test_a_certificate_that_does_not_fit_is_refused_and_nothing_installed(
    mail_fleet: MailFleet, tmp_path: Path, name: str | None, days: int, complaint: str
) -> None:
    h = mail_fleet.hosts[0]
    before = {
        path: _file_sha256(mail_fleet, h.name, path)
        for path in ("/etc/ssl/mailfleet/cert.pem", "/etc/ssl/mailfleet/private/privkey.pem")
    }
    run = mail_fleet.playbook(
        "--limit", h.name, extra_vars=_provided_files(tmp_path, name or h.fqdn, days)
    )
    assert run.returncode != 0
    assert "mail_tls refuses the certificate" in run.output, run.output[-4000:]
    assert complaint in run.output, run.output[-4000:]
    assert "Nothing was installed" in run.output
    assert {path: _file_sha256(mail_fleet, h.name, path) for path in before} == before
