"""A watcher without imapclient (Debian 12 has no package of it) still starts and
runs every other check; sync and the mesh say what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
sys.modules["imapclient"] = None  # as if it were not installed: importing it fails
import mailfleet.cli, mailfleet.dashboard.app  # what `mailfleet serve` imports at start
from mailfleet.checks import PROBES
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.scheduler import Scheduler
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.targets import WatchedHost

t = Target(name="mx1", address="127.0.0.1", mail_hostname="mx1.lab.test",
           ports={"imaps": 1}, checks=("port", "sync", "sync_mesh"))
u = Target(name="mx2", address="127.0.0.1", mail_hostname="mx2.lab.test",
           ports={"imaps": 1}, checks=("sync_mesh",))
hosts = [WatchedHost(x.name, x, ProbeOptions(timeout=2), ("mailservers",)) for x in (t, u)]
store = ResultStore(sys.argv[1])
Scheduler(lambda: hosts, store, interval=30).sweep()
print(json.dumps({f"{r.host} {r.check}": [r.status.label, r.error] for r in store.latest()}))
"""


def test_serve_starts_and_sweeps_without_imapclient(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "r.db")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    latest = json.loads(proc.stdout.splitlines()[-1])
    assert latest["mx1 port"][0] == "critical"  # port 1 refused: the other checks still run
    for key in ("mx1 sync", "mx1 sync_mesh:mx2", "mx2 sync_mesh:mx1"):
        status, error = latest[key]
        assert status == "unknown" and "needs the Python package imapclient" in error, key
