"""Sync latency against the lab fleet deployed by the roles (real Postfix, Dovecot, DNS).

The probe's numbers are checked against the servers' own logs, delays injected
into Postfix's queue must show up (or time out naming the step), and 100 runs,
some killed half-way, must leave no probe message behind.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailfleet.checks import sync
from mailfleet.checks.result import ProbeResult
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.targets import load_inventory
from mailfleet.lab.fleet import Lab

pytestmark = pytest.mark.lab

POSTFIX_LOG = "/var/log/postfix.log"
DOVECOT_INFO_LOG = "/var/log/dovecot-info.log"


@pytest.fixture(scope="module")
def targets(mail_fleet: Any, lab: Lab) -> dict[str, Target]:
    lab.require_up()
    hosts = load_inventory([lab.config.inventory_dir])
    found = {h.name: h.target for h in hosts}
    assert all(t.credentials is not None for t in found.values()), "lab hosts need a probe account"
    return found


def _sh(lab: Lab, host: str, script: str) -> str:
    proc = lab.exec(host, ["sh", "-c", script], check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode(errors="replace")


def probe_messages(target: Target) -> list[int]:
    """UIDs of probe messages in the probe account's INBOX, straight from IMAP."""
    client = sync.open_imap(target, ProbeOptions(), Deadline(15))
    try:
        client.select(sync.FOLDER)
        return sync.find_tagged(client)
    finally:
        sync._close(client)


@pytest.fixture
def no_leftovers(targets: dict[str, Target]) -> Iterator[None]:
    yield
    # Every test leaves the probe mailboxes as it found them: empty of probe mail.
    deadline = time.monotonic() + 20
    while True:
        left = {name: probe_messages(t) for name, t in targets.items()}
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not any(left.values()), f"probe messages left behind: {left}"


