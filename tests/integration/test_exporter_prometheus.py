"""A real Prometheus scrapes a real ``mailfleet serve`` watching the lab's mail hosts.

Prometheus (Debian's package) runs on loopback with its own data directory,
scrapes ``/metrics`` (fleet view) and ``/probe`` through ``/sd`` (the
multi-target pattern), and evaluates a copy of prometheus/rules/*.yml whose
``for:`` are shortened to seconds. Stopping Dovecot on one host must take the
IMAP login alert through pending to firing for that host only; starting it
again resolves it. An expired certificate on one host fires the certificate
alert for that host.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import MailFleet
from tests.processes import stop_process

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
ALERT_FOR = "2s"
SWEEP_INTERVAL = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def wait_for(what: str, check: Callable[[], bool], timeout: float, step: float = 0.25) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def vault_encrypt(password_file: Path, name: str, value: str) -> str:
    tool = ROOT / ".venv" / "bin" / "ansible-vault"
    return subprocess.run(
        [str(tool), "encrypt_string", "--vault-password-file", str(password_file), value,
         "--name", name],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout


def watcher_inventory(fleet: MailFleet, where: Path) -> tuple[Path, Path]:
    """A second inventory source beside the lab's: the probe account per host, vaulted."""
    password_file = where / "vault-pass"
    password_file.write_text("exporter-test-vault\n")
    inv = where / "watch"
    (inv / "host_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "mailservers:\n  hosts:\n" + "".join(f"    {h.name}:\n" for h in fleet.hosts)
    )
    for h in fleet.hosts:
        user = fleet.user(h.name)
        (inv / "host_vars" / f"{h.name}.yml").write_text(
            f"mailfleet_probe_user: {user.address}\n"
            + vault_encrypt(password_file, "mailfleet_probe_password", user.password)
            + f"mailfleet_ca_bundle: {fleet.ca_bundle}\n"
            + "mailfleet_checks: [port, tls, imap_login]\n"
            # generous: a loaded CI machine must not turn slow logins into failures
            + "mailfleet_probe_options: {timeout: 5}\n"
        )
    return inv, password_file


def short_rules(where: Path) -> Path:
    """The real rules with every ``for:`` cut to seconds, so the test stays short."""
    out = where / "rules"
    out.mkdir()
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = ALERT_FOR
        (out / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@dataclass
class Stack:
    fleet: MailFleet
    serve_url: str
    prom_url: str
    artifacts: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = http_json(url)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        body = http_json(f"{self.prom_url}/api/v1/alerts")
        return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]

    def values(self, promql: str) -> dict[str, float]:
        return {r["metric"].get("host", r["metric"].get("instance", "")): float(r["value"][1])
                for r in self.query(promql)}


