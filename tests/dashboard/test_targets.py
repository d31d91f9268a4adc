"""Targets come from the inventory through Ansible: vault, group_vars, dynamic inventories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailfleet.dashboard.targets import InventoryError, load_inventory

VAULT_PASSWORD = "correct horse battery staple"


def vault_encrypt(password_file: Path, name: str, value: str) -> str:
    tool = Path(sys.executable).parent / "ansible-vault"
    proc = subprocess.run(
        [str(tool), "encrypt_string", "--vault-password-file", str(password_file), value,
         "--name", name],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return proc.stdout


@pytest.fixture
def inventory(tmp_path: Path) -> tuple[Path, Path]:
    password_file = tmp_path / "vault-pass"
    password_file.write_text(VAULT_PASSWORD + "\n")
    inv = tmp_path / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n"
        "  children:\n"
        "    mailservers:\n"
        "      children:\n"
        "        eu:\n"
        "          hosts:\n"
        "            mx1: {ansible_host: 10.77.9.11, mail_hostname: mx1.lab.test,\n"
        "                  mail_domains: [example1.test]}\n"
        "        us:\n"
        "          hosts:\n"
        "            mx2: {ansible_host: 10.77.9.12, mailfleet_checks: [port],\n"
        "                  mailfleet_ports: {imaps: 10993}}\n"
        "    monitoring:\n"
        "      hosts:\n"
        "        mon1: {ansible_host: 10.77.9.20}\n"
    )
    (inv / "group_vars" / "mailservers.yml").write_text(
        "mailfleet_probe_user: probe@example1.test\n"
        + vault_encrypt(password_file, "mailfleet_probe_password", "s3cret-probe")
        + "mailfleet_probe_options: {timeout: 4, dns_resolvers: ['10.77.9.1:53']}\n"
    )
    return inv, password_file


def test_hosts_of_the_group_with_vaulted_credentials(inventory: tuple[Path, Path]) -> None:
    inv, password_file = inventory
    hosts = load_inventory([inv], vault_password_file=password_file)
    assert [h.name for h in hosts] == ["mx1", "mx2"]  # mon1 is not a mail server
    mx1, mx2 = hosts
    assert mx1.target.address == "10.77.9.11"
    assert mx1.target.mail_hostname == "mx1.lab.test"
    assert mx1.target.domains == ("example1.test",)
    assert mx1.groups == ("eu", "mailservers")
    assert mx1.checks == ("port", "tls", "smtp", "dns", "imap_login", "quota")
    assert mx1.target.credentials is not None
    assert mx1.target.credentials.secret_password() == "s3cret-probe"
    assert mx1.options.timeout == 4 and mx1.options.dns_resolvers == ("10.77.9.1:53",)
    assert mx2.checks == ("port",) and mx2.target.port("imaps") == 10993
    # the secret never shows in what is logged or served
    assert "s3cret" not in repr(mx1) + json.dumps(mx1.to_dict())


def test_a_vaulted_variable_without_the_password_is_a_clear_error(
    inventory: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    with pytest.raises(InventoryError, match="mailfleet_probe_password is vault-encrypted"):
        load_inventory([inventory[0]])


def test_every_bad_host_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(
        "mailservers:\n"
        "  hosts:\n"
        "    mx1: {mailfleet_probe_options: {colour: blue}}\n"
        "    mx2: {mailfleet_checks: port}\n"
    )
    with pytest.raises(InventoryError) as err:
        load_inventory([tmp_path / "hosts.yml"])
    assert "mx1: unknown mailfleet_probe_options colour" in str(err.value)
    assert "mx2: mailfleet_checks must be a list" in str(err.value)


def test_a_dynamic_inventory_script_works(tmp_path: Path) -> None:
    script = tmp_path / "inventory.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json\n"
        "print(json.dumps({'mailservers': {'hosts': ['mx7']},\n"
        "  '_meta': {'hostvars': {'mx7': {'ansible_host': '10.77.9.17'}}}}))\n"
    )
    script.chmod(0o755)
    (host,) = load_inventory([script])
    assert (host.name, host.target.address) == ("mx7", "10.77.9.17")


def test_an_unreadable_inventory_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("all: [not, an, inventory\n")
    with pytest.raises(InventoryError, match="ansible-inventory failed"):
        load_inventory([tmp_path / "hosts.yml"])


def test_a_broken_inventory_reload_keeps_the_previous_hosts(tmp_path: Path) -> None:
    from mailfleet.dashboard.monitor import Inventory

    source = tmp_path / "hosts.yml"
    source.write_text("mailservers:\n  hosts:\n    mx1: {ansible_host: 10.77.9.11}\n")
    inventory = Inventory.from_ansible([source], refresh=0)
    assert [h.name for h in inventory.hosts()] == ["mx1"]
    source.write_text("mailservers:\n  hosts:\n    mx1: {mailfleet_checks: port}\n")
    assert [h.name for h in inventory.refreshed_hosts()] == ["mx1"]  # kept
    assert "mailfleet_checks must be a list" in inventory.last_error
    source.write_text("mailservers:\n  hosts:\n    mx2: {ansible_host: 10.77.9.12}\n")
    assert [h.name for h in inventory.refreshed_hosts()] == ["mx2"]
    assert inventory.last_error == ""


def test_the_server_check_gets_its_ssh_settings_from_ansibles_variables(tmp_path: Path) -> None:
    from mailfleet.checks.server import ServerTarget

    source = tmp_path / "hosts.yml"
    source.write_text(
        "mailservers:\n  hosts:\n"
        "    mx1: {ansible_host: 10.77.9.11, ansible_user: root, ansible_port: 2222,\n"
        "          ansible_ssh_private_key_file: /keys/lab, mailfleet_known_hosts: /keys/kh,\n"
        "          mailfleet_checks: [port, server],\n"
        "          mailfleet_server: {ssh_user: mailfleet, mail_store: /srv/vmail}}\n"
        "    mx2: {ansible_host: 10.77.9.12, mailfleet_checks: [port]}\n"
    )
    mx1, mx2 = load_inventory([source])
    assert isinstance(mx1.target, ServerTarget) and mx1.target.server is not None
    ssh = mx1.target.server.ssh
    assert (ssh.address, ssh.user, ssh.port) == ("10.77.9.11", "mailfleet", 2222)
    assert (str(ssh.key_file), str(ssh.known_hosts)) == ("/keys/lab", "/keys/kh")
    assert mx1.target.server.mail_store == "/srv/vmail"
    assert not isinstance(mx2.target, ServerTarget)  # no server check, no SSH settings


def test_bad_server_settings_are_an_inventory_error_naming_the_host(tmp_path: Path) -> None:
    source = tmp_path / "hosts.yml"
    source.write_text(
        "mailservers:\n  hosts:\n"
        "    mx1: {mailfleet_checks: [server], mailfleet_server: {mail_store: relative/path,"
        " colour: blue}}\n"
    )
    with pytest.raises(InventoryError, match=r"mx1: .*colour.*mail_store must be an absolute"):
        load_inventory([source])


def test_the_dns_check_takes_the_dkim_selectors_of_the_rspamd_role(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(
        "mailservers:\n  hosts:\n"
        "    mx1: {rspamd_dkim_selector: s2, rspamd_dkim_retired_selectors: [s1],\n"
        "          mailfleet_probe_options: {dns_resolvers: ['10.77.9.1']}}\n"
        "    mx2: {rspamd_dkim_selector: s2,\n"
        "          mailfleet_probe_options: {dns_dkim_selectors: [own]}}\n"
        "    mx3: {}\n"
    )
    mx1, mx2, mx3 = load_inventory([tmp_path / "hosts.yml"])
    assert mx1.options.dns_dkim_selectors == ("s2",)
    assert mx1.options.dns_dkim_retired_selectors == ("s1",)
    assert mx1.options.dns_resolvers == ("10.77.9.1",)
    # the probe options win; a host without rspamd's variables is not checked for DKIM
    assert mx2.options.dns_dkim_selectors == ("own",)
    assert mx2.options.dns_dkim_retired_selectors == ()
    assert mx3.options.dns_dkim_selectors == ()
