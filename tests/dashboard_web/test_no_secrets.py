"""No route ever shows a probe password, a token or the vault password.

The inventory is a real one read by ``ansible-inventory``, with the probe
account's password and OAuth2 token vault-encrypted inline, as an admin would
write it; every GET route of the whole app (dashboard, API, exporter, static
files) is requested and searched for each secret.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mailfleet.dashboard.app import create_app
from tests.dashboard_web.fleetdata import fill_store

VAULT_PASSWORD = "vault-pass-Z9q!"
PROBE_PASSWORD = "probe-pass-Xy7#unique"
PROBE_TOKEN = "ya29.probe-token-unique-4711"


def encrypt(vault_file: Path, value: str, name: str) -> str:
    tool = Path(sys.executable).parent / "ansible-vault"
    out = subprocess.run(
        [str(tool), "encrypt_string", "--vault-password-file", str(vault_file), value,
         "--name", name],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return "\n".join("          " + line for line in out.strip().splitlines())


def write_inventory(tmp_path: Path) -> tuple[Path, Path]:
    vault_file = tmp_path / "vault-pass"
    vault_file.write_text(VAULT_PASSWORD + "\n")
    password = encrypt(vault_file, PROBE_PASSWORD, "mailfleet_probe_password")
    token = encrypt(vault_file, PROBE_TOKEN, "mailfleet_probe_token")
    hosts = ""
    for i in (1, 2):
        hosts += f"""
        mx{i}:
          ansible_host: 127.0.0.1
          mail_hostname: mx{i}.lab.test
          mail_domains: [lab.test]
          mailfleet_probe_user: probe@lab.test
{password}
{token}
          mailfleet_checks: [port, tls, imap_login, smtp, quota, dns, sync]
"""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  children:\n    mailservers:\n      hosts:{hosts}")
    return inventory, vault_file


def test_no_secret_in_any_response(tmp_path: Path) -> None:
    inventory, vault_file = write_inventory(tmp_path)
    app = create_app({
        "TESTING": True,
        "MAILFLEET_INVENTORY": [str(inventory)],
        "MAILFLEET_VAULT_PASSWORD_FILE": str(vault_file),
        "MAILFLEET_DB": str(tmp_path / "results.sqlite3"),
    })
    mon = app.extensions["mailfleet"]
    hosts = mon.inventory.hosts()
    # The inventory really was decrypted: the secret is there, just never shown.
    creds = hosts[0].target.credentials
    assert creds is not None and creds.secret_password() == PROBE_PASSWORD
    fill_store(mon.store, hosts, sweeps=3)

    static = Path(app.static_folder or "")
    urls = ["/probe?target=mx1&module=port", "/api/hosts/mx1?since=0", "/hosts/nope",
            "/api/hosts/nope", "/sd?module=port"]
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or set()):
            continue
        if rule.endpoint == "static":
            urls += [f"/static/{p.relative_to(static)}" for p in static.rglob("*") if p.is_file()]
        elif "name" in rule.arguments:
            urls += [rule.rule.replace("<name>", n) for n in ("mx1", "mx2")]
        elif not rule.arguments:
            urls.append(rule.rule)
    assert {"/", "/api/fleet", "/hosts/mx1", "/api/hosts/mx1", "/metrics", "/healthz"} <= set(
        urls)

    client = app.test_client()
    for url in urls:
        response = client.get(url)
        body = response.get_data(as_text=True) + str(response.headers)
        response.close()
        for secret in (PROBE_PASSWORD, PROBE_TOKEN, VAULT_PASSWORD, "$ANSIBLE_VAULT"):
            assert secret not in body, (url, "leaks a secret")
    page = client.get("/hosts/mx1").get_data(as_text=True)
    assert "probe@lab.test" in page  # the account is named, its secrets are not
    assert "***" not in page  # not even masked: the page has no place for them
    mon.store.close()
