"""Molecule scenarios, run on the session's lab network (full test sequence,
idempotence included)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mailfleet.lab.fleet import Lab

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))

pytestmark = [pytest.mark.lab, pytest.mark.molecule]


def molecule_env(lab: Lab, index: int) -> dict[str, str]:
    cfg = lab.config
    return {
        **os.environ,
        "CONTAINERS_CONF": str(cfg.containers_conf),
        "MAILFLEET_LAB": cfg.name,
        "MAILFLEET_LAB_GATEWAY": cfg.gateway,
        # Molecule instances sit at .201 and up, far from the lab's own hosts.
        "MAILFLEET_MOLECULE_IP": str(cfg.subnet.network_address + 201 + index),
        "MAILFLEET_MOLECULE_IP2": str(cfg.subnet.network_address + 221 + index),
        "MAILFLEET_MOLECULE_IP3": str(cfg.subnet.network_address + 241 + index),
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(lab: Lab, scenario: str, tmp_path: Path) -> None:
    lab.require_up()
    index = SCENARIOS.index(scenario)
    log = tmp_path / f"molecule-{scenario}.log"
    with log.open("w") as out:
        proc = subprocess.run(
            ["molecule", "test", "-s", scenario],
            cwd=ROOT, env=molecule_env(lab, index), stdout=out, stderr=subprocess.STDOUT,
            timeout=1500, check=False,
        )
    output = log.read_text()
    assert proc.returncode == 0, output[-6000:]
    assert "idempotence" in output.lower()
