"""Run podman for the lab, always with the lab's own containers.conf."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

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
