"""Change one lab host's inventory (host_vars) and re-run the playbook on it.

The quota and OAuth2 introspection tests change the inventory as an operator
would: a ``host_vars/<host>.yml`` next to the lab's hosts.yml, then
``ansible-playbook playbooks/mail.yml --limit <host>`` (the mail stack part of
site.yml: DNS checks and monitoring do not read these variables). The file stays after
the test, so the inventory and the hosts keep agreeing (a later plain
site.yml run changes nothing); each test writes what it needs before it
starts, so a kept lab can run it again. Variables of several tests on the
same host are merged into one file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import ROOT, MailFleet, PlaybookRun


def host_vars_path(fleet: MailFleet, host: str) -> Path:
    return fleet.inventory.parent / "host_vars" / f"{host}.yml"


def inventory_vars(fleet: MailFleet, host: str) -> dict[str, Any]:
    """The host's variables as Ansible resolves them (group_vars, host_vars, vault)."""
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-inventory"), "-i", str(fleet.inventory),
         "--host", host],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def set_host_vars(fleet: MailFleet, host: str, values: dict[str, Any]) -> PlaybookRun:
    """Merge ``values`` into the host's host_vars file and converge that host."""
    path = host_vars_path(fleet, host)
    path.parent.mkdir(exist_ok=True)
    current: dict[str, Any] = {}
    if path.exists():
        current = yaml.safe_load(path.read_text()) or {}
    current.update(values)
    path.write_text(
        "# Written by tests/integration (hostvars.py): the quota / OAuth2 tests' inventory.\n"
        + yaml.safe_dump(current, sort_keys=True, allow_unicode=True)
    )
    run = fleet.playbook("--limit", host, playbook="playbooks/mail.yml")
    assert run.returncode == 0, run.output[-6000:]
    return run
