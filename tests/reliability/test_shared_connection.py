"""``tls`` + ``imap_login`` (+ ``quota``) on one connection (checks.tls_login) give the
results the probes give apart — against a real Dovecot, and against servers that fail
each part.

The metrics, the alert rules and the dashboard read these results by check name and
value key, so "the same" means: same success, status, error words, value keys and
values, phase names.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.localmail import QUOTA_CONFIG, LocalDovecot, start_dovecot
from mailfleet.checks import PROBES, imap, quota, tls, tls_login
from mailfleet.checks.net import Connection
from mailfleet.checks.result import ProbeResult
from mailfleet.checks.target import Credentials, Deadline, Secret
from mailfleet.dashboard.scheduler import Scheduler
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.targets import WatchedHost
from tests.reliability.conftest import GOOD_ADDRESSES, Hostile, mail_host

TIMEOUT = 2.0
REFUSING_ADDRESS = "127.78.2.1"


def comparable(result: ProbeResult) -> dict[str, Any]:
    values = dict(result.values)
    # Computed from the wall clock at the moment of the probe: may differ in the last digit.
    days = values.pop("cert_days_left", None)
    return {
        "check": result.check, "success": result.success, "status": result.status,
        "error": result.error, "values": values, "phases": sorted(result.phases),
        "days_left": round(days) if days is not None else None,
    }


def both_ways(host: WatchedHost,
              with_quota: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shared = tls_login.probe(host.target, host.options, Deadline(TIMEOUT), with_quota)
    apart = [tls.probe(host.target, host.options, Deadline(TIMEOUT)),
             imap.probe(host.target, host.options, Deadline(TIMEOUT))]
    if with_quota:
        apart.append(quota.probe(host.target, host.options, Deadline(TIMEOUT)))
    return [comparable(r) for r in shared], [comparable(r) for r in apart]


QUOTA_ADDRESSES = ["127.78.3.1", "127.78.3.2", "127.78.3.3"]


@pytest.fixture(scope="module")
def quota_dovecot() -> Iterator[LocalDovecot]:
    """A Dovecot whose probe account has a 1 MiB quota."""
    server = start_dovecot(QUOTA_ADDRESSES, extra_config=QUOTA_CONFIG)
    yield server
    server.stop()


def wrong_password(host: WatchedHost) -> WatchedHost:
    creds = Credentials(host.target.credentials.user if host.target.credentials else "x",
                        password=Secret("not-the-password"))
    return dataclasses.replace(host, target=dataclasses.replace(host.target, credentials=creds))


@pytest.fixture(scope="module")
def refusing(dovecot: LocalDovecot) -> Iterator[LocalDovecot]:
    """A Dovecot of its own for the wrong-password cases: after a failed login Dovecot
    delays every login from this client address (auth penalty, up to 15 s), which must
    not slow the suite's shared one."""
    server = start_dovecot([REFUSING_ADDRESS])
    yield server
    server.stop()


def test_against_dovecot_one_connection_gives_both_results(dovecot: LocalDovecot) -> None:
    host = mail_host("good", GOOD_ADDRESSES[0], dovecot, timeout=TIMEOUT)
    shared, apart = both_ways(host)
    assert shared == apart
    cert, login = shared
    assert cert["success"] and login["success"], (cert["error"], login["error"])
    assert cert["values"]["chain_verified"] and cert["values"]["served_certs"]
    assert login["values"]["logged_in"] and "IMAP4REV1" in login["values"]["capabilities"]
    assert cert["phases"] == ["connect", "tls", "total"]
    assert {"connect", "tls", "greeting", "auth", "total"} <= set(login["phases"])


def test_with_a_quota_one_connection_and_one_login_give_all_three_results(
    quota_dovecot: LocalDovecot,
) -> None:
    host = mail_host("q", QUOTA_ADDRESSES[0], quota_dovecot, timeout=TIMEOUT)
    shared, apart = both_ways(host, with_quota=True)
    for r in (*shared, *apart):
        r["values"].pop("used_percent", None)  # rounded from a usage that may move a byte
        r["values"].pop("storage_used_bytes", None)
    assert shared == apart
    cert, login, usage = shared
    assert cert["success"] and login["success"] and usage["success"], usage["error"]
    assert usage["values"]["storage_limit_bytes"] == 1024 * 1024
    assert usage["values"]["logged_in"] and usage["values"]["mechanism"] == "PLAIN"
    assert {"connect", "tls", "greeting", "auth", "quota", "total"} <= set(usage["phases"])
    assert "quota" not in login["phases"]


def test_a_refused_login_fails_only_imap_login(refusing: LocalDovecot) -> None:
    # A refused login is answered after Dovecot's auth_failure_delay (2 s), the next one
    # from this address after its penalty (~6 s): hence the long deadline.
    host = wrong_password(mail_host("h", REFUSING_ADDRESS, refusing, timeout=10.0))
    shared = tls_login.probe(host.target, host.options, Deadline(10.0))
    apart = (tls.probe(host.target, host.options, Deadline(10.0)),
             imap.probe(host.target, host.options, Deadline(10.0)))
    assert [comparable(r) for r in shared] == [comparable(r) for r in apart]
    cert, login = shared
    assert cert.success and cert.values["chain_verified"]
    assert not login.success
    assert login.error == "PLAIN rejected: [AUTHENTICATIONFAILED] Authentication failed."
    assert "auth" in login.phases and not login.values.get("logged_in")


