"""The server probe's pure parts: settings from inventory variables, the fixed command
list, error words, judgement, and the forced command of roles/mailfleet_probe_access."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mailfleet.checks.result import Status
from mailfleet.checks.server import ServerConfigError, commands, settings_from_hostvars
from mailfleet.checks.server.probe import command_failure, judge
from mailfleet.checks.server.ssh import CommandResult

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "roles/mailfleet_probe_access/files/mailfleet-probe-command"
HOSTVARS = {
    "ansible_host": "10.77.4.11",
    "ansible_user": "root",
    "ansible_ssh_private_key_file": "/keys/id",
    "mailfleet_known_hosts": "/keys/known_hosts",
}


def wrapper() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("mailfleet_probe_command", str(WRAPPER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_ssh_settings_come_from_ansible_variables() -> None:
    s = settings_from_hostvars("mx1", HOSTVARS)
    assert (s.ssh.address, s.ssh.user, s.ssh.port) == ("10.77.4.11", "root", 22)
    assert str(s.ssh.key_file) == "/keys/id" and str(s.ssh.known_hosts) == "/keys/known_hosts"
    assert s.paths == ("/var/vmail", "/var/spool/postfix")


def test_the_least_privilege_user_overrides_ansible_user() -> None:
    s = settings_from_hostvars("mx1", {**HOSTVARS, "ansible_port": "2222", "mailfleet_server": {
        "ssh_user": "mailfleet", "ssh_key_file": "/keys/probe", "cert_services": ["imaps", "smtp"],
        "served_cert_sha256": "AB:" * 31 + "AB"}})
    assert (s.ssh.user, str(s.ssh.key_file), s.ssh.port) == ("mailfleet", "/keys/probe", 2222)
    assert s.cert_services == ("imaps", "smtp")
    assert s.served_cert_sha256 == "ab" * 32


def test_every_settings_problem_is_reported_at_once() -> None:
    with pytest.raises(ServerConfigError) as err:
        settings_from_hostvars("mx1", {**HOSTVARS, "mailfleet_server": {
            "mail_store": "relative/path", "cert_services": ["pop3"], "colour": "blue"}})
    text = str(err.value)
    assert text.startswith("mx1: ")
    for part in ("colour", "mail_store", "cert_services"):
        assert part in text


def test_a_path_with_a_newline_is_refused() -> None:
    with pytest.raises(ServerConfigError, match="control characters"):
        settings_from_hostvars("mx1", {**HOSTVARS, "mailfleet_server": {
            "queue_directory": "/var/spool\n/etc"}})


def test_the_command_list_is_fixed_argv_and_quotes_paths() -> None:
    s = settings_from_hostvars("mx1", {**HOSTVARS, "mailfleet_server": {
        "mail_store": "/srv/mail store; rm -rf /"}})
    cmds = commands(s)
    assert set(cmds) == {"queue", "sessions", "services", "filesystems", "cert_file"}
    line = shlex.join(cmds["filesystems"])
    # The hostile path stays one argument: the remote shell sees no `;`.
    assert shlex.split(line)[4] == "/srv/mail store; rm -rf /"
    assert all(argv[0].startswith("/usr/") for argv in cmds.values())


def _res(argv: tuple[str, ...], status: int, stderr: str) -> CommandResult:
    return CommandResult(argv=argv, exit_status=status, stdout="", stderr=stderr)


@pytest.mark.parametrize(
    ("status", "stderr", "expected"),
    [
        (127, "sh: 1: /usr/sbin/postqueue: not found", "command missing on the host: "
         "/usr/sbin/postqueue (package postfix)"),
        (126, "mailfleet-probe-command: refused: command not allowed: '/usr/bin/x'",
         "forced-command wrapper refused"),
        (1, "sudo: a password is required", "needs root and sudo refused"),
        (75, "doveadm(mailfleet): Error: net_connect_unix(/run/dovecot/anvil) failed: "
         "Permission denied", "was denied (permission denied)"),
        (69, "postqueue: fatal: boom", "failed (exit 69): postqueue: fatal: boom"),
    ],
)
def test_command_failures_say_what_is_wrong(status: int, stderr: str, expected: str) -> None:
    argv = ("/usr/sbin/postqueue", "-j")
    assert expected in command_failure("queue", _res(argv, status, stderr))


def _values(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": {"postfix": True, "dovecot": True},
        "filesystems": {"/var/vmail": {"free_ratio": 0.5, "free_inodes_ratio": 0.9}},
        "queue_messages": {"deferred": 0},
        "queue_oldest_seconds": None,
        "cert_reload_pending": False,
        "command_errors": {},
    }
    base.update(over)
    return base


def test_judgement() -> None:
    verdict = judge(settings_from_hostvars("mx1", HOSTVARS))
    assert verdict(_values()).status is Status.OK
    down = verdict(_values(services={"postfix": True, "dovecot": False}))
    assert down.status is Status.CRITICAL and "dovecot is not running" in down.message
    full = verdict(_values(filesystems={"/var/vmail": {"free_ratio": 0.04}}))
    assert full.status is Status.CRITICAL and "/var/vmail: 4.0% space free" in full.message
    pending = verdict(_values(cert_reload_pending=True, cert_file="/c.pem",
                              cert_reload_pending_by_service={"imaps": True}))
    assert pending.status is Status.WARNING and "imaps" in pending.message
    broken = verdict(_values(command_errors={"sessions": "doveadm missing"}))
    assert broken.status is Status.UNKNOWN


# ---------------------------------------------------------------- the forced command

SETTINGS = {"cert_files": ["/etc/ssl/mailfleet/fullchain.pem"], "sessions": True}


def test_the_forced_command_allows_exactly_the_probe_commands() -> None:
    decide = wrapper().decide
    s = settings_from_hostvars("mx1", HOSTVARS)
    for section, argv in commands(s).items():
        ran = decide(shlex.split(shlex.join(argv)), SETTINGS)
        if section == "sessions":
            assert ran == ["/usr/bin/sudo", "-n", *argv]
        else:
            assert ran == list(argv)


@pytest.mark.parametrize(
    "command",
    [
        "",
        "id",
        "/bin/sh -c id",
        "/usr/sbin/postqueue -f",  # flush: not read-only
        "/usr/sbin/postqueue -j; id",
        "/usr/bin/doveadm who",
        "/usr/bin/doveadm -f tab who -1 alice",
        "/usr/bin/openssl x509 -noout -enddate -fingerprint -sha256 -in /etc/shadow",
        "/usr/bin/stat -f -c '%n$(id)' /",
        "/usr/bin/stat -f -c %n relative",
        "/usr/bin/pgrep -a -f x y",
    ],
)
def test_the_forced_command_refuses_everything_else(command: str) -> None:
    module = wrapper()
    with pytest.raises((module.Refused, ValueError)):
        module.decide(shlex.split(command), SETTINGS)


def test_sessions_can_be_switched_off() -> None:
    module = wrapper()
    with pytest.raises(module.Refused, match="not enabled"):
        module.decide(["/usr/bin/doveadm", "-f", "tab", "who", "-1"], {"sessions": False})
