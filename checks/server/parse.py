"""Pure parsers of what the server probe's commands print (tested with recorded outputs).

Each parser takes the text a command printed and returns plain data; none of them
raises on odd input except ``OutputError``, whose message says which command printed
what. Nothing here labels anything by user or address: those stay on the host.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Postfix's queues (postqueue -j "queue_name"); each is always reported, 0 when empty.
QUEUES: tuple[str, ...] = ("maildrop", "incoming", "active", "deferred", "hold")
# Queues whose oldest message means mail is late. A held message waits for an admin on
# purpose, so it does not make the queue "old".
WAITING_QUEUES: tuple[str, ...] = ("maildrop", "incoming", "active", "deferred")
TOP_REASONS = 5
REASON_MAX = 200


class OutputError(ValueError):
    """A command printed something this parser cannot read."""


# ---------------------------------------------------------------- postqueue -j

@dataclass(frozen=True)
class QueueSummary:
    counts: Mapping[str, int]
    oldest_seconds: float | None  # age of the oldest message in WAITING_QUEUES
    oldest_by_queue: Mapping[str, float]
    recipients_deferred: int
    top_reasons: tuple[tuple[str, int], ...]  # (normalized reason, recipients), most first
    skipped_lines: int = 0

    def to_values(self) -> dict[str, Any]:
        return {
            "queue_messages": dict(self.counts),
            "queue_oldest_seconds": self.oldest_seconds,
            "queue_oldest_seconds_by_queue": dict(self.oldest_by_queue),
            "queue_recipients_deferred": self.recipients_deferred,
            "deferral_reasons": [{"reason": r, "count": n} for r, n in self.top_reasons],
        }


_ADDRESS = re.compile(r"<[^<>\s]*@[^<>\s]*>|\b[\w.+=-]+@[\w-]+(?:\.[\w-]+)+\b")
_QUEUE_ID = re.compile(r"\b(?:[0-9A-F]{10,12}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{12,20})\b")
_RETRY_IN = re.compile(r"\b\d+(\s*(?:s|sec|secs|seconds?|min|minutes?)\b)", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# qmgr's wrapper around the reason of the last attempt: same cause, one reason.
_PREFIXES = ("delivery temporarily suspended: ",)


def normalize_reason(reason: str) -> str:
    """One reason text per cause: addresses, queue ids and retry counters taken out.

    For humans only; never a metric label (it is free text from remote servers).
    """
    text = _SPACE.sub(" ", reason).strip()
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    text = _ADDRESS.sub("<address>", text)
    text = _QUEUE_ID.sub("<id>", text)
    text = _RETRY_IN.sub(r"N\1", text)
    if len(text) > REASON_MAX:
        text = text[: REASON_MAX - 1] + "…"
    return text or "(no reason given)"


def parse_postqueue_json(output: str, now: float | None = None) -> QueueSummary:
    """``postqueue -j``: one JSON object per line, per message (Postfix >= 3.1)."""
    now = time.time() if now is None else now
    counts: Counter[str] = Counter({q: 0 for q in QUEUES})
    oldest: dict[str, float] = {}
    reasons: Counter[str] = Counter()
    deferred_rcpts = 0
    skipped = 0
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            if line.startswith("{"):  # a line cut short (output capped): count what we have
                skipped += 1
                continue
            raise OutputError(
                f"postqueue -j printed a line that is not JSON: {line[:120]!r}"
            ) from None
        if not isinstance(msg, dict):
            raise OutputError(f"postqueue -j printed {type(msg).__name__}, not an object")
        queue = str(msg.get("queue_name", "unknown"))
        counts[queue] += 1
        arrival = msg.get("arrival_time")
        if isinstance(arrival, int | float) and not isinstance(arrival, bool):
            age = max(0.0, now - float(arrival))
            oldest[queue] = max(oldest.get(queue, 0.0), age)
        rcpts = msg.get("recipients")
        for rcpt in rcpts if isinstance(rcpts, list) else []:
            if not isinstance(rcpt, dict):
                continue
            why = rcpt.get("delay_reason")
            if isinstance(why, str) and why:
                reasons[normalize_reason(why)] += 1
                if queue == "deferred":
                    deferred_rcpts += 1
    waiting = [oldest[q] for q in WAITING_QUEUES if q in oldest]
    return QueueSummary(
        counts=dict(counts),
        oldest_seconds=max(waiting) if waiting else None,
        oldest_by_queue=oldest,
        recipients_deferred=deferred_rcpts,
        top_reasons=tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]),
        skipped_lines=skipped,
    )


# ---------------------------------------------------------------- doveadm who

@dataclass(frozen=True)
class Sessions:
    total: int
    by_protocol: Mapping[str, int]
    users: int  # distinct users: a count, never a list

    def to_values(self) -> dict[str, Any]:
        return {
            "dovecot_sessions": self.total,
            "dovecot_sessions_by_protocol": dict(self.by_protocol),
            "dovecot_users": self.users,
        }


# The protocol's column: "proto" in Dovecot 2.3, "service" in 2.4.
_WHO_PROTOCOL_COLUMNS = ("proto", "service")


def parse_doveadm_who(output: str) -> Sessions:
    """``doveadm -f tab who -1``: a header, then one connection per line (2.3:
    username proto pid ip; 2.4: username service pid ip dest_ip)."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    if not lines:
        return Sessions(0, {}, 0)
    header = lines[0].split("\t")
    protocol = next((c for c in _WHO_PROTOCOL_COLUMNS if c in header), None)
    if "username" not in header or protocol is None:
        raise OutputError(f"doveadm who printed no tab header: {lines[0][:120]!r}")
    user_col, proto_col = header.index("username"), header.index(protocol)
    protocols: Counter[str] = Counter()
    users: set[str] = set()
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) != len(header):
            raise OutputError(f"doveadm who printed a row of {len(cols)} columns: {line[:120]!r}")
        protocols[cols[proto_col]] += 1
        users.add(cols[user_col])
    return Sessions(sum(protocols.values()), dict(sorted(protocols.items())), len(users))


