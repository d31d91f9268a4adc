"""Molecule scenarios, run on the session's lab network (full test sequence,
idempotence included).

The scenarios use disjoint instance names and addresses, so they run at the
same time: the first test starts every selected scenario and each test waits
for its own. Most of a converge waits on apt and on SSH-less podman exec
round trips. Today there is one scenario, covering every role Molecule tests
(one converge per instance is the cost, not one per role); a second one would
still run beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from mailfleet.lab.fleet import Lab

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
# A scenario past this is stopped and fails, and the others keep their own time.
TIMEOUT_S = 1500

pytestmark = [pytest.mark.lab, pytest.mark.molecule]


def molecule_env(lab: Lab, index: int) -> dict[str, str]:
    cfg = lab.config
    return {
        **os.environ,
        "CONTAINERS_CONF": str(cfg.containers_conf),
        "MAILFLEET_LAB": cfg.name,
        "MAILFLEET_LAB_GATEWAY": cfg.gateway,
        "MAILFLEET_LAB_SSH_KEY": str(cfg.ssh_key),
        # Molecule instances sit at .201 and up, far from the lab's own hosts.
        "MAILFLEET_MOLECULE_IP": str(cfg.subnet.network_address + 201 + index),
        "MAILFLEET_MOLECULE_IP2": str(cfg.subnet.network_address + 221 + index),
        "MAILFLEET_MOLECULE_IP3": str(cfg.subnet.network_address + 241 + index),
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }


@dataclass
class Run:
    scenario: str
    proc: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]
    started: float

    def wait(self) -> tuple[int | None, str, float]:
        """The exit code (None when stopped at the deadline), the output, the seconds taken."""
        left = TIMEOUT_S - (time.monotonic() - self.started)
        try:
            code: int | None = self.proc.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        self.out.close()
        return code, self.log.read_text(), time.monotonic() - self.started

    def stop(self) -> None:
        if self.proc.poll() is None:
            # molecule runs in its own process group: stop it and its ansible children
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def selected_scenarios(session: pytest.Session) -> list[str]:
    names = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "originalname", "") == "test_molecule_scenario" and callspec:
            names.append(callspec.params["scenario"])
    return names


@pytest.fixture(scope="module")
def molecule_runs(lab: Lab, request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    lab.require_up()
    logs = tmp_path_factory.mktemp("molecule")
    runs: dict[str, Run] = {}
    for scenario in selected_scenarios(request.session):
        log = logs / f"molecule-{scenario}.log"
        out = log.open("wb")
        proc = subprocess.Popen(
            ["molecule", "test", "-s", scenario],
            cwd=ROOT, env=molecule_env(lab, SCENARIOS.index(scenario)),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        runs[scenario] = Run(scenario, proc, log, out, time.monotonic())
    yield runs
    stopped = [run for run in runs.values() if run.proc.poll() is None]
    for run in stopped:
        run.stop()
        run.out.close()
    for run in stopped:
        # a stopped run leaves its instances: remove them
        subprocess.run(["molecule", "destroy", "-s", run.scenario], cwd=ROOT,
                       env=molecule_env(lab, SCENARIOS.index(run.scenario)),
                       capture_output=True, timeout=300, check=False)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(molecule_runs: dict[str, Run], scenario: str) -> None:
    code, output, took = molecule_runs[scenario].wait()
    print(f"molecule {scenario}: {took:.0f}s")
    assert code is not None, f"{scenario} did not finish in {TIMEOUT_S}s:\n{output[-6000:]}"
    assert code == 0, output[-6000:]
    assert "idempotence" in output.lower()
