"""The wheel, built as a user's pip builds it: one namespace, the dashboard's assets, no lab."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, env=env, capture_output=True, timeout=300,
    )
    (built,) = out.glob("mailfleet-*.whl")
    return zipfile.ZipFile(built)


def test_every_module_of_the_wheel_is_under_mailfleet(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert modules, names
    outside = [n for n in names if not n.startswith(("mailfleet/", "mailfleet-"))]
    assert outside == [], f"files outside the mailfleet namespace: {outside}"
    assert "mailfleet/__main__.py" in names and "mailfleet/cli.py" in names
    assert "mailfleet/checks/__init__.py" in names and "mailfleet/dashboard/app.py" in names


def test_the_lab_stays_out_of_the_wheel(wheel: zipfile.ZipFile) -> None:
    assert not [n for n in wheel.namelist() if n.startswith("mailfleet/lab/")]


def test_the_wheel_carries_every_dashboard_asset(wheel: zipfile.ZipFile) -> None:
    static = ROOT / "dashboard" / "static"
    on_disk = {f"mailfleet/dashboard/static/{p.relative_to(static)}"
               for p in static.rglob("*") if p.is_file()}
    templates = ROOT / "dashboard" / "templates"
    on_disk |= {f"mailfleet/dashboard/templates/{p.relative_to(templates)}"
                for p in templates.rglob("*") if p.is_file()}
    missing = sorted(on_disk - set(wheel.namelist()))
    assert missing == [], f"assets the installed dashboard would answer 404 for: {missing}"


def test_python_m_mailfleet_runs_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "mailfleet", "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mailfleet ")
