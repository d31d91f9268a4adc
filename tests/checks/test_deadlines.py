"""Every probe returns within its deadline against hostile servers, with a clear error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailfleet.checks import PROBES, Credentials, Deadline, ProbeOptions, Secret, Status, Target
from mailfleet.checks.result import ProbeResult
from tests.checks.servers import (
    LoopbackServer,
    SilentDns,
    closed_port,
    garbage,
    stalled_tls,
    tarpit,
    trickle,
)

BUDGET = 1.5
SLACK = 0.5
ACCOUNT = Credentials(user="probe@example1.test", password=Secret("s3cret-pw"))


def target_on(port: int) -> Target:
    return Target(
        name="mx1", address="127.0.0.1", mail_hostname="mx1.lab.test",
        domains=("example1.test",),
        ports={s: port for s in ("imaps", "imap", "smtp", "submission", "submissions")},
        credentials=ACCOUNT,
    )


def timed(check: str, port: int, options: ProbeOptions) -> tuple[ProbeResult, float]:
    start = time.monotonic()
    result = PROBES[check](target_on(port), options, Deadline(BUDGET))
    elapsed = time.monotonic() - start
    assert elapsed < BUDGET + SLACK, f"{check} took {elapsed:.2f}s: {result.error}"
    assert result.phases["total"] < BUDGET + SLACK
    return result, elapsed


PLAIN_IMAP = ProbeOptions(imap_service="imap")
CASES: list[tuple[str, ProbeOptions, str]] = [
    ("tls", ProbeOptions(), "TLS handshake did not finish within 1.5 s"),
    ("imap_login", ProbeOptions(), "TLS handshake did not finish within 1.5 s"),
    ("imap_login", PLAIN_IMAP, "no greeting within 1.5 s"),
    ("quota", PLAIN_IMAP, "no greeting within 1.5 s"),
    ("smtp", ProbeOptions(), "no greeting within 1.5 s"),
    ("tls", ProbeOptions(tls_service="smtp"), "no greeting within 1.5 s"),
]


@pytest.mark.parametrize(("check", "options", "error"), CASES)
def test_tarpit_that_accepts_and_never_speaks(check: str, options: ProbeOptions,
                                              error: str) -> None:
    with LoopbackServer(tarpit) as server:
        result, _ = timed(check, server.port, options)
    assert result.status == Status.CRITICAL and not result.success
    assert result.error == error


@pytest.mark.parametrize(("check", "options"), [(c, o) for c, o, _ in CASES])
def test_trickling_server_cannot_stretch_the_deadline(check: str, options: ProbeOptions) -> None:
    with LoopbackServer(trickle) as server:
        result, _ = timed(check, server.port, options)
    assert not result.success
    assert "within 1.5 s" in result.error or "TLS handshake failed" in result.error


def test_port_probe_on_a_tarpit_succeeds_quickly() -> None:
    with LoopbackServer(tarpit) as server:
        result, elapsed = timed("port", server.port, ProbeOptions())
    assert result.status == Status.OK and elapsed < 0.5


@pytest.mark.parametrize(("check", "options", "error"), [
    ("imap_login", PLAIN_IMAP, "not an IMAP greeting: 'HTTP/1.1 400 Bad Request'"),
    ("smtp", ProbeOptions(), "not an SMTP reply to greeting: 'HTTP/1.1 400 Bad Request'"),
    ("tls", ProbeOptions(), "TLS handshake failed: "),
])
def test_garbage_greeting(check: str, options: ProbeOptions, error: str) -> None:
    with LoopbackServer(garbage(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as server:
        result, _ = timed(check, server.port, options)
    assert result.status == Status.CRITICAL
    assert result.error.startswith(error)


def test_binary_garbage_without_line_end_is_bounded() -> None:
    with LoopbackServer(garbage(b"\x00\xff" * 40000)) as server:
        result, _ = timed("imap_login", server.port, PLAIN_IMAP)
    assert result.error == "greeting longer than 65536 bytes without a line end"


@pytest.mark.parametrize("check", ["tls", "imap_login", "smtp"])
def test_tls_server_that_stalls_mid_handshake(check: str) -> None:
    options = ProbeOptions(smtp_service="submissions")
    with LoopbackServer(stalled_tls) as server:
        result, _ = timed(check, server.port, options)
    assert result.error == "TLS handshake did not finish within 1.5 s"


@pytest.mark.parametrize("check", ["port", "tls", "imap_login", "smtp", "quota"])
def test_port_closed(check: str) -> None:
    port = closed_port()
    result, elapsed = timed(check, port, ProbeOptions())
    assert result.error == f"127.0.0.1:{port}: connection refused"
    assert elapsed < 0.5


def test_dns_server_that_never_answers() -> None:
    with SilentDns() as silent:
        options = ProbeOptions(dns_resolvers=(f"127.0.0.1:{silent.port}",), dns_tlsa_services=())
        result, _ = timed("dns", 53, options)
        assert silent.queries >= 1
    assert result.status == Status.CRITICAL
    assert f"127.0.0.1:{silent.port}: no answer" in result.error
    assert result.error.startswith("no DNS answer for MX example1.test")


def test_missing_account_is_unknown_and_sends_nothing() -> None:
    target = Target(name="mx1", address="127.0.0.1", ports={"imaps": closed_port()})
    result = PROBES["imap_login"](target, ProbeOptions(), Deadline(BUDGET))
    assert result.status == Status.UNKNOWN
    assert result.error == "no probe account for mx1 (set mailfleet_probe_user)"


def test_token_file_that_cannot_be_read(tmp_path: Path) -> None:
    creds = Credentials(user="probe", token_file=tmp_path / "missing-token")
    target = Target(name="mx1", address="127.0.0.1", credentials=creds)
    result = PROBES["imap_login"](target, ProbeOptions(mechanism="XOAUTH2"), Deadline(BUDGET))
    assert result.status == Status.UNKNOWN
    assert result.error.startswith(f"cannot read token file {tmp_path / 'missing-token'}")


def test_a_probe_bug_becomes_unknown_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailfleet.checks import port

    def broken(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(port, "connect", broken)
    result = port.probe(target_on(1), ProbeOptions(), Deadline(BUDGET))
    assert result.status == Status.UNKNOWN and result.error == "probe error: KeyError: 'boom'"


Probe = Callable[[Target, ProbeOptions, Deadline], ProbeResult]


def test_long_sasl_response_goes_after_334_not_on_the_auth_line(tmp_path: Path) -> None:
    """roundcube#8623: a 3 KB JWT on the AUTH line gets '500 5.5.2 Line too long'."""
    from tests.checks.certs import make_ca, make_leaf, write_bundle, write_chain
    from tests.checks.servers import LineLimitedSmtp, tls_server_context

    ca = make_ca("smtp test CA")
    cert, key = write_chain(tmp_path, "leaf", make_leaf(ca, ["mx1.lab.test"]))
    server_logic = LineLimitedSmtp(tls_server_context(cert, key))
    with LoopbackServer(server_logic) as server:
        for token_size, mechanism in ((3000, "OAUTHBEARER"), (100, "OAUTHBEARER"), (0, "PLAIN")):
            creds = Credentials(user="probe@example1.test", password=Secret("pw-pw-pw"),
                                token=Secret("t" * token_size) if token_size else None)
            target = Target(name="mx1", address="127.0.0.1", mail_hostname="mx1.lab.test",
                            ports={"submission": server.port}, credentials=creds,
                            ca_bundle=write_bundle(tmp_path, "ca", ca))
            options = ProbeOptions(smtp_service="submission", smtp_auth=True, mechanism=mechanism)
            result = PROBES["smtp"](target, options, Deadline(5))
            assert result.status == Status.OK, (token_size, result.error)
            assert result.values["logged_in"] is True
    assert server_logic.longest <= LineLimitedSmtp.LIMIT


