"""``mailfleet probe`` and ``mailfleet dns-check`` as an admin runs them (loopback, knot)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mailfleet.cli import main
from tests.checks.certs import DAY, MINUTE, make_ca, make_leaf, now, write_bundle, write_chain
from tests.checks.knot import Knot, knotd_path
from tests.checks.servers import LoopbackServer, closed_port, tls_greeter, tls_server_context
from tests.dashboard.servers import tarpit

HOST = "mx1.lab.test"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An inventory of three loopback 'servers': good, expired certificate, port closed."""
    d = tmp_path_factory.mktemp("fleet")
    ca = make_ca("cli test CA")
    good_cert, good_key = write_chain(d, "good", make_leaf(ca, [HOST]))
    old = make_leaf(ca, [HOST], not_before=now() - 90 * DAY, not_after=now() - 3 * DAY - MINUTE)
    old_cert, old_key = write_chain(d, "old", old)
    bundle = write_bundle(d, "ca", ca)
    with LoopbackServer(tls_greeter(tls_server_context(good_cert, good_key))) as good, \
            LoopbackServer(tls_greeter(tls_server_context(old_cert, old_key))) as expired:
        def host(port: int) -> dict[str, object]:
            return {"ansible_host": "127.0.0.1", "mail_hostname": HOST,
                    "mailfleet_ports": {"imaps": port}, "mailfleet_checks": ["port", "tls"],
                    "mailfleet_ca_bundle": str(bundle)}

        inventory = {"all": {"children": {"mailservers": {"hosts": {
            "good": host(good.port), "expired": host(expired.port), "closed": host(closed_port()),
        }}}}}
        path = d / "hosts.yml"
        path.write_text(yaml.safe_dump(inventory))
        yield path


def test_probe_table_and_nagios_exit_code(fleet: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    code = main(["probe", "-i", str(fleet)])
    out = capsys.readouterr().out
    assert code == 2
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "CHECK", "STATUS", "TIME", "MESSAGE"]
    row = next(line for line in lines if line.startswith("expired") and " tls " in line)
    assert f"certificate for {HOST} expired 3 days ago" in row
    good = next(line for line in lines if line.startswith("good") and " tls " in line)
    assert good.endswith(" days left (" + good[-11:-1] + ")") and "CN=mx1.lab.test" in good
    assert any(line.startswith("closed") and "connection refused" in line for line in lines)


