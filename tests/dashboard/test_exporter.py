"""/metrics, /probe, /sd, /healthz through Flask's test client, checked with promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from mailfleet.dashboard.monitor import Monitor
from tests.dashboard.conftest import host, make_app
from tests.dashboard.servers import tarpit


def sweep(app: Flask) -> None:
    monitor: Monitor = app.extensions["mailfleet"]
    assert monitor.scheduler is not None
    monitor.scheduler.sweep()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: apt-get install prometheus (scripts/apt-packages.txt)")
    return subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                          capture_output=True, timeout=30, check=False)


def test_metrics_serve_the_latest_results_with_a_host_label(
    app: Flask, client: FlaskClient
) -> None:
    sweep(app)
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    found = samples(resp.text)
    assert found[("mailfleet_probe_success", (("check", "port"), ("host", "mx1")))] == 1
    assert found[("mailfleet_probe_success", (("check", "port"), ("host", "mx2")))] == 1
    assert found[("mailfleet_quota_used_ratio", (("host", "mx1"),))] == 0.9
    assert found[("mailfleet_probe_status", (("check", "quota"), ("host", "mx1")))] == 1
    assert ("mailfleet_probe_last_success_timestamp_seconds",
            (("check", "port"), ("host", "mx2"))) in found
    assert found[("mailfleet_sweeps_total", ())] == 1
    assert found[("mailfleet_targets", ())] == 2
    assert any(name == "mailfleet_build_info" for name, _ in found)
    assert any(name == "process_resident_memory_bytes" for name, _ in found)
    # never a per-user or volatile label
    assert "probe@example1.test" not in resp.text
    assert "target=" not in resp.text


def test_metrics_pass_promtool_check_metrics(app: Flask, client: FlaskClient) -> None:
    sweep(app)
    check = promtool_check_metrics(client.get("/metrics").text)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""


def test_metrics_never_probe(app: Flask, client: FlaskClient) -> None:
    monitor: Monitor = app.extensions["mailfleet"]
    assert monitor.scheduler is not None
    for _ in range(3):
        client.get("/metrics")
    assert monitor.scheduler.stats.snapshot().probes.total() == 0
    assert monitor.store.latest() == []


def test_probe_runs_one_check_now_without_host_or_target_label(client: FlaskClient) -> None:
    resp = client.get("/probe?target=mx1&module=port")
    assert resp.status_code == 200, resp.text
    found = samples(resp.text)
    assert found[("mailfleet_probe_success", (("check", "port"),))] == 1
    assert "host=" not in resp.text and "target=" not in resp.text
    check = promtool_check_metrics(resp.text)
    assert check.returncode == 0, check.stdout + check.stderr


def test_probe_refuses_targets_outside_the_inventory(client: FlaskClient) -> None:
    resp = client.get("/probe?target=192.0.2.1&module=port")
    assert resp.status_code == 403
    assert "not in the inventory" in resp.text


def test_probe_any_target_only_when_the_operator_allows_it(listener: int) -> None:
    app = make_app([host("mx1", listener)], MAILFLEET_ALLOW_ANY_TARGET=True)
    resp = app.test_client().get("/probe?target=127.0.0.2&module=tls",
                                 headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
    assert resp.status_code == 200
    assert samples(resp.text)[("mailfleet_probe_success", (("check", "tls"),))] == 0


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("/probe?target=mx1&module=nosuch", "unknown module 'nosuch'; known modules: "),
        ("/probe?target=mx1", "missing 'module' parameter"),
        ("/probe?module=port", "missing 'target' parameter"),
    ],
)
def test_probe_explains_a_bad_request(client: FlaskClient, query: str, words: str) -> None:
    resp = client.get(query)
    assert resp.status_code == 400
    assert words in resp.text


def test_probe_ends_within_prometheus_scrape_timeout() -> None:
    with tarpit() as pit:
        app = make_app([host("slow", pit.port, ("tls",), timeout=10)])
        t0 = time.monotonic()
        resp = app.test_client().get(
            "/probe?target=slow&module=tls&debug=1",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
        )
        elapsed = time.monotonic() - t0
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["budget_seconds"] == pytest.approx(1.0)  # 1.5 s minus the 0.5 s margin
    assert body["result"]["success"] is False
    assert 0.8 < elapsed < 1.5


def test_probe_matches_a_host_by_address_or_mail_hostname(client: FlaskClient) -> None:
    assert client.get("/probe?target=mx2.lab.test&module=port").status_code == 200


def test_sd_lists_inventory_hosts_with_their_groups(client: FlaskClient) -> None:
    resp = client.get("/sd")
    assert resp.status_code == 200
    groups = json.loads(resp.text)
    assert [g["targets"] for g in groups] == [["mx1"], ["mx2"]]
    assert groups[0]["labels"]["host"] == "mx1"
    assert groups[0]["labels"]["__meta_mailfleet_groups"] == ",eu,mailservers,"
    only_quota = json.loads(client.get("/sd?module=quota").text)
    assert [g["targets"] for g in only_quota] == [["mx1"]]
    assert only_quota[0]["labels"]["__param_module"] == "quota"
    assert [g["targets"] for g in json.loads(client.get("/sd?group=eu").text)] == [["mx1"]]


def test_healthz_says_ok_and_stalled(app: Flask, client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200  # just started
    monitor: Monitor = app.extensions["mailfleet"]
    monitor.started_at -= 3600  # an hour without a sweep
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "stalled"
    sweep(app)
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_the_fleet_part_is_cached_until_the_store_changes(app: Flask, client: FlaskClient) -> None:
    from mailfleet.dashboard.exporter import MetricsPage

    page: MetricsPage = app.extensions["mailfleet_metrics"]
    page.max_staleness = 0.3
    sweep(app)
    first = client.get("/metrics").text
    body = page.fleet_text()
    assert page.fleet_text() is body  # nothing changed: not rendered again
    assert client.get("/metrics").text.count("mailfleet_probe_success{") == 3
    monitor: Monitor = app.extensions["mailfleet"]
    monitor.store.forget_hosts(["mx1"])  # mx2 leaves the inventory's results
    assert page.fleet_text() is body  # changed, but rendered < 0.3 s ago
    time.sleep(0.35)
    after = client.get("/metrics").text
    assert 'host="mx2"' in first and 'host="mx2"' not in after


def test_nothing_is_registered_in_the_default_registry(app: Flask, client: FlaskClient) -> None:
    from prometheus_client import REGISTRY, generate_latest

    client.get("/metrics")
    client.get("/probe?target=mx1&module=port")
    assert b"mailfleet_" not in generate_latest(REGISTRY)


def test_metrics_and_probe_name_their_charset_once(app: Flask, client: FlaskClient) -> None:
    sweep(app)
    for path in ("/metrics", "/probe?target=mx1&module=port"):
        header = client.get(path).headers["Content-Type"]
        assert header.lower().count("charset") == 1, f"{path}: {header}"
        assert header.startswith("text/plain; version="), f"{path}: {header}"
