"""One SSH connection per probe, host key pinned, commands run as argv with a hard deadline.

paramiko with ``RejectPolicy`` and only the operator's known_hosts file: an unknown or
changed host key ends the probe during the key exchange, before authentication, so no
command can run on a host we cannot identify. Every command is a fixed argv, quoted
with ``shlex.join``; nothing from a server or the inventory becomes shell syntax.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from mailfleet.checks.target import Deadline

# A reply larger than this is cut (postqueue -j of a huge queue); the parser copes.
MAX_OUTPUT = 32 * 1024 * 1024


class SshError(Exception):
    """The connection could not be made or used; ``message`` is what the admin reads."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind  # host_key_unknown | host_key_changed | auth | connect | timeout | ...


@dataclass(frozen=True)
class SshAccess:
    """How to log in, taken from the inventory variables Ansible uses."""

    address: str
    user: str
    known_hosts: Path
    port: int = 22
    key_file: Path | None = None


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    truncated: bool = False

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def openssh_fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ssh-keygen -lf and ssh print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _Reject(paramiko.MissingHostKeyPolicy):
    """Refuse an unknown host key and remember it for the error message."""

    def __init__(self) -> None:
        self.seen: paramiko.PKey | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.seen = key
        raise paramiko.SSHException(f"host key of {hostname} not in known_hosts")


def _host_key_file(key: paramiko.PKey) -> str:
    name = key.get_name()
    kind = "ecdsa" if name.startswith("ecdsa") else name.removeprefix("ssh-")
    return f"/etc/ssh/ssh_host_{kind}_key.pub"


def _unknown_key_message(access: SshAccess, key: paramiko.PKey | None) -> str:
    name = _known_hosts_name(access.address, access.port)
    port_flag = f"-p {access.port} " if access.port != 22 else ""
    shown = f"{key.get_name()} {openssh_fingerprint(key)}" if key else "(not seen)"
    where = _host_key_file(key) if key else "/etc/ssh/ssh_host_*_key.pub"
    return (
        f"host key of {name} is not in {access.known_hosts}; no command was run. "
        f"The server offered {shown}. To trust it, compare that fingerprint with "
        f"`ssh-keygen -lf {where}` run on the host's console, then add it: "
        f"`ssh-keyscan {port_flag}{access.address} >> {access.known_hosts}` "
        "(and check the added lines' fingerprints with `ssh-keygen -lf`)"
    )


class SshSession:
    """An open, authenticated connection; use as a context manager."""

    def __init__(self, access: SshAccess, deadline: Deadline) -> None:
        self.access = access
        self.deadline = deadline
        self.client = paramiko.SSHClient()
        self.commands_run = 0

    def __enter__(self) -> SshSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def connect(self) -> None:
        access = self.access
        if not access.known_hosts.is_file():
            raise SshError(
                f"known_hosts file {access.known_hosts} does not exist; set "
                "mailfleet_known_hosts to a file with the hosts' keys (ssh-keyscan, then "
                "compare fingerprints)", "host_key_unknown")
        if access.key_file is not None and not access.key_file.is_file():
            raise SshError(f"SSH key {access.key_file} does not exist "
                           "(ansible_ssh_private_key_file)", "config")
        policy = _Reject()
        # Only the operator's file: never ~/.ssh/known_hosts, never the system one.
        self.client.load_host_keys(str(access.known_hosts))
        self.client.set_missing_host_key_policy(policy)
        timeout = self._left("connect")
        try:
            self.client.connect(
                hostname=access.address,
                port=access.port,
                username=access.user,
                key_filename=str(access.key_file) if access.key_file else None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=False,
                look_for_keys=access.key_file is None,
            )
        except paramiko.BadHostKeyException as exc:
            raise SshError(
                f"host key of {access.address} CHANGED: it offered "
                f"{exc.key.get_name()} {openssh_fingerprint(exc.key)}, {access.known_hosts} "
                f"says {openssh_fingerprint(exc.expected_key)}; no command was run. If the host "
                "was reinstalled, verify the new key on its console and replace the line; "
                "otherwise someone may be in the middle", "host_key_changed") from None
        except paramiko.AuthenticationException:
            key = access.key_file or "the default keys"
            raise SshError(
                f"SSH authentication as {access.user!r} on {access.address} refused "
                f"(key {key}); is its public key in ~{access.user}/.ssh/authorized_keys?",
                "auth") from None
        except paramiko.PasswordRequiredException:
            raise SshError(f"SSH key {access.key_file} is encrypted; the probe needs a key "
                           "without passphrase (or an agent-free deploy key)", "config") from None
        except paramiko.SSHException as exc:
            if policy.seen is not None:
                raise SshError(_unknown_key_message(access, policy.seen),
                               "host_key_unknown") from None
            if self.deadline.expired or "timeout" in str(exc).lower():
                raise SshError(f"no SSH answer from {access.address}:{access.port} within "
                               f"{self.deadline.budget:.1f} s", "timeout") from None
            raise SshError(f"SSH to {access.address}:{access.port} failed: {exc}",
                           "connect") from None
        except TimeoutError:
            raise SshError(f"no SSH answer from {access.address}:{access.port} within "
                           f"{self.deadline.budget:.1f} s", "timeout") from None
        except OSError as exc:
            why = exc.strerror or str(exc)
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                why = "connection refused"
            raise SshError(f"cannot connect to SSH on {access.address}:{access.port}: {why}",
                           "connect") from None

    def _left(self, what: str) -> float:
        left = self.deadline.remaining()
        if left <= 0:
            raise SshError(f"deadline of {self.deadline.budget:.1f} s reached before {what}",
                           "timeout")
        return left

    def run_all(self, commands: Sequence[Sequence[str]]) -> list[CommandResult]:
        """Start every command at once on the one connection, then collect them in order.

        Each is one ``exec`` channel (its argv quoted with shlex.join), so the host runs
        them in parallel; the deadline bounds the whole batch.
        """
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("SSH connection closed before the commands ran", "connect")
        started: list[tuple[tuple[str, ...], paramiko.Channel]] = []
        try:
            for argv in commands:
                chan = transport.open_session(timeout=self._left("opening a channel"))
                chan.exec_command(shlex.join(argv))
                self.commands_run += 1
                started.append((tuple(argv), chan))
            return [self._collect(argv, chan) for argv, chan in started]
        finally:
            for _, chan in started:
                chan.close()

    def _collect(self, argv: tuple[str, ...], chan: paramiko.Channel) -> CommandResult:
        out = bytearray()
        err = bytearray()
        truncated = False
        what = f"`{shlex.join(argv)}` finished"
        while True:
            chan.settimeout(min(self._left(what), 1.0))
            try:
                data: bytes | None = chan.recv(65536)
            except TimeoutError:
                data = None
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if data is None:
                continue
            if not data:
                break
            if len(out) < MAX_OUTPUT:
                out += data
            else:
                truncated = True
        while not chan.status_event.wait(min(self._left(what), 1.0)):
            pass
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        return CommandResult(
            argv=argv,
            exit_status=chan.recv_exit_status(),
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace")[:4000],
            truncated=truncated,
        )
