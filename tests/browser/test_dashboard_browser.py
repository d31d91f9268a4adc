"""The dashboard in Chromium, on a store filled through the real store API.

What an on-call admin does: open the fleet page, see every host and why one is
red, watch a host go critical without reloading, filter and sort, open a host
and read its charts. The lab version (a real ``mailfleet serve`` watching lab
hosts, Dovecot stopped on one) is in test_dashboard_lab.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.dashboard.app import create_app
from tests.browser.conftest import CHART_INK_JS, CHART_POINTS_JS, PageLog, screenshot, serving
from tests.dashboard_web.fleetdata import fill_store, make_hosts

FLEET = 12
INTERVAL = 4.0  # the pages poll every interval / 2 = 2 s


@pytest.fixture
def app(tmp_path: Path) -> Any:
    hosts = make_hosts(FLEET)
    app = create_app({"MAILFLEET_HOSTS": hosts, "MAILFLEET_INTERVAL": INTERVAL,
                      "MAILFLEET_DB": str(tmp_path / "results.sqlite3")})
    fill_store(app.extensions["mailfleet"].store, hosts, sweeps=60, interval=60)
    yield app
    app.extensions["mailfleet"].store.close()


def rows(page: Any) -> dict[str, str]:
    found: dict[str, str] = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#fleet tbody tr')]"
        ".map(tr => [tr.dataset.host, tr.dataset.status]))")
    return found


def test_fleet_page_goes_critical_live_and_filters(app: Flask, page: tuple[Any, PageLog]) -> None:
    p, log = page
    with serving(app) as base:
        p.goto(base + "/")
        assert sorted(rows(p)) == sorted(f"mx{i}" for i in range(1, FLEET + 1))
        assert rows(p)["mx1"] == "ok"
        critical_before = int(p.text_content("#count-critical") or "0")
        p.evaluate("window.__sameDocument = true")  # gone if the page reloads

        # Dovecot dies on mx1: the scheduler records refused connections.
        now = time.time()
        refused = "connection to 10.77.5.11:993 refused"
        store = app.extensions["mailfleet"].store
        store.record_many([("mx1", ProbeResult(check, "mx1", False, Status.CRITICAL, {},
                                               {}, refused, now, reason=Reason.REFUSED))
                           for check in ("port", "tls", "imap_login", "quota")])
        started = time.monotonic()
        p.wait_for_function(
            "() => { const tr = document.querySelector('tr[data-host=\"mx1\"]');"
            " return tr.dataset.status === 'critical' &&"
            " tr.querySelector('.reason').textContent.includes('refused'); }",
            timeout=3 * INTERVAL * 1000)
        took = time.monotonic() - started
        assert took <= 2 * INTERVAL, f"row turned critical after {took:.1f} s"
        assert p.evaluate("window.__sameDocument") is True  # no reload
        row = p.locator('tr[data-host="mx1"]')
        assert row.locator(".badge").text_content() == "critical"  # a word, not only colour
        assert row.locator('td[data-key="port"]').text_content() == "refused"
        assert "refused" in (row.locator('td[data-key="port"]').get_attribute("title") or "")
        assert int(p.text_content("#count-critical") or "0") == critical_before + 1
        # Sorted by status, worst first: the critical rows lead.
        first = p.locator("#fleet tbody tr").first.get_attribute("data-status")
        assert first == "critical"
        screenshot(p, "fleet-live-critical", full_page=False)

        # Filter by status (the count button) and by group.
        p.click('button.count[data-status="critical"]')
        visible = p.locator("#fleet tbody tr:not([hidden])")
        assert visible.count() == critical_before + 1
        assert {visible.nth(i).get_attribute("data-status")
                for i in range(visible.count())} == {"critical"}
        p.click('button.count[data-status="critical"]')  # off again
        p.select_option("#filter-group", "eu")
        eu = p.locator("#fleet tbody tr:not([hidden])")
        assert eu.count() == FLEET // 2
        assert all("eu" in (eu.nth(i).get_attribute("data-groups") or "").split()
                   for i in range(eu.count()))
        p.select_option("#filter-group", "")
        # Sort by host name: natural order, mx2 before mx10.
        p.click('th[data-sort="name"] button')
        names = p.eval_on_selector_all("#fleet tbody tr", "trs => trs.map(t => t.dataset.host)")
        assert names == [f"mx{i}" for i in range(1, FLEET + 1)]
        p.click('th[data-sort="cert_days"] button')
        first_cert = p.locator("#fleet tbody tr").first.get_attribute("data-host")
        assert first_cert == "mx3"  # 10 days left, the soonest to expire
        screenshot(p, "fleet-sorted-by-cert")
        assert log.problems(p) == []  # inside: once the server stops, polls fail


def test_host_page_draws_its_charts(app: Flask, page: tuple[Any, PageLog]) -> None:
    p, log = page
    with serving(app) as base:
        p.goto(base + "/hosts/mx3")
        p.wait_for_function(
            "() => window.mailfleetCharts && ['sync', 'cert', 'phases-imap_login', 'phases-tls']"
            ".every(n => window.mailfleetCharts[n])")
        points = p.evaluate(CHART_POINTS_JS)
        assert points["cert"] == 60 and points["sync"] >= 30 and points["phases-tls"] == 60
        for name in ("sync", "cert", "phases-imap_login"):
            assert p.evaluate(CHART_INK_JS, name) > 100, f"{name}: nothing drawn"
        assert "certificate chain for mx3.lab.test expires in 10 d" in p.text_content(
            "#host-reason")
        assert p.locator(".mesh td.s-ok").count() >= 2
        # The login starts failing: the checks table and the headline follow, no reload.
        store = app.extensions["mailfleet"].store
        store.record("mx3", ProbeResult("imap_login", "mx3", False, Status.CRITICAL, {}, {},
                                        "LOGIN rejected: AUTHENTICATIONFAILED", time.time(),
                                        reason=Reason.AUTH_FAILED))
        p.wait_for_function(
            "() => document.querySelector('tr[data-check=\"imap_login\"] .badge')"
            ".textContent === 'critical'", timeout=3 * INTERVAL * 1000)
        assert "AUTHENTICATIONFAILED" in p.text_content('tr[data-check="imap_login"]')
        assert p.text_content("#host-status") == "critical"
        assert p.text_content('.cells li[data-key="imap_login"] .cell-text') == "auth"
        assert "imap_login: LOGIN rejected" in p.text_content("#host-reason")
        screenshot(p, "host-mx3")
        assert log.problems(p) == []
        p.goto(base + "/hosts/not-in-inventory")  # Chromium logs the 404 itself: checked above
        assert "404 Not Found" in p.text_content("h1")
