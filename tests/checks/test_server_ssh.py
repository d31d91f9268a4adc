"""The server probe's SSH edge on loopback: it keeps its deadline against a server that
never speaks, and says so plainly when nothing listens or settings are missing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailfleet.checks import PROBES
from mailfleet.checks.result import Status
from mailfleet.checks.server import (
    ServerSettings,
    probe,
    probe_with,
    settings_from_hostvars,
    with_server_settings,
)
from mailfleet.checks.target import Deadline, ProbeOptions, Target


@pytest.fixture
def tarpit() -> Iterator[int]:
    """Accepts TCP connections and never sends a byte (no SSH banner)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(2)
    for c in held:
        c.close()
    srv.close()


def _settings(tmp_path: Path, port: int) -> ServerSettings:
    known = tmp_path / "known_hosts"
    known.write_text("")
    key = tmp_path / "id"
    key.write_text("not a key")
    return settings_from_hostvars("lo", {
        "ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "mailfleet",
        "ansible_ssh_private_key_file": str(key), "mailfleet_known_hosts": str(known)})


def test_a_server_that_never_speaks_costs_the_deadline_and_no_more(
    tmp_path: Path, tarpit: int
) -> None:
    settings = _settings(tmp_path, tarpit)
    start = time.monotonic()
    result = probe_with(Target("lo", "127.0.0.1"), settings, Deadline(1.5))
    took = time.monotonic() - start
    assert took < 3.0
    assert not result.success and result.status is Status.CRITICAL
    assert result.values["ssh_error"] in ("timeout", "connect"), result.error
    assert result.values["commands_run"] == 0


def test_nothing_listening_is_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there now
    result = probe_with(Target("lo", "127.0.0.1"), _settings(tmp_path, port),
                        Deadline(3))
    assert result.values["ssh_error"] == "connect"
    assert f"cannot connect to SSH on 127.0.0.1:{port}: connection refused" in result.error


def test_a_missing_known_hosts_file_is_refused_before_connecting(tmp_path: Path) -> None:
    settings = settings_from_hostvars("lo", {
        "ansible_host": "127.0.0.1", "ansible_user": "x",
        "mailfleet_known_hosts": str(tmp_path / "nope")})
    result = probe_with(Target("lo", "127.0.0.1"), settings, Deadline(3))
    assert result.values["ssh_error"] == "host_key_unknown"
    assert "does not exist" in result.error and "ssh-keyscan" in result.error


def test_a_target_without_server_settings_is_unknown_not_a_crash() -> None:
    result = probe(Target("mx1", "127.0.0.1"), ProbeOptions(), Deadline(1))
    assert result.status is Status.UNKNOWN
    assert "no SSH settings for the server check" in result.error


def test_the_registered_probe_takes_a_target_built_from_inventory_variables(
    tmp_path: Path,
) -> None:
    target = with_server_settings(
        Target("mx1", "127.0.0.1", mail_hostname="mx1.lab.test"),
        {"ansible_user": "mailfleet", "mailfleet_known_hosts": str(tmp_path / "nope")})
    assert target.server is not None and target.server.ssh.address == "127.0.0.1"
    assert target.to_dict()["name"] == "mx1"  # still a Target everywhere else
    result = PROBES["server"](target, ProbeOptions(), Deadline(2))
    assert result.check == "server" and result.target == "mx1"
    assert result.values["ssh_error"] == "host_key_unknown"
