"""The whole fleet's latest state, read from Prometheus' HTTP API (``serve --prometheus``).

Sharded watchers each keep only their own hosts' results; Prometheus scrapes
every watcher's ``/metrics`` and so holds the whole fleet. One instant query
(``/api/v1/query``) of the families the fleet rows show gives, per host and
check, a ``StoredResult`` rebuilt from its samples: success, status, when it
ran and last succeeded, and the values its cells read (certificate dates, TLS
version, mechanism, sync latencies, DNS flags, quota). Error texts are not
metrics (they are free text): a failing cell says where its details are, the
watcher that probed it.

Reads are cached for ``ttl`` seconds (the pages poll); a failed read keeps the
previous state and says why (``last_error``). Only the standard library's HTTP
client is used: the API is one GET returning JSON, and a client library would add
a dependency for that.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mailfleet.checks.result import Status
from mailfleet.dashboard.store import StoredResult
from mailfleet.dashboard.store.values import (
    DnsValues,
    ImapLoginValues,
    QuotaValues,
    SyncValues,
    TlsValues,
)

# The dns check's gauges: mailfleet_dns_<what>_ok, the value <what>_ok.
_DNS_FLAGS = ("mx", "rdns", "spf", "dmarc", "tlsa", "dnsbl")

# The families of one check (no ``check`` label), and the check they belong to.
_CHECK_OF: Mapping[str, str] = {
    **{n: "tls" for n in ("mailfleet_tls_cert_not_after_timestamp_seconds",
                           "mailfleet_tls_cert_not_before_timestamp_seconds",
                           "mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds",
                           "mailfleet_tls_served_earliest_not_after_timestamp_seconds",
                           "mailfleet_tls_cert_chain_verified", "mailfleet_tls_cert_hostname_match",
                           "mailfleet_tls_version_info")},
    "mailfleet_imap_login_success": "imap_login",
    "mailfleet_sync_latency_seconds": "sync",
    **{f"mailfleet_dns_{w}_ok": "dns" for w in _DNS_FLAGS},
    **{n: "quota" for n in ("mailfleet_quota_used_bytes", "mailfleet_quota_limit_bytes",
                             "mailfleet_quota_used_messages", "mailfleet_quota_limit_messages",
                             "mailfleet_quota_used_ratio")},
}

# The families a fleet row needs; /metrics series carry ``host`` (``/probe`` ones do not).
FAMILIES = "|".join(("mailfleet_probe_success", "mailfleet_probe_status",
                     "mailfleet_probe_timestamp_seconds",
                     "mailfleet_probe_last_success_timestamp_seconds", *_CHECK_OF))
QUERY = f'{{__name__=~"{FAMILIES}",host!=""}}'


class PrometheusError(RuntimeError):
    """Prometheus cannot be reached or did not answer the query."""


Fetch = Callable[[str, float], Any]


def fetch_json(url: str, timeout: float) -> Any:
    """GET ``url`` and decode its JSON (the Prometheus API's envelope, checked)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        raise PrometheusError(f"HTTP {exc.code} from {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrometheusError(f"cannot reach {url}: {reason}") from None
    except ValueError as exc:
        raise PrometheusError(f"{url} did not answer JSON ({exc}): is it Prometheus?") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else body
        raise PrometheusError(f"{url} answered an error: {error}")
    return body.get("data")


def check_url(base: str, timeout: float = 5.0, fetch: Fetch = fetch_json) -> str:
    """``base`` normalised, after asking Prometheus its build information (start-up check)."""
    parsed = urllib.parse.urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise PrometheusError(f"--prometheus wants Prometheus' base URL such as "
                              f"http://127.0.0.1:9090, not {base!r}")
    base = base.rstrip("/")
    data = fetch(f"{base}/api/v1/status/buildinfo", timeout)
    if not isinstance(data, dict) or "version" not in data:
        raise PrometheusError(f"{base} answered /api/v1/status/buildinfo without a version: "
                              "is it Prometheus?")
    return base


@dataclass
class _Series:
    """The samples of one (host, check) from one watcher, gathered before decoding."""

    instance: str
    numbers: dict[str, float]
    labelled: dict[str, list[tuple[Mapping[str, str], float]]]


def _flag(numbers: Mapping[str, float], name: str) -> bool | None:
    value = numbers.get(name)
    return None if value is None else value >= 0.5


def _values(check: str, s: _Series) -> dict[str, Any]:
    """The declared values a fleet cell reads, from the samples Prometheus holds."""
    n = s.numbers
    out: dict[str, Any] = {}
    if check == "tls":
        for name, key in (
            ("mailfleet_tls_cert_not_after_timestamp_seconds", TlsValues.key.cert_not_after),
            ("mailfleet_tls_cert_not_before_timestamp_seconds", TlsValues.key.cert_not_before),
            ("mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds",
             TlsValues.key.chain_earliest_not_after),
            ("mailfleet_tls_served_earliest_not_after_timestamp_seconds",
             TlsValues.key.served_earliest_not_after),
        ):
            if name in n:
                out[key] = n[name]
        for name, key in (("mailfleet_tls_cert_chain_verified", TlsValues.key.chain_verified),
                          ("mailfleet_tls_cert_hostname_match", TlsValues.key.hostname_match)):
            if name in n:
                out[key] = _flag(n, name)
        for labels, _ in s.labelled.get("mailfleet_tls_version_info", []):
            out[TlsValues.key.tls_version] = labels.get("version", "")
    elif check == "imap_login":
        for labels, _ in s.labelled.get("mailfleet_imap_login_success", []):
            out[ImapLoginValues.key.mechanism] = labels.get("mechanism", "")
    elif check == "sync":
        for labels, value in s.labelled.get("mailfleet_sync_latency_seconds", []):
            key = f"{labels.get('kind', '')}_latency_seconds"
            if key in SyncValues.names():
                out[key] = value
    elif check == "dns":
        for what in _DNS_FLAGS:
            if f"mailfleet_dns_{what}_ok" in n:
                out[f"{what}_ok"] = _flag(n, f"mailfleet_dns_{what}_ok")
        out = {k: v for k, v in out.items() if k in DnsValues.names()}
    elif check == "quota":
        for name, key in (("mailfleet_quota_used_bytes", QuotaValues.key.storage_used_bytes),
                          ("mailfleet_quota_limit_bytes", QuotaValues.key.storage_limit_bytes),
                          ("mailfleet_quota_used_messages", QuotaValues.key.messages_used),
                          ("mailfleet_quota_limit_messages", QuotaValues.key.messages_limit)):
            if name in n:
                out[key] = int(n[name])
        if "mailfleet_quota_used_ratio" in n:
            out[QuotaValues.key.used_percent] = n["mailfleet_quota_used_ratio"] * 100
    return out


def _status(value: float | None, success: bool) -> Status:
    if value is None:
        return Status.OK if success else Status.CRITICAL
    try:
        return Status(int(value))
    except ValueError:
        return Status.UNKNOWN


def decode(vector: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, StoredResult]]:
    """host -> check -> latest result, from an instant query's vector.

    A host seen from two watchers (while shards change) counts once: the newer probe wins.
    """
    gathered: dict[tuple[str, str, str], _Series] = {}
    for item in vector:
        metric: Mapping[str, str] = item.get("metric", {})
        host, check = metric.get("host", ""), metric.get("check", "")
        name = metric.get("__name__", "")
        if not host:
            continue
        if not check:  # families of one check carry no check label
            check = _CHECK_OF.get(name, "")
            if not check:
                continue
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        instance = metric.get("instance", "")
        s = gathered.setdefault((host, check, instance), _Series(instance, {}, {}))
        s.numbers[name] = value
        extra = {k: v for k, v in metric.items()
                 if k not in ("__name__", "host", "check", "instance", "job")}
        s.labelled.setdefault(name, []).append((extra, value))
    out: dict[str, dict[str, StoredResult]] = {}
    for (host, check, _instance), s in gathered.items():
        success_value = s.numbers.get("mailfleet_probe_success")
        started = s.numbers.get("mailfleet_probe_timestamp_seconds")
        if success_value is None or started is None:
            continue
        success = success_value >= 0.5
        result = StoredResult(
            host=host, check=check, started_at=started, success=success,
            status=_status(s.numbers.get("mailfleet_probe_status"), success),
            duration=0.0,
            error="" if success else f"details on the watcher {s.instance or 'that probed it'}",
            values=_values(check, s),
            last_success_at=s.numbers.get("mailfleet_probe_last_success_timestamp_seconds"),
        )
        current = out.setdefault(host, {}).get(check)
        if current is None or current.started_at < result.started_at:
            out[host][check] = result
    return out


class PrometheusFleet:
    """The fleet's latest results from Prometheus, re-read at most every ``ttl`` seconds."""

    def __init__(self, base_url: str, ttl: float = 5.0, timeout: float = 5.0,
                 fetch: Fetch = fetch_json) -> None:
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl
        self.timeout = timeout
        self._fetch = fetch
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, StoredResult]] = {}
        self._read_at = -float("inf")
        self.version = 0
        self.last_error = ""

    def latest(self) -> dict[str, dict[str, StoredResult]]:
        with self._lock:
            if time.monotonic() - self._read_at < self.ttl:
                return self._state
            self._read_at = time.monotonic()
            url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": QUERY})
            try:
                data = self._fetch(url, self.timeout)
                state = decode(data.get("result", []) if isinstance(data, dict) else [])
            except PrometheusError as exc:
                self.last_error = str(exc)
                return self._state  # the previous state, with the reason on the page
            self.last_error = ""
            if state != self._state:
                self._state = state
                self.version += 1
            return self._state
