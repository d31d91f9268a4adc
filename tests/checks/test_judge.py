"""Judgement apart from acquisition: thresholds turn values into a status and words."""

from __future__ import annotations

from mailfleet.checks import ProbeOptions, Status
from mailfleet.checks.quota import judge_quota


def test_quota_thresholds() -> None:
    options = ProbeOptions(quota_warning_percent=80, quota_critical_percent=95)
    base = {"storage_limit_bytes": 1000, "quota_roots": ["User quota"]}
    assert judge_quota({**base, "storage_used_bytes": 100}, options).status == Status.OK
    warn = judge_quota({**base, "storage_used_bytes": 850}, options)
    assert (warn.status, warn.message) == (Status.WARNING, "quota storage 85% used")
    crit = judge_quota({**base, "storage_used_bytes": 960, "messages_used": 1,
                        "messages_limit": 1000}, options)
    assert (crit.status, crit.message) == (Status.CRITICAL, "quota storage 96% used")
    by_messages = judge_quota({"messages_used": 990, "messages_limit": 1000}, options)
    assert by_messages.message == "quota messages 99% used"


def test_quota_without_a_limit() -> None:
    verdict = judge_quota({"quota_roots": []}, ProbeOptions())
    assert (verdict.status, verdict.message) == (Status.OK,
                                                 "no quota limit set for the probe account")
