"""promtool unit tests of prometheus/rules/mailfleet.yml, written from a compact table.

Each case: input series (1 sample a minute), a time at which the alert is still
pending (``quiet_at``: no firing alert), a time at which it fires for exactly
the listed hosts (``fires_at``), and optionally a time after recovery
(``resolved_at``). Healthy hosts in the series must never appear.

Expected annotations are the rule's own, with ``{{ $labels.x }}`` filled in
(the rules keep ``$value`` out of annotations for that reason).

Run ``python -m tests.prometheus.promtool_cases`` to rewrite
prometheus/tests/mailfleet_test.yml; tests/prometheus/test_rules.py checks it
is up to date and runs ``promtool test rules`` on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "prometheus" / "rules" / "mailfleet.yml"
TEST_FILE = ROOT / "prometheus" / "tests" / "mailfleet_test.yml"
JOB = {"job": "mailfleet", "instance": "mon1:9865"}


@dataclass(frozen=True)
class Case:
    alert: str
    series: dict[str, str]  # 'metric{labels}' -> promtool values notation
    quiet_at: str
    fires_at: str
    firing: list[dict[str, str]]
    resolved_at: str | None = None
    job_labels: bool = True  # add job/instance to every series
    extra: dict[str, str] = field(default_factory=dict)


DAY = 86400
CASES: list[Case] = [
    Case("MailfleetIMAPLoginFailing",
         {'mailfleet_probe_success{check="imap_login",host="mx1"}': "0x9 1x10",
          'mailfleet_probe_success{check="imap_login",host="mx2"}': "1x20"},
         quiet_at="4m", fires_at="6m", resolved_at="12m",
         firing=[{"check": "imap_login", "host": "mx1"}]),
    Case("MailfleetIMAPSPortUnreachable",
         {'mailfleet_probe_success{check="port",host="mx1"}': "0x20",
          'mailfleet_probe_success{check="port",host="mx2"}': "1x20",
          'mailfleet_probe_success{check="imap_login",host="mx2"}': "0x20"},
         quiet_at="2m", fires_at="4m", firing=[{"check": "port", "host": "mx1"}]),
    Case("MailfleetSMTPFailing",
         {'mailfleet_probe_success{check="smtp",host="mx2"}': "0x20",
          'mailfleet_probe_success{check="smtp",host="mx1"}': "1x20"},
         quiet_at="4m", fires_at="6m", firing=[{"check": "smtp", "host": "mx2"}]),
    Case("MailfleetCertificateExpiringSoon",
         {'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx1"}': f"{10 * DAY}x40",
          'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx2"}': f"{30 * DAY}x40",
          # mx3's leaf is fine but an intermediate of its chain expires in 5 days
          'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx3"}': f"{60 * DAY}x40",
          'mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds{host="mx3"}':
              f"{5 * DAY}x40",
          # mx4 expires in 2 days: the 3-day alert's, not this one's
          'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx4"}': f"{2 * DAY}x40"},
         quiet_at="10m", fires_at="20m", firing=[{"host": "mx1"}, {"host": "mx3"}]),
    Case("MailfleetCertificateExpiresIn3Days",
         {'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx1"}': f"{2 * DAY}x40",
          'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx2"}': f"{10 * DAY}x40",
          'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx3"}': "0x40"},
         quiet_at="3m", fires_at="10m", firing=[{"host": "mx1"}]),
    Case("MailfleetCertificateExpired",
         {'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx1"}': "0x20",
          'mailfleet_tls_cert_not_after_timestamp_seconds{host="mx2"}': f"{10 * DAY}x20"},
         quiet_at="0m", fires_at="2m", firing=[{"host": "mx1"}]),
    Case("MailfleetCertificateChainInvalid",
         {'mailfleet_tls_cert_chain_verified{host="mx1"}': "0x20",
          'mailfleet_tls_cert_chain_verified{host="mx2"}': "1x20"},
         quiet_at="4m", fires_at="6m", firing=[{"host": "mx1"}]),
    Case("MailfleetCertificateHostnameMismatch",
         {'mailfleet_tls_cert_hostname_match{host="mx1"}': "0x5 1x14",
          'mailfleet_tls_cert_hostname_match{host="mx2"}': "1x20"},
         quiet_at="4m", fires_at="5m", resolved_at="8m", firing=[{"host": "mx1"}]),
    Case("MailfleetSyncLatencyHigh",
         {'mailfleet_sync_latency_seconds{host="mx1",kind="delivery"}': "120x20",
          'mailfleet_sync_latency_seconds{host="mx1",kind="client"}': "2x20",
          'mailfleet_sync_latency_seconds{host="mx2",kind="delivery"}': "10x20",
          'mailfleet_sync_latency_seconds{host="mx2",kind="client"}': "40x20"},
         quiet_at="9m", fires_at="11m",
         firing=[{"host": "mx1", "kind": "delivery"}, {"host": "mx2", "kind": "client"}]),
    Case("MailfleetDeliveryFailing",
         {'mailfleet_probe_success{check="sync",host="mx1"}': "0x20",
          'mailfleet_probe_success{check="sync",host="mx2"}': "1x20"},
         quiet_at="9m", fires_at="11m", firing=[{"check": "sync", "host": "mx1"}]),
    Case("MailfleetSyncStale",
         {'mailfleet_probe_last_success_timestamp_seconds{check="sync",host="mx1"}': "0x20",
          'mailfleet_probe_last_success_timestamp_seconds{check="sync",host="mx2"}': "0+60x20",
          "mailfleet_sweep_interval_seconds": "60x20"},
         quiet_at="5m", fires_at="10m", firing=[{"check": "sync", "host": "mx1"}]),
    Case("MailfleetMXWrong",
         {'mailfleet_dns_mx_ok{host="mx1"}': "0x40", 'mailfleet_dns_mx_ok{host="mx2"}': "1x40"},
         quiet_at="25m", fires_at="35m", firing=[{"host": "mx1"}]),
    Case("MailfleetRDNSWrong",
         {'mailfleet_dns_rdns_ok{host="mx2"}': "0x40", 'mailfleet_dns_rdns_ok{host="mx1"}': "1x40"},
         quiet_at="25m", fires_at="35m", firing=[{"host": "mx2"}]),
    Case("MailfleetQuotaNearlyFull",
         {'mailfleet_quota_used_ratio{host="mx1"}': "0.95x30",
          'mailfleet_quota_used_ratio{host="mx2"}': "0.5x30"},
         quiet_at="10m", fires_at="20m", firing=[{"host": "mx1"}]),
    Case("MailfleetExporterDown",
         {'up{job="mailfleet",instance="mon1:9865"}': "0x10",
          'up{job="mailfleet",instance="mon2:9865"}': "1x10",
          'up{job="node",instance="mon1:9100"}': "0x10"},
         quiet_at="1m", fires_at="3m", job_labels=False,
         firing=[{"job": "mailfleet", "instance": "mon1:9865"}]),
    Case("MailfleetSweepOverrunning",
         {'mailfleet_sweep_overrun{job="mailfleet",instance="mon1:9865"}': "1x20",
          'mailfleet_sweep_overrun{job="mailfleet",instance="mon2:9865"}': "0x20"},
         quiet_at="9m", fires_at="11m", job_labels=False,
         firing=[{"job": "mailfleet", "instance": "mon1:9865"}]),
    Case("MailfleetSweepStalled",
         {'mailfleet_sweep_last_timestamp_seconds{job="mailfleet",instance="mon1:9865"}': "0x20",
          'mailfleet_sweep_last_timestamp_seconds{job="mailfleet",instance="mon2:9865"}':
              "0+60x20",
          'mailfleet_sweep_interval_seconds{job="mailfleet",instance="mon1:9865"}': "60x20",
          'mailfleet_sweep_interval_seconds{job="mailfleet",instance="mon2:9865"}': "60x20"},
         quiet_at="6m", fires_at="10m", job_labels=False,
         firing=[{"job": "mailfleet", "instance": "mon1:9865"}]),
]


def load_rules() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in data["groups"] for r in g["rules"] if "alert" in r}


def _with_job(selector: str) -> str:
    name, _, rest = selector.partition("{")
    labels = rest.rstrip("}")
    extra = ",".join(f'{k}="{v}"' for k, v in JOB.items())
    return f"{name}{{{labels + ',' if labels else ''}{extra}}}"


def _fill(template: str, labels: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        return labels.get(match.group(1), "")

    if "$value" in template:
        raise ValueError("keep $value out of annotations (tests expand only $labels)")
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", one, template)


def _expected(rule: dict[str, Any], case: Case, firing: dict[str, str]) -> dict[str, Any]:
    labels = {**(JOB if case.job_labels else {}), **firing, **rule.get("labels", {})}
    annotations = {k: _fill(str(v), labels) for k, v in rule.get("annotations", {}).items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def build() -> dict[str, Any]:
    rules = load_rules()
    missing = sorted(set(rules) - {c.alert for c in CASES})
    if missing:
        raise ValueError(f"alerts without a promtool test: {', '.join(missing)}")
    tests = []
    for case in CASES:
        rule = rules[case.alert]
        series = [
            {"series": _with_job(s) if case.job_labels else s, "values": v}
            for s, v in case.series.items()
        ]
        alert_tests = [
            {"eval_time": case.quiet_at, "alertname": case.alert, "exp_alerts": []},
            {"eval_time": case.fires_at, "alertname": case.alert,
             "exp_alerts": [_expected(rule, case, f) for f in case.firing]},
        ]
        if case.resolved_at:
            alert_tests.append(
                {"eval_time": case.resolved_at, "alertname": case.alert, "exp_alerts": []}
            )
        tests.append({"name": case.alert, "interval": "1m", "input_series": series,
                      "alert_rule_test": alert_tests})
    return {"rule_files": ["../rules/mailfleet.yml"], "evaluation_interval": "1m",
            "tests": tests}


class _IndentedDumper(yaml.SafeDumper):
    """Indents list items under their key, as yamllint's default expects."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


HEADER = (
    "---\n"
    "# Generated by `python -m tests.prometheus.promtool_cases` from its case table;\n"
    "# run with `promtool test rules prometheus/tests/mailfleet_test.yml`. Do not edit.\n"
)


def render() -> str:
    return HEADER + yaml.dump(build(), Dumper=_IndentedDumper, sort_keys=False, width=100)


if __name__ == "__main__":
    TEST_FILE.parent.mkdir(parents=True, exist_ok=True)
    TEST_FILE.write_text(render())
    print(f"wrote {TEST_FILE.relative_to(ROOT)}")
