"""The fleet page, the host page and the JSON API, through Flask's test client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mailfleet.dashboard.app import create_app
from mailfleet.dashboard.security import SECURITY_HEADERS
from tests.dashboard_web.conftest import FLEET_SIZE, make_app
from tests.dashboard_web.fleetdata import fill_store, make_hosts


def test_fleet_page_has_a_row_per_host_with_status_as_word_and_colour(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    rows = re.findall(r'<tr data-host="([^"]+)" data-status="([a-z]+)"', html)
    assert sorted(name for name, _ in rows) == sorted(f"mx{i}" for i in range(1, FLEET_SIZE + 1))
    status = dict(rows)
    assert status["mx7"] == "critical"  # port 993 refused
    assert status["mx3"] == "warning"  # certificate expires in 10 days
    assert status["mx1"] == "ok"
    # Colour (class) and word together, never colour alone.
    assert '<span class="badge s-critical">critical</span>' in html
    assert "connection to 10.77.5.17:993 refused" in html  # the reason, in the row
    for title in ("Port 993", "TLS", "IMAP login", "SMTP", "Cert days left", "Delivery",
                  "Client sync", "MX", "rDNS", "Quota", "Last probe"):
        assert f">{title}</button>" in html


def test_fleet_counts_match_the_rows(client: FlaskClient) -> None:
    data = client.get("/api/fleet").get_json()
    counted: dict[str, int] = {}
    for row in data["hosts"]:
        counted[row["status"]] = counted.get(row["status"], 0) + 1
    assert {k: v for k, v in data["counts"].items() if v} == counted
    html = client.get("/").get_data(as_text=True)
    for status, n in data["counts"].items():
        assert f'id="count-{status}">{n}</span>' in html


def test_api_fleet_explains_each_problem(client: FlaskClient) -> None:
    rows = {r["name"]: r for r in client.get("/api/fleet").get_json()["hosts"]}
    down = rows["mx7"]
    assert down["status"] == "critical"
    assert down["reason"].startswith("port, tls, imap_login, quota: connection to")
    assert down["cells"]["port"] == {
        "status": "critical", "text": "refused",
        "detail": "connection to 10.77.5.17:993 refused", "sort": 2,
    }
    expiring = rows["mx3"]["cells"]["cert_days"]
    assert expiring["status"] == "warning" and expiring["text"] == "10 d"
    assert rows["mx5"]["cells"]["rdns"]["status"] == "critical"
    assert "PTR of 10.77.5.15 is not set" in rows["mx5"]["cells"]["rdns"]["detail"]
    assert rows["mx1"]["cells"]["imap_login"]["text"] == "ok (PLAIN)"
    assert rows["mx1"]["cells"]["quota"]["text"] == "6 %"
    assert set(rows["mx1"]["groups"]) == {"mailservers", "us"}


def test_fleet_filters_offer_every_group(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    for group in ("eu", "us", "mailservers"):
        assert f'<option value="{group}">{group}</option>' in html


def test_host_page_shows_checks_certificate_dns_and_mesh(client: FlaskClient) -> None:
    page = client.get("/hosts/mx5")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for check in ("port", "tls", "imap_login", "smtp", "quota", "dns", "sync"):
        assert f'<tr data-check="{check}">' in html
    assert "CN=mx5.lab.test" in html and "CN=mailfleet lab CA" in html  # subject, issuer, chain
    assert "PTR of 10.77.5.15 is not set" in html  # the human error text
    assert "NXDOMAIN" in html and "10.77.5.1:53 said NXDOMAIN" in html  # seen, resolvers
    assert "from mx5 to" in html and "to mx5 from" in html
    assert 'id="chart-sync"' in html and 'id="chart-cert"' in html


def test_host_api_has_chart_series_over_history(client: FlaskClient) -> None:
    data = client.get("/api/hosts/mx1").get_json()
    history = data["history"]
    assert len(history["cert_days"]["t"]) == 20
    assert len(history["sync"]["t"]) >= 10  # mesh results are not local sync points
    phases = history["phases"]["imap_login"]
    assert [name for name, _ in phases["series"]] == ["connect", "tls", "greeting", "auth",
                                                      "total"]
    assert all(len(values) == len(phases["t"]) == 20 for _, values in phases["series"])
    assert data["certificate"]["sans"] == ["mx1.lab.test"]
    assert data["certificate"]["chain"][1]["subject"] == "CN=mailfleet lab CA"
    assert {f["check"] for f in data["dns"]["findings"]} == {"mx", "a", "ptr"}
    assert data["mesh"]["outgoing"] and data["mesh"]["incoming"]
    narrow = client.get(f"/api/hosts/mx1?since={history['until'] - 300}").get_json()
    assert 4 <= len(narrow["history"]["cert_days"]["t"]) <= 6
    assert "history" not in client.get("/api/hosts/mx1?history=0").get_json()
    assert client.get("/api/hosts/mx1?since=yesterday").status_code == 400


def test_mesh_without_data_says_so(tmp_path: Path) -> None:
    hosts = make_hosts(3)
    app = create_app({"TESTING": True, "MAILFLEET_HOSTS": hosts,
                      "MAILFLEET_DB": str(tmp_path / "fresh.sqlite3")})
    store = app.extensions["mailfleet"].store
    fill_store(store, hosts, sweeps=1, mesh=False)  # only local results so far
    html = app.test_client().get("/hosts/mx2").get_data(as_text=True)
    assert 'id="mesh-empty"' in html and "No mesh data" in html
    assert html.count(">no data</td>") == 4  # two other hosts, both directions
    store.close()


def test_a_failed_mesh_pair_shows_in_the_mesh_not_as_the_hosts_own_health(
    tmp_path: Path,
) -> None:
    import time

    from mailfleet.checks.result import ProbeResult, Status

    hosts = make_hosts(3)
    app = create_app({"TESTING": True, "MAILFLEET_HOSTS": hosts,
                      "MAILFLEET_DB": str(tmp_path / "mesh.sqlite3")})
    store = app.extensions["mailfleet"].store
    fill_store(store, hosts, sweeps=1, mesh=False)
    error = "submission on mx1 failed: login refused: 535"
    store.record("mx2", ProbeResult(
        "sync_mesh:mx1", "mx2", False, Status.CRITICAL, {"total": 0.2},
        {"kind": "mesh", "source": "mx1", "destination": "mx2"}, error, time.time()))
    client = app.test_client()
    page = client.get("/hosts/mx2").get_data(as_text=True)
    assert "from mx2 to" in page and f'title="{error}"' in page  # in the mesh section
    assert 'data-check="sync_mesh' not in page  # not a row of the host's own checks
    row = next(r for r in client.get("/api/fleet").get_json()["hosts"] if r["name"] == "mx2")
    assert row["status"] == "ok"
    store.close()


def test_host_page_shows_the_inside_view_of_the_server_check(tmp_path: Path) -> None:
    import time

    from mailfleet.checks.result import ProbeResult, Status

    hosts = make_hosts(2)
    app = create_app({"TESTING": True, "MAILFLEET_HOSTS": hosts,
                      "MAILFLEET_DB": str(tmp_path / "server.sqlite3")})
    store = app.extensions["mailfleet"].store
    fill_store(store, hosts, sweeps=1, mesh=False)
    values = {  # as checks/server reports them (checks/SERVER.md)
        "commands_run": 5,
        "queue_messages": {"active": 0, "deferred": 12, "hold": 0, "incoming": 0,
                           "maildrop": 0},
        "queue_oldest_seconds": 5400.0,
        "deferral_reasons": [{"reason": "connect to mx.example.net[192.0.2.7]:25: "
                                        "Connection timed out <script>", "count": 12}],
        "dovecot_sessions": 7, "dovecot_sessions_by_protocol": {"imap": 7},
        "services": {"postfix": True, "dovecot": False},
        "filesystems": {"/var/vmail": {"size_bytes": 100, "free_bytes": 4, "free_ratio": 0.04,
                                       "inodes": 10, "free_inodes": 5,
                                       "free_inodes_ratio": 0.5}},
        "cert_file": "/etc/ssl/mailfleet/fullchain.pem", "cert_file_not_after": 1.9e9,
        "cert_reload_pending_by_service": {"imaps": True},
    }
    store.record("mx1", ProbeResult("server", "mx1", False, Status.CRITICAL, {"total": 0.4},
                                    values, "dovecot is not running", time.time()))
    page = app.test_client().get("/hosts/mx1").get_data(as_text=True)
    section = page.split('<section id="server">', 1)[1].split("</section>", 1)[0]
    assert "dovecot down" in section and "postfix up" in section
    assert "deferred 12" in section and "90 min" in section  # queue and oldest age
    assert "Connection timed out &lt;script&gt;" in section  # remote text, escaped
    assert "4.0 %" in section and "/var/vmail" in section
    assert "imaps serves an older one: reload" in section
    assert "7" in section and "dovecot is not running" in section
    assert '<section id="server">' not in app.test_client().get("/hosts/mx2").get_data(
        as_text=True)  # no server check there, no section
    store.close()


@pytest.mark.parametrize("path", ["/hosts/nope", "/hosts/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                                  "/hosts/..%2F..%2Fetc%2Fpasswd", "/no/such/page"])
def test_unknown_host_is_a_404_page_without_a_trace(client: FlaskClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 404
    html = page.get_data(as_text=True)
    assert "404 Not Found" in html and "Traceback" not in html and "File \"" not in html
    assert "<script>alert" not in html


def test_unknown_host_in_the_api_is_a_json_404(client: FlaskClient) -> None:
    r = client.get("/api/hosts/nope")
    assert r.status_code == 404
    assert r.get_json() == {"error": "Not Found", "status": 404,
                            "detail": "No host 'nope' in the inventory."}


def test_a_crash_shows_no_trace(app: Flask) -> None:
    app.config["TESTING"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    store = app.extensions["mailfleet"].store
    store.close()
    for leftover in Path(store.path).parent.glob(Path(store.path).name + "*"):
        leftover.unlink()  # the store's file is gone: every read now fails

    page = app.test_client().get("/")
    assert page.status_code == 500
    html = page.get_data(as_text=True)
    assert "500 Internal Server Error" in html and "Traceback" not in html
    assert "sqlite" not in html.lower()
    api = app.test_client().get("/api/fleet")
    assert api.status_code == 500 and api.get_json()["error"] == "Internal Server Error"


@pytest.mark.parametrize("path", ["/", "/hosts/mx1", "/api/fleet", "/api/hosts/mx1"])
def test_read_only(client: FlaskClient, path: str) -> None:
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)(path).status_code == 405


def test_security_headers_on_every_kind_of_response(client: FlaskClient) -> None:
    for path in ("/", "/hosts/mx1", "/api/fleet", "/api/hosts/mx1", "/hosts/nope",
                 "/static/js/fleet.js", "/static/vendor/uplot/uPlot.iife.min.js", "/healthz",
                 "/metrics"):
        r = client.get(path)
        r.close()  # static files are streamed
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert client.get("/api/fleet").headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_script_or_style(client: FlaskClient) -> None:
    for path in ("/", "/hosts/mx1", "/hosts/mx7", "/hosts/nope"):
        html = client.get(path).get_data(as_text=True)
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, path
        assert "<style" not in html and " style=" not in html, path
        assert re.search(r"\son[a-z]+=", html) is None, path  # no onclick= handlers
        assert "http://" not in html and "https://" not in html, path  # no CDN


def test_static_assets_are_served_from_the_package(client: FlaskClient) -> None:
    html = client.get("/hosts/mx1").get_data(as_text=True)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        r = client.get(asset)
        assert r.status_code == 200, asset
        r.close()


def test_a_store_without_a_path_still_renders(tmp_path: Path) -> None:
    app = make_app(tmp_path, MAILFLEET_DB=None)
    c = app.test_client()
    assert c.get("/").status_code == 200
    data = c.get("/api/hosts/mx2").get_json()
    assert len(data["history"]["cert_days"]["t"]) == 20
    assert c.get("/hosts/mx2").status_code == 200


def test_a_new_result_shows_at_once(app: Flask, client: FlaskClient) -> None:
    """The fleet view is cached between requests; a new result must still show at once."""
    import time

    from mailfleet.checks.result import ProbeResult, Status

    def row(name: str) -> dict[str, object]:
        rows = client.get("/api/fleet").get_json()["hosts"]
        found: dict[str, object] = next(r for r in rows if r["name"] == name)
        return found

    assert row("mx1")["status"] == "ok"
    html_before = client.get("/").get_data(as_text=True)
    store = app.extensions["mailfleet"].store
    store.record("mx1", ProbeResult("imap_login", "mx1", False, Status.CRITICAL, {}, {},
                                    "authentication failed: AUTHENTICATIONFAILED", time.time()))
    changed = row("mx1")
    assert changed["status"] == "critical"
    assert changed["reason"] == "imap_login: authentication failed: AUTHENTICATIONFAILED"
    assert row("mx2") == next(r for r in client.get("/api/fleet").get_json()["hosts"]
                              if r["name"] == "mx2")
    html = client.get("/").get_data(as_text=True)
    assert html != html_before and 'data-host="mx1" data-status="critical"' in html


def test_the_incremental_fleet_view_equals_a_fresh_one(app: Flask, client: FlaskClient) -> None:
    """Results applied one request at a time give the rows a full re-read gives."""
    import time

    from mailfleet.checks.result import ProbeResult, Status
    from mailfleet.dashboard.web.fleetcache import FleetCache

    store = app.extensions["mailfleet"].store
    client.get("/api/fleet")
    now = time.time()
    for step, ok in enumerate((False, False, True, False)):
        store.record_many([
            (f"mx{i}", ProbeResult(check, f"mx{i}", ok, Status.OK if ok else Status.CRITICAL,
                                   {"total": 0.01}, {}, "" if ok else "timed out",
                                   now + step))
            for i in (1, 2, 9) for check in ("port", "smtp")
        ])
        client.get("/api/fleet")
    incremental = client.get("/api/fleet").get_json()["hosts"]
    app.extensions["mailfleet_fleet_cache"] = FleetCache()
    fresh = client.get("/api/fleet").get_json()["hosts"]
    assert incremental == fresh
    row = next(r for r in fresh if r["name"] == "mx9")
    assert row["status"] == "critical" and row["reason"] == "port, smtp: timed out"
    assert row["last_ok_at"] == now + 2  # the last success, carried over the failure after it


def test_the_fleet_view_leaves_mesh_pairs_out(app: Flask, client: FlaskClient) -> None:
    """Mesh pairs (up to n*(n-1) results) are neither decoded nor a reason to rebuild a row."""
    import time

    from mailfleet.checks.result import ProbeResult, Status
    from mailfleet.dashboard.web.fleetcache import FleetCache

    store = app.extensions["mailfleet"].store
    cache = FleetCache()
    before = cache.latest(store)
    row_before = next(r for r in client.get("/api/fleet").get_json()["hosts"]
                      if r["name"] == "mx1")
    store.record("mx1", ProbeResult("sync_mesh:mx2", "mx1", False, Status.CRITICAL,
                                    {"total": 5.0}, {"kind": "mesh", "source": "mx2"},
                                    "no delivery within 5.0 s", time.time()))
    for snapshot in (cache.latest(store), FleetCache().latest(store)):  # incremental, fresh
        assert snapshot.version != before.version
        assert not [c for checks in snapshot.by_host.values() for c in checks
                    if c.startswith("sync_mesh")]
        assert snapshot.fingerprints.get("mx1") == before.fingerprints.get("mx1")
    row = next(r for r in client.get("/api/fleet").get_json()["hosts"] if r["name"] == "mx1")
    assert row["status"] == row_before["status"]


def test_each_result_carries_the_probes_reason(client: FlaskClient) -> None:
    """The API and the host page say why a check failed in the probe's bounded word."""
    data = client.get("/api/hosts/mx7").get_json()
    checks = {c["check"]: c for c in data["checks"]}
    assert checks["port"]["reason"] == "refused"
    assert checks["smtp"]["reason"] == ""  # passed: no reason
    html = client.get("/hosts/mx7").get_data(as_text=True)
    row = html.split('<tr data-check="port">', 1)[1].split("</tr>", 1)[0]
    assert '<td class="check-reason">refused</td>' in row
