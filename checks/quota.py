"""``quota``: GETQUOTAROOT INBOX of the probe account (RFC 2087 / 9208)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, run
from mailfleet.checks.credentials import secret_for
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.imap_proto import parse_quota, parse_quotaroot
from mailfleet.checks.imap_session import ImapLoginValues, login, open_session
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.values import declared

CHECK = "quota"

@declared
@dataclass(frozen=True)
class QuotaValues(ImapLoginValues):
    """What ``quota`` measured: the login's values, then the quota root's resources."""

    storage_used_bytes: int | None = None
    storage_limit_bytes: int | None = None
    messages_used: int | None = None
    messages_limit: int | None = None
    quota_roots: Sequence[str] | None = None
    used_percent: float | None = None



def acquire(target: Target, options: ProbeOptions, deadline: Deadline, acq: Acquisition) -> None:
    secret_for(target, options.mechanism.upper())
    client = open_session(target, options, deadline, acq)
    try:
        login(client, target, options, acq)
        read_quota(client, acq)
        client.logout()
    finally:
        client.conn.close()


def read_quota(client: ImapClient, acq: Acquisition) -> None:
    """GETQUOTAROOT INBOX of a logged-in session, into ``acq.values`` (QuotaValues)."""
    if "QUOTA" not in client.capabilities:
        client.capability()  # servers add QUOTA to the post-login capabilities
    if "QUOTA" not in client.capabilities:
        raise ProbeFailure("server does not support QUOTA (no QUOTA capability)",
                           Status.UNKNOWN, Reason.UNSUPPORTED)
    with acq.measure("quota"):
        untagged, done = client.command(b"GETQUOTAROOT INBOX", "GETQUOTAROOT")
    if not done.ok:
        raise ProbeFailure(f"GETQUOTAROOT failed: {done.describe()}", Status.UNKNOWN,
                           Reason.REJECTED)
    roots: list[str] = []
    for resp in untagged:
        qr = parse_quotaroot(resp)
        if qr is not None:
            roots = qr[1]
        q = parse_quota(resp)
        if q is None:
            continue
        for res in q[1]:
            if res.name == "STORAGE":  # KiB on the wire, bytes in values
                acq.values["storage_used_bytes"] = res.usage * 1024
                acq.values["storage_limit_bytes"] = res.limit * 1024
            elif res.name in ("MESSAGE", "MESSAGES"):
                acq.values["messages_used"] = res.usage
                acq.values["messages_limit"] = res.limit
    acq.values["quota_roots"] = roots
    percent = used_percent(acq.values)
    if percent is not None:
        acq.values["used_percent"] = round(percent[0], 2)


def judge_for(options: ProbeOptions) -> Any:
    def judge(values: dict[str, Any]) -> Verdict:
        return judge_quota(values, options)

    return judge


def used_percent(values: dict[str, Any]) -> tuple[float, str] | None:
    """The fullest resource: (percent, "storage" | "messages"), or None without limits."""
    ratios: list[tuple[float, str]] = []
    for used_key, limit_key, what in (
        ("storage_used_bytes", "storage_limit_bytes", "storage"),
        ("messages_used", "messages_limit", "messages"),
    ):
        limit = values.get(limit_key)
        if limit:
            ratios.append((100.0 * values.get(used_key, 0) / limit, what))
    return max(ratios) if ratios else None


def judge_quota(values: dict[str, Any], options: ProbeOptions) -> Verdict:
    fullest = used_percent(values)
    if fullest is None:
        if values.get("quota_roots") is not None:
            return Verdict(Status.OK, "no quota limit set for the probe account")
        return Verdict(Status.UNKNOWN, "no quota limit set for the probe account",
                       Reason.UNSUPPORTED)
    percent, what = fullest
    text = f"quota {what} {percent:.0f}% used"
    if percent >= options.quota_critical_percent:
        return Verdict(Status.CRITICAL, text, Reason.THRESHOLD)
    if percent >= options.quota_warning_percent:
        return Verdict(Status.WARNING, text, Reason.THRESHOLD)
    return Verdict(Status.OK)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, options, deadline, acq),
               judge_for(options))
