"""What ``mailfleet serve`` logs: its own INFO lines, only warnings from paramiko/werkzeug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging
from mailfleet.dashboard.commands.serve import configure_logging
configure_logging()
logging.getLogger("paramiko.transport").info("Connected (version 2.0, client OpenSSH_9.2p1)")
logging.getLogger("paramiko.transport").info("Authentication (publickey) successful!")
logging.getLogger("paramiko.transport").warning("Unknown ssh-ed25519 host key")
logging.getLogger("werkzeug").info("GET /metrics 200")
logging.getLogger("mailfleet.dashboard.scheduler").info("sweep 3 done")
"""


def test_serve_logs_no_ssh_chatter_per_sweep() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "WARNING paramiko.transport: Unknown ssh-ed25519 host key",
        "INFO mailfleet.dashboard.scheduler: sweep 3 done",
    ], done.stderr
