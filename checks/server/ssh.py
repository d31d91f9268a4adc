"""SSH to a mail host, host key pinned, commands run as argv with a hard deadline.

paramiko with ``RejectPolicy`` and only the operator's known_hosts file: an unknown or
changed host key ends the probe during the key exchange, before authentication, so no
command can run on a host we cannot identify. Every command is a fixed argv, quoted
with ``shlex.join``; nothing from a server or the inventory becomes shell syntax.

A long-running watcher keeps each host's authenticated connection between probes
(``keep_connections``): one handshake per host and process, a channel per command
and sweep, as Ansible's ControlPersist does. A kept connection is used again only
while the known_hosts file is the one its host key was checked against (any change
of the file: a full connect, checked again); one that died (sshd restarted, a
firewall dropped it) is found out by a short channel open and replaced by a new
connection within the same probe.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import threading
from collections import OrderedDict
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


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What says the file changed: inode, size, modification time (None: unreadable)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# How long a kept connection may take to open a channel before it is taken for dead
# and replaced (a live one answers in milliseconds).
REUSE_PROBE_SECONDS = 2.0


class ConnectionPool:
    """Authenticated SSH clients kept between probes, at most one idle per host.

    A probe takes its host's client out (so two probes never share one) and gives it
    back after its commands ran cleanly; at most ``max_idle`` are kept, the least
    recently used closed first.
    """

    def __init__(self, max_idle: int = 0) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: OrderedDict[SshAccess, tuple[paramiko.SSHClient, tuple[int, int, int]]] = (
            OrderedDict())
        self.connects = 0  # full connections made (handshake, host key check, login)
        self.reused = 0  # probes served by a kept connection
        self.replaced = 0  # kept connections found dead (idle or at first use) and replaced

    def take(
        self, access: SshAccess
    ) -> tuple[paramiko.SSHClient, tuple[int, int, int]] | None:
        """The host's kept client (and the known_hosts state its key was checked against),
        if it is alive and the file is unchanged."""
        with self._lock:
            kept = self._idle.pop(access, None)
        if kept is None:
            return None
        client, pinned = kept
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            self.replaced += 1  # it died while idle: the caller connects anew
            client.close()
            return None
        if pinned != _file_state(access.known_hosts):
            client.close()  # its host key was checked against another file: check again
            return None
        return kept

    def give(self, access: SshAccess, client: paramiko.SSHClient,
             pinned: tuple[int, int, int] | None) -> None:
        transport = client.get_transport()
        if (self.max_idle <= 0 or pinned is None or transport is None
                or not transport.is_active()):
            client.close()
            return
        evicted: list[paramiko.SSHClient] = []
        with self._lock:
            old = self._idle.pop(access, None)
            if old is not None:
                evicted.append(old[0])
            self._idle[access] = (client, pinned)
            while len(self._idle) > self.max_idle:
                evicted.append(self._idle.popitem(last=False)[1][0])
        for c in evicted:
            c.close()

    def clear(self) -> None:
        with self._lock:
            idle = list(self._idle.values())
            self._idle.clear()
        for client, _ in idle:
            client.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)


POOL = ConnectionPool()


def keep_connections(max_idle: int) -> None:
    """Keep up to ``max_idle`` hosts' connections between probes (0: one per probe)."""
    POOL.clear()
    POOL.max_idle = max(0, max_idle)


class SshSession:
    """An open, authenticated connection; use as a context manager."""

    def __init__(self, access: SshAccess, deadline: Deadline,
                 pool: ConnectionPool = POOL) -> None:
        self.access = access
        self.deadline = deadline
        self.pool = pool
        self.client = paramiko.SSHClient()
        self.commands_run = 0
        self.reused = False
        self._pinned: tuple[int, int, int] | None = None
        self._clean = False

    def __enter__(self) -> SshSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Give a connection that ran its commands cleanly back to the pool, else close it."""
        if self._clean and self.pool.max_idle > 0:
            self.pool.give(self.access, self.client, self._pinned)
        else:
            self.client.close()
        self._clean = False

    def connect(self) -> None:
        if self.pool.max_idle > 0:
            kept = self.pool.take(self.access)
            if kept is not None:
                self.client, self._pinned = kept
                self.reused = True
                return
        self._connect()

    def _connect(self) -> None:
        access = self.access
        self.reused = False
        self.client = paramiko.SSHClient()
        self.pool.connects += 1
        # The file as it was when the host key was checked against it.
        self._pinned = _file_state(access.known_hosts)
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
        if self.reused:
            try:
                first = self._open_kept_channel()
            except (paramiko.SSHException, OSError, EOFError):
                # The kept connection died (sshd restarted, a firewall dropped it): a new
                # one, host key checked again, within this probe's deadline.
                self.client.close()
                self.pool.replaced += 1
                self._connect()
                first = None
            else:
                self.pool.reused += 1
        else:
            first = None
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("SSH connection closed before the commands ran", "connect")
        started: list[tuple[tuple[str, ...], paramiko.Channel]] = []
        try:
            for argv in commands:
                if first is not None:
                    chan, first = first, None
                else:
                    chan = transport.open_session(timeout=self._left("opening a channel"))
                chan.exec_command(shlex.join(argv))
                self.commands_run += 1
                started.append((tuple(argv), chan))
            results = [self._collect(argv, chan) for argv, chan in started]
            self._clean = True
            return results
        finally:
            if first is not None:
                first.close()
            for _, chan in started:
                chan.close()

    def _open_kept_channel(self) -> paramiko.Channel:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("kept connection closed")
        return transport.open_session(
            timeout=min(REUSE_PROBE_SECONDS, self._left("opening a channel") / 3))

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
