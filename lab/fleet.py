"""The lab fleet: Debian 12 and 13 hosts as podman containers with a real init.

``Lab.up`` builds what is missing (image, network, hosts, SSH keys, DNS, apt
proxy, inventory) and leaves what exists alone; ``Lab.down`` removes exactly
what ``up`` made and is safe to run twice or after a crash.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from mailfleet.lab import daemons, dns, network
from mailfleet.lab.config import DEFAULT_RELEASES, DOMAIN, RELEASES, LabConfig, LabConfigError
from mailfleet.lab.hosts import LabHost, allocate
from mailfleet.lab.image import ensure_image
from mailfleet.lab.inventory import remove_inventory, write_inventory
from mailfleet.lab.podman import PodmanError, podman, text, wait_running

Progress = Callable[[str], None]

__all__ = ["Lab", "LabError", "LabHost", "LabStatus"]


class LabError(RuntimeError):
    """The lab is not in the state asked for; the message says what to do."""


@dataclass(frozen=True)
class HostState:
    host: LabHost
    state: str  # podman's container state, or "missing"
    ssh: bool


@dataclass(frozen=True)
class LabStatus:
    network: bool
    hosts: list[HostState]
    dns_pid: int | None
    apt_proxy_pid: int | None

    @property
    def up(self) -> bool:
        return (
            self.network
            and self.dns_pid is not None
            and self.apt_proxy_pid is not None
            and all(h.state == "running" for h in self.hosts)
        )


def _quiet(_: str) -> None:
    pass


def _tcp_open(address: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=timeout):
        return True
    return False


class Lab:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        state = config.state_dir
        self.dns_daemon = daemons.Daemon("dns", "knotd", state / "knot.pid", state / "knot.log")
        self.apt_daemon = daemons.Daemon(
            "apt-proxy", "apt-cacher-ng", state / "apt-cacher-ng.pid", state / "apt-cacher-ng.log"
        )

    @classmethod
    def from_env(cls) -> Lab:
        return cls(LabConfig.from_env())

    # -- what exists -----------------------------------------------------------
    def containers(self) -> dict[str, dict[str, str]]:
        """This lab's containers by host name: {"mx1": {"state": ..., "name": ...}}."""
        proc = podman(
            self.config,
            ["ps", "-a", "--filter", f"label={self.config.label}", "--format", "json"],
        )
        found: dict[str, dict[str, str]] = {}
        for entry in json.loads(text(proc) or "[]"):
            labels = entry.get("Labels") or {}
            host = labels.get("mailfleet.host")
            if host:
                names = entry.get("Names") or [""]
                found[host] = {"state": str(entry.get("State", "")).lower(), "name": names[0],
                               # hosts made before releases were labelled are Debian 12
                               "release": labels.get("mailfleet.release", "12")}
        return found

    def hosts(self) -> list[LabHost]:
        """The hosts of this lab that exist now, in order, each with the release it runs."""
        existing = self.containers()
        count = 0
        while f"mx{count + 1}" in existing:
            count += 1
        releases = [existing[f"mx{i}"]["release"] for i in range(1, count + 1)]
        return allocate(self.config, count, releases or DEFAULT_RELEASES)

    def host(self, name: str) -> LabHost:
        for h in self.hosts():
            if name in (h.name, h.fqdn, h.container, h.address):
                return h
        raise LabError(
            f"no lab host {name!r} in lab {self.config.name!r} (see `mailfleet lab status`)"
        )

    def status(self) -> LabStatus:
        net = network.inspect(self.config) is not None
        states: list[HostState] = []
        existing = self.containers()
        for h in self.hosts():
            state = existing.get(h.name, {}).get("state", "missing")
            ssh = state == "running" and net and _tcp_open(h.address, 22)
            states.append(HostState(h, state, ssh))
        return LabStatus(net, states, self.dns_daemon.pid(), self.apt_daemon.pid())

    def is_up(self) -> bool:
        return self.status().up and network.bridge_has_gateway(self.config)

    def require_up(self) -> None:
        """Raise unless the lab is up: with it down, lab addresses route to the outside."""
        if not self.is_up():
            raise LabError(
                f"lab {self.config.name!r} is not up; run `mailfleet lab up` "
                "(no traffic is sent to lab addresses while it is down)"
            )

    # -- up ----------------------------------------------------------------------
    def up(self, hosts: int = 3, progress: Progress = _quiet,
           releases: Sequence[str] | None = None) -> list[LabHost]:
        """Hosts mx1..mx<hosts>; host i runs ``releases[i-1]`` (the last one past the list).

        Without ``releases`` hosts that exist keep theirs and new ones get the default.
        """
        cfg = self.config
        wanted = allocate(cfg, hosts, releases or DEFAULT_RELEASES)
        existing = self.containers()
        foreign = self._foreign_containers(wanted)
        if foreign:
            raise LabError(
                f"containers {', '.join(foreign)} exist but do not belong to lab {cfg.name!r}; "
                "remove or rename them first (the lab never touches containers it did not make)"
            )
        if existing and len(existing) > hosts:
            progress(f"lab {cfg.name!r} already has {len(existing)} hosts; keeping them")
            wanted = allocate(cfg, len(existing), releases or DEFAULT_RELEASES)
        # A host keeps the release it was made with; asking for another is an error,
        # not a silent reinstall.
        differ = [f"{h.name} runs Debian {existing[h.name]['release']}, not {h.release}"
                  for h in wanted[:hosts]
                  if h.name in existing and existing[h.name]["release"] != h.release]
        if differ and releases is not None:
            raise LabError(f"lab {cfg.name!r}: {'; '.join(differ)}; run `mailfleet lab down` "
                           "first to make the hosts anew")
        wanted = [replace(h, release=existing[h.name]["release"]) if h.name in existing else h
                  for h in wanted]
        for version in sorted({h.release for h in wanted}):
            ensure_image(cfg, RELEASES[version], progress)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if network.create(cfg):
            progress(f"created internal network {cfg.network} ({cfg.subnet})")
        new_key = self._ensure_ssh_key()
        created = []
        for h in wanted:
            state = existing.get(h.name, {}).get("state")
            if state == "running":
                continue
            if state is not None:
                podman(cfg, ["start", h.container])
            else:
                self._run_container(h)
                created.append(h)
        self._wait_bridge()
        self._ensure_daemons(wanted, progress)
        for h in wanted:
            if new_key or h in created or not _tcp_open(h.address, 22):
                self._provision(h)
        self._write_known_hosts(wanted)
        for h in wanted:
            self._wait_ssh(h)
        write_inventory(cfg, wanted, daemons.dns_update_secret(cfg.state_dir))
        if created:
            progress(f"started {len(created)} host(s): {', '.join(h.name for h in created)}")
        else:
            progress(f"lab {cfg.name!r} is already up; nothing changed")
        return wanted

    def _foreign_containers(self, wanted: list[LabHost]) -> list[str]:
        proc = podman(self.config, ["ps", "-a", "--format", "json"])
        ours = {e["name"] for e in self.containers().values()}
        names = {h.container for h in wanted}
        foreign = []
        for entry in json.loads(text(proc) or "[]"):
            for name in entry.get("Names") or []:
                if name in names and name not in ours:
                    foreign.append(name)
        return foreign

    def _ensure_ssh_key(self) -> bool:
        """The controller's key for this lab; True when made now (hosts need it again)."""
        key = self.config.ssh_key
        if key.exists():
            return False
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
             f"mailfleet-lab-{self.config.name}", "-f", str(key)],
            check=True,
        )
        return True

    def _run_container(self, h: LabHost) -> None:
        cfg = self.config
        podman(
            cfg,
            [
                "run", "-d", "--name", h.container, "--hostname", h.fqdn,
                "--network", cfg.network, "--ip", h.address,
                "--dns", cfg.gateway, "--dns-search", DOMAIN,
                # The host's /etc/hosts is its own (written at provisioning), never a
                # copy of the controller's: a name added there would override the lab DNS.
                "--no-hosts",
                # exactly what fail2ban's nftables ban rules inside the host need
                "--cap-add", "NET_ADMIN",
                # what root has on a real host and Debian's init scripts rely on:
                # start-stop-daemon --exec reads /proc/<pid>/exe of daemons that run
                # as their own user (redis); without it "stop" finds nothing to stop
                # and a restart leaves the old process running
                "--cap-add", "SYS_PTRACE",
                "--label", cfg.label, "--label", f"mailfleet.host={h.name}",
                "--label", f"mailfleet.release={h.release}",
                h.debian.image, "/sbin/init",
            ],
        )

    def _wait_bridge(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not network.bridge_has_gateway(self.config):
            if time.monotonic() > deadline:
                raise LabError(
                    f"the lab bridge never got {self.config.gateway}; is a lab host running?"
                )
            time.sleep(0.1)

    def _ensure_daemons(self, hosts: list[LabHost], progress: Progress) -> None:
        cfg = self.config
        knot_dir = cfg.state_dir / "knot"
        zones = dns.zones(cfg, hosts, serial=int(time.time()))
        (knot_dir / "zones").mkdir(parents=True, exist_ok=True)
        (knot_dir / "db").mkdir(parents=True, exist_ok=True)
        for name, body in zones.items():
            (knot_dir / "zones" / f"{name}.zone").write_text(body)
        conf = knot_dir / "knot.conf"
        secret = daemons.dns_update_secret(cfg.state_dir)
        new_conf = dns.knot_conf(cfg, list(zones), knot_dir, secret)
        if self.dns_daemon.pid() is not None and conf.exists() and conf.read_text() == new_conf:
            subprocess.run(
                ["knotc", "-s", str(knot_dir / "knot.sock"), "zone-reload"],
                capture_output=True, check=False, timeout=10,
            )
        else:
            self.dns_daemon.stop()
            conf.write_text(new_conf)
            self.dns_daemon.start(
                ["knotd", "-c", str(conf)], (cfg.gateway, cfg.dns_port, "tcp")
            )
            progress(f"lab DNS (knot) serving {len(zones)} zones on {cfg.gateway}:{cfg.dns_port}")
        if self.apt_daemon.pid() is None:
            self.apt_daemon.start(self._apt_proxy_argv(), (cfg.gateway, cfg.apt_proxy_port, "tcp"))
            progress(f"apt proxy (apt-cacher-ng) on {cfg.gateway}:{cfg.apt_proxy_port}")

    def _apt_proxy_argv(self) -> list[str]:
        cfg = self.config
        conf_dir = cfg.state_dir / "apt-cacher-ng"
        cache = cfg.cache_dir / "apt-cacher-ng"
        for d in (conf_dir, cache, conf_dir / "log"):
            d.mkdir(parents=True, exist_ok=True)
        # No Remap-* lines: a plain caching proxy to the mirrors the hosts ask for
        # (Debian's default remaps deb.debian.org to a mirror list unreachable here).
        (conf_dir / "acng.conf").write_text(
            f"CacheDir: {cache}\nLogDir: {conf_dir / 'log'}\n"
            f"Port: {cfg.apt_proxy_port}\nBindAddress: {cfg.gateway}\n"
            f"SocketPath: {conf_dir / 'socket'}\nReportPage: acng-report.html\n"
            "ExThreshold: 4\nVfilePatternEx: ^/\\?release=[0-9]+&id=.*$\n"
        )
        return ["/usr/sbin/apt-cacher-ng", "-c", str(conf_dir), "ForeGround=1"]

    def _provision(self, h: LabHost) -> None:
        """Per-host set-up: /etc/hosts, apt proxy, fresh SSH host keys, our key, sshd."""
        cfg = self.config
        proxy = f"http://{cfg.gateway}:{cfg.apt_proxy_port}"
        script = (
            "set -e\n"
            # as the Debian installer writes it for a host with a static address
            "printf '%s\\n' '127.0.0.1\tlocalhost'"
            f" '{h.address}\t{h.fqdn}\t{h.name}' ''"
            " '::1\tlocalhost ip6-localhost ip6-loopback'"
            " 'ff02::1\tip6-allnodes' 'ff02::2\tip6-allrouters' > /etc/hosts\n"
            "printf '%s\\n'"
            f" 'Acquire::http::Proxy \"{proxy}\";'"
            # a mirror that stalls behind the proxy: give up on the fetch and retry it
            # rather than wait on it for as long as the connection stays open
            " 'Acquire::http::Timeout \"30\";' 'Acquire::Retries \"5\";'"
            " > /etc/apt/apt.conf.d/01mailfleet-lab-proxy\n"
            "ls /etc/ssh/ssh_host_ed25519_key >/dev/null 2>&1 || ssh-keygen -A >/dev/null\n"
            "install -d -m 700 /root/.ssh\n"
            "cat > /root/.ssh/authorized_keys\n"
            "chmod 600 /root/.ssh/authorized_keys\n"
            # sshd failed at boot (no host keys yet); start it now, detached from our pipes.
            "/etc/init.d/ssh start </dev/null >/dev/null 2>&1 || true\n"
        )
        self._wait_running(h)
        podman(
            cfg,
            ["exec", "-i", h.container, "sh", "-c", script],
            input=cfg.ssh_key.with_suffix(".pub").read_bytes(),
        )

    def _wait_running(self, h: LabHost) -> None:
        problem = wait_running(self.config, h.container)
        if problem:
            raise LabError(f"lab host {h.name} did not start: {problem}")

    def _write_known_hosts(self, hosts: list[LabHost]) -> None:
        lines = []
        for h in hosts:
            proc = podman(
                self.config,
                ["exec", h.container, "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"],
            )
            for key in text(proc).splitlines():
                parts = key.split()
                if len(parts) >= 2:
                    lines.append(f"{h.fqdn},{h.name},{h.address} {parts[0]} {parts[1]}")
        self.config.known_hosts.write_text("\n".join(lines) + "\n")

    def _wait_ssh(self, h: LabHost, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not _tcp_open(h.address, 22):
            if time.monotonic() > deadline:
                raise LabError(f"sshd on {h.name} ({h.address}) did not answer within {timeout}s")
            time.sleep(0.2)

    # -- down ------------------------------------------------------------------
    def down(self, progress: Progress = _quiet) -> None:
        cfg = self.config
        removed = []
        for host, entry in sorted(self.containers().items()):
            podman(cfg, ["rm", "-f", "-t", "0", entry["name"]], timeout=60)
            removed.append(host)
        if removed:
            progress(f"removed host(s): {', '.join(removed)}")
        if self.dns_daemon.stop():
            progress("stopped lab DNS")
        if self.apt_daemon.stop():
            progress("stopped apt proxy")
        if network.remove(cfg):
            progress(f"removed network {cfg.network}")
        remove_inventory(cfg)
        if cfg.state_dir.exists():
            shutil.rmtree(cfg.state_dir)

    # -- use -------------------------------------------------------------------
    def exec(
        self,
        host: str | LabHost,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = 300,
    ) -> subprocess.CompletedProcess[bytes]:
        h = host if isinstance(host, LabHost) else self.host(host)
        flags = ["-i"] if input is not None else []
        try:
            return podman(self.config, ["exec", *flags, h.container, *argv],
                          check=check, input=input, timeout=timeout)
        except PodmanError as exc:
            raise LabError(str(exc)) from None

    def ssh(
        self, host: str | LabHost, command: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` as root over SSH, as Ansible and an admin reach a host.

        Start daemons this way, not with ``exec``: a Dovecot started from a podman
        exec session ends its clients' sessions on a reload that changes its
        configuration (seen with a renewed certificate); started over SSH it keeps
        them, as on a real host. A daemon started this way must not keep the
        session's output open (``</dev/null >/dev/null 2>&1``), or ssh waits for it.
        """
        h = host if isinstance(host, LabHost) else self.host(host)
        cfg = self.config
        argv = [
            "ssh", "-i", str(cfg.ssh_key), "-o", f"UserKnownHostsFile={cfg.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", f"root@{h.address}", command,
        ]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise LabError(f"ssh {h.name} {command!r} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
        return proc


def describe_error(exc: Exception) -> str:
    if isinstance(exc, LabConfigError | LabError | PodmanError | daemons.DaemonError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
