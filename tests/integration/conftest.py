"""The mail fleet of the session: playbooks/site.yml converged once on the lab.

``mail_fleet`` runs ``ansible-playbook playbooks/site.yml`` on the session's lab
(fixture ``lab``) and returns what the tests need: the hosts, their users with
the lab's test passwords, the lab CA bundle, and clients that speak TLS to a
lab address while checking the certificate against the host's name.

The lab is throwaway, so its test passwords are written here in clear text;
inventory/lab/group_vars/all/mail.yml holds only their hashes.
"""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.fleet import Lab
from lab.hosts import LabHost

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
PLAYBOOK_TIMEOUT = 900
LOCAL_PARTS = ("alice", "bob")


def lab_password(local: str, index: int) -> str:
    """The clear-text test password of ``<local>@example<index>.test`` (lab only)."""
    return f"{local}-{index}-lab-password"


@dataclass(frozen=True)
class MailUser:
    address: str
    password: str
    host: LabHost


@dataclass(frozen=True)
class PlaybookRun:
    returncode: int
    output: str
    seconds: float

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host (``ok``, ``changed``, ``failed`` ...)."""
        result: dict[str, dict[str, int]] = {}
        lines = self.output.splitlines()
        if "PLAY RECAP" not in self.output:
            return result
        start = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
        for line in lines[start + 1 :]:
            if " : " not in line:
                continue
            host, counters = line.split(" : ", 1)
            result[host.strip()] = {
                k: int(v) for k, v in (item.split("=") for item in counters.split())
            }
        return result

    def changed(self) -> int:
        return sum(c.get("changed", 0) for c in self.recap().values())


def _tls_context(ca_bundle: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_bundle))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _NamedSMTP(smtplib.SMTP):
    """SMTP to a lab address, verifying the certificate against the host's name."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.connect(address, port)
        self._host = server_name  # starttls() checks the certificate against this


class _NamedSMTPSSL(smtplib.SMTP_SSL):
    def __init__(
        self, address: str, port: int, server_name: str, ctx: ssl.SSLContext, timeout: float
    ) -> None:
        self._server_name = server_name
        super().__init__(timeout=timeout, context=ctx)
        self.connect(address, port)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=self._server_name)


class _NamedIMAP4SSL(imaplib.IMAP4_SSL):
    def __init__(
        self, address: str, port: int, server_name: str, ctx: ssl.SSLContext, timeout: float
    ) -> None:
        self._server_name = server_name
        super().__init__(address, port, ssl_context=ctx, timeout=timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(raw, server_hostname=self._server_name)


@dataclass
class MailFleet:
    lab: Lab
    inventory: Path
    hosts: list[LabHost]
    users: dict[str, list[MailUser]]
    ca_bundle: Path
    converge: PlaybookRun
    timings: dict[str, float] = field(default_factory=dict)

    # -- who is where ----------------------------------------------------------
    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def user(self, host: str, local: str = "alice") -> MailUser:
        return next(u for u in self.users[host] if u.address.startswith(local + "@"))

    # -- clients -----------------------------------------------------------------
    def tls_context(self) -> ssl.SSLContext:
        return _tls_context(self.ca_bundle)

    def smtp(self, host: str, port: int = 587, timeout: float = 20) -> smtplib.SMTP:
        """Plain SMTP connection (call starttls yourself); certificate checked on STARTTLS."""
        h = self.host(host)
        return _NamedSMTP(h.address, port, h.fqdn, timeout)

    def smtps(self, host: str, port: int = 465, timeout: float = 20) -> smtplib.SMTP_SSL:
        h = self.host(host)
        return _NamedSMTPSSL(h.address, port, h.fqdn, self.tls_context(), timeout)

    def imaps(self, host: str, port: int = 993, timeout: float = 20) -> imaplib.IMAP4_SSL:
        h = self.host(host)
        return _NamedIMAP4SSL(h.address, port, h.fqdn, self.tls_context(), timeout)

    # -- playbooks ---------------------------------------------------------------
    def playbook(
        self,
        *args: str,
        extra_vars: dict[str, Any] | None = None,
        playbook: str = "playbooks/site.yml",
        timeout: float = PLAYBOOK_TIMEOUT,
    ) -> PlaybookRun:
        return run_playbook(self.inventory, playbook, args, extra_vars, timeout)

    def record(self, name: str, seconds: float) -> None:
        """Keep a timing (converge, idempotent re-run) in artifacts/ for the closing note."""
        self.timings[name] = round(seconds, 1)
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"mail_stack_timings-{self.lab.config.name}.json"
        path.write_text(json.dumps({"hosts": len(self.hosts), **self.timings}, indent=2) + "\n")


def run_playbook(
    inventory: Path,
    playbook: str,
    args: Sequence[str] = (),
    extra_vars: dict[str, Any] | None = None,
    timeout: float = PLAYBOOK_TIMEOUT,
) -> PlaybookRun:
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), playbook]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    argv += list(args)
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


def fleet_users(hosts: list[LabHost]) -> dict[str, list[MailUser]]:
    return {
        h.name: [
            MailUser(f"{local}@{h.mail_domain}", lab_password(local, h.index), h)
            for local in LOCAL_PARTS
        ]
        for h in hosts
    }


def deploy_mail_fleet(lab: Lab) -> MailFleet:
    """site.yml on the session's lab: the ``mail_fleet`` fixture (tests/conftest.py),
    defined once there so the whole session converges once."""
    lab.require_up()
    hosts = lab.hosts()
    assert len(hosts) >= 2, "the mail stack tests need at least two lab hosts"
    inventory = lab.config.inventory_path
    run = run_playbook(inventory, "playbooks/site.yml")
    assert run.returncode == 0, run.output[-8000:]
    ca_bundle = lab.config.state_dir / "ca" / "ca.crt"
    assert ca_bundle.is_file(), f"the lab CA is missing: {ca_bundle}"
    fleet = MailFleet(lab, inventory, hosts, fleet_users(hosts), ca_bundle, run)
    fleet.record("converge_seconds", run.seconds)
    # The very first re-run after a fresh converge must change nothing: later tests
    # re-run site.yml after other runs, which would hide a role that needs two
    # passes to settle.
    again = run_playbook(inventory, "playbooks/site.yml")
    assert again.returncode == 0, again.output[-8000:]
    assert again.changed() == 0, "first re-run changed: " + "; ".join(changed_tasks(again))
    fleet.record("first_rerun_seconds", again.seconds)
    return fleet


def changed_tasks(run: PlaybookRun) -> list[str]:
    """``TASK [...] host`` for every task a run reported as changed."""
    found: list[str] = []
    task = ""
    for line in run.output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("]", 1)[0] + "]"
        elif line.startswith("changed: ["):
            found.append(f"{task} {line.split(']', 1)[0][len('changed: ['):]}")
    return found
