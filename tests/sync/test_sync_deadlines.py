"""A server that stalls at any step of the sync probe cannot hold it past its deadline.

The mailbox goes silent at IDLE, APPEND, UID SEARCH or UID FETCH, or the
submission server at DATA: the probe returns within its budget, CRITICAL, with
the stalled step in its words.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailfleet.checks import sync
from mailfleet.checks.base import run
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
from tests.checks.certs import make_ca, make_leaf, write_bundle, write_chain
from tests.checks.servers import LoopbackServer, tls_server_context
from tests.sync.mailserver import HOSTNAME, ScriptedMailbox, Submission

BUDGET = 1.5
SLACK = 0.5
USER, PASSWORD = "probe@example1.test", "s3cret-pw"


@dataclass(frozen=True)
class Pki:
    ctx_cert: Path
    ctx_key: Path
    ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    workdir = tmp_path_factory.mktemp("sync-pki")
    ca = make_ca("sync test CA")
    cert, key = write_chain(workdir, "leaf", make_leaf(ca, [HOSTNAME]))
    return Pki(cert, key, write_bundle(workdir, "ca", ca))


@pytest.fixture
def servers(pki: Pki, request: pytest.FixtureRequest) -> Iterator[Target]:
    imap_stall, leftover, smtp_stall = request.param
    ctx = tls_server_context(pki.ctx_cert, pki.ctx_key)
    mailbox = ScriptedMailbox(ctx, imap_stall, leftover)
    submission = Submission(ctx, USER, PASSWORD, stall=smtp_stall)
    with LoopbackServer(mailbox) as imap, LoopbackServer(submission) as smtp:
        yield Target(
            name="mx1", address="127.0.0.1", mail_hostname=HOSTNAME, ca_bundle=pki.ca,
            ports={"imaps": imap.port, "submission": smtp.port},
            credentials=Credentials(USER, password=Secret(PASSWORD)),
        )


def _timed(probe: str, target: Target) -> ProbeResult:
    start = time.monotonic()
    deadline = Deadline(BUDGET)
    if probe == "client":
        result = run("sync", target,
                     lambda acq: sync.measure_client_sync(target, ProbeOptions(), deadline, acq),
                     sync.judge)
    elif probe == "pair":
        result = sync.probe_pair(target, target, ProbeOptions(), deadline)
    else:
        result = sync.probe(target, ProbeOptions(), deadline)
    elapsed = time.monotonic() - start
    assert elapsed < BUDGET + SLACK, f"{probe} took {elapsed:.2f} s: {result.error}"
    return result


STALLS = [
    pytest.param(("IDLE", False, ""), "sync", "no reply to IDLE within 1.5 s", id="IDLE"),
    pytest.param(("UID SEARCH", False, ""), "sync", "no reply to UID SEARCH within 1.5 s",
                 id="SEARCH"),
    pytest.param(("UID FETCH", True, ""), "pair", "no reply to UID FETCH within 1.5 s",
                 id="FETCH"),
    pytest.param(("APPEND", False, ""), "client", "no reply to APPEND within 1.5 s",
                 id="APPEND"),
    pytest.param(("", False, "DATA"), "sync", "no reply to DATA within 1.5 s", id="DATA"),
]


@pytest.mark.parametrize(("servers", "probe", "words"), STALLS, indirect=["servers"])
def test_a_stalled_step_ends_at_the_deadline_with_its_name(
    servers: Target, probe: str, words: str
) -> None:
    result = _timed(probe, servers)
    assert result.status == Status.CRITICAL
    assert result.reason == Reason.TIMEOUT
    assert words in result.error


@pytest.mark.parametrize("servers", [("", False, "DATA")], indirect=True)
def test_a_stalled_submission_is_named_as_such(servers: Target) -> None:
    result = _timed("pair", servers)
    port = servers.port("submission")
    assert result.error.startswith(f"submission on mx1 (127.0.0.1:{port}): ")


@pytest.mark.parametrize("servers", [("", False, "")], indirect=True)
def test_a_message_never_delivered_times_out_naming_the_mailbox(servers: Target) -> None:
    # The submission accepts it, nothing delivers it: the scripted mailbox stays empty.
    result = _timed("pair", servers)
    assert result.error == "message accepted but not delivered to mx1 within 1.5 s"
    assert result.reason == Reason.TIMEOUT
