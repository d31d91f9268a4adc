"""Every probe of the protocol layer, run against real servers on loopback, writes only the
values it declares (``checks.VALUES``), and its declaration reads them back unchanged.

Dovecot is the bench's own (bench/localmail.py, one with a quota); SMTP is the
loopback submission servers the other tests use, the sync probe's delivering
into the real Dovecot. Where Dovecot cannot run here the tests are skipped
(a failure with MAILFLEET_REQUIRE_LAB=1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.localmail import QUOTA_CONFIG
from mailfleet import checks
from mailfleet.checks import PROBES, sync, tls_login
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
from tests.checks.certs import make_ca, make_leaf, write_bundle, write_chain
from tests.checks.servers import LineLimitedSmtp, LoopbackServer, tls_server_context
from tests.sync.mailserver import LocalMail, local_mail

DEADLINE = 20.0


def assert_declared(check: str, result: ProbeResult) -> None:
    declaration = checks.VALUES[check]
    assert result.status == Status.OK, (check, result.error)
    assert set(result.values) <= declaration.names(), (
        check, sorted(set(result.values) - declaration.names()))
    typed = declaration.of(result)
    back = {k: v for k, v in dataclasses.asdict(typed).items() if k in result.values}
    assert back == dict(result.values)


@pytest.fixture(scope="module")
def mail() -> Iterator[LocalMail]:
    with local_mail(QUOTA_CONFIG) as running:
        yield running


@pytest.mark.parametrize("check", ["port", "tls", "imap_login", "quota", "sync"])
def test_a_probe_writes_only_its_declared_values(mail: LocalMail, check: str) -> None:
    assert_declared(check, PROBES[check](mail.target(), ProbeOptions(), Deadline(DEADLINE)))


def test_a_mesh_pair_writes_only_the_declared_sync_values(mail: LocalMail) -> None:
    target = mail.target()
    result = sync.probe_pair(target, target, ProbeOptions(), Deadline(DEADLINE))
    assert_declared("sync_mesh", result)
    assert result.values["kind"] == "mesh" and result.values["method"] == "idle"


def test_tls_and_login_on_one_connection_write_their_declared_values(mail: LocalMail) -> None:
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
