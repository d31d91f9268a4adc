"""The roles' documentation cannot drift from the roles: argument specs, defaults, README examples.

* ``meta/argument_specs.yml`` documents every variable of ``defaults/main.yml`` with the
  same default (so ``ansible-doc -t role`` is the manual), except a variable whose
  absence of a default is the point (``mail_tls_source``: the operator chooses).
* No role default reads the lab's variables: the lab's choices live in ``inventory/lab``.
* A README example that says it is a tested Molecule converge is that converge.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "defaults" / "main.yml").exists())
NO_DEFAULT = {"mail_tls_source"}
_EXAMPLE = re.compile(
    r"^## Example \(the tested Molecule converge, `([^`]+)`\)\n+```yaml\n(.*?)```", re.M | re.S)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_carry_every_default(role: Path) -> None:
    defaults = _load(role / "defaults" / "main.yml") or {}
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    undocumented = sorted(set(defaults) - set(options))
    assert undocumented == [], f"{role.name}: variables without an argument spec: {undocumented}"
    # A required option carries no default (Ansible refuses both); its defaults/main.yml
    # entry is only the placeholder the role's preflight checks.
    wrong = {name: (options[name].get("default"), value) for name, value in defaults.items()
             if name not in NO_DEFAULT and not options[name].get("required")
             and options[name].get("default") != value}
    both = [name for name, spec in options.items() if spec.get("required") and "default" in spec]
    assert both == [], f"{role.name}: required options with a default (Ansible refuses): {both}"
    assert wrong == {}, f"{role.name}: argument spec default != defaults/main.yml: {wrong}"
    for name in NO_DEFAULT & set(options):
        assert "default" not in options[name], name


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_no_role_default_reads_the_labs_variables(role: Path) -> None:
    text = (role / "defaults" / "main.yml").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "mailfleet_lab_" not in code, f"{role.name}'s defaults read lab variables"


def test_no_role_logs_to_files_by_default() -> None:
    assert _load(ROOT / "roles/dovecot/defaults/main.yml")["dovecot_log_path"] == ""
    assert _load(ROOT / "roles/dovecot/defaults/main.yml")["dovecot_info_log_path"] == ""
    assert _load(ROOT / "roles/postfix/defaults/main.yml")["postfix_maillog_file"] == ""


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_example_is_the_tested_converge(role: Path) -> None:
    readme = (role / "README.md").read_text()
    examples = _EXAMPLE.findall(readme)
    if role.name in ("mail_dns_check", "mailfleet_probe_access") and not examples:
        pytest.skip(f"{role.name}'s README shows no Molecule converge")
    assert examples, f"{role.name}/README.md has no example from a Molecule converge"
    for path, shown in examples:
        converge = ROOT / path
        assert converge.exists(), f"{role.name}/README.md names {path}, which does not exist"
        assert yaml.safe_load(shown) == _load(converge), (
            f"{role.name}/README.md's example differs from {path}: copy the converge into it")
