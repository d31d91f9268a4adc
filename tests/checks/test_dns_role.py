"""roles/mail_dns_check through ansible-playbook, against the loopback knot (no lab needed).

The play only runs on the controller (delegate_to localhost), so the inventory's
hosts need not exist: their addresses are TEST-NET ones the knot zones describe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.checks.knot import Knot, knotd_path

pytestmark = pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks" / "dns_check.yml"


def inventory(tmp_path: Path) -> Path:
    hosts = {
        "good": {"ansible_host": "192.0.2.10", "mail_hostname": "mx-good.dnstest.test",
                 "mail_domains": ["good.test"]},
        "bad": {"ansible_host": "192.0.2.12", "mail_hostname": "mx2.dnstest.test",
                "mail_domains": ["wrongmx.test"]},
    }
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": hosts}}}}))
    return path


def play(playbook: Path, inv: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml"}
    # The fake hosts have no DKIM keys to read (the DKIM test below names its own).
    extra = {"mail_dns_check_dkim_selectors": [], **extra}
    binary = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [str(binary), "-i", str(inv), str(playbook), "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )


def test_wrong_dns_fails_the_host_with_a_table(knot: Knot, tmp_path: Path) -> None:
    proc = play(PLAYBOOK, inventory(tmp_path), {"mail_dns_check_resolvers": [knot.resolver]})
    out = proc.stdout
    assert proc.returncode == 2, out + proc.stderr
    assert "DNS of mx2.dnstest.test is wrong:" in out
    assert "PTR of 192.0.2.12 is other.dnstest.test, expected mx2.dnstest.test" in out
    assert ("MX of wrongmx.test is mx9.dnstest.test (192.0.2.99), expected mx2.dnstest.test "
            "(192.0.2.12)") in out
    assert "good                       : ok=3    changed=0    unreachable=0    failed=0" in out


def test_site_style_playbook_never_touches_a_host_whose_dns_is_wrong(
    knot: Knot, tmp_path: Path
) -> None:
    site = tmp_path / "site.yml"
    site.write_text(
        "---\n"
        f"- name: DNS first\n  ansible.builtin.import_playbook: {PLAYBOOK}\n"
        "- name: Deploy\n  hosts: mailservers\n  gather_facts: false\n  tasks:\n"
        "    - name: Pretend to deploy.\n"
        "      ansible.builtin.debug:\n        msg: \"deploying {{ inventory_hostname }}\"\n"
    )
    proc = play(site, inventory(tmp_path), {"mail_dns_check_resolvers": [knot.resolver]})
    assert proc.returncode == 2
    assert "deploying good" in proc.stdout
    assert "deploying bad" not in proc.stdout


def test_warn_only_reports_and_goes_on(knot: Knot, tmp_path: Path) -> None:
    proc = play(PLAYBOOK, inventory(tmp_path),
                {"mail_dns_check_resolvers": [knot.resolver], "mail_dns_check_fail": False})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DNS of mx2.dnstest.test has problems:" in proc.stdout
    assert "PTR of 192.0.2.12 is other.dnstest.test, expected mx2.dnstest.test" in proc.stdout


def test_argument_spec_rejects_a_bad_type(knot: Knot, tmp_path: Path) -> None:
    proc = play(PLAYBOOK, inventory(tmp_path), {"mail_dns_check_resolvers": [knot.resolver],
                                                "mail_dns_check_timeout": "soon"})
    assert proc.returncode == 2
    assert "mail_dns_check_timeout" in proc.stdout
    assert "Check the DNS records" not in proc.stdout


def test_the_dkim_record_must_hold_the_key_on_the_host(knot: Knot, tmp_path: Path) -> None:
    """The host is the controller itself: its key directory is one made here."""
    keys = tmp_path / "dkim"
    keys.mkdir()
    hosts = {"good": {"ansible_host": "192.0.2.10", "mail_hostname": "mx-good.dnstest.test",
                      "mail_domains": ["good.test"], "ansible_connection": "local",
                      "ansible_python_interpreter": sys.executable}}
    inv = tmp_path / "local.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": hosts}}}}))
    extra = {"mail_dns_check_resolvers": [knot.resolver], "mail_dns_check_dkim_selectors": ["mail"],
             "mail_dns_check_dkim_key_dir": str(keys)}
    before = play(PLAYBOOK, inv, extra)
    # no key yet: the deployment will make it, so the missing record is a warning
    assert before.returncode == 0, before.stdout + before.stderr
    assert ("no DKIM record for the selector the host signs with 'mail' at "
            "mail._domainkey.good.test: this deployment makes its key and reports the record"
            in before.stdout)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "good.test.mail.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    after = play(PLAYBOOK, inv, extra)
    # the host signs with it now and DNS does not have it: the host fails the preflight
    assert after.returncode == 2, after.stdout + after.stderr
    assert ("no DKIM record for the selector the host signs with 'mail' at "
            "mail._domainkey.good.test") in after.stdout
