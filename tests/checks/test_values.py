"""Every probe of the protocol layer, run against real servers on loopback, writes only the
values it declares (``checks.VALUES``), and its declaration reads them back unchanged.

Dovecot is the bench's own (bench/localmail.py, one with a quota); SMTP is the
loopback submission servers the other tests use, the sync probe's delivering
into the real Dovecot. Where Dovecot cannot run here the tests are skipped
(a failure with MAILFLEET_REQUIRE_LAB=1).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.localmail import (
    HOSTNAME,
    QUOTA_CONFIG,
    LocalDovecot,
    dovecot_available,
    start_dovecot,
)
from mailfleet import checks
from mailfleet.checks import PROBES, sync, tls_login
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
from tests.checks.certs import make_ca, make_leaf, write_bundle, write_chain
from tests.checks.servers import LineLimitedSmtp, LoopbackServer, tls_server_context
from tests.sync.mailserver import Submission, append_to_dovecot

ADDRESS = "127.0.0.1"  # where the loopback submission servers listen too
DEADLINE = 20.0


def assert_declared(check: str, result: ProbeResult) -> None:
    declaration = checks.VALUES[check]
    assert result.status == Status.OK, (check, result.error)
    assert set(result.values) <= declaration.names(), (
        check, sorted(set(result.values) - declaration.names()))
    typed = declaration.of(result)
    back = {k: v for k, v in dataclasses.asdict(typed).items() if k in result.values}
    assert back == dict(result.values)


@dataclass(frozen=True)
class Mail:
    dovecot: LocalDovecot
    smtp_port: int  # submission delivering into the Dovecot

    def target(self) -> Target:
        d = self.dovecot
        return Target(
            name="mx1", address=ADDRESS, mail_hostname=HOSTNAME, ca_bundle=d.ca,
            ports={"imaps": d.port, "submission": self.smtp_port},
            credentials=Credentials(d.user, password=Secret(d.password)),
        )


@pytest.fixture(scope="module")
def mail() -> Iterator[Mail]:
    why = dovecot_available()
    if why:
        if os.environ.get("MAILFLEET_REQUIRE_LAB") == "1":
            pytest.fail(f"required but unavailable: {why}")
        pytest.skip(why)
    dovecot = start_dovecot([ADDRESS], extra_config=QUOTA_CONFIG)
    try:
        root = dovecot.root
        ctx = tls_server_context(root / "server.crt", root / "server.key")
        deliver = append_to_dovecot(ADDRESS, dovecot.port, dovecot.ca, dovecot.user,
                                    dovecot.password)
        with LoopbackServer(Submission(ctx, dovecot.user, dovecot.password, deliver)) as smtp:
            yield Mail(dovecot, smtp.port)
    finally:
        dovecot.stop()


@pytest.mark.parametrize("check", ["port", "tls", "imap_login", "quota", "sync"])
def test_a_probe_writes_only_its_declared_values(mail: Mail, check: str) -> None:
    assert_declared(check, PROBES[check](mail.target(), ProbeOptions(), Deadline(DEADLINE)))


def test_a_mesh_pair_writes_only_the_declared_sync_values(mail: Mail) -> None:
    target = mail.target()
    result = sync.probe_pair(target, target, ProbeOptions(), Deadline(DEADLINE))
    assert_declared("sync_mesh", result)
    assert result.values["kind"] == "mesh" and result.values["method"] == "idle"


def test_tls_and_login_on_one_connection_write_their_declared_values(mail: Mail) -> None:
    cert, login = tls_login.probe(mail.target(), ProbeOptions(), Deadline(DEADLINE))
    assert_declared("tls", cert)
    assert_declared("imap_login", login)


def test_smtp_with_a_login_writes_its_declared_values(tmp_path: Path) -> None:
    ca = make_ca("values test CA")
    cert, key = write_chain(tmp_path, "leaf", make_leaf(ca, ["mx1.lab.test"]))
    with LoopbackServer(LineLimitedSmtp(tls_server_context(cert, key))) as server:
        target = Target(name="mx1", address="127.0.0.1", mail_hostname="mx1.lab.test",
                        ports={"submission": server.port},
                        ca_bundle=write_bundle(tmp_path, "ca", ca),
                        credentials=Credentials("probe@example1.test", password=Secret("pw-pw")))
        options = ProbeOptions(smtp_service="submission", smtp_auth=True)
        assert_declared("smtp", PROBES["smtp"](target, options, Deadline(DEADLINE)))
