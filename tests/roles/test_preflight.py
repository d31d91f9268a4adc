"""A choice only the operator can make has no default, and a setting the daemons cannot
read is refused: preflight says so, touching no host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _preflight_fails(tmp_path: Path, **host_vars: Any) -> str:
    """Run playbooks/mail.yml on one host with ``host_vars``; it must stop in preflight.

    A local connection: preflight is controller-side only, and nothing may leave this
    machine. Returns the run's output, its whitespace folded (Ansible wraps messages)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": {
        "mx9": {"ansible_connection": "local", "mail_hostname": "mx9.example.org",
                "mail_domains": ["example.org"], "mail_users": [], **host_vars}}}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / "mail.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Deploy the mail stack" not in out, "a host was touched after a failed preflight"
    return " ".join(out.split())


def test_unset_certificate_source_fails_in_preflight_naming_the_choices(tmp_path: Path) -> None:
    out = _preflight_fails(tmp_path)
    assert "set mail_tls_source to one of acme" in out and "provided" in out and "lab_ca" in out


def test_a_sieve_setting_pigeonhole_cannot_read_fails_in_preflight(tmp_path: Path) -> None:
    out = _preflight_fails(tmp_path, mail_tls_source="lab_ca",
                           dovecot_sieve_redirect_envelope_from="forwarder")
    assert "dovecot_sieve_redirect_envelope_from (forwarder) one of recipient" in out, out


def test_a_watcher_shard_that_names_no_shard_fails_in_the_monitor_role_preflight(
    tmp_path: Path,
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": {
        "mx9": {"ansible_connection": "local"}}}}}}))
    play = tmp_path / "play.yml"
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    for shard, ok in (("1/2", True), ("2/2", False), ("0/0", False), ("x", False), ("", True)):
        play.write_text(yaml.safe_dump([{
            "hosts": "localhost", "gather_facts": False, "connection": "local",
            "vars": {"mailfleet_monitor_shard": shard},
            "tasks": [{"ansible.builtin.include_role": {"name": "mailfleet_monitor",
                                                        "tasks_from": "preflight"}}],
        }]))
        proc = subprocess.run(["ansible-playbook", "-i", str(inventory), str(play)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        out = " ".join((proc.stdout + proc.stderr).split())
        assert (proc.returncode == 0) is ok, (shard, out)
        if not ok:
            assert 'mailfleet_monitor_shard must be "K/N" with K from 0 to N-1' in out, out
            assert f'not "{shard}"' in out, out
