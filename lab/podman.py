"""Run podman for the lab, always with the lab's own containers.conf."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailfleet.lab.config import LabConfig


class PodmanError(RuntimeError):
    """A podman call failed; the message carries its stderr."""


def podman_env(conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(conf)
    return env


def podman(
    config: LabConfig,
    args: Sequence[str],
    *,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("podman") is None:
        raise PodmanError("podman is not installed: run `make setup` (apt-get install podman runc)")
    proc = subprocess.run(
        ["podman", *args],
        env=podman_env(config.containers_conf),
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise PodmanError(f"podman {' '.join(args[:3])} failed ({proc.returncode}): {err}")
    return proc


def text(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode(errors="replace")


def wait_running(config: LabConfig, container: str, timeout: float = 90) -> str | None:
    """Wait until a command runs in ``container``; None then, else what podman saw.

    A start takes a second on a quiet machine and much longer on a loaded one, so
    the wait is long; a container whose init exited is reported at once, with its
    state, exit code and last output rather than a bare "did not start".
    """
    deadline = time.monotonic() + timeout
    while True:
        proc = podman(config, ["exec", container, "true"], check=False)
        if proc.returncode == 0:
            return None
        state = container_state(config, container)
        if state.get("Status") in ("exited", "stopped", "dead") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    logs = podman(config, ["logs", "--tail", "20", container], check=False)
    said = (logs.stdout + logs.stderr).decode(errors="replace").strip()
    error = f", {state['Error']}" if state.get("Error") else ""
    return (
        f"container {container} is {state.get('Status', 'missing')} "
        f"(exit code {state.get('ExitCode', '?')}{error}); "
        f"`podman exec` said: {proc.stderr.decode(errors='replace').strip() or '-'}; "
        f"its last output: {said or '-'}"
    )


def container_state(config: LabConfig, container: str) -> dict[str, Any]:
    """podman's State of the container (Status, ExitCode, Error...); {} if there is none."""
    proc = podman(config, ["container", "inspect", "--format", "{{json .State}}", container],
                  check=False)
    try:
        state = json.loads(text(proc))
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
