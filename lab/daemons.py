"""Processes the lab runs in the root namespace: knot (DNS) and apt-cacher-ng.

Each is started detached with a pidfile in the lab's state dir and is stopped
by that PID only, after checking the PID still is that program.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND


class DaemonError(RuntimeError):
    pass


@dataclass(frozen=True)
class Daemon:
    name: str  # "dns" or "apt-proxy"
    program: str  # executable basename, checked against /proc/PID/cmdline
    pidfile: Path
    logfile: Path

    def pid(self) -> int | None:
        """The daemon's PID if it is running and really is our program."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if not cmdline or os.path.basename(cmdline[0].decode(errors="replace")) != self.program:
            return None
        return pid

    def start(self, argv: list[str], wait_for: tuple[str, int, str], timeout: float = 10) -> int:
        """Start detached, then wait until it listens on (address, port, "tcp"|"udp")."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        executable = shutil.which(argv[0]) or argv[0]
        # posix_spawn, not Popen: the daemon outlives this process by design, in
        # its own session, with no Popen object to finalize.
        pid = os.posix_spawn(
            executable,
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(self.logfile), _APPEND, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        self.pidfile.write_text(f"{pid}\n")
        address, port, kind = wait_for
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                raise DaemonError(
                    f"{self.name} ({self.program}) exited with status {status} at start; "
                    f"see {self.logfile}:\n{_tail(self.logfile)}"
                )
            if _listening(address, port, kind):
                return pid
            time.sleep(0.1)
        self.stop()
        raise DaemonError(f"{self.name} did not listen on {address}:{port} within {timeout:.0f}s")

    def stop(self, timeout: float = 10) -> bool:
        """SIGTERM our PID (then SIGKILL). True when something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _listening(address: str, port: int, kind: str) -> bool:
    """Is something listening? For UDP, ask /proc/net/udp rather than send a packet."""
    if kind == "tcp":
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return True
        return False
    want = "{:08X}:{:04X}".format(
        int.from_bytes(socket.inet_aton(address), "little"), port
    )
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            if line.split()[1] == want:
                return True
    return False


def dns_update_secret(state_dir: Path) -> str:
    """The lab's TSIG secret for DNS updates (knot's key, the inventory's
    rspamd_dkim_dns_update): made once, kept in the state directory, mode 0600."""
    path = state_dir / "dns-update.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return path.read_text().strip()