def imap_starttls_injector(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(5)
    conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n")
    conn.recv(1024)
    conn.sendall(b"mf1 OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n")
    stop.wait(5)


def test_starttls_response_injection_is_refused() -> None:
    """Bytes pipelined after the STARTTLS reply would be read as if they came over TLS."""
    with LoopbackServer(imap_starttls_injector) as server:
        result, _ = timed("imap_login", server.port, PLAIN_IMAP)
    assert result.error == "server sent data before the TLS handshake (STARTTLS injection?)"


# -- the sync probe goes through the same layer: the same bounds, its own "where" ----------
@pytest.mark.parametrize(("handler", "words"), [
    (tarpit, "TLS handshake did not finish within 1.5 s"),
    (stalled_tls, "TLS handshake did not finish within 1.5 s"),
    (garbage(b"HTTP/1.1 400 Bad Request\r\n\r\n"), "TLS handshake failed: "),
], ids=["tarpit", "stalled_tls", "garbage"])
def test_the_sync_probe_on_a_hostile_imaps_port(handler: Callable[..., None],
                                                words: str) -> None:
    with LoopbackServer(handler) as server:
        result, _ = timed("sync", server.port, ProbeOptions())
    assert result.status == Status.CRITICAL
    assert result.error.startswith(f"IMAP 127.0.0.1:{server.port}: {words}")


def test_the_sync_probe_on_a_trickling_server() -> None:
    with LoopbackServer(trickle) as server:
        result, _ = timed("sync", server.port, ProbeOptions())
    assert not result.success
    assert "within 1.5 s" in result.error or "TLS handshake failed" in result.error


def test_starttls_injection_is_refused_by_the_sync_probe() -> None:
    with LoopbackServer(imap_starttls_injector) as server:
        result, _ = timed("sync", server.port, PLAIN_IMAP)
    assert result.error == (f"IMAP 127.0.0.1:{server.port}: server sent data before the TLS "
                            "handshake (STARTTLS injection?)")


def test_smtp_starttls_injection_is_refused() -> None:
    def injector(conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(5)
        reader = conn.makefile("rb")
        conn.sendall(b"220 mx1.lab.test ESMTP\r\n")
        reader.readline()
        conn.sendall(b"250-mx1.lab.test\r\n250 STARTTLS\r\n")
        reader.readline()
        conn.sendall(b"220 go ahead\r\n250 AUTH PLAIN injected\r\n")
        stop.wait(5)
        reader.close()

    with LoopbackServer(injector) as server:
        result, _ = timed("smtp", server.port, ProbeOptions())
    assert result.error == "server sent data before the TLS handshake (STARTTLS injection?)"


def test_sync_probe_port_closed() -> None:
    port = closed_port()
    result, elapsed = timed("sync", port, ProbeOptions())
    assert result.error == f"IMAP 127.0.0.1:{port}: connection refused"
    assert elapsed < 0.5