@pytest.mark.parametrize("with_quota", [False, True], ids=["tls+login", "tls+login+quota"])
@pytest.mark.parametrize("case", ["untrusted", "wrong_name", "closed", "imap_garbage",
                                  "no_account"])
def test_each_failure_is_reported_as_the_probes_apart_report_it(
    dovecot: LocalDovecot, hostile: Hostile, case: str, with_quota: bool
) -> None:
    host = mail_host("h", GOOD_ADDRESSES[1], dovecot, timeout=TIMEOUT)
    if case == "untrusted":
        host = mail_host("h", GOOD_ADDRESSES[1], dovecot, timeout=TIMEOUT, ca=hostile.ca)
    elif case == "wrong_name":
        host = dataclasses.replace(host, target=dataclasses.replace(
            host.target, mail_hostname="mail.elsewhere.test"))
    elif case == "closed":
        host = mail_host("h", "127.0.0.1", dovecot, timeout=TIMEOUT,
                         port=hostile.ports["closed"])
    elif case == "imap_garbage":  # good TLS, garbage where IMAP should be
        host = mail_host("h", "127.0.0.1", dovecot, timeout=TIMEOUT,
                         port=hostile.ports["tls_garbage"], ca=hostile.ca)
    elif case == "no_account":
        host = dataclasses.replace(host, target=dataclasses.replace(host.target,
                                                                    credentials=None))
    shared, apart = both_ways(host, with_quota)
    assert shared == apart
    cert, login = shared[:2]
    assert not login["success"] and login["error"]
    if with_quota:  # quota fails where the login it needs failed (without QUOTA here too)
        assert not shared[2]["success"] and shared[2]["error"]
    expect_tls_ok = case in ("imap_garbage", "no_account")
    assert cert["success"] is expect_tls_ok, cert["error"]


def test_a_sweep_opens_one_connection_per_host_for_tls_and_login(
    dovecot: LocalDovecot, quota_dovecot: LocalDovecot, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    lock = threading.Lock()
    open_connection = Connection.open.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Connection], address: str, port: int,
                 deadline: Deadline) -> Connection:
        with lock:
            opened.append(address)
        conn: Connection = open_connection(cls, address, port, deadline)
        return conn

    monkeypatch.setattr(Connection, "open", classmethod(counting))
    hosts = [mail_host(f"good{i}", a, dovecot, ("tls", "port", "imap_login"), TIMEOUT)
             for i, a in enumerate(GOOD_ADDRESSES[:6])]
    hosts.append(mail_host("reversed", GOOD_ADDRESSES[6], dovecot, ("imap_login", "tls"),
                           TIMEOUT))
    # STARTTLS for the login: a different service, so the two run apart as before.
    hosts.append(mail_host("starttls", GOOD_ADDRESSES[7], dovecot, ("tls", "imap_login"),
                           TIMEOUT, imap_service="imap"))
    # quota as well, asked on the same logged-in session
    hosts += [mail_host(f"quota{i}", a, quota_dovecot, ("quota", "port", "imap_login", "tls"),
                        TIMEOUT) for i, a in enumerate(QUOTA_ADDRESSES[1:])]
    store = ResultStore(tmp_path / "r.db")
    sched = Scheduler(lambda: hosts, store, probes=PROBES, interval=60, concurrency=4)
    sweep = sched.sweep()
    assert sweep.probes == 6 * 3 + 2 + 2 + 2 * 4
    latest = {(r.host, r.check): r for r in store.latest()}
    for i in range(6):
        for check in ("tls", "port", "imap_login"):
            assert latest[(f"good{i}", check)].success, latest[(f"good{i}", check)].error
    assert latest[("reversed", "tls")].success and latest[("reversed", "imap_login")].success
    assert latest[("starttls", "tls")].success
    assert "refused" in latest[("starttls", "imap_login")].error
    # One connection per host for tls + imap_login (the port check only connects); the
    # STARTTLS host's login tries its port 143 (closed here) apart from its tls check.
    for i in range(2):
        for check in ("quota", "port", "imap_login", "tls"):
            assert latest[(f"quota{i}", check)].success, latest[(f"quota{i}", check)].error
        assert latest[(f"quota{i}", "quota")].values["storage_limit_bytes"] == 1024 * 1024
    assert sorted(opened) == sorted([*GOOD_ADDRESSES[:7], GOOD_ADDRESSES[7],
                                     GOOD_ADDRESSES[7], *QUOTA_ADDRESSES[1:]])
    stats = sched.stats.snapshot()
    assert stats.probes["tls"] == 10 and stats.probes["imap_login"] == 10
    assert stats.probes["quota"] == 2
    assert stats.errors == {("imap_login", "refused"): 1}
    store.close()
