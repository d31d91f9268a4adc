"""Bad input: hostile inventory values, a broken vault password, a damaged store, a
store killed mid-write, hostile IMAP servers (fuzzed). Each gives a clear error or a
clean failed/unknown result; ``serve`` never crashes; a store is never lost or corrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bench.localmail import LocalDovecot
from mailfleet.checks import PROBES
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.target import Credentials, Deadline, ProbeOptions, Secret, Target
from mailfleet.dashboard.app import create_app
from mailfleet.dashboard.scheduler import Scheduler
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.targets import InventoryError, WatchedHost, watched_hosts
from tests.checks import servers
from tests.checks.certs import make_ca, make_leaf, write_bundle, write_chain
from tests.processes import stop_process
from tests.reliability.conftest import GOOD_ADDRESSES, ROOT, mail_host

MAILFLEET = str(Path(sys.executable).parent / "mailfleet")


def inventory(hostvars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What ``ansible-inventory --list`` prints for these hosts in ``mailservers``."""
    return {"_meta": {"hostvars": hostvars}, "mailservers": {"hosts": list(hostvars)},
            "all": {"children": ["mailservers"]}}


# -- inventory values --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hostvars", "words"),
    [
        ({"mailfleet_probe_options": {"timeout": "abc"}}, "timeout"),
        ({"mailfleet_probe_options": {"timeout": 1e308}}, "timeout"),
        ({"mailfleet_probe_options": {"timeout": -5}}, "timeout"),
        ({"mailfleet_probe_options": {"timeout": float("nan")}}, "timeout"),
        ({"mailfleet_probe_options": {"dns_attempts": 10**30}}, "dns_attempts"),
        ({"mailfleet_probe_options": {"tls_warning_days": None}}, "tls_warning_days"),
        ({"mailfleet_probe_options": {"tls_warning_lifetime_percent": 150}},
         "tls_warning_lifetime_percent must be a number from 0 to 100"),
        ({"mailfleet_probe_options": {"dns_resolvers": "127.0.0.1"}}, "dns_resolvers"),
        ({"mailfleet_probe_options": {"smtp_auth": "yes"}}, "smtp_auth"),
        ({"mailfleet_probe_options": {"no_such_option": 1}}, "no_such_option"),
        ({"mailfleet_probe_options": ["timeout", 5]}, "mapping"),
        ({"mailfleet_ports": {"imaps": 99999}}, "65535"),
        ({"mailfleet_ports": {"imaps": "imaps"}}, "port"),
        ({"mailfleet_ports": ["993"]}, "mapping"),
        ({"mailfleet_checks": "tls"}, "list"),
    ],
)
def test_a_hostile_inventory_value_is_a_clear_error_naming_host_and_setting(
    hostvars: dict[str, Any], words: str
) -> None:
    data = inventory({"mx-bad": {"ansible_host": "127.0.0.1", **hostvars},
                      "mx-good": {"ansible_host": "127.0.0.1"}})
    with pytest.raises(InventoryError) as caught:
        watched_hosts(data)
    assert "mx-bad" in str(caught.value) and words in str(caught.value)
    assert "mx-good" not in str(caught.value)


WEIRD_NAMES = [
    "mx-ünïcödé-☃.example",
    "mx\nnewline",
    'mx"quote\\backslash',
    "mx\x00nul\x1b[31mansi",
    "mx\u202eright-to-left",
    "x" * 5000,
]


def test_unknown_checks_and_weird_names_give_clean_results_metrics_and_json(
    dovecot: LocalDovecot, tmp_path: Path
) -> None:
    hosts = [mail_host(name, GOOD_ADDRESSES[0], dovecot, ("port", "no_such_check"), 2.0)
             for name in WEIRD_NAMES]
    app = create_app({"TESTING": True, "MAILFLEET_HOSTS": hosts,
                      "MAILFLEET_DB": str(tmp_path / "results.sqlite3")})
    monitor = app.extensions["mailfleet"]
    assert monitor.scheduler is not None
    sweep = monitor.scheduler.sweep()
    assert sweep.probes == 2 * len(hosts)
    results = monitor.store.latest()
    assert {r.host for r in results} == set(WEIRD_NAMES)
    for r in results:
        if r.check == "port":
            assert r.success, r.error
        else:
            assert r.status == Status.UNKNOWN and "no_such_check" in r.error
    client = app.test_client()
    page = client.get("/metrics")
    assert page.status_code == 200
    families = list(text_string_to_metric_families(page.get_data(as_text=True)))
    assert families
    assert client.get("/healthz").status_code in (200, 503)
    sd = client.get("/sd")
    assert sd.status_code == 200 and json.loads(sd.get_data(as_text=True)) is not None
    # /probe with a weird or unknown target: an answer, never a 500.
    for target in (WEIRD_NAMES[0], "\x00", "%", "x" * 10000):
        reply = client.get("/probe", query_string={"target": target, "module": "port"})
        assert reply.status_code < 500, (target[:20], reply.status_code)
    monitor.store.close()


