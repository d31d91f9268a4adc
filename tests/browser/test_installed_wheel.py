"""mailfleet as pip installs it: the built wheel in a fresh venv, `mailfleet serve` from it.

The wheel and the sdist are built from the tree; the wheel is installed with its
dependencies (at the pinned bounds) into a venv of its own, nothing of the checkout
on its path. Its ``mailfleet serve`` watches one host, a TCP listener of the test on
loopback, and the test fetches every page and every static asset from it, then
opens the dashboard in Chromium: styled, scripts running, charts drawn, nothing 404.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PageLog, screenshot
from tests.dashboard.servers import accepting_port
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "dashboard" / "static"


@dataclass(frozen=True)
class Served:
    base: str
    venv: Path
    sdist: Path


def _build(out: Path) -> tuple[Path, Path]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(ROOT)],
                   check=True, env=env, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-c",
                    "import sys; from setuptools import build_meta; "
                    "build_meta.build_sdist(sys.argv[1])",
                    str(out)], check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    (wheel,) = out.glob("mailfleet-*.whl")
    (sdist,) = out.glob("mailfleet-*.tar.gz")
    return wheel, sdist


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_until(what: str, ok: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    where = tmp_path_factory.mktemp("installed-wheel")
    wheel, sdist = _build(where / "dist")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "scripts" / "constraints.txt"), str(wheel)],
        capture_output=True, text=True, timeout=900, env=clean, cwd=where, check=False)
    assert pip.returncode == 0, pip.stderr[-3000:]
    with accepting_port() as imaps:
        inventory = where / "inventory.yml"
        inventory.write_text(
            "mailservers:\n  hosts:\n    mx1:\n      ansible_host: 127.0.0.1\n"
            "      mail_hostname: mx1.example.test\n      mailfleet_checks: [port]\n"
            f"      mailfleet_ports: {{imaps: {imaps}}}\n", encoding="utf-8")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = (where / "serve.log").open("w")
        proc = subprocess.Popen(
            [str(venv / "bin" / "mailfleet"), "serve", "--inventory", str(inventory),
             "--listen", f"127.0.0.1:{port}", "--interval", "1", "--db", str(where / "results.db")],
            cwd=where, env=clean, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            def up() -> bool:
                assert proc.poll() is None, (where / "serve.log").read_text()[-3000:]
                try:
                    return _get(base + "/healthz")[0] == 200
                except OSError:
                    return False

            _wait_until("the installed mailfleet serve answering /healthz", up, 60)
            yield Served(base, venv, sdist)
        finally:
            stop_process(proc, 20)
            log.close()


def test_the_venv_runs_the_installed_wheel_not_the_checkout(served: Served) -> None:
    done = subprocess.run(
        [str(served.venv / "bin" / "python"), "-c",
         "import mailfleet, flask; print(mailfleet.__file__); print(flask.__version__)"],
        capture_output=True, text=True, timeout=60, check=True, cwd=served.venv,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    where, flask_version = done.stdout.split()
    assert where.startswith(str(served.venv)), where
    assert int(flask_version.split(".")[0]) >= 3


def test_the_sdist_holds_the_source_and_nothing_of_the_machine(served: Served) -> None:
    with tarfile.open(served.sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert {"pyproject.toml", "LICENSE", "mailfleet/checks/session.py",
            "mailfleet/dashboard/static/vendor/uplot/uPlot.iife.min.js"} <= set(names)
    tops = {n.split("/", 1)[0] for n in names}
    assert not tops & {"checks", "dashboard", "lab", "tests", ".venv", "artifacts", ".git"}, tops


def test_every_page_and_every_static_asset_is_served(served: Served) -> None:
    _wait_until("a first sweep", lambda: b"mailfleet_probe_success" in
                _get(served.base + "/metrics")[1], 30)
    for path in ("/", "/hosts/mx1", "/api/fleet", "/api/hosts/mx1", "/metrics", "/sd",
                 "/healthz", "/probe?target=mx1&module=port"):
        status, _ = _get(served.base + path)
        assert status == 200, f"{path}: {status}"
    for asset in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        path = "/static/" + asset.relative_to(STATIC).as_posix()
        status, body = _get(served.base + path)
        assert status == 200, f"{path}: {status}"
        assert body == asset.read_bytes(), f"{path}: not the file of the tree"
    for page in ("/", "/hosts/mx1"):
        html = _get(served.base + page)[1].decode()
        for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            assert _get(served.base + ref.split("?")[0])[0] == 200, f"{page} links {ref}"


def test_the_installed_dashboard_is_styled_and_draws_its_charts(
        served: Served, page: tuple[Any, PageLog]) -> None:
    p, log = page
    p.goto(served.base + "/")
    p.wait_for_selector('[data-host="mx1"]')
    rules = p.evaluate("() => [...document.styleSheets].map(s => s.cssRules.length)")
    assert rules and all(n > 0 for n in rules), rules
    assert p.evaluate("() => getComputedStyle(document.body).fontFamily") != '"Times New Roman"'
    p.goto(served.base + "/hosts/mx1")
    p.wait_for_function("() => window.mailfleetCharts && window.mailfleetCharts['phases-port']"
                        " && window.mailfleetCharts['phases-port'].plot.data[0].length >= 2",
                        timeout=30_000)
    screenshot(p, "installed-wheel-host-mx1")
    assert log.problems(p) == []