@pytest.fixture(scope="module")
def stack(mail_fleet: MailFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus missing: apt-get install prometheus (scripts/apt-packages.txt)")
    mail_fleet.lab.require_up()
    work = tmp_path_factory.mktemp("exporter-prometheus")
    artifacts = ROOT / "artifacts" / "exporter-prometheus"
    artifacts.mkdir(parents=True, exist_ok=True)
    inv, vault_file = watcher_inventory(mail_fleet, work)
    serve_port, prom_port = free_port(), free_port()
    serve_log = (artifacts / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "mailfleet", "serve",
         "-i", str(mail_fleet.inventory), "-i", str(inv),
         "--vault-password-file", str(vault_file),
         "--listen", f"127.0.0.1:{serve_port}", "--interval", f"{SWEEP_INTERVAL}s",
         "--db", str(work / "results.sqlite3")],
        cwd=ROOT, stdout=serve_log, stderr=subprocess.STDOUT,
    )
    serve_url = f"http://127.0.0.1:{serve_port}"
    rules = short_rules(work)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.yml")],
        "scrape_configs": [
            {"job_name": "mailfleet", "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}]},
            {
                "job_name": "mailfleet-probe",
                "metrics_path": "/probe",
                "scrape_interval": "2s",
                "scrape_timeout": "2s",
                "http_sd_configs": [{"url": f"{serve_url}/sd?module=port",
                                     "refresh_interval": "2s"}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{serve_port}"},
                ],
            },
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(work / "prometheus.yml", artifacts / "prometheus.yml")
    prom_log = (artifacts / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [prometheus, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=prom_log, stderr=subprocess.STDOUT,
    )
    s = Stack(mail_fleet, serve_url, f"http://127.0.0.1:{prom_port}", artifacts)
    try:
        wait_for("mailfleet serve /healthz", lambda: http_json(f"{serve_url}/healthz")["status"]
                 == "ok", 60)
        wait_for("Prometheus ready", lambda: urllib.request.urlopen(
            f"{s.prom_url}/-/ready", timeout=2).status == 200, 60)
        yield s
    finally:
        for h in mail_fleet.hosts:  # leave Dovecot running whatever happened
            mail_fleet.lab.ssh(h, "service dovecot start </dev/null >/dev/null 2>&1", check=False)
        stop_process(prom)
        stop_process(serve)
        prom_log.close()
        serve_log.close()


def test_prometheus_sees_the_fleet_through_metrics_and_probe(stack: Stack) -> None:
    hosts = {h.name for h in stack.fleet.hosts}
    wait_for(
        "imap_login success of every host in Prometheus",
        lambda: stack.values('mailfleet_probe_success{job="mailfleet",check="imap_login"}')
        == dict.fromkeys(hosts, 1.0),
        60,
    )
    assert set(stack.values('mailfleet_tls_cert_not_after_timestamp_seconds')) == hosts
    assert stack.values("mailfleet_targets") == {"127.0.0.1:" + stack.serve_url.rsplit(":")[-1]:
                                                 float(len(hosts))}
    # the /sd + /probe pattern: one target per inventory host, labelled with it
    wait_for(
        "/probe targets from /sd",
        lambda: set(stack.values('mailfleet_probe_success{job="mailfleet-probe"}')) == hosts,
        30,
    )
    probe = stack.query('mailfleet_probe_success{job="mailfleet-probe"}')
    assert {r["metric"]["instance"] for r in probe} == hosts
    assert all(r["value"][1] == "1" for r in probe)
    assert stack.alerts("MailfleetIMAPLoginFailing") == []
    # promtool accepts what the exporter serves about real hosts
    with urllib.request.urlopen(f"{stack.serve_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    (stack.artifacts / "metrics.txt").write_text(text)
    promtool = shutil.which("promtool") or "promtool"
    check = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                           capture_output=True, timeout=30, check=False)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_stopping_dovecot_fires_imap_login_failing_for_that_host_only(stack: Stack) -> None:
    fleet = stack.fleet
    victim = fleet.hosts[-1].name
    wait_for("a healthy fleet", lambda: stack.values(
        'mailfleet_probe_success{job="mailfleet",check="imap_login"}')
        == {h.name: 1.0 for h in fleet.hosts}, 60)
    seen: list[tuple[float, str]] = []

    def state() -> str | None:
        alerts = stack.alerts("MailfleetIMAPLoginFailing")
        assert {a["labels"]["host"] for a in alerts} <= {victim}, alerts
        states = {a["state"] for a in alerts}
        current = "firing" if "firing" in states else ("pending" if states else None)
        if current and (not seen or seen[-1][1] != current):
            seen.append((time.monotonic(), current))
        return current

    started = time.monotonic()
    fleet.lab.exec(victim, ["service", "dovecot", "stop"])
    try:
        wait_for("MailfleetIMAPLoginFailing firing", lambda: state() == "firing", 60, 0.2)
        fired = time.monotonic() - started
        assert [s for _, s in seen] == ["pending", "firing"], seen
        (alert,) = [a for a in stack.alerts("MailfleetIMAPLoginFailing")]
        assert alert["labels"]["severity"] == "critical"
        assert victim in alert["annotations"]["summary"]
        # the port check sees the same outage, for the same host only
        assert {a["labels"]["host"] for a in stack.alerts("MailfleetIMAPSPortUnreachable")} \
            <= {victim}
    finally:
        fleet.lab.ssh(victim, "service dovecot start </dev/null >/dev/null 2>&1")
    restarted = time.monotonic()
    wait_for("MailfleetIMAPLoginFailing resolved",
             lambda: stack.alerts("MailfleetIMAPLoginFailing") == [], 60)
    resolved = time.monotonic() - restarted
    (stack.artifacts / "imap_alert_timings.json").write_text(json.dumps(
        {"stop_to_firing_seconds": round(fired, 1), "start_to_resolved_seconds": round(resolved, 1),
         "sweep_interval_seconds": SWEEP_INTERVAL, "alert_for": ALERT_FOR}, indent=2) + "\n")


def _expired_certificate(fleet: MailFleet, fqdn: str) -> tuple[bytes, bytes]:
    """A leaf for ``fqdn`` signed by the lab CA that expired yesterday, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_dir = fleet.ca_bundle.parent
    ca_cert = x509.load_pem_x509_certificate(fleet.ca_bundle.read_bytes())
    key_files = sorted(p for p in ca_dir.glob("*.key")) + sorted(ca_dir.glob("*key*.pem"))
    if not key_files:
        pytest.fail(f"no lab CA key in {ca_dir}")
    ca_key = serialization.load_pem_private_key(key_files[0].read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM) + fleet.ca_bundle.read_bytes(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


def test_an_expired_certificate_fires_the_certificate_alert_for_that_host(stack: Stack) -> None:
    fleet = stack.fleet
    host = fleet.hosts[0]
    chain, key = _expired_certificate(fleet, host.fqdn)
    cert_path = "/etc/ssl/mailfleet/fullchain.pem"
    key_path = "/etc/ssl/mailfleet/private/privkey.pem"
    lab = fleet.lab
    for path in (cert_path, key_path):
        lab.exec(host, ["cp", "-p", path, path + ".exporter-test"])
    try:
        lab.exec(host, ["tee", cert_path], input=chain)
        lab.exec(host, ["tee", key_path], input=key)
        lab.ssh(host, "service dovecot restart </dev/null >/dev/null 2>&1")
        wait_for("MailfleetCertificateExpired firing",
                 lambda: any(a["state"] == "firing"
                             for a in stack.alerts("MailfleetCertificateExpired")), 60)
        alerts = stack.alerts("MailfleetCertificateExpired")
        assert {a["labels"]["host"] for a in alerts} == {host.name}
        not_after = stack.values("mailfleet_tls_cert_not_after_timestamp_seconds")
        assert not_after[host.name] < time.time()  # the date is reported though the chain fails
    finally:
        for path in (cert_path, key_path):
            lab.exec(host, ["mv", path + ".exporter-test", path])
        lab.ssh(host, "service dovecot restart </dev/null >/dev/null 2>&1")
    wait_for("MailfleetCertificateExpired resolved",
             lambda: stack.alerts("MailfleetCertificateExpired") == [], 60)