# -- serve as a process ----------------------------------------------------------------
def write_vaulted_inventory(directory: Path, password: str) -> Path:
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    secret = vault.encrypt("probe-secret-1").decode()
    indented = "\n".join("            " + line for line in secret.splitlines())
    path = directory / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    mailservers:\n      hosts:\n        mx1:\n"
        "          ansible_host: 127.0.0.1\n          mailfleet_probe_user: probe\n"
        "          mailfleet_probe_password: !vault |\n" + indented + "\n"
    )
    return path


def serve(argv: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAILFLEET, "serve", "--listen", "127.0.0.1:0", *argv],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=clean_env())


def clean_env() -> dict[str, str]:
    """This environment without a vault password file Ansible would pick up by itself."""
    return {k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"}


def test_serve_refuses_a_wrong_vault_password_with_a_clear_message(tmp_path: Path) -> None:
    inv = write_vaulted_inventory(tmp_path, "the-right-one")
    wrong = tmp_path / "vault-pass"
    wrong.write_text("not-the-right-one\n")
    proc = serve(["-i", str(inv), "--vault-password-file", str(wrong),
                  "--db", str(tmp_path / "r.sqlite3")])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "decrypt" in proc.stderr.lower() and "mailfleet_probe_password" in proc.stderr, (
        proc.stderr)
    assert "probe-secret-1" not in proc.stderr + proc.stdout


def test_serve_refuses_a_damaged_store_and_leaves_it_untouched(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite3"
    store = ResultStore(db)
    for i in range(500):
        store.record(f"mx{i % 20}", ProbeResult(check="port", target="x", success=True,
                                                values={"pad": "x" * 200}))
    store.close()
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    mailservers:\n      hosts:\n"
                   "        mx1: {ansible_host: 127.0.0.1}\n")
    proc = serve(["-i", str(inv), "--db", str(db)])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(db) in proc.stderr and "result store" in proc.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest, "the damaged store was changed"


@pytest.mark.parametrize(("shard", "words"), [
    ("3/2", "numbered from 0 to 1"),
    ("2/2", "numbered from 0 to 1"),
    ("0/0", "number of shards must be from 1"),
    ("1", "wants K/N"),
    ("a/b", "wants K/N"),
])
def test_serve_refuses_a_shard_that_names_no_shard(tmp_path: Path, shard: str,
                                                   words: str) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("mailservers:\n  hosts:\n    mx1: {ansible_host: 127.0.0.1}\n")
    proc = serve(["-i", str(inv), "--db", str(tmp_path / "r.sqlite3"), "--shard", shard],
                 timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--shard" in proc.stderr and words in proc.stderr, proc.stderr
    assert not (tmp_path / "r.sqlite3").exists()


def test_serve_refuses_a_prometheus_it_cannot_reach_at_start_up(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("mailservers:\n  hosts:\n    mx1: {ansible_host: 127.0.0.1}\n")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url, words in ((f"http://127.0.0.1:{port}", "cannot reach"),
                       ("127.0.0.1:9090", "base URL")):
        proc = serve(["-i", str(inv), "--db", str(tmp_path / "r.sqlite3"), "--shard", "0/2",
                      "--prometheus", url], timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "--prometheus" in proc.stderr and words in proc.stderr, proc.stderr
        assert url in proc.stderr


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, reply.read().decode()


@contextlib.contextmanager
def running_serve(argv: list[str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``mailfleet serve`` on a free loopback port; yields (process, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([MAILFLEET, "serve", "--listen", f"127.0.0.1:{port}", *argv],
                            stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=clean_env())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError):
                if _get(base + "/healthz")[0] in (200, 503):
                    break
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not answer within 90 s"
            time.sleep(0.2)
        yield proc, base
    finally:
        stop_process(proc)
        log.close()


def test_serve_survives_hostile_host_names_and_a_kill_9_keeps_the_store(
    dovecot: LocalDovecot, tmp_path: Path
) -> None:
    names = ["mx-ünïcödé", 'mx"quoted"', "mx-" + "y" * 3000, "mx-\u202eevil"]
    hostvars = {name: {"ansible_host": GOOD_ADDRESSES[1], "mailfleet_checks": ["port", "nope"],
                       "mailfleet_ports": {"imaps": dovecot.port}} for name in names}
    # A JSON inventory through a script: names YAML would mangle arrive as they are.
    script = tmp_path / "inventory.py"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"print(json.dumps({inventory(hostvars)!r}))\n")
    script.chmod(0o755)
    db = tmp_path / "results.sqlite3"
    with running_serve(["-i", str(script), "--db", str(db), "--interval", "1s"],
                       tmp_path) as (proc, base):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body = _get(base + "/metrics")
            assert status == 200
            if body.count('check="port"') >= len(names) and "mailfleet_probe_success" in body:
                break
            time.sleep(0.3)
        families = {f.name for f in text_string_to_metric_families(body)}
        assert any(n.startswith("mailfleet_") for n in families)
        for target in [*names, "\x00", "../../etc/passwd"]:
            query = urllib.parse.urlencode({"target": target, "module": "port"})
            try:
                code = _get(f"{base}/probe?{query}")[0]
            except urllib.error.HTTPError as exc:
                code = exc.code
            assert code < 500, (target[:20], code)
        assert proc.poll() is None, "serve died"
        # A crash in the middle of the sweeps: the store must still be whole.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    store = ResultStore(db)
    assert store.integrity_ok()
    kept = store.latest()
    assert {r.host for r in kept} == set(names)
    store.close()


# -- hostile IMAP servers, fuzzed --------------------------------------------------------
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("fuzz-tls")
    ca = make_ca("fuzz CA")
    cert, key = write_chain(d, "fuzz", make_leaf(ca, ["imap.fuzz.test"]))
    return cert, key, write_bundle(d, "ca", ca)


class ScriptedImap:
    """A TLS server that answers every client line with the next chunk of a script."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.script: list[bytes] = []

    def handler(self, conn: socket.socket, stop: threading.Event) -> None:
        conn.settimeout(3)
        with self.ctx.wrap_socket(conn, server_side=True) as tls:
            chunks = list(self.script)
            if chunks:
                tls.sendall(chunks.pop(0))
            tls.settimeout(0.1)
            while not stop.is_set():
                # The next chunk answers a client line, or comes unasked after 0.1 s of
                # silence; once the script is done, hang up. Examples stay quick.
                try:
                    data = tls.recv(65536)
                except TimeoutError:
                    if not chunks:
                        return
                    tls.sendall(chunks.pop(0))
                    continue
                if not data:
                    return
                for _ in range(data.count(b"\n")):
                    if chunks:
                        tls.sendall(chunks.pop(0))


TAGS = st.sampled_from([b"*", b"+", b"mf1", b"mf2", b"mfz", b"A1", b""])
STATUS = st.sampled_from([b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH", b"CAPABILITY", b"", b"ok"])
TEXT = st.binary(max_size=300) | st.text(max_size=200).map(lambda s: s.encode("utf-8"))
CAPS = st.lists(st.sampled_from([b"IMAP4rev1", b"AUTH=PLAIN", b"SASL-IR", b"LOGINDISABLED",
                                 b"STARTTLS", b"AUTH=XOAUTH2", b"[", b"]", b"\x00"]), max_size=6)
LITERAL = st.integers(min_value=0, max_value=10**12).map(lambda n: b"{%d}" % n)
LINE = st.one_of(
    st.tuples(TAGS, STATUS, TEXT).map(lambda t: b" ".join(t) + b"\r\n"),
    st.tuples(TAGS, STATUS, CAPS).map(
        lambda t: t[0] + b" " + t[1] + b" [CAPABILITY " + b" ".join(t[2]) + b"] hi\r\n"),
    st.tuples(TAGS, STATUS, LITERAL).map(lambda t: b" ".join(t) + b"\r\n"),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"* OK " + b"A" * n + b"\r\n"),
    st.binary(min_size=1, max_size=2000),
    st.just(b"* OK ready\n"),
    st.just(b"mf1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] done probe-secret-1\r\n"),
)


@pytest.fixture(scope="module")
def scripted(tls_files: tuple[Path, Path, Path]) -> Iterator[tuple[ScriptedImap, int, Path]]:
    cert, key, ca = tls_files
    server = ScriptedImap(servers.tls_server_context(cert, key))
    with servers.serving(server.handler) as listening:
        yield server, listening.port, ca


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(script=st.lists(LINE, min_size=0, max_size=6).filter(
    # A server cannot echo a secret it has not been sent yet: not in the greeting.
    lambda chunks: not chunks or b"probe-secret-1" not in chunks[0]))
def test_fuzzed_imap_servers_get_a_clean_result_within_the_deadline(
    scripted: tuple[ScriptedImap, int, Path], script: list[bytes]
) -> None:
    server, port, ca = scripted
    server.script = script
    target = Target(name="fuzz", address="127.0.0.1", mail_hostname="imap.fuzz.test",
                    ports={"imaps": port}, ca_bundle=ca,
                    credentials=Credentials("probe", password=Secret("probe-secret-1")))
    budget = 1.5
    t0 = time.monotonic()
    result = PROBES["imap_login"](target, ProbeOptions(timeout=budget), Deadline(budget))
    took = time.monotonic() - t0
    assert isinstance(result, ProbeResult)
    assert took <= budget + 0.5, took
    assert "probe-secret-1" not in result.error
    assert "probe-secret-1" not in json.dumps(result.to_dict(), default=str)
    assert len(result.error) <= 1000, result.error[:200]
    if not result.success:
        assert result.error and result.status in (Status.CRITICAL, Status.UNKNOWN)


def test_scheduler_survives_hostile_servers_and_stores_everything(
    dovecot: LocalDovecot, scripted: tuple[ScriptedImap, int, Path], tmp_path: Path
) -> None:
    server, port, ca = scripted
    server.script = [b"* OK " + b"\xff" * 70000 + b"\r\n"]
    hosts: list[WatchedHost] = [
        mail_host("hostile", "127.0.0.1", dovecot, ("tls", "imap_login"), 1.5, port, ca),
        mail_host("good", GOOD_ADDRESSES[2], dovecot, ("tls", "imap_login"), 1.5),
    ]
    store = ResultStore(tmp_path / "r.sqlite3")
    Scheduler(lambda: hosts, store, concurrency=4).sweep()
    got = {(r.host, r.check): r for r in store.latest()}
    assert got[("good", "imap_login")].success and got[("good", "tls")].success
    assert not got[("hostile", "imap_login")].success
    assert store.integrity_ok()
    store.close()


# The sync probe's commands (SELECT, UID SEARCH/FETCH/STORE/EXPUNGE, IDLE, NOOP) see
# fuzzed answers once a sane greeting and login got the probe that far.
SYNC_SANE = [
    b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR IDLE UIDPLUS] ready\r\n",
    b"mf1 OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS CONDSTORE] logged in\r\n",
]
SYNC_LINE = st.one_of(
    LINE,
    st.sampled_from([
        b"* 3 EXISTS\r\n", b"* 4294967296 EXISTS\r\n", b"* SEARCH 1 2 99999999999 x\r\n",
        b"+ idling\r\n", b"* 1 FETCH (UID 7 BODY[HEADER.FIELDS (X-MAILFLEET-PROBE)] {20}\r\n",
        b"* 2 FETCH (FLAGS (\\Seen) UID\r\n", b"* 1 FETCH ((((\r\n", b"mf2 OK [READ-WRITE] ok\r\n",
        b"mf3 OK [APPENDUID 1 99999999999999999999] ok\r\n", b"* BYE going away\r\n",
    ]),
)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(script=st.lists(SYNC_LINE, min_size=0, max_size=8))
def test_fuzzed_mailboxes_get_a_clean_sync_result_within_the_deadline(
    scripted: tuple[ScriptedImap, int, Path], script: list[bytes]
) -> None:
    server, port, ca = scripted
    server.script = SYNC_SANE + script
    target = Target(name="fuzz", address="127.0.0.1", mail_hostname="imap.fuzz.test",
                    ports={"imaps": port, "submission": servers.closed_port()}, ca_bundle=ca,
                    credentials=Credentials("probe", password=Secret("probe-secret-1")))
    budget = 1.5
    t0 = time.monotonic()
    result = PROBES["sync"](target, ProbeOptions(timeout=budget), Deadline(budget))
    took = time.monotonic() - t0
    assert took <= budget + 0.5, (took, result.error)
    assert result.reason != Reason.CRASH, result.error
    assert "probe-secret-1" not in json.dumps(result.to_dict(), default=str)
    assert not result.success and result.error
