"""The server check's values as /metrics series (dashboard.metrics' `server` extractor)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from mailfleet.checks.result import ProbeResult, Status
from mailfleet.dashboard.metrics import gauge_families, result_samples, with_labels

VALUES = {
    "commands_run": 5,
    "queue_messages": {"maildrop": 0, "incoming": 0, "active": 1, "deferred": 4, "hold": 1},
    "queue_oldest_seconds": 416.5,
    "deferral_reasons": [{"reason": "connect to 10.77.4.250[10.77.4.250]:25: No route to host",
                          "count": 6}],
    "dovecot_sessions": 4,
    "dovecot_sessions_by_protocol": {"imap": 4},
    "dovecot_users": 3,
    "services": {"postfix": True, "dovecot": False},
    "filesystems": {"/var/vmail": {"size_bytes": 104857600, "free_bytes": 5242880,
                                   "inodes": 25600, "free_inodes": 25000}},
    "cert_file_not_after": 1797987137.0,
    "cert_reload_pending_by_service": {"imaps": True},
    "cert_reload_pending": True,
}


Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(values: dict[str, object], success: bool = True) -> dict[Key, float]:
    result = ProbeResult(check="server", target="mx1", success=success,
                         status=Status.OK if success else Status.UNKNOWN, values=values)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in result_samples(result)}


def test_every_documented_metric_is_there() -> None:
    got = samples(VALUES)
    assert got[("mailfleet_postfix_queue_messages", (("queue", "deferred"),))] == 4
    assert got[("mailfleet_postfix_queue_oldest_seconds", ())] == 416.5
    assert got[("mailfleet_dovecot_sessions", ())] == 4
    assert got[("mailfleet_dovecot_protocol_sessions", (("protocol", "imap"),))] == 4
    assert got[("mailfleet_fs_free_bytes", (("path", "/var/vmail"),))] == 5242880
    assert got[("mailfleet_fs_free_inodes", (("path", "/var/vmail"),))] == 25000
    assert got[("mailfleet_service_up", (("service", "dovecot"),))] == 0
    assert got[("mailfleet_service_up", (("service", "postfix"),))] == 1
    assert got[("mailfleet_tls_cert_reload_pending", (("service", "imaps"),))] == 1
    assert got[("mailfleet_server_ssh_up", ())] == 1


def test_reasons_and_users_never_become_labels() -> None:
    for name, labels in samples(VALUES):
        for _, value in labels:
            assert "No route" not in value and "@" not in value, name


def test_an_empty_queue_is_zero_old() -> None:
    got = samples({**VALUES, "queue_oldest_seconds": None})
    assert got[("mailfleet_postfix_queue_oldest_seconds", ())] == 0


def test_a_failed_login_says_the_check_is_blind() -> None:
    got = samples({"ssh_error": "host_key_unknown", "commands_run": 0}, success=False)
    assert got[("mailfleet_server_ssh_up", ())] == 0
    assert not any(name.startswith("mailfleet_postfix") for name, _ in got)


class _Fixed(Collector):
    def collect(self) -> Iterator[Metric]:
        result = ProbeResult(check="server", target="mx1", success=True, values=VALUES)
        yield from gauge_families(with_labels(result_samples(result), {"host": "mx1"}), ["host"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_the_exposition() -> None:
    registry = CollectorRegistry()
    registry.register(_Fixed())
    text = generate_latest(registry)
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert b'mailfleet_postfix_queue_messages{host="mx1",queue="deferred"} 4.0' in text
