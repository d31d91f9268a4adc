"""postscreen on port 25 as clients elsewhere on the network meet it: a throwaway
container at a lab address the lab's block list lists is refused, one the list answers
with a "query refused" code is not (and that answer is in the log), one that talks
before the greeting is refused, and the fleet's hosts deliver to each other."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest

from mailfleet.lab.dns import DNSBL_ZONE, dnsbl_addresses
from mailfleet.lab.podman import podman
from tests.integration.conftest import MailFleet
from tests.integration.test_mail_auth import _message
from tests.integration.test_mail_stack import wait_for_subject

pytestmark = pytest.mark.lab

# What the client runs (the lab image's python3): one SMTP session up to RCPT;
# "early" sends EHLO as soon as the connection is up, before the greeting.
CLIENT = r"""
import socket, sys
host, rcpt, early = sys.argv[1], sys.argv[2], sys.argv[3] == "early"
s = socket.create_connection((host, 25), timeout=30)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode(errors="replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return " | ".join(lines)
def say(cmd):
    s.sendall(cmd.encode() + b"\r\n")
    return reply()
if early:
    # postscreen's teaser "220-" line runs on into its EHLO reply: one multi-line reply
    s.sendall(b"EHLO client.outside.test\r\n")
    print("EHLO", reply())
else:
    print("GREETING", reply())
    print("EHLO", say("EHLO client.outside.test"))
print("MAIL", say("MAIL FROM:<someone@outside.test>"))
print("RCPT", say("RCPT TO:<%s>" % rcpt))
say("QUIT")
"""


CLIENT_ADDRESSES = {"listed": 250, "refused": 251, "early": 252}  # subnet + N


@pytest.fixture(scope="module")
def clients(mail_fleet: MailFleet) -> Iterator[dict[str, tuple[str, str]]]:
    """A throwaway container per client address, started (and its network set up) before
    any session is timed: kind -> (container, address). Each sleeps at most 10 minutes."""
    cfg = mail_fleet.lab.config
    image = mail_fleet.hosts[0].debian.image
    started: dict[str, tuple[str, str]] = {}
    try:
        for kind, host_part in CLIENT_ADDRESSES.items():
            address = str(cfg.subnet.network_address + host_part)
            name = f"{cfg.name}-smtp-client-{kind}"
            podman(cfg, ["rm", "-f", name], check=False)
            podman(cfg, ["run", "-d", "--rm", "--name", name, "--label", cfg.label,
                         "--network", cfg.network, "--ip", address, "--dns", cfg.gateway,
                         "--no-hosts", image, "sleep", "600"])
            started[kind] = (name, address)
        yield started
    finally:
        for name, _ in started.values():
            podman(cfg, ["rm", "-f", "-t", "0", name], check=False)


def _wait_dns_prompt(fleet: MailFleet, host: str, timeout: float = 30) -> None:
    """postscreen waits postscreen_greet_wait (6 s) for the block list's answer, then lets
    the client through: a lab DNS that does not answer ``host`` within half a second (the
    controller under load) would make the verdict mean nothing. Asked before each session."""
    listed, _ = dnsbl_addresses(fleet.lab.config)
    name = ".".join(reversed(listed.split("."))) + f".{DNSBL_ZONE}"
    probe = ("import socket, time; t = time.monotonic(); "
             f"socket.gethostbyname({name!r}); print(time.monotonic() - t)")
    deadline = time.monotonic() + timeout
    while True:
        out = fleet.lab.exec(host, ["python3", "-c", probe], check=False).stdout.decode()
        if out.strip() and float(out) < 0.5:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the lab DNS answers {host} slowly ({out.strip() or 'not'} s)")


def _session(fleet: MailFleet, client: tuple[str, str], host: str, rcpt: str,
             early: bool = False) -> dict[str, str]:
    """One SMTP session from a client container; its replies by command."""
    _wait_dns_prompt(fleet, fleet.hosts[0].name)
    proc = podman(fleet.lab.config, ["exec", client[0], "python3", "-c", CLIENT, host, rcpt,
                                     "early" if early else "polite"], check=False, timeout=90)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _log_has(fleet: MailFleet, host: str, pattern: str, timeout: float = 15) -> bool:
    """Postfix's log on ``host`` gets a line matching ``pattern`` (an extended regex)."""
    return fleet.log_line(host, "/var/log/postfix.log", pattern, timeout) is not None


def _re(text: str) -> str:
    return re.escape(text).replace("\\ ", " ")


@pytest.fixture(scope="module")
def receiver(mail_fleet: MailFleet) -> Iterator[tuple[str, str, str]]:
    h = mail_fleet.hosts[0]
    yield h.name, h.address, mail_fleet.user(h.name).address


def test_a_listed_address_is_refused_naming_the_list(
    mail_fleet: MailFleet, clients: dict[str, tuple[str, str]],
    receiver: tuple[str, str, str],
) -> None:
    host, address, rcpt = receiver
    listed, _ = dnsbl_addresses(mail_fleet.lab.config)
    assert clients["listed"][1] == listed
    replies = _session(mail_fleet, clients["listed"], address, rcpt)
    assert replies["RCPT"].startswith("550 5.7.1"), replies
    assert f"client [{listed}] blocked using {DNSBL_ZONE}" in replies["RCPT"], replies
    assert _log_has(mail_fleet, host, _re(f"DNSBL rank 3 for [{listed}]"))


def test_a_query_refused_answer_is_no_listing_and_is_logged(
    mail_fleet: MailFleet, clients: dict[str, tuple[str, str]],
    receiver: tuple[str, str, str],
) -> None:
    host, address, rcpt = receiver
    _, refused = dnsbl_addresses(mail_fleet.lab.config)
    assert clients["refused"][1] == refused
    replies = _session(mail_fleet, clients["refused"], address, rcpt)
    assert replies["RCPT"].startswith("250"), replies
    assert _log_has(mail_fleet, host,
                    _re(f"addr {refused} listed by domain {DNSBL_ZONE} as 127.255.255.254"))


def test_a_client_talking_before_the_greeting_is_refused(
    mail_fleet: MailFleet, clients: dict[str, tuple[str, str]],
    receiver: tuple[str, str, str],
) -> None:
    host, address, rcpt = receiver
    early = clients["early"][1]
    replies = _session(mail_fleet, clients["early"], address, rcpt, early=True)
    assert replies["RCPT"].startswith("5"), replies
    assert _log_has(mail_fleet, host, "PREGREET [0-9]+ after .* from " + _re(f"[{early}]"))


def test_the_fleets_hosts_pass_postscreen_and_deliver(mail_fleet: MailFleet) -> None:
    sender_host, receiver_host = mail_fleet.hosts[1], mail_fleet.hosts[0]
    sender, receiver = mail_fleet.user(sender_host.name), mail_fleet.user(receiver_host.name)
    subject = f"through postscreen {uuid.uuid4()}"
    with mail_fleet.smtps(sender_host.name) as smtp:
        smtp.login(sender.address, sender.password)
        smtp.send_message(_message(sender.address, receiver.address, subject))
    wait_for_subject(mail_fleet, receiver, subject)
    # postscreen saw the host (a new client passes, a known one is waved through)
    assert _log_has(mail_fleet, receiver_host.name,
                    "PASS (NEW|OLD) " + _re(f"[{sender_host.address}]"))
