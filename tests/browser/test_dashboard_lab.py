"""The dashboard in Chromium against a real ``mailfleet serve`` watching the lab's mail hosts.

The lab is converged with playbooks/site.yml (fixture ``mail_fleet``); ``serve``
runs as its own process with a short interval and probes every lab host with
the lab's probe accounts (vault-encrypted in a second inventory source). Then
Dovecot is stopped on one host: its row must turn critical, with the reason,
within two probe intervals and without reloading the page.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailfleet.dashboard.web.views import refresh_seconds
from tests.browser.conftest import CHART_INK_JS, CHART_POINTS_JS, ROOT, PageLog, screenshot
from tests.integration.conftest import MailFleet

pytestmark = pytest.mark.lab

INTERVAL = 5.0  # seconds between sweeps; the page polls every INTERVAL / 2
PROBE_TIMEOUT = 4.0  # TLS handshakes took up to 2 s on a loaded 2-core machine
ROW_JS = """
(name) => {
  const tr = document.querySelector(`tr[data-host="${name}"]`);
  return tr && {status: tr.dataset.status, reason: tr.querySelector('.reason').textContent,
                port: tr.querySelector('td[data-key="port"]').textContent,
                imap: tr.querySelector('td[data-key="imap_login"]').textContent};
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def healthz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def wait_until(what: str, check: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def watch_inventory(fleet: MailFleet, where: Path) -> tuple[Path, Path]:
    """Beside the lab inventory: each host's probe account (vaulted), CA and checks."""
    vault = where / "vault-pass"
    vault.write_text("dashboard-browser-test\n")
    inv = where / "watch"
    (inv / "host_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "mailservers:\n  hosts:\n" + "".join(f"    {h.name}:\n" for h in fleet.hosts))
    resolver = f"{fleet.lab.config.gateway}:{fleet.lab.config.dns_port}"
    for h in fleet.hosts:
        user = fleet.user(h.name)
        secret = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ansible-vault"), "encrypt_string",
             "--vault-password-file", str(vault), user.password,
             "--name", "mailfleet_probe_password"],
            capture_output=True, text=True, check=True, timeout=60).stdout
        (inv / "host_vars" / f"{h.name}.yml").write_text(
            f"mailfleet_probe_user: {user.address}\n" + secret
            + f"mailfleet_ca_bundle: {fleet.ca_bundle}\n"
            + "mailfleet_checks: [port, tls, imap_login, smtp, quota, dns]\n"
            + f"mailfleet_probe_options: {{timeout: {PROBE_TIMEOUT}, "
            + f"dns_resolvers: ['{resolver}']}}\n")
    return inv, vault


@pytest.fixture(scope="module")
def dashboard(mail_fleet: MailFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mail_fleet.lab.require_up()
    work = tmp_path_factory.mktemp("dashboard-lab")
    inv, vault = watch_inventory(mail_fleet, work)
    port = free_port()
    log_dir = ROOT / "artifacts" / "browser"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "mailfleet", "serve", "-i", str(mail_fleet.inventory),
         "-i", str(inv), "--vault-password-file", str(vault),
         "--listen", f"127.0.0.1:{port}", "--interval", f"{INTERVAL:g}s",
         "--db", str(work / "results.sqlite3")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("mailfleet serve to finish a sweep",
                   lambda: (healthz(url).get("sweeps") or 0) >= 1, 120)
        yield url
    finally:
        for h in mail_fleet.hosts:  # leave Dovecot running whatever happened
            mail_fleet.lab.ssh(h, "service dovecot start </dev/null >/dev/null 2>&1", check=False)
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(serve.pid, signal.SIGKILL)
                serve.wait(5)
        log.close()


def test_stopping_dovecot_turns_the_row_critical_live(
    dashboard: str, mail_fleet: MailFleet, page: tuple[Any, PageLog]
) -> None:
    p, log = page
    names = [h.name for h in mail_fleet.hosts]
    victim, other = names[0], names[1]
    p.goto(dashboard + "/")
    shown = p.eval_on_selector_all("#fleet tbody tr", "trs => trs.map(t => t.dataset.host)")
    assert sorted(shown) == sorted(names)  # every lab host, from the inventory
    p.wait_for_function(
        f"() => {json.dumps(names)}.every(n => (({ROW_JS})(n) || {{}}).imap === 'ok (PLAIN)')",
        timeout=60_000)
    screenshot(p, "lab-fleet-healthy", full_page=False)
    other_before = p.evaluate(ROW_JS, other)
    p.evaluate("window.__sameDocument = true")

    mail_fleet.lab.exec(victim, ["service", "dovecot", "stop"])
    stopped = time.monotonic()
    try:
        p.wait_for_function(
            f"() => {{ const r = ({ROW_JS})({json.dumps(victim)});"
            " return r.status === 'critical' && r.port === 'refused' &&"
            " r.reason.includes('refused'); }",
            timeout=(3 * INTERVAL + refresh_seconds(INTERVAL)) * 1000)
        took = time.monotonic() - stopped
        row = p.evaluate(ROW_JS, victim)
        screenshot(p, "lab-fleet-dovecot-stopped", full_page=False)
        print(f"\n{victim} critical in the browser {took:.1f} s after Dovecot stopped: "
              f"{row['reason']}")
        assert took <= 2 * INTERVAL, f"took {took:.1f} s, more than two probe intervals"
        assert p.evaluate("window.__sameDocument") is True  # no reload
        assert row["imap"] == "refused"
        assert p.evaluate(ROW_JS, other)["status"] == other_before["status"]  # only the victim
    finally:
        mail_fleet.lab.ssh(victim, "service dovecot start </dev/null >/dev/null 2>&1")
    p.wait_for_function(
        f"() => ({ROW_JS})({json.dumps(victim)}).imap === 'ok (PLAIN)'",
        timeout=(3 * INTERVAL + refresh_seconds(INTERVAL)) * 1000)
    assert log.problems(p) == []


def test_lab_host_page_draws_its_charts(
    dashboard: str, mail_fleet: MailFleet, page: tuple[Any, PageLog]
) -> None:
    p, log = page
    host = mail_fleet.hosts[-1]
    wait_until("three sweeps of history", lambda: healthz(dashboard)["sweeps"] >= 3,
               6 * INTERVAL + 30)
    p.goto(f"{dashboard}/hosts/{host.name}")
    p.wait_for_function(
        "() => window.mailfleetCharts && ['cert', 'phases-imap_login', 'phases-tls']"
        ".every(n => window.mailfleetCharts[n] &&"
        " window.mailfleetCharts[n].plot.data[0].length >= 3)")
    points = p.evaluate(CHART_POINTS_JS)
    assert points["phases-imap_login"] >= 3 and points["cert"] >= 3
    for name in ("cert", "phases-imap_login", "phases-tls"):
        assert p.evaluate(CHART_INK_JS, name) > 20, f"{name}: nothing drawn"
    text = p.text_content("main") or ""
    assert host.fqdn in text  # certificate subject / SANs of the real lab certificate
    assert "Chain as served" in text
    screenshot(p, f"lab-host-{host.name}")
    assert log.problems(p) == []
