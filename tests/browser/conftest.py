"""Debian's Chromium driven by Playwright for Python, against a dashboard on loopback.

Never ``playwright install``: the browser is /usr/bin/chromium from the
``chromium`` Debian package (scripts/apt-packages.txt). Screenshots go to
artifacts/browser/ (the CI artifact directory; gitignored). Where Chromium is
missing the tests skip, unless MAILFLEET_REQUIRE_BROWSER=1 (CI): then they fail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Collects CSP violations before any page script runs (init scripts are not subject to CSP).
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("MAILFLEET_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     timeout=60_000)
        yield chromium
        chromium.close()


class PageLog:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def problems(self, page: Any) -> list[str]:
        violations: list[str] = page.evaluate("window.__cspViolations || []")
        return self.errors + [f"CSP violation: {v}" for v in violations]


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, PageLog]]:
    context = browser.new_context(viewport={"width": 1500, "height": 900},
                                  timezone_id="UTC", locale="en-GB")
    context.add_init_script(CSP_WATCH)
    log = PageLog()
    p = context.new_page()
    p.set_default_timeout(30_000)
    p.on("console", lambda m: log.errors.append(f"console {m.type}: {m.text}")
         if m.type == "error" else None)
    p.on("pageerror", lambda e: log.errors.append(f"page error: {e}"))
    yield p, log
    context.close()


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# Chart checks shared by the tests: uPlot's own data and pixels on its canvas.
CHART_POINTS_JS = """
() => Object.fromEntries(Object.entries(window.mailfleetCharts || {}).map(
  ([name, c]) => [name, c.plot.data[0].length]))
"""

CHART_INK_JS = """
(name) => {
  const plot = window.mailfleetCharts[name].plot;
  const canvas = plot.ctx.canvas;
  const img = plot.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  // Every series' colour: a phase that is tiny next to the others runs along the x axis
  // under the series drawn after it, so the first series alone may show only a few pixels.
  const colours = plot.series.slice(1).map((s, i) => {
    const hex = s.stroke(plot, i + 1);
    return [1, 3, 5].map(k => parseInt(hex.slice(k, k + 2), 16));
  });
  let ink = 0;  // pixels in some series' colour, i.e. drawn data
  for (let i = 0; i < img.length; i += 4) {
    if (img[i + 3] > 128 && colours.some(([r, g, b]) => Math.abs(img[i] - r) < 40 &&
        Math.abs(img[i + 1] - g) < 40 && Math.abs(img[i + 2] - b) < 40)) ink++;
  }
  return ink;
}
"""

