"""A lab host cut off the network mid-life (its veth set down from the root namespace):
its probes fail by their deadline, every other host's stay correct and on time, and
once the link is back the next sweep sees it again."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailfleet.checks.target import ProbeOptions, Target
from mailfleet.dashboard.scheduler import Scheduler
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.targets import WatchedHost
from mailfleet.lab.fleet import Lab, LabHost
from mailfleet.lab.podman import podman, text

pytestmark = pytest.mark.lab

TIMEOUT = 2.0


def host_veth(lab: Lab, host: LabHost) -> str:
    """The root-namespace end of the host's veth pair, checked to be on the lab's bridge."""
    pid = text(podman(lab.config, ["inspect", "-f", "{{.State.Pid}}", host.container])).strip()
    inside = subprocess.run(["nsenter", "-t", pid, "-n", "ip", "-o", "link", "show", "eth0"],
                            capture_output=True, text=True, check=True, timeout=10).stdout
    match = re.search(r"eth0@if(\d+)", inside)
    assert match, f"cannot find the peer of eth0 in {host.container}: {inside!r}"
    outside = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True,
                             timeout=10).stdout
    for line in outside.splitlines():
        index, name, rest = line.split(": ", 2)
        if index == match.group(1):
            bridge = re.search(r" master (\S+) ", rest)
            assert bridge, f"{name} is not on a bridge"
            addrs = subprocess.run(["ip", "-o", "addr", "show", "dev", bridge.group(1)],
                                   capture_output=True, text=True, check=True,
                                   timeout=10).stdout
            assert f" {lab.config.gateway}/" in addrs, (
                f"{name} is on {bridge.group(1)}, not on the bridge of lab {lab.config.name}")
            return name.split("@")[0]
    raise AssertionError(f"no link with index {match.group(1)} in the root namespace")


@contextlib.contextmanager
def partitioned(veth: str) -> Iterator[None]:
    subprocess.run(["ip", "link", "set", "dev", veth, "down"], check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "set", "dev", veth, "up"], check=True, timeout=10)


def ssh_port_host(h: LabHost) -> WatchedHost:
    """The lab host's sshd as the probed port (no mail stack needed)."""
    return WatchedHost(
        name=h.name,
        target=Target(name=h.name, address=h.address, mail_hostname=h.fqdn,
                      ports={"imaps": 22}, checks=("port",)),
        options=ProbeOptions(timeout=TIMEOUT),
        groups=("mailservers",),
    )


def test_a_partitioned_host_fails_alone_and_comes_back(lab: Lab, tmp_path: Path) -> None:
    lab.require_up()
    hosts = lab.hosts()
    assert len(hosts) >= 2
    victim = hosts[1]
    veth = host_veth(lab, victim)
    watched = [ssh_port_host(h) for h in hosts]
    store = ResultStore(tmp_path / "results.sqlite3")
    scheduler = Scheduler(lambda: watched, store, interval=60, concurrency=4, per_host=1)

    with partitioned(veth):
        lab.require_up()  # the other hosts and the bridge are still there
        t0 = time.monotonic()
        sweep = scheduler.sweep()
        took = time.monotonic() - t0
    cut = {r.host: r for r in store.latest()}
    assert not cut[victim.name].success
    assert cut[victim.name].duration <= TIMEOUT + 0.5, cut[victim.name].duration
    for h in hosts:
        if h is not victim:
            assert cut[h.name].success, f"{h.name}: {cut[h.name].error}"
            assert cut[h.name].duration < 0.5, cut[h.name].duration
    assert sweep.failures == 1
    assert took <= TIMEOUT + 1.0

    # The link is back: the next sweep sees every host again (ARP/neighbour may need a moment).
    deadline = time.monotonic() + 15
    while True:
        scheduler.sweep()
        back = {r.host: r for r in store.latest()}
        if all(r.success for r in back.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(r.success for r in back.values()), {h: r.error for h, r in back.items()}
    store.close()
