"""The collection as a user installs it: built, installed with ansible-galaxy, run by FQCN.

``installed_collection`` builds ``mailfleet.mail`` from the tree
(``ansible-galaxy collection build``), installs the tarball with ansible-galaxy
into a directory of its own together with the artifacts of the collections
galaxy.yml declares (and nothing else), and writes an ansible.cfg that makes
that directory the only place collections and roles come from. The session's
converge runs ``ansible-playbook mailfleet.mail.site`` with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class InstalledCollection:
    root: Path  # what ANSIBLE_COLLECTIONS_PATH names
    config: Path  # an ansible.cfg that uses nothing of the checkout
    tarball: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ANSIBLE_CONFIG": str(self.config), "ANSIBLE_COLLECTIONS_PATH": str(self.root),
                "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false", "ANSIBLE_ROLES_PATH": str(self.root)}


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def installed_collection(where: Path) -> InstalledCollection:
    """Build and install the collection under ``where`` (created)."""
    built, deps, root = where / "build", where / "deps", where / "collections"
    for d in (built, deps, root):
        d.mkdir(parents=True, exist_ok=True)
    _run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path",
          str(built), str(ROOT)])
    (tarball,) = built.glob("mailfleet-mail-*.tar.gz")
    # The declared dependencies, as artifacts (Galaxy is not reachable from here).
    artifacts = _run([sys.executable, str(ROOT / "scripts" / "install_collections.py"),
                      "--artifacts", str(deps), str(ROOT / "requirements.yml")]).split()
    isolated = {"ANSIBLE_COLLECTIONS_PATH": str(root), "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false"}
    _run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p",
          str(root), str(tarball), *artifacts], isolated)
    config = where / "ansible.cfg"
    # A user's ansible.cfg: the checkout's (roles_path=./roles, library=...) is not used.
    config.write_text(
        "[defaults]\n"
        f"collections_path = {root}\n"
        "interpreter_python = /usr/bin/python3\n"
        "forks = 20\n"
        "callback_result_format = yaml\n"
        "retry_files_enabled = False\n"
        "[ssh_connection]\n"
        "pipelining = True\n",
        encoding="utf-8",
    )
    return InstalledCollection(root, config, tarball)
