"""Login guessing as the converged fleet meets it: an address that fails ten logins is
refused on every login port of that host (IMAPS, submission, submissions, ManageSieve)
until its ban ends, by fail2ban's nftables
rule inside the host; the allow-listed monitor (the controller) is never banned.

The guesser is mx3, another lab host; the bans it gets are the lab's short ones
(inventory/lab: 30 s), so the test also sees them end by themselves."""

from __future__ import annotations

import imaplib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import MailFleet

pytestmark = pytest.mark.lab

GUESSES = 10
BAN_SECONDS = 30

# Runs on the guessing host: GUESSES wrong passwords at once against one service,
# then, every half second, whether each login port still answers.
GUESSER = r"""
import base64, imaplib, json, smtplib, socket, ssl, sys, time
from concurrent.futures import ThreadPoolExecutor
target, service, user, guesses = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def sieve_reply(reader):
    while True:
        line = reader.readline()
        if not line:
            raise ConnectionError("ManageSieve closed the connection")
        if line.startswith((b"OK", b"NO", b"BYE")):
            return line

def sieve_login(i):
    with socket.create_connection((target, 4190), timeout=20) as raw:
        sieve_reply(raw.makefile("rb"))
        raw.sendall(b"STARTTLS\r\n")
        sieve_reply(raw.makefile("rb"))
        with ctx.wrap_socket(raw) as tls:
            reader = tls.makefile("rb")
            sieve_reply(reader)
            cred = base64.b64encode(f"\0{user}\0wrong-{i}".encode()).decode()
            tls.sendall(f'AUTHENTICATE "PLAIN" "{cred}"\r\n'.encode())
            line = sieve_reply(reader)
    return "accepted?!" if line.startswith(b"OK") else line.decode()[:60]

def guess(i):
    try:
        if service == "sieve":
            return sieve_login(i)
        if service == "imap":
            imap = imaplib.IMAP4_SSL(target, 993, ssl_context=ctx, timeout=20)
            try:
                imap.login(user, f"wrong-{i}")
            finally:
                imap.shutdown()
        else:
            with smtplib.SMTP(target, 587, timeout=20) as smtp:
                smtp.starttls(context=ctx)
                smtp.login(user, f"wrong-{i}")
    except (imaplib.IMAP4.error, smtplib.SMTPException, OSError) as exc:
        return str(exc)[:60]
    return "accepted?!"

with ThreadPoolExecutor(guesses) as pool:
    answers = list(pool.map(guess, range(guesses)))

def answers_on(port):
    try:
        socket.create_connection((target, port), timeout=3).close()
        return True
    except OSError:
        return False

PORTS = (993, 587, 465, 4190)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and any(answers_on(p) for p in PORTS):
    time.sleep(0.5)
print(json.dumps({"answers": answers, "open": {p: answers_on(p) for p in PORTS}}))
"""


def _guess(fleet: MailFleet, guesser: str, target: str, service: str) -> dict[str, object]:
    user = fleet.user(target).address
    run = fleet.lab.exec(
        guesser, ["python3", "-", fleet.host(target).address, service, user, str(GUESSES)],
        input=GUESSER.encode(), timeout=120)
    result: dict[str, object] = json.loads(run.stdout.decode().strip().splitlines()[-1])
    return result


def _open_from(fleet: MailFleet, guesser: str, target: str) -> bool:
    """Whether ``guesser`` reaches IMAPS and ManageSieve on ``target`` again."""
    address = fleet.host(target).address
    probe = (f"import socket\nfor port in (993, 4190):\n"
             f"    socket.create_connection(('{address}', port), timeout=3).close()")
    return fleet.lab.exec(guesser, ["python3", "-c", probe], check=False).returncode == 0


def _monitor_fails_logins(fleet: MailFleet, host: str) -> None:
    """The controller's own wrong logins, as many as the guesser's and more, at once:
    allow-listed, they must count for nothing."""
    user = fleet.user(host)

    def wrong(i: int) -> None:
        imap = fleet.imaps(host)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(user.address, f"monitor-wrong-{i}")
        imap.shutdown()

    with ThreadPoolExecutor(GUESSES + 2) as pool:
        list(pool.map(wrong, range(GUESSES + 2)))


def test_guessing_bans_the_address_on_every_login_port_until_the_ban_ends(
    mail_fleet: MailFleet,
) -> None:
    # mx2 (Debian 13, Dovecot 2.4's log format) is guessed at over IMAP, mx1
    # (Debian 12) over SMTP AUTH on 587, both by mx3: both jails, both releases;
    # and mx3 over ManageSieve, by mx1.
    attacks = (("mx3", "mx2", "imap", "mailfleet-dovecot"),
               ("mx3", "mx1", "smtp", "mailfleet-postfix-sasl"),
               ("mx1", "mx3", "sieve", "mailfleet-dovecot"))
    with ThreadPoolExecutor(len(attacks) + 1) as pool:
        futures = [pool.submit(_guess, mail_fleet, guesser, target, service)
                   for guesser, target, service, _ in attacks]
        monitor = pool.submit(_monitor_fails_logins, mail_fleet, "mx2")
        results = [future.result() for future in futures]
        monitor.result()
    banned_at = time.monotonic()
    for (guesser, target, service, jail), result in zip(attacks, results, strict=True):
        assert "accepted?!" not in result["answers"], result  # type: ignore[operator]
        assert result["open"] == {"993": False, "587": False, "465": False, "4190": False}, (
            f"{guesser} still reaches {target} after {GUESSES} failed {service} logins: {result}")
        status = mail_fleet.lab.exec(target, ["fail2ban-client", "status", jail]).stdout.decode()
        assert mail_fleet.host(guesser).address in status, f"{target} {jail}: {status}"
    # the monitor's own failed logins (above, in parallel) counted for nothing: it
    # still logs in on the host that bans mx3
    imap = mail_fleet.imaps("mx2")
    imap.login(mail_fleet.user("mx2").address, mail_fleet.user("mx2").password)
    imap.logout()
    # the ban ends by itself
    deadline = banned_at + BAN_SECONDS + 30
    while not all(_open_from(mail_fleet, guesser, target) for guesser, target, _, _ in attacks):
        assert time.monotonic() < deadline, "the bans did not end"
        time.sleep(1)
