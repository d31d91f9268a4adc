"""inventory/example is a usable production example: its vault opens with the
documented password, every user has a hash, and the playbooks parse with it.
No lab and no network needed (the example's hosts are documentation addresses)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory" / "example"
DOCUMENTED_VAULT_PASSWORD = "mailfleet-example-vault"


def _vault_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-pass"
    path.write_text(DOCUMENTED_VAULT_PASSWORD + "\n")
    return path


def test_example_inventory_has_two_mx_hosts_with_vaulted_hashes(tmp_path: Path) -> None:
    assert DOCUMENTED_VAULT_PASSWORD in (EXAMPLE / "README.md").read_text()
    assert "$ANSIBLE_VAULT" in (EXAMPLE / "group_vars/mailservers/vault.yml").read_text()
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible"),
            "-i",
            str(EXAMPLE),
            "mailservers",
            "-o",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ mail_users | to_json }}",
            "--vault-password-file",
            str(_vault_file(tmp_path)),
            "-c",
            "local",
            "--limit",
            "mx1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    users = json.loads(proc.stdout.split("=>", 1)[1])["msg"]
    users = json.loads(users) if isinstance(users, str) else users
    assert len(users) >= 2
    for user in users:
        assert re.fullmatch(r"\{SHA512-CRYPT\}\$6\$\S+", user["password_hash"]), user["name"]

    hosts = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible-inventory"),
            "-i",
            str(EXAMPLE),
            "--list",
            "--vault-password-file",
            str(_vault_file(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert sorted(json.loads(hosts.stdout)["mailservers"]["hosts"]) == ["mx1", "mx2"]


def test_playbooks_parse_with_the_example_inventory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            str(EXAMPLE),
            "--syntax-check",
            "--vault-password-file",
            str(_vault_file(tmp_path)),
            "playbooks/site.yml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