# ---------------------------------------------------------------- stat -f

# The format the probe asks for: fields first, the path last (a path may hold spaces).
STAT_FORMAT = "%S %b %a %c %d %n"


@dataclass(frozen=True)
class FsSpace:
    path: str
    size_bytes: int
    free_bytes: int  # available to unprivileged users, as df's "Avail"
    inodes: int
    free_inodes: int

    @property
    def free_ratio(self) -> float | None:
        return self.free_bytes / self.size_bytes if self.size_bytes else None

    @property
    def free_inodes_ratio(self) -> float | None:
        return self.free_inodes / self.inodes if self.inodes else None

    def to_values(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "free_bytes": self.free_bytes,
            "free_ratio": self.free_ratio,
            "inodes": self.inodes,
            "free_inodes": self.free_inodes,
            "free_inodes_ratio": self.free_inodes_ratio,
        }


def parse_stat_f(output: str) -> dict[str, FsSpace]:
    """``stat -f -c STAT_FORMAT PATH...``; a path that failed has no line (see stderr)."""
    found: dict[str, FsSpace] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        parts = line.split(" ", 5)
        if len(parts) != 6:
            raise OutputError(f"stat -f printed an unexpected line: {line[:120]!r}")
        try:
            block, blocks, avail, files, ffree = (int(p) for p in parts[:5])
        except ValueError:
            raise OutputError(f"stat -f printed non-numbers: {line[:120]!r}") from None
        path = parts[5]
        found[path] = FsSpace(path, block * blocks, block * avail, files, ffree)
    return found


# ---------------------------------------------------------------- services

# Service -> pattern on the full command line of its master process (pgrep -f).
# Debian's paths, the same under systemd and sysvinit; pidof cannot be used because
# Postfix's master is not dumpable (/proc/PID/exe is unreadable even for root).
SERVICE_PATTERNS: Mapping[str, str] = {
    "postfix": "/usr/lib/postfix/sbin/master",
    "dovecot": "/usr/sbin/dovecot",
}


def service_regex(patterns: Mapping[str, str]) -> str:
    alternatives = "|".join(re.escape(p) for p in patterns.values())
    return f"^({alternatives})( |$)"


def parse_pgrep(output: str, patterns: Mapping[str, str] = SERVICE_PATTERNS) -> dict[str, bool]:
    """``pgrep -a -f REGEX``: "PID COMMAND LINE" per match; a service is up if its master is."""
    up = dict.fromkeys(patterns, False)
    for line in output.splitlines():
        _, _, cmdline = line.strip().partition(" ")
        program = cmdline.split(" ", 1)[0]
        for service, path in patterns.items():
            if program == path:
                up[service] = True
    return up


# ---------------------------------------------------------------- openssl x509

@dataclass(frozen=True)
class DiskCert:
    not_after: float
    sha256: str  # lower-case hex, no colons (as checks.tlsinfo.CertInfo.sha256)


_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_OPENSSL_DATE = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2})\s+(?P<day>\d{1,2})\s+(?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})"
    r"(?:\.\d+)?\s+(?P<year>\d{4})\s+GMT$"
)


def parse_openssl_date(text: str) -> float:
    """OpenSSL's ``Dec  3 00:52:17 2026 GMT`` as Unix seconds."""
    m = _OPENSSL_DATE.match(text.strip())
    if not m or m["mon"] not in _MONTHS:
        raise OutputError(f"openssl printed a date it should not: {text.strip()[:60]!r}")
    return float(
        calendar.timegm(
            (int(m["year"]), _MONTHS[m["mon"]], int(m["day"]), int(m["h"]), int(m["m"]),
             int(m["s"]), 0, 0, 0)
        )
    )


def parse_openssl_x509(output: str) -> DiskCert:
    """``openssl x509 -noout -enddate -fingerprint -sha256``."""
    not_after: float | None = None
    sha256 = ""
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.strip() == "notAfter":
            not_after = parse_openssl_date(value)
        elif key.strip().lower().endswith("fingerprint"):
            sha256 = value.strip().replace(":", "").lower()
    if not_after is None or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise OutputError(f"openssl x509 printed no notAfter/SHA-256 fingerprint: {output[:160]!r}")
    return DiskCert(not_after, sha256)