def test_probe_limit_and_check_select(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "-i", str(fleet), "--limit", "good", "--check", "tls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].split()[:3] == ["good", "tls", "OK"]


def test_probe_json_has_values_and_no_secrets(fleet: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    main(["probe", "-i", str(fleet), "--limit", "expired", "--format", "json"])
    results = json.loads(capsys.readouterr().out)
    tls = next(r for r in results if r["check"] == "tls")
    assert tls["status"] == "critical" and tls["target"] == "expired"
    assert tls["values"]["cert_not_after"] < tls["started_at"]


def test_probe_nagios_format(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["probe", "-i", str(fleet), "--limit", "good,closed", "--format", "nagios"])
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert code == 2
    assert first.startswith("MAILFLEET CRITICAL - 2 ok, 2 critical: closed port: 127.0.0.1:")
    perf = first.split(" | ")[1]
    assert "'good tls time'=" in perf
    assert re.search(r"'good tls days left'=(89\.9\d*|90);30:;14:( |$)", perf), perf
    lines = out.splitlines()[1:]
    assert re.fullmatch(r"good: TLS OK - TLSv1\.[23], CN=mx1\.lab\.test, 89 days left "
                        r"\(\d{4}-\d\d-\d\d\)", lines[-1]), lines
    assert re.fullmatch(r"good: port OK - 127\.0\.0\.1:\d+ \(imaps\) open in \d+ ms",
                        lines[-2]), lines


def test_probe_thresholds_from_the_command_line(fleet: Path, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    """A fresh 90-day certificate is fine by default; warned about from the first day with
    --warning tls_days=100,tls_lifetime_percent=0."""
    code = main(["probe", "-i", str(fleet), "--limit", "good", "--check", "tls",
                 "--format", "nagios", "--warning", "tls_days=100,tls_lifetime_percent=0",
                 "--critical", "tls_days=10"])
    first, line = capsys.readouterr().out.splitlines()
    assert code == 1
    assert first.startswith("MAILFLEET WARNING - 1 warning: good tls: certificate chain for "
                            f"{HOST} expires in 89 days"), first
    assert re.search(r"'good tls days left'=(89\.9\d*|90);100:;10:$", first), first
    assert line.startswith("good: TLS WARNING - certificate chain for"), line


@pytest.mark.parametrize(("argv", "message"), [
    (["--warning", "tls_days=ten"], "--warning tls_days='ten': not a number"),
    (["--critical", "tls_days=40"], "the warning tls_days (30) must be at least the critical "
                                    "one (40)"),
    (["--critical", "load=3"], "unknown threshold 'load'"),
])
def test_a_bad_threshold_is_unknown(fleet: Path, capsys: pytest.CaptureFixture[str],
                                    argv: list[str], message: str) -> None:
    assert main(["probe", "-i", str(fleet), *argv]) == 3
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_probe_unknown_check_is_status_3(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "-i", str(fleet), "--check", "tls,telnet"]) == 3
    assert "unknown check telnet" in capsys.readouterr().err


def test_probe_bad_inventory_is_status_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    bad = tmp_path / "hosts.yml"
    bad.write_text("all: {children: {mailservers: {hosts: {mx1: {mailfleet_checks: tls}}}}}\n")
    assert main(["probe", "-i", str(bad)]) == 3
    assert "mailfleet_checks must be a list" in capsys.readouterr().err


@pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")
def test_dns_check_table_and_exit(knot: Knot, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dns-check", "good.test", "wrongmx.test", "--mx-host", "mx-good.dnstest.test",
                 "--ip", "192.0.2.10", "--resolver", knot.resolver])
    out = capsys.readouterr().out
    assert code == 2
    assert ("ERROR    mx      wrongmx.test          MX of wrongmx.test is mx9.dnstest.test "
            "(192.0.2.99), expected mx-good.dnstest.test (192.0.2.10)") in out
    assert "OK       ptr     192.0.2.10            PTR of 192.0.2.10 is mx-good.dnstest.test" in out


@pytest.mark.skipif(knotd_path() is None, reason="knotd not installed")
def test_dns_check_json_ok(knot: Knot, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dns-check", "good.test", "--mx-host", "mx-good.dnstest.test",
                 "--resolver", knot.resolver, "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["status"] == "ok"
    # without --ip the addresses come from the A record of --mx-host
    assert {f["subject"] for f in report["findings"] if f["check"] == "ptr"} == {"192.0.2.10"}


def test_dns_check_rejects_a_bad_resolver(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dns-check", "x.test", "--mx-host", "mx.x.test", "--resolver", "dns.google"]) == 3
    assert "is not an IP address" in capsys.readouterr().err


def test_probe_is_one_sweep_of_the_engine_and_keeps_its_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that accepts and never speaks costs the probe its deadline, not the command."""
    with tarpit() as pit:
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": {
            "silent": {"ansible_host": "127.0.0.1", "mail_hostname": HOST,
                       "mailfleet_ports": {"imaps": pit.port, "smtp": pit.port},
                       "mailfleet_checks": ["tls", "smtp"]}}}}}}))
        started = time.monotonic()
        code = main(["probe", "-i", str(inventory), "--timeout", "1.5"])
        took = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 2, out
    assert took < 1.5 + 8.0, f"probe took {took:.1f} s for 1.5 s deadlines"
    rows = [line for line in out.splitlines()[1:] if line.startswith("silent")]
    assert [r.split()[1] for r in rows] == ["tls", "smtp"], out
    assert all("CRITICAL" in r and "within 1.5 s" in r for r in rows), out


def test_probe_runs_the_fleet_mesh_as_serve_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hosts that list sync_mesh get their pairs probed (here refused: nothing listens)."""
    def host() -> dict[str, object]:
        return {"ansible_host": "127.0.0.1", "mail_hostname": HOST,
                "mailfleet_ports": {"submission": closed_port(), "imaps": closed_port()},
                "mailfleet_checks": ["port", "sync_mesh"],
                "mailfleet_probe_user": "probe@example.test",
                "mailfleet_probe_password": "probe-password"}

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"mailservers": {"hosts": {
        "a": host(), "b": host()}}}}}))
    code = main(["probe", "-i", str(inventory), "--format", "json", "--timeout", "3"])
    results = json.loads(capsys.readouterr().out)
    assert code == 2
    assert [(r["target"], r["check"]) for r in results] == [
        ("a", "port"), ("a", "sync_mesh:b"), ("b", "port"), ("b", "sync_mesh:a")]
    mesh = [r for r in results if r["check"].startswith("sync_mesh:")]
    assert all(r["status"] == "critical" and "refused" in r["error"] for r in mesh), mesh
    assert all(r["reason"] == "refused" for r in mesh), mesh


def test_a_probe_usage_error_is_unknown_not_critical(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--format", "yaml", "-i", "x"]) == 3  # Nagios: UNKNOWN
    assert "invalid choice: 'yaml'" in capsys.readouterr().err
    assert main(["probe"]) == 3
    assert "-i/--inventory" in capsys.readouterr().err
