"""checks.sync without a mail server: tags, the mesh schedule, judgement, SNI of its sessions."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from itertools import permutations
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailfleet.checks import sync
from mailfleet.checks.imap_client import exists_count
from mailfleet.checks.imap_proto import parse_line
from mailfleet.checks.net import tls_context
from mailfleet.checks.result import Status
from mailfleet.checks.session import open_tls
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target


def test_a_tag_is_stale_only_after_its_run_must_be_over() -> None:
    tag = sync.make_tag(Deadline(5))
    now = time.time()
    assert not sync.tag_is_stale(tag, now)
    assert not sync.tag_is_stale(tag, now + 5.5)  # within the grace second
    assert sync.tag_is_stale(tag, now + 7)
    assert sync.tag_is_stale("not-a-probe-tag", now)
    assert sync.make_tag(Deadline(5)) != tag


@pytest.mark.parametrize("n", [2, 3, 4, 7, 10])
def test_the_mesh_covers_every_ordered_pair_with_n_probes_per_round(n: int) -> None:
    names = [f"mx{i}" for i in range(1, n + 1)]
    seen: set[tuple[str, str]] = set()
    for r in range(n - 1):
        pairs = sync.mesh_round(names, r)
        assert len(pairs) == n  # O(N) probes per interval
        assert sorted(s for s, _ in pairs) == sorted(names)  # each host sends once
        assert sorted(d for _, d in pairs) == sorted(names)  # and receives once
        assert all(s != d for s, d in pairs)
        seen.update(pairs)
    assert seen == set(permutations(names, 2))
    assert sync.mesh_round(names, n - 1) == sync.mesh_round(names, 0)  # it rotates


def test_no_mesh_for_one_host() -> None:
    assert sync.mesh_round(["mx1"], 0) == []


def test_judgement_names_the_slow_kind() -> None:
    assert sync.judge({"delivery_latency_seconds": 0.2}).status == Status.OK
    slow = sync.judge({"delivery_latency_seconds": 0.1, "client_latency_seconds": 12.0})
    assert slow.status == Status.WARNING
    assert "client latency 12.00 s" in slow.message
    assert sync.judge({"push_latency_seconds": 45.0}).status == Status.CRITICAL
    assert "polling" in sync.judge({"method": "poll"}).message


def test_exists_count_reads_the_last_exists() -> None:
    responses = [parse_line(line) for line in
                 (b"* 3 RECENT", b"* 4 EXISTS", b"* 5 EXISTS", b"* 1 FETCH (FLAGS ())")]
    assert exists_count(responses) == 5
    assert exists_count([parse_line(b"* 1 EXPUNGE")]) is None


def test_probe_message_carries_the_tag_and_no_secret() -> None:
    msg = sync.probe_message("probe@example1.test", "probe@example2.test", "a" * 32 + ".1")
    assert msg[sync.TAG_HEADER] == "a" * 32 + ".1"
    assert msg["Auto-Submitted"] == "auto-generated"


# -- SNI: connect to an address, verify and send the mail host name ---------------
def _no_phase(_phase: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx1.lab.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx1.lab.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    names: list[str] = []

    def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name or "")

    server_ctx.sni_callback = remember_sni
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"* OK ready\r\n")
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, cert_path, names
    listener.close()
    thread.join(timeout=5)


def test_the_session_verifies_the_mail_hostname_not_the_address(
    tls_listener: tuple[int, Path, list[str]],
) -> None:
    port, ca, names = tls_listener
    target = Target(name="mx1", address="127.0.0.1", mail_hostname="mx1.lab.test", ca_bundle=ca)
    target = dataclasses.replace(target, ports={"imaps": port})
    ctx = tls_context(ca, verify=True)
    session = open_tls(target, "imaps", ctx, Deadline(5), _no_phase, greet=True)
    with contextlib.closing(session):
        assert session.imap is not None and session.tls is not None
        peer = session.tls.getpeercert()
        assert peer is not None
        assert peer["subject"] == ((("commonName", "mx1.lab.test"),),)
    assert names == ["mx1.lab.test"]


def test_the_session_refuses_a_certificate_for_another_name(
    tls_listener: tuple[int, Path, list[str]],
) -> None:
    port, ca, _ = tls_listener
    target = Target(name="mx2", address="127.0.0.1", mail_hostname="mx2.lab.test", ca_bundle=ca)
    target = dataclasses.replace(target, ports={"imaps": port})
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mx2\.lab\.test"):
        open_tls(target, "imaps", tls_context(ca, verify=True), Deadline(5), _no_phase)


# -- failures are results, with words, within the deadline --------------------------
def test_no_probe_account_is_unknown_not_a_crash() -> None:
    result = sync.probe(Target(name="mx1", address="127.0.0.1"), ProbeOptions(), Deadline(2))
    assert result.status == Status.UNKNOWN
    assert "no probe account" in result.error


def test_closed_port_fails_fast_with_the_step_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        target = Target(
            name="mx1", address="127.0.0.1", ports={"imaps": port},
            credentials=Credentials("probe@example1.test", password=Secret("pw")),
        )
        started = time.monotonic()
        result = sync.probe(target, ProbeOptions(), Deadline(3))
    assert time.monotonic() - started < 3.5
    assert result.status == Status.CRITICAL
    assert f"IMAP 127.0.0.1:{port}: connection refused" in result.error
    assert "pw" not in result.error


def test_a_ca_bundle_given_as_text_is_a_path() -> None:
    # Callers that build targets from JSON pass the bundle as a str; TLS reads its mtime.
    from pathlib import Path

    from mailfleet.checks.target import Target

    assert Target("t", "127.0.0.1", ca_bundle="/etc/ssl/x.pem").ca_bundle == Path(  # type: ignore[arg-type]
        "/etc/ssl/x.pem")
    assert Target("t", "127.0.0.1", ca_bundle="").ca_bundle is None  # type: ignore[arg-type]
