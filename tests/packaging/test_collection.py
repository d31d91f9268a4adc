"""The Ansible collection as `ansible-galaxy collection build` makes it, and nothing else."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.integration.collection import InstalledCollection, installed_collection

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("mailfleet-mail-*.tar.gz")
    with tarfile.open(built) as tar:
        return tar.getnames()


def test_the_collection_holds_roles_playbooks_and_its_documents(members: list[str]) -> None:
    for wanted in ("MANIFEST.json", "LICENSE", "COLLECTION.md", "meta/runtime.yml",
                   "changelogs/changelog.yaml", "CHANGELOG.md",
                   "playbooks/site.yml", "roles/dovecot/tasks/main.yml",
                   "plugins/modules/mail_dns_check.py", "prometheus/rules"):
        assert any(m == wanted or m.startswith(wanted + "/") for m in members), wanted


def test_the_collection_leaves_out_what_is_not_a_collection(members: list[str]) -> None:
    tops = {m.split("/", 1)[0] for m in members}
    for unwanted in ("checks", "dashboard", "lab", "mailfleet", "tests", "bench", "scripts",
                     "molecule", ".ci", "build", "artifacts", ".venv", "pyproject.toml",
                     "requirements.yml", "README.md"):
        assert unwanted not in tops, f"{unwanted} is in the collection tarball"
    assert not [m for m in members if m.startswith("inventory/lab")], "the lab's inventory"
    assert not [m for m in members if ".egg-info" in m or "__pycache__" in m]


def _yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


def test_galaxy_declares_what_requirements_yml_installs() -> None:
    declared = _yaml("galaxy.yml")["dependencies"]
    required = {c["name"]: c["version"] for c in _yaml("requirements.yml")["collections"]}
    assert declared == required
    used = set()
    for path in [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/handlers/*.yml"),
                 *ROOT.glob("playbooks/*.yml")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            key = re.match(r"\s*(?:- )?([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*:", line)
            if key:
                used.add(key.group(1))
    undeclared = used - set(declared) - {"ansible.builtin", "mailfleet.mail"}
    assert not undeclared, f"used but not declared in galaxy.yml: {undeclared}"


def test_versions_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    releases = _yaml("changelogs/changelog.yaml")["releases"]
    newest = max(releases, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert _yaml("galaxy.yml")["version"] == project["version"] == newest
    core = next(Requirement(d) for d in project["dependencies"] if d.startswith("ansible-core"))
    lowest = next(s.version for s in core.specifier if s.operator == ">=")
    wanted = ">=" + ".".join(lowest.split(".")[:2]) + ".0"
    assert _yaml("meta/runtime.yml")["requires_ansible"] == wanted


def test_the_changelog_is_valid_and_changelog_md_is_generated_from_it(tmp_path: Path) -> None:
    tool = BIN / "antsibull-changelog"
    subprocess.run([str(tool), "lint-changelog-yaml", "changelogs/changelog.yaml"], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("galaxy.yml", "changelogs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / name)
    subprocess.run([str(tool), "generate"], cwd=copy, check=True, capture_output=True,
                   timeout=120)
    assert (copy / "CHANGELOG.md").read_text() == (ROOT / "CHANGELOG.md").read_text(), (
        "CHANGELOG.md is not what changelogs/changelog.yaml gives: "
        "run antsibull-changelog generate")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledCollection:
    return installed_collection(tmp_path_factory.mktemp("installed"))


def _doc(installed: InstalledCollection, *args: str) -> str:
    done = subprocess.run([str(BIN / "ansible-doc"), *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=installed.root,
                          env={**os.environ, **installed.env})
    assert done.returncode == 0 and "was not found" not in done.stderr, done.stderr
    return done.stdout


def test_the_installed_collection_documents_its_module(installed: InstalledCollection) -> None:
    doc = _doc(installed, "--json", "mailfleet.mail.mail_dns_check")
    import json

    module = json.loads(doc)["mailfleet.mail.mail_dns_check"]
    assert {"doc", "examples", "return"} <= set(module)
    assert "mailfleet.mail.mail_dns_check:" in module["examples"]
    assert set(module["doc"]["options"]) >= {"domains", "mx_host", "resolvers", "timeout"}


def test_the_installed_collection_has_only_its_declared_dependencies(
        installed: InstalledCollection) -> None:
    namespaces = {f"{ns.name}.{c.name}" for ns in (installed.root / "ansible_collections").iterdir()
                  for c in ns.iterdir()}
    assert namespaces == {"mailfleet.mail", *_yaml("galaxy.yml")["dependencies"]}


def test_ansible_doc_shows_every_role_default(installed: InstalledCollection) -> None:
    import json

    roles = json.loads(_doc(installed, "-t", "role", "--json", "-l", "mailfleet.mail"))
    assert set(roles) >= {f"mailfleet.mail.{r.name}" for r in (ROOT / "roles").iterdir()}
    for role in (ROOT / "roles").iterdir():
        defaults = _yaml(f"roles/{role.name}/defaults/main.yml") or {}
        spec = json.loads(_doc(installed, "-t", "role", "--json", f"mailfleet.mail.{role.name}"))
        options = spec[f"mailfleet.mail.{role.name}"]["entry_points"]["main"]["options"]
        missing = [k for k in defaults if k in options and "default" not in options[k]
                   and not options[k].get("required")]
        assert not missing, f"{role.name}: ansible-doc shows no default for {missing}"
