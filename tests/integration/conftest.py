"""The mail fleet of the session: playbooks/site.yml converged once on the lab.

``mail_fleet`` runs ``ansible-playbook playbooks/site.yml`` on the session's lab
(fixture ``lab``) and returns what the tests need: the hosts, their users with
the lab's test passwords, the lab CA bundle, and clients that speak TLS to a
lab address while checking the certificate against the host's name.

The lab is throwaway, so its test passwords are written here in clear text;
inventory/lab/group_vars/all/mail.yml holds only their hashes.
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import process_tree
from mailfleet.lab.fleet import Lab
from mailfleet.lab.hosts import LabHost
from mailfleet.lab.podman import PodmanError, podman
from tests.integration.collection import installed_collection

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
# Under pytest's 900 s: the session's deploy runs site.yml twice in one fixture.
PLAYBOOK_TIMEOUT = 420
TASK_TIMEOUT = 240
_RUNS = itertools.count(1)  # numbers each run's log: two may start in one second
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
    # The first re-run of site.yml after the converge, and the mail store just before and
    # after it (a message delivered to every host first): test_mail_stack_playbooks reads them.
    first_rerun: PlaybookRun | None = None
    maildirs_around_first_rerun: tuple[dict[str, str], dict[str, str]] = ({}, {})

    # -- who is where ----------------------------------------------------------
    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def user(self, host: str, local: str = "alice") -> MailUser:
        return next(u for u in self.users[host] if u.address.startswith(local + "@"))

    def maildir_snapshot(self) -> dict[str, str]:
        """Every file under each host's mail store: path, inode, size, mtime."""
        return {
            h.name: self.lab.exec(
                h.name, ["sh", "-c", "find /var/vmail -printf '%p %i %s %T@\\n' | sort"]
            ).stdout.decode()
            for h in self.hosts
        }

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

    # -- logs --------------------------------------------------------------------
    def log_line(self, host: str, path: str, pattern: str, timeout: float = 15) -> str | None:
        """The last line of ``path`` on ``host`` matching ``pattern`` (an extended
        regex), waited for up to ``timeout`` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            grep = self.lab.exec(host, ["grep", "-aE", pattern, path], check=False)
            if grep.returncode == 0:
                return grep.stdout.decode(errors="replace").splitlines()[-1]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

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
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> PlaybookRun:
    """Run ``ansible-playbook``; its output goes to ``artifacts/playbook-*.log`` as it runs.

    A run that outlives ``timeout`` is stopped (ansible and every process under it,
    see kill_tree) and fails the test with the task it was stuck in, instead of
    leaving pytest-timeout to kill the session with no word of where it hung.
    """
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), playbook]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    argv += list(args)
    env = {
        **os.environ,
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
        # A single task stuck past this fails by name (the run goes on to its recap).
        "ANSIBLE_TASK_TIMEOUT": str(TASK_TIMEOUT),
        **(env or {}),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    name = Path(playbook).stem.rsplit(".", 1)[-1]  # mailfleet.mail.site: site
    log = ARTIFACTS / (f"playbook-{name}-{time.strftime('%H%M%S')}"
                       f"-{os.getpid()}-{next(_RUNS)}.log")
    started = time.monotonic()
    with log.open("w+", encoding="utf-8") as out:
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except BaseException as exc:
            # pytest-timeout or Ctrl-C end the wait too: ansible must not outlive the test
            kill_tree(proc.pid)
            proc.wait()
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            out.seek(0)
            output = out.read()
            raise AssertionError(
                f"{playbook} did not finish in {timeout:.0f} s; stopped it during "
                f"{last_task(output) or 'its start'} (whole log: {log})\n" + output[-4000:]
            ) from None
        out.seek(0)
        output = out.read()
    return PlaybookRun(returncode, output, time.monotonic() - started)


def kill_tree(root: int) -> None:
    """SIGKILL a process and all under it. A process group is not enough: ansible's
    workers call setsid(), so their modules and ssh clients live in sessions of their own.
    Everything is stopped first, so nothing forks or is re-parented while it is killed."""
    for _ in range(3):
        tree = process_tree(root)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        if len(tree) <= 1:
            return


# How ansible's default output starts a task, and how a host's result for it starts.
TASK_STARTS = ("TASK [", "RUNNING HANDLER [")
HOST_RESULTS = ("ok: [", "changed: [", "fatal: [", "skipping: [")


def _bracketed(line: str) -> str:
    """``TASK [name]`` of a task line, ``ok: [host]`` of a result line."""
    return line.split("]", 1)[0] + "]"


def last_task(output: str) -> str:
    """The last ``TASK [...]`` (or handler) the output started, and the hosts that answered it."""
    head, done = "", []
    for line in output.splitlines():
        if line.startswith(TASK_STARTS):
            head, done = _bracketed(line), []
        elif head and line.startswith(HOST_RESULTS):
            done.append(_bracketed(line))
    if not head:
        return ""
    return head + (f" (answered: {', '.join(done)})" if done else " (no host had answered)")


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
    defined once there so the whole session converges once.

    The converge is the built collection's, installed as a user installs it and run by
    its full name (``mailfleet.mail.site``, tests/integration/collection.py); the re-run
    after it is the checkout's playbooks/site.yml, which must then change nothing: the
    two are the same roles.
    """
    lab.require_up()
    hosts = lab.hosts()
    assert len(hosts) >= 2, "the mail stack tests need at least two lab hosts"
    inventory = lab.config.inventory_path
    where = Path(tempfile.mkdtemp(prefix="mailfleet-collection-"))
    collection = installed_collection(where)

    def converge() -> PlaybookRun:
        return run_playbook(inventory, "mailfleet.mail.site", env=collection.env, cwd=where)

    try:
        run = converge()
    except AssertionError as exc:  # it outlived PLAYBOOK_TIMEOUT: keep what the hosts were doing
        report = save_diagnostics(lab, str(exc).splitlines()[0], str(exc))
        raise AssertionError(f"{exc}\n(the hosts' processes and the apt proxy's logs: {report})"
                             ) from None
    if run.returncode != 0 and outside_failure(run.output):
        # The first converge fetches every package through the lab's apt proxy from
        # the Debian mirror; a mirror or network stall there is not the roles' fault.
        # Keep what the hosts were doing, then converge once more (what an admin does).
        report = save_diagnostics(lab, "first converge failed from outside the roles",
                                  run.output)
        warnings.warn(f"site.yml failed from outside the roles; converging again ({report})",
                      stacklevel=1)
        run = converge()
    shutil.rmtree(where, ignore_errors=True)
    assert run.returncode == 0, run.output[-8000:]
    ca_bundle = lab.config.state_dir / "ca" / "ca.crt"
    assert ca_bundle.is_file(), f"the lab CA is missing: {ca_bundle}"
    fleet = MailFleet(lab, inventory, hosts, fleet_users(hosts), ca_bundle, run)
    fleet.record("converge_seconds", run.seconds)
    # The very first re-run after a fresh converge must change nothing (later tests
    # re-run site.yml after other runs, which would hide a role that needs two
    # passes to settle) and never touch mail already delivered. It is the
    # checkout's site.yml: the collection holds the same roles.
    # test_mail_stack_playbooks asserts on it: one run for both, as each costs minutes.
    # (imported here: that module imports this one)
    from tests.integration.test_mail_stack_playbooks import deliver

    for h in hosts:
        deliver(fleet, h.name)
    before = fleet.maildir_snapshot()
    fleet.first_rerun = run_playbook(inventory, "playbooks/site.yml")
    fleet.maildirs_around_first_rerun = (before, fleet.maildir_snapshot())
    fleet.record("first_rerun_seconds", fleet.first_rerun.seconds)
    return fleet


