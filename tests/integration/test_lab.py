"""A lab of two hosts, Debian 12 and Debian 13: up, reached over SSH and Ansible, resolved
by the lab DNS, cut off from the outside, and down again without a trace.

Uses its own lab name and subnet so the session's lab is not disturbed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import dns.reversename
import pytest

from mailfleet.lab.fleet import Lab, LabError
from mailfleet.lab.podman import podman, text
from tests.conftest import own_lab

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
# A documentation address (RFC 5737, TEST-NET-2): no route from a lab host may exist to it.
OUTSIDE = "198.51.100.7"


@pytest.fixture(scope="module")
def two_host_lab() -> Iterator[Lab]:
    fleet = own_lab("updown", "10.77.250.0/24")
    fleet.down()
    fleet.up(2, releases=("12", "13"))
    yield fleet
    fleet.down()


def _resolver(fleet: Lab) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [fleet.config.gateway]
    res.lifetime = 3
    return res


def test_hosts_answer_ssh_and_ansible(two_host_lab: Lab) -> None:
    two_host_lab.require_up()
    inv = two_host_lab.config.inventory_dir
    proc = subprocess.run(
        ["ansible", "-i", str(inv), "mailservers", "-m", "ansible.builtin.setup",
         "-a", "filter=ansible_fqdn,ansible_default_ipv4,ansible_service_mgr,"
         "ansible_distribution*", "-o"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = {}
    for line in proc.stdout.splitlines():
        host, _, rest = line.partition(" | SUCCESS => ")
        facts[host] = json.loads(rest)["ansible_facts"]
    assert facts["mx1"]["ansible_fqdn"] == "mx1.lab.test"
    # A real init as PID 1, so service management works as on a real host.
    assert facts["mx1"]["ansible_service_mgr"] == "sysvinit"
    assert facts["mx2"]["ansible_service_mgr"] == "sysvinit"
    assert {h: (f["ansible_distribution"], f["ansible_distribution_major_version"],
                f["ansible_distribution_release"]) for h, f in facts.items()} == {
        "mx1": ("Debian", "12", "bookworm"), "mx2": ("Debian", "13", "trixie")}


def test_each_host_runs_its_release_and_status_says_which(two_host_lab: Lab) -> None:
    assert [(h.name, h.release) for h in two_host_lab.hosts()] == [("mx1", "12"), ("mx2", "13")]
    for host, version in (("mx1", "12"), ("mx2", "13")):
        os_release = two_host_lab.exec(host, ["cat", "/etc/os-release"]).stdout.decode()
        assert f'VERSION_ID="{version}"' in os_release
    env = {**os.environ, "MAILFLEET_LAB": "updown", "MAILFLEET_LAB_SUBNET": "10.77.250.0/24"}
    status = subprocess.run([str(ROOT / ".venv" / "bin" / "mailfleet"), "lab", "status"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:4]}
    assert rows["mx1"][3:5] == ["Debian", "12"] and rows["mx2"][3:5] == ["Debian", "13"], \
        status.stdout
    # Asking an existing host for another release is refused, not a silent reinstall.
    with pytest.raises(LabError, match="mx2 runs Debian 13, not 12; run `mailfleet lab down`"):
        two_host_lab.up(2, releases=("12",))


def test_hosts_have_their_own_etc_hosts_not_the_controllers(two_host_lab: Lab) -> None:
    """podman copies the controller's /etc/hosts by default; a name there beat the lab DNS."""
    for h in two_host_lab.hosts():
        content = two_host_lab.exec(h, ["cat", "/etc/hosts"]).stdout.decode()
        names = {name for line in content.splitlines() if line and not line.startswith("#")
                 for name in line.split()[1:]}
        assert names == {"localhost", h.fqdn, h.name, "ip6-localhost", "ip6-loopback",
                         "ip6-allnodes", "ip6-allrouters"}, content
        assert f"{h.address}\t{h.fqdn}\t{h.name}" in content


def test_plain_ssh_uses_pinned_host_keys(two_host_lab: Lab) -> None:
    # Lab.ssh: the lab's key, its known_hosts, StrictHostKeyChecking=yes, BatchMode.
    proc = two_host_lab.ssh("10.77.250.12", "hostname -f", check=False, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == "mx2.lab.test"


def test_lab_dns_resolves_names_addresses_ptr_and_mx(two_host_lab: Lab) -> None:
    res = _resolver(two_host_lab)
    for host in two_host_lab.hosts():
        assert [r.to_text() for r in res.resolve(host.fqdn, "A")] == [host.address]
        ptr = res.resolve(dns.reversename.from_address(host.address), "PTR")
        assert [r.to_text() for r in ptr] == [host.fqdn + "."]
        mx = res.resolve(host.mail_domain, "MX")
        assert [r.exchange.to_text() for r in mx] == [host.fqdn + "."]
    # Hosts use the lab DNS too.
    out = two_host_lab.exec("mx1", ["getent", "hosts", "mx2.lab.test"])
    assert out.stdout.decode().split()[0] == "10.77.250.12"


def test_hosts_cannot_reach_outside_the_lab(two_host_lab: Lab) -> None:
    script = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(3)\n"
        f"try: s.connect(('{OUTSIDE}', 80))\n"
        "except OSError as e: print(e.errno); sys.exit(0)\n"
        "print('connected'); sys.exit(1)\n"
    )
    out = two_host_lab.exec("mx1", ["python3", "-c", script])
    assert out.stdout.decode().strip() == "101"  # ENETUNREACH: no route, nothing sent
    routes = two_host_lab.exec("mx1", ["ip", "route"]).stdout.decode()
    assert "default" not in routes


def test_apt_works_through_the_lab_proxy(two_host_lab: Lab) -> None:
    out = two_host_lab.exec("mx2", ["apt-get", "update", "-q"], timeout=180)
    assert b"10.77.250.1" not in out.stderr
    assert out.returncode == 0
    # apt as the host sees it: through the gateway, and a stalled fetch is retried
    # (never waited on for as long as the connection stays open)
    dump = two_host_lab.exec("mx2", ["apt-config", "dump"]).stdout.decode()
    proxy = f"http://{two_host_lab.config.gateway}:{two_host_lab.config.apt_proxy_port}"
    assert f'Acquire::http::Proxy "{proxy}";' in dump
    assert 'Acquire::http::Timeout "30";' in dump
    assert 'Acquire::Retries "5";' in dump


def test_up_again_changes_nothing(two_host_lab: Lab) -> None:
    before = {h: e["name"] for h, e in two_host_lab.containers().items()}
    known = two_host_lab.config.known_hosts.read_text()
    messages: list[str] = []
    two_host_lab.up(2, progress=messages.append)
    assert {h: e["name"] for h, e in two_host_lab.containers().items()} == before
    assert two_host_lab.config.known_hosts.read_text() == known
    assert any("already up; nothing changed" in m for m in messages)


def test_down_leaves_nothing_and_is_safe_twice() -> None:
    fleet = own_lab("downtwice", "10.77.251.0/24")
    fleet.up(1)
    pids = [fleet.dns_daemon.pid(), fleet.apt_daemon.pid()]
    assert all(pids)
    fleet.down()
    fleet.down()
    cfg = fleet.config
    assert text(podman(cfg, ["ps", "-a", "--filter", f"label={cfg.label}", "-q"])).strip() == ""
    assert podman(cfg, ["network", "exists", cfg.network], check=False).returncode != 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    assert not cfg.state_dir.exists()
    assert not cfg.inventory_path.exists()
    assert not fleet.is_up()
