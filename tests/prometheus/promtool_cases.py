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


def _leaf(host: str, issued_day: float, lifetime_days: float, start_day: float,
          renewed_day: float | None = None, minutes: int = 240) -> dict[str, str]:
    """Not-before and not-after series of a leaf issued on ``issued_day`` of a timeline
    whose test minute 0 is ``start_day`` (the rules see time() as that minute; only
    differences matter to them), one sample a minute; renewed, with the same
    lifetime, on ``renewed_day``. Whole lives at one evaluation a minute cost promtool
    half a minute: the tests cover the hours around each threshold, which the used
    share only crosses once, rising."""
    def at(day: float) -> int:
        return int((day - start_day) * DAY)

    begin, end = at(issued_day), at(issued_day + lifetime_days)
    if renewed_day is None:
        return {f'mailfleet_tls_cert_not_before_timestamp_seconds{{host="{host}"}}':
                    f"{begin}x{minutes}",
                f'mailfleet_tls_cert_not_after_timestamp_seconds{{host="{host}"}}':
                    f"{end}x{minutes}"}
    renewed, renewed_end = at(renewed_day), at(renewed_day + lifetime_days)
    minute = renewed // 60
    return {f'mailfleet_tls_cert_not_before_timestamp_seconds{{host="{host}"}}':
                f"{begin}x{minute - 1} {renewed}x{minutes - minute}",
            f'mailfleet_tls_cert_not_after_timestamp_seconds{{host="{host}"}}':
                f"{end}x{minute - 1} {renewed_end}x{minutes - minute}"}


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
    # Certificates by the share of their lifetime used: test minute 0 is day 3.9 (5.3),
    # day 4 (5.4) is minute 144. mx1: a 6-day certificate never renewed; mx2: the same,
    # renewed on day 4 (never alerts); mx3: 45 days, two thirds (90%) used on day 4
    # (5.4); mx4: 90 days, just short of it; mx5: a year, past two thirds (90%) but with
    # over 30 (14) days left.
    Case("MailfleetCertificateRenewalDue",
         {**_leaf("mx1", 0, 6, 3.9), **_leaf("mx2", 0, 6, 3.9, renewed_day=4),
          **_leaf("mx3", 4 - 30, 45, 3.9), **_leaf("mx4", 4 - 59, 90, 3.9),
          **_leaf("mx5", 4 - 300, 398, 3.9)},
         quiet_at="200m", fires_at="215m", firing=[{"host": "mx1"}, {"host": "mx3"}]),
    # mx2 holds the certificate renewed on day 4; mx6 a fresh 90-day leaf whose
    # intermediate, from day 5.4, ends on day 6.4.
    Case("MailfleetCertificateLifetimeNearlyUsed",
         {**_leaf("mx1", 0, 6, 5.3), **_leaf("mx2", 4, 6, 5.3),
          **_leaf("mx3", 5.4 - 40.5, 45, 5.3), **_leaf("mx4", 5.4 - 80, 90, 5.3),
          **_leaf("mx5", 5.4 - 360, 398, 5.3), **_leaf("mx6", 5, 90, 5.3),
          'mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds{host="mx6"}':
              f"_x143 {int(1.1 * DAY)}x96"},
         quiet_at="147m", fires_at="160m",
         firing=[{"host": "mx1"}, {"host": "mx3"}, {"host": "mx6"}]),
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
    # mx2's list refused the query: no gauge at all, never an alert.
    Case("MailfleetListedOnDNSBL",
         {'mailfleet_dns_dnsbl_ok{host="mx1"}': "1x3 0x20",
          'mailfleet_dns_dnsbl_ok{host="mx3"}': "1x25",
          'mailfleet_dns_mx_ok{host="mx2"}': "1x25"},
         quiet_at="12m", fires_at="15m", firing=[{"host": "mx1"}]),
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
