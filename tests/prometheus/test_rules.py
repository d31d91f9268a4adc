"""The alerting rules: valid for Prometheus, and each alert fires (and only) when it should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prometheus.promtool_cases import ROOT, TEST_FILE, load_rules, render

RULE_FILES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
TEST_FILES = sorted((ROOT / "prometheus" / "tests").glob("*_test.yml"))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: apt-get install prometheus (scripts/apt-packages.txt)")
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rules: Path) -> None:
    proc = promtool("check", "rules", rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("tests", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(tests: Path) -> None:
    proc = promtool("test", "rules", tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_promtool_test_file_is_up_to_date() -> None:
    assert TEST_FILE.read_text() == render(), (
        "run `python -m tests.prometheus.promtool_cases` after changing the rules or cases"
    )


def test_every_alert_has_severity_for_and_a_runbook() -> None:
    for name, rule in load_rules().items():
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name


def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    """The harness can fail: expect the IMAP alert for the healthy host."""
    broken = TEST_FILE.read_text().replace("host: mx1", "host: mx2", 1)
    broken = broken.replace("../rules/", str(ROOT / "prometheus" / "rules") + "/")
    target = tmp_path / "broken_test.yml"
    target.write_text(broken)
    proc = promtool("test", "rules", target)
    assert proc.returncode != 0
    assert "MailfleetIMAPLoginFailing" in proc.stdout + proc.stderr


def test_the_example_prometheus_config_is_valid(tmp_path: Path) -> None:
    example = (ROOT / "prometheus" / "prometheus.example.yml").read_text()
    rules = str(ROOT / "prometheus" / "rules") + "/*.yml"
    config = tmp_path / "prometheus.yml"
    config.write_text(example.replace("/etc/prometheus/rules/mailfleet/*.yml", rules))
    proc = promtool("check", "config", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mailfleet.yml" in proc.stdout
