"""The lab's pure parts: allocation, names, zones, inventory, refusals."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from mailfleet.lab import dns, network
from mailfleet.lab.config import LabConfig, LabConfigError, parse_releases
from mailfleet.lab.hosts import allocate, reverse_zone
from mailfleet.lab.inventory import inventory_data, write_inventory


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabConfig:
    monkeypatch.setenv("MAILFLEET_STATE", str(tmp_path / "state"))
    return LabConfig.create("unit", "10.77.42.0/24", root=tmp_path)


def test_hosts_get_fixed_names_and_addresses(config: LabConfig) -> None:
    hosts = allocate(config, 3)
    assert [(h.name, h.fqdn, h.address, h.container) for h in hosts] == [
        ("mx1", "mx1.lab.test", "10.77.42.11", "unit-mx1"),
        ("mx2", "mx2.lab.test", "10.77.42.12", "unit-mx2"),
        ("mx3", "mx3.lab.test", "10.77.42.13", "unit-mx3"),
    ]
    assert [h.mail_domain for h in hosts] == ["example1.test", "example2.test", "example3.test"]
    assert config.gateway == "10.77.42.1"
    assert reverse_zone(config) == "42.77.10.in-addr.arpa"


def test_allocation_is_stable_and_bounded(config: LabConfig) -> None:
    assert allocate(config, 5)[:2] == allocate(config, 2)
    assert allocate(config, 0) == []
    last = allocate(config, 200)[-1]
    assert ipaddress.ip_address(last.address) in config.subnet
    with pytest.raises(LabConfigError, match="at most 200 hosts"):
        allocate(config, 201)
    with pytest.raises(LabConfigError, match="0 or more"):
        allocate(config, -1)


def test_each_host_gets_its_release_and_the_last_one_repeats(config: LabConfig) -> None:
    hosts = allocate(config, 4, parse_releases("12, 13"))
    assert [h.release for h in hosts] == ["12", "13", "13", "13"]
    assert [h.debian.image for h in hosts[:2]] == ["localhost/mailfleet-lab:bookworm-1",
                                                    "localhost/mailfleet-lab:trixie-1"]
    assert hosts[1].debian.label == "Debian 13"
    assert [h.release for h in allocate(config, 3)] == ["12", "13", "13"]  # the default: mixed
    assert allocate(config, 2, ["13"])[0].name == "mx1"  # names do not depend on releases
    assert [h.release for h in allocate(config, 2, ["12", "13", "12"])] == ["12", "13"]


@pytest.mark.parametrize("text", ["11", "12,14", "bookworm", "", " , "])
def test_a_release_the_lab_does_not_build_is_refused(text: str) -> None:
    with pytest.raises(LabConfigError, match=r"not one the lab builds: use 12 or 13 .*"
                                             r"e\.g\. --release 12,13,13"):
        parse_releases(text)


def test_allocate_refuses_an_unknown_release(config: LabConfig) -> None:
    with pytest.raises(LabConfigError, match="lab release 11 is not one the lab builds"):
        allocate(config, 2, ["12", "11"])


@pytest.mark.parametrize(
    ("name", "subnet", "message"),
    [
        ("unit", "192.168.1.0/24", "outside 10.77.0.0/16"),
        ("unit", "8.8.8.0/24", "outside 10.77.0.0/16"),
        ("unit", "10.77.0.0/16", "not a /24"),
        ("unit", "10.77.0.5/24", "not an IPv4 network"),
        ("unit", "not-a-net", "not an IPv4 network"),
        ("Bad_Name", "10.77.0.0/24", "not usable"),
        ("x" * 30, "10.77.0.0/24", "not usable"),
    ],
)
def test_unsafe_or_malformed_settings_are_refused(name: str, subnet: str, message: str) -> None:
    with pytest.raises(LabConfigError, match=message):
        LabConfig.create(name, subnet)


def test_an_existing_network_that_is_not_internal_is_refused(config: LabConfig) -> None:
    nat = {"name": "unit-net", "internal": False, "subnets": [{"subnet": "10.77.42.0/24"}]}
    with pytest.raises(LabConfigError, match="not --internal"):
        network.check_safe(config, nat)
    moved = {"name": "unit-net", "internal": True, "subnets": [{"subnet": "10.77.43.0/24"}]}
    with pytest.raises(LabConfigError, match="lab down"):
        network.check_safe(config, moved)
    ok = {"name": "unit-net", "internal": True, "subnets": [{"subnet": "10.77.42.0/24"}]}
    network.check_safe(config, ok)


def test_inventory_names_every_host_with_its_address_and_hostname(config: LabConfig) -> None:
    hosts = allocate(config, 2)
    path = write_inventory(config, hosts)
    assert path == config.state_dir / "inventory" / "hosts.yml"
    data = yaml.safe_load(path.read_text())
    members = data["all"]["children"]["mailservers"]["hosts"]
    assert members == {
        "mx1": {"ansible_host": "10.77.42.11", "mail_hostname": "mx1.lab.test",
                "mail_domains": ["example1.test"],
                "mailfleet_probe_user": "probe@example1.test", "mailfleet_lab_release": "12"},
        "mx2": {"ansible_host": "10.77.42.12", "mail_hostname": "mx2.lab.test",
                "mail_domains": ["example2.test"],
                "mailfleet_probe_user": "probe@example2.test", "mailfleet_lab_release": "13"},
    }
    lab_vars = data["all"]["vars"]
    assert lab_vars["ansible_user"] == "root"
    assert lab_vars["ansible_ssh_private_key_file"] == str(config.ssh_key)
    # Host keys are pinned: never accept a new one silently.
    assert "StrictHostKeyChecking=yes" in lab_vars["ansible_ssh_common_args"]
    assert str(config.known_hosts) in lab_vars["ansible_ssh_common_args"]
    assert lab_vars["mailfleet_ca_bundle"] == str(config.state_dir / "ca" / "ca.crt")
    assert lab_vars["mailfleet_probe_options"] == {"dns_resolvers": [config.gateway],
                                                   "dns_blocklists": ["dnsbl.test"]}
    assert inventory_data(config, hosts) == data


def test_default_lab_writes_the_repository_inventory(tmp_path: Path) -> None:
    config = LabConfig.create("mailfleet", "10.77.0.0/24", root=tmp_path)
    assert config.inventory_path == tmp_path / "inventory" / "lab" / "hosts.yml"


def test_zones_have_a_record_ptr_and_mx_for_each_host(config: LabConfig) -> None:
    hosts = allocate(config, 2)
    zones = dns.zones(config, hosts, serial=7)
    assert set(zones) == {"lab.test", "42.77.10.in-addr.arpa", "example1.test", "example2.test",
                          "dnsbl.test"}
    assert "mx2 300 IN A 10.77.42.12" in zones["lab.test"]
    assert "12 300 IN PTR mx2.lab.test." in zones["42.77.10.in-addr.arpa"]
    assert "@ 300 IN MX 10 mx1.lab.test." in zones["example1.test"]
    assert '"v=spf1 mx -all"' in zones["example2.test"]
    # the block list: .250 listed, .251 answered with a "query refused" code, RFC 5782's entry
    assert dns.dnsbl_addresses(config) == ("10.77.42.250", "10.77.42.251")
    assert "250.42.77.10 300 IN A 127.0.0.2" in zones["dnsbl.test"]
    assert "251.42.77.10 300 IN A 127.255.255.254" in zones["dnsbl.test"]
    assert "2.0.0.127 300 IN A 127.0.0.2" in zones["dnsbl.test"]
    conf = dns.knot_conf(config, list(zones), Path("/k"), "c2VjcmV0")
    assert "listen: 10.77.42.1@53" in conf
    assert conf.count("- domain:") == 5
    # every zone takes updates signed with the lab key, and only those
    assert conf.count("acl: dkim-update") == 1 and "secret: c2VjcmV0" in conf
