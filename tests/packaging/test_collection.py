"""The Ansible collection as `ansible-galaxy collection build` makes it, and nothing else."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("mailfleet-mail-*.tar.gz")
    with tarfile.open(built) as tar:
        return tar.getnames()


def test_the_collection_holds_roles_playbooks_and_its_documents(members: list[str]) -> None:
    for wanted in ("MANIFEST.json", "LICENSE", "README.md", "meta/runtime.yml",
                   "playbooks/site.yml", "roles/dovecot/tasks/main.yml",
                   "roles/mail_dns_check/library/mail_dns_check.py", "prometheus/rules"):
        assert any(m == wanted or m.startswith(wanted + "/") for m in members), wanted


def test_the_collection_leaves_out_what_is_not_a_collection(members: list[str]) -> None:
    tops = {m.split("/", 1)[0] for m in members}
    for unwanted in ("checks", "dashboard", "lab", "mailfleet", "tests", "bench", "scripts",
                     "molecule", ".ci", "build", "artifacts", ".venv", "pyproject.toml"):
        assert unwanted not in tops, f"{unwanted} is in the collection tarball"
    assert not [m for m in members if m.startswith("inventory/lab")], "the lab's inventory"
    assert not [m for m in members if ".egg-info" in m or "__pycache__" in m]