def _dovecot_time(line: str) -> float:
    stamp = line.split(" lmtp(", 1)[0]
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
    return parsed.replace(tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize("host", ["mx1", "mx2"])  # Debian 12 (Dovecot 2.3), 13 (2.4)
def test_local_delivery_agrees_with_the_servers_logs(
    lab: Lab, targets: dict[str, Target], no_leftovers: None, host: str
) -> None:
    target = targets[host]
    assert target.credentials is not None
    user = target.credentials.user
    results = [sync.probe(target, ProbeOptions(), Deadline(20)) for _ in range(3)]
    for r in results:
        assert r.success, r.error
        assert r.values["method"] == "idle"
        assert 0 < r.values["client_latency_seconds"] < 2
    postfix = _sh(lab, host, f"cat {POSTFIX_LOG}")
    dovecot = _sh(lab, host, f"cat {DOVECOT_INFO_LOG}")
    for r in results:
        latency = r.values["delivery_latency_seconds"]
        # Postfix: the LMTP delivery of this queue id. Its delay= starts at MAIL FROM and
        # delays=a/b/c/d splits it: a is the SMTP transaction (the probe's clock starts
        # at its end, the 250 after DATA), b/c/d queue manager -> LMTP done. So the
        # probe's latency is delay - a, to the log's resolution (two values printed
        # to 10 ms each).
        sent = re.search(
            rf"{r.values['queue_id']}: to=<{re.escape(user)}>, "
            r"relay=\S+\[private/dovecot-lmtp\], delay=([0-9.]+), delays=([0-9.]+)/"
            r".*status=sent",
            postfix,
        )
        assert sent, f"no LMTP delivery of {r.values['queue_id']} in {POSTFIX_LOG}"
        queued_to_sent = float(sent.group(1)) - float(sent.group(2))
        assert abs(latency - queued_to_sent) <= 0.020 + 0.010, (latency, sent.group(0))
        # Dovecot: when LMTP saved it (microsecond timestamps) vs when the probe saw it.
        # (LMTP logs "saved mail to INBOX"; with Sieve at delivery, as the roles
        # deploy it, "sieve: ... stored mail into mailbox 'INBOX'")
        saved = [ln for ln in dovecot.splitlines()
                 if f"msgid={r.values['message_id']}" in ln
                 and ("saved mail to INBOX" in ln or "stored mail into mailbox 'INBOX'" in ln)]
        assert len(saved) == 1, saved
        assert abs(r.values["visible_at"] - _dovecot_time(saved[0])) <= 0.020
        # The push (IDLE) comes after visibility: Dovecot batches notifications.
        assert r.values["push_latency_seconds"] >= latency


def _postconf(lab: Lab, host: str, *settings: str) -> None:
    _sh(lab, host, "postconf " + " ".join(settings) + " && postfix reload >/dev/null 2>&1")


def test_a_queue_delay_shows_up_in_the_latency(
    lab: Lab, targets: dict[str, Target], no_leftovers: None
) -> None:
    target = targets["mx2"]
    hold = 2.0
    result: list[ProbeResult] = []
    _postconf(lab, "mx2", "-e", "defer_transports=lmtp")
    try:
        worker = threading.Thread(
            target=lambda: result.append(sync.probe_pair(target, target, ProbeOptions(),
                                                         Deadline(20)))
        )
        worker.start()
        time.sleep(hold)
    finally:
        _postconf(lab, "mx2", "-X", "defer_transports")
        _sh(lab, "mx2", "postqueue -f")
    worker.join(timeout=30)
    assert result and result[0].success, result
    assert result[0].values["delivery_latency_seconds"] >= hold


def test_mail_that_never_arrives_names_the_stalled_step(
    lab: Lab, targets: dict[str, Target], no_leftovers: None
) -> None:
    target = targets["mx2"]
    _postconf(lab, "mx2", "-e", "defer_transports=lmtp")
    try:
        started = time.monotonic()
        result = sync.probe_pair(target, target, ProbeOptions(), Deadline(4))
        elapsed = time.monotonic() - started
    finally:
        _postconf(lab, "mx2", "-X", "defer_transports")
        _sh(lab, "mx2", "postqueue -f")
    assert not result.success
    assert elapsed < 6
    assert result.error == "message accepted but not delivered to mx2 within 4.0 s"
    # The message arrives after the flush; the next run removes it (its run is over).
    time.sleep(2)
    cleanup = sync.probe_pair(target, target, ProbeOptions(), Deadline(20))
    assert cleanup.success, cleanup.error
    assert cleanup.values["leftovers_removed"] == 1


def test_submission_refused_names_the_step(targets: dict[str, Target]) -> None:
    good = targets["mx1"]
    assert good.credentials is not None
    from mailfleet.checks.target import Credentials, Secret

    wrong = Target(
        name=good.name, address=good.address, mail_hostname=good.mail_hostname,
        ca_bundle=good.ca_bundle,
        credentials=Credentials(good.credentials.user, password=Secret("wrong password")),
    )
    result = sync.probe_pair(wrong, good, ProbeOptions(), Deadline(10))
    assert not result.success
    assert result.error.startswith("submission on mx1")
    assert "login refused: 535" in result.error
    assert "wrong password" not in result.error


def test_mesh_pair_goes_over_the_mx_path(
    lab: Lab, targets: dict[str, Target], no_leftovers: None
) -> None:
    result = sync.probe_pair(targets["mx1"], targets["mx3"], ProbeOptions(), Deadline(20))
    assert result.success, result.error
    assert result.target == "mx3"
    assert (result.values["source"], result.values["destination"]) == ("mx1", "mx3")
    log = _sh(lab, "mx1", f"grep {result.values['queue_id']} {POSTFIX_LOG}")
    # Relayed by mx1's Postfix to the MX of example3.test, found through the lab DNS.
    assert re.search(r"relay=mx3\.lab\.test\[10\.77\.\d+\.13\]:25, .*status=sent", log), log


_KILLABLE = """
import json, os, sys
from mailfleet.checks import sync
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
spec = json.loads(os.environ["PROBE_TARGET"])
t = Target(name=spec["name"], address=spec["address"], mail_hostname=spec["mail_hostname"],
           ca_bundle=spec["ca_bundle"], credentials=Credentials(spec["user"],
           password=Secret(os.environ["PROBE_PASSWORD"])))
r = sync.probe(t, ProbeOptions(), Deadline(float(sys.argv[1])))
print(r.success)
"""


def test_hundred_runs_some_killed_leave_no_probe_messages(
    targets: dict[str, Target], no_leftovers: None
) -> None:
    target = targets["mx3"]
    assert target.credentials is not None and target.credentials.password is not None
    spec = {"name": target.name, "address": target.address, "mail_hostname": target.mail_hostname,
            "ca_bundle": str(target.ca_bundle), "user": target.credentials.user}
    env = {**os.environ, "PROBE_TARGET": json.dumps(spec),
           "PROBE_PASSWORD": target.credentials.password.reveal()}
    rng = random.Random(6)
    killed = ok = 0
    for run in range(100):
        if run % 5 == 4:  # every fifth run is killed at a random moment
            proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, "3"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 1.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait(timeout=10)
        else:
            result = sync.probe_pair(target, target, ProbeOptions(), Deadline(10))
            ok += result.success
    assert killed >= 10
    assert ok == 80
    time.sleep(4)  # past the killed runs' deadlines (3 s) and grace: now stale
    final = sync.probe_pair(target, target, ProbeOptions(), Deadline(10))
    assert final.success, final.error
    assert probe_messages(target) == []