# What a failed run says when the fault lies outside the roles: a task stopped by
# ANSIBLE_TASK_TIMEOUT, apt unable to reach the mirror, a host ssh could not reach.
OUTSIDE_FAILURES = (
    "Timed out after",
    "Failed to fetch",
    "Could not connect to",
    "Unable to connect to",
    "Temporary failure resolving",
    "UNREACHABLE!",
)


def outside_failure(output: str) -> bool:
    return any(marker in output for marker in OUTSIDE_FAILURES)


def save_diagnostics(lab: Lab, why: str, output: str) -> Path:
    """Every host's processes and the apt proxy's logs, next to the run's output."""
    parts = [f"# {why}", "", f"## ansible-playbook (last 6000 characters)\n{output[-6000:]}"]
    for h in lab.hosts():
        try:
            proc = podman(lab.config, ["exec", h.container, "ps", "-eo", "pid,ppid,etime,args"],
                          check=False, timeout=30)
            listing = proc.stdout.decode(errors="replace") or proc.stderr.decode(errors="replace")
        except (PodmanError, subprocess.TimeoutExpired) as exc:  # never hide the first failure
            listing = f"(could not list: {exc})"
        parts.append(f"## ps on {h.name}\n{listing}")
    acng_logs = sorted((lab.config.state_dir / "apt-cacher-ng" / "log").glob("*"))
    for log in [p for p in [*acng_logs, lab.apt_daemon.logfile] if p.is_file()]:
        lines = log.read_text(errors="replace").splitlines()[-40:]
        parts.append(f"## {log} (last 40 lines)\n" + "\n".join(lines))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"deploy-diagnostics-{time.strftime('%H%M%S')}.txt"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def changed_tasks(run: PlaybookRun) -> list[str]:
    """``TASK [...] host`` for every task a run reported as changed."""
    found: list[str] = []
    task = ""
    for line in run.output.splitlines():
        if line.startswith(TASK_STARTS):
            task = _bracketed(line)
        elif line.startswith("changed: ["):
            found.append(f"{task} {_bracketed(line)[len('changed: ['):-1]}")
    return found
