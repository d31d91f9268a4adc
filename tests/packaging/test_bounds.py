"""The dependencies' lower bounds are the releases the suite runs with."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "scripts" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, pinned = line.split("==")
            pins[name.lower()] = pinned
    return pins


def test_every_lower_bound_is_the_pinned_release_of_the_suite() -> None:
    pins = _pins()
    bounds = {}
    for dep in _project()["dependencies"]:
        req = Requirement(dep)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        assert lows, f"{dep}: no lower bound"
        bounds[req.name.lower()] = lows[0]
    assert bounds == pins, "pyproject.toml's lower bounds and scripts/constraints.txt differ"


def test_the_venv_runs_the_bounds() -> None:
    off = {name: version(name) for name, pinned in _pins().items() if version(name) != pinned}
    assert not off, f"the venv is not at the bounds (run scripts/bootstrap.sh): {off}"


def test_no_dependency_is_unused() -> None:
    imported = {"ansible-core": "ansible", "dnspython": "dns",
                "pyspf": "spf", "prometheus-client": "prometheus_client", "flask": "flask",
                "paramiko": "paramiko", "cryptography": "cryptography", "pyjwt": "jwt"}
    sources = "\n".join(p.read_text(encoding="utf-8")
                        for d in ("checks", "dashboard", "mailfleet")
                        for p in (ROOT / d).rglob("*.py"))
    for dep in _project()["dependencies"]:
        name = Requirement(dep).name.lower()
        module = imported[name]
        used = (f"import {module}" in sources or f"from {module}" in sources
                or (name == "ansible-core" and "ansible-inventory" in sources))
        assert used, f"{name} is declared but {module} is never imported"
