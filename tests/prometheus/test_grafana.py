"""The Grafana dashboard: valid JSON, valid PromQL, and only metrics the exporter serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from mailfleet.dashboard.metrics import GAUGES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "prometheus" / "grafana" / "mailfleet.json"
SELF_METRICS = {
    "mailfleet_build_info", "mailfleet_targets", "mailfleet_inventory_ok",
    "mailfleet_sweep_interval_seconds", "mailfleet_sweep_duration_seconds",
    "mailfleet_sweep_last_timestamp_seconds", "mailfleet_sweep_overrun",
    "mailfleet_sweeps_total", "mailfleet_sweep_overruns_total", "mailfleet_probes_total",
    "mailfleet_probe_errors_total", "mailfleet_probes_abandoned_total",
}


def expressions() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in data["annotations"]["list"] if "expr" in a]
    return [e.replace("$job", ".*").replace("$host", ".*") for e in exprs]


def test_every_panel_queries_metrics_the_exporter_serves() -> None:
    known = set(GAUGES) | SELF_METRICS | {"ALERTS"}
    for expr in expressions():
        for name in re.findall(r"\b(mailfleet_\w+|ALERTS)\b", expr):
            assert name in known, f"{name} in {expr!r} is not served by the exporter"


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:panel{i}", "expr": e} for i, e in enumerate(expressions())
    ]}]}
    path = tmp_path / "grafana_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    tool = shutil.which("promtool")
    assert tool is not None, "promtool missing: apt-get install prometheus"
    proc = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
