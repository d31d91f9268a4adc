"""Two ``mailfleet serve --shard K/2`` and a real Prometheus scraping both.

Thirteen inventory hosts answer on loopback (one of them refuses connections).
Prometheus (Debian's package, on loopback with its own data directory) scrapes
each watcher's ``/metrics`` (fleet view) and, through ``/sd`` relabelled with
``hashmod``, each watcher's ``/probe`` for the hosts of its shard; it evaluates
the real rules with ``for:`` cut to a second. Every host's series must be there
exactly once, from the watcher Prometheus' own hashmod gives it; no ``/probe``
target may be refused as another shard's; the port alert fires once, for the host
that refuses; each watcher's fleet page, reading Prometheus, shows all thirteen.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailfleet.dashboard.shard import hashmod
from tests.dashboard.servers import accepting_port, closed_port
from tests.integration.test_exporter_prometheus import free_port, http_json, short_rules, wait_for
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
MAILFLEET = str(Path(sys.executable).parent / "mailfleet")
SHARDS = 2
UP = [f"mx{i:02d}.example.net" for i in range(12)]
DOWN = "down.example.net"
HOSTS = [*UP, DOWN]


@pytest.fixture(scope="module")
def up_port() -> Iterator[int]:
    """Port 993 of every host that is up."""
    with accepting_port() as port:
        yield port


@dataclass
class Stack:
    prom_url: str
    watchers: list[str]  # base URL of shard 0, shard 1
    addresses: list[str]  # host:port of shard 0, shard 1 (Prometheus' instance labels)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        result: list[dict[str, Any]] = http_json(url)["data"]["result"]
        return result


def start_prometheus(work: Path, artifacts: Path, addresses: list[str],
                     port: int) -> subprocess.Popen[bytes]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus missing: apt-get install prometheus (scripts/apt-packages.txt)")
    jobs: list[dict[str, Any]] = []
    for k, address in enumerate(addresses):
        jobs.append({"job_name": f"mailfleet-shard{k}",
                     "static_configs": [{"targets": [address]}]})
    for k, address in enumerate(addresses):
        jobs.append({  # as prometheus/prometheus.example.yml shards /probe
            "job_name": f"mailfleet-probe-port-shard{k}",
            "metrics_path": "/probe",
            "scrape_timeout": "1s",
            "http_sd_configs": [{"url": f"http://{addresses[0]}/sd?module=port",
                                 "refresh_interval": "1s"}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "modulus": SHARDS,
                 "target_label": "__tmp_shard", "action": "hashmod"},
                {"source_labels": ["__tmp_shard"], "regex": str(k), "action": "keep"},
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": address},
            ],
        })
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(short_rules(work) / "*.yml")],
        "scrape_configs": jobs,
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(work / "prometheus.yml", artifacts / "prometheus.yml")
    log = (artifacts / "prometheus.log").open("wb")
    try:
        return subprocess.Popen(
            [prometheus, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


@pytest.fixture(scope="module")
def stack(up_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("shards")
    artifacts = ROOT / "artifacts" / "shards-prometheus"
    artifacts.mkdir(parents=True, exist_ok=True)
    refused = closed_port()
    inventory = work / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"mailservers": {"hosts": {
        name: {"ansible_host": "127.0.0.1", "mailfleet_checks": ["port"],
               "mailfleet_ports": {"imaps": refused if name == DOWN else up_port},
               "mailfleet_probe_options": {"timeout": 2}}
        for name in HOSTS}}}))
    ports = [free_port() for _ in range(SHARDS)]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_prometheus(work, artifacts, addresses, prom_port))
        wait_for("Prometheus ready", lambda: http_json(
            f"{prom_url}/api/v1/status/buildinfo")["status"] == "success", 60)
        for k, address in enumerate(addresses):
            with (artifacts / f"serve-shard{k}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [MAILFLEET, "serve", "-i", str(inventory), "--listen", address,
                     "--interval", "1s", "--shard", f"{k}/{SHARDS}", "--prometheus", prom_url,
                     "--db", str(work / f"shard{k}.sqlite3")],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        watchers = [f"http://{a}" for a in addresses]
        for url in watchers:
            wait_for(f"{url}/healthz", lambda url=url: http_json(f"{url}/healthz")["status"]
                     == "ok", 60)
        yield Stack(prom_url, watchers, addresses)
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def owner(name: str) -> int:
    return hashmod(name, SHARDS)


def test_every_host_has_its_series_once_from_the_shard_prometheus_hashmod_gives_it(
    stack: Stack,
) -> None:
    assert {owner(h) for h in HOSTS} == set(range(SHARDS))  # both shards have hosts
    fleet = 'mailfleet_probe_success{job=~"mailfleet-shard.*",check="port"}'
    wait_for("every host's port result in Prometheus",
             lambda: {r["metric"]["host"] for r in stack.query(fleet)} == set(HOSTS), 60)
    results = stack.query(fleet)
    assert len(results) == len(HOSTS), results  # exactly once: no host from both shards
    for r in results:
        host = r["metric"]["host"]
        assert r["metric"]["instance"] == stack.addresses[owner(host)], r
        assert r["value"][1] == ("0" if host == DOWN else "1"), r
    targets = {r["metric"]["instance"]: int(float(r["value"][1]))
               for r in stack.query('mailfleet_targets{job=~"mailfleet-shard.*"}')}
    assert targets == {a: sum(owner(h) == k for h in HOSTS)
                       for k, a in enumerate(stack.addresses)}
    # /probe: Prometheus' hashmod sent each shard only hosts it owns (a host of the
    # other shard would be refused with 421 and the target would be down)
    probe = 'up{job=~"mailfleet-probe-port-shard.*"}'
    wait_for("a /probe target per host",
             lambda: {r["metric"]["instance"] for r in stack.query(probe)} == set(HOSTS), 30)
    wait_for("every /probe target scraped fine",
             lambda: all(r["value"][1] == "1" for r in stack.query(probe)), 30)
    for r in stack.query(probe):
        assert r["metric"]["job"] == f"mailfleet-probe-port-shard{owner(r['metric']['instance'])}"
    # the mesh of a sharded fleet is bounded per host: no source label on /metrics
    assert stack.query('{__name__=~"mailfleet_.+",source!=""}') == []


def test_the_port_alert_fires_once_for_the_host_that_refuses(stack: Stack) -> None:
    def firing() -> list[dict[str, Any]]:
        alerts = http_json(f"{stack.prom_url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "MailfleetIMAPSPortUnreachable"
                and a["labels"]["job"].startswith("mailfleet-shard") and a["state"] == "firing"]

    wait_for("MailfleetIMAPSPortUnreachable firing", lambda: bool(firing()), 60)
    (alert,) = firing()
    assert alert["labels"]["host"] == DOWN
    assert alert["labels"]["instance"] == stack.addresses[owner(DOWN)]


def test_each_watchers_fleet_page_shows_the_whole_fleet_from_prometheus(stack: Stack) -> None:
    for k, url in enumerate(stack.watchers):
        def statuses(url: str = url) -> dict[str, str]:
            body = http_json(f"{url}/api/fleet")
            return {h["name"]: h["status"] for h in body["hosts"]}

        wait_for(f"shard {k}'s fleet page with every host",
                 lambda s=statuses: s() == {**dict.fromkeys(UP, "ok"), DOWN: "critical"}, 30)
        body = http_json(f"{url}/api/fleet")
        assert body["shard"] == f"{k}/{SHARDS}" and body["prometheus"] == stack.prom_url
        assert body["prometheus_error"] is None
        other = next(h for h in UP if owner(h) != k)
        page = http_json(f"{url}/api/hosts/{other}")
        assert page["status"] == "ok", page
    # a shard refuses /probe for a host of the other shard, and says which shard owns it
    mine = next(h for h in UP if owner(h) == 0)
    theirs = next(h for h in UP if owner(h) == 1)
    with urllib.request.urlopen(f"{stack.watchers[0]}/probe?module=port&target={mine}",
                                timeout=10) as reply:
        assert "mailfleet_probe_success" in reply.read().decode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{stack.watchers[0]}/probe?module=port&target={theirs}",
                               timeout=10)
    assert refused.value.code == 421
    assert "belongs to shard 1/2" in refused.value.read().decode()
