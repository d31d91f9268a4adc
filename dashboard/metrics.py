"""Probe results as Prometheus metric families (one place for every metric name).

The same extraction serves ``/metrics`` (latest results of every host, with a
``host`` label = inventory name) and ``/probe`` (one fresh result, no host or
target label: Prometheus adds ``instance``/``target``). Names follow
shared/DESIGN.md: ``mailfleet_`` prefix, base units (seconds, bytes, ratios,
Unix timestamps), and never a per-user or volatile label (no serial, no
fingerprint, no address, no error text).

Each check's values are read by an extractor registered in ``EXTRACTORS``; a
new check (e.g. ``server``) adds its own with ``register_extractor``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class ResultLike(Protocol):
    """What both ``checks.result.ProbeResult`` and ``dashboard.store.StoredResult`` offer."""

    @property
    def check(self) -> str: ...
    @property
    def success(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def phases(self) -> Mapping[str, float]: ...
    @property
    def values(self) -> Mapping[str, Any]: ...
    @property
    def started_at(self) -> float: ...


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


# name -> help text. Every gauge any extractor may emit is declared here, so
# /metrics always has the same HELP/TYPE lines and promtool sees one family per name.
GAUGES: dict[str, str] = {
    "mailfleet_probe_success": "1 if the check's latest probe succeeded (ok or warning), else 0.",
    "mailfleet_probe_status": "Nagios-style status of the latest probe: 0 ok, 1 warning, "
    "2 critical, 3 unknown.",
    "mailfleet_probe_duration_seconds": "Duration of each phase of the latest probe.",
    "mailfleet_probe_timestamp_seconds": "When the latest probe of the check started.",
    "mailfleet_probe_last_success_timestamp_seconds": "When the check last succeeded.",
    "mailfleet_tls_cert_not_after_timestamp_seconds": "Not-after of the served leaf certificate.",
    "mailfleet_tls_cert_not_before_timestamp_seconds": "Not-before of the served leaf "
    "certificate.",
    "mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds": "Earliest not-after in "
    "the verified chain (absent when the chain does not verify).",
    "mailfleet_tls_served_earliest_not_after_timestamp_seconds": "Earliest not-after of any "
    "certificate the server sent, verified or not.",
    "mailfleet_tls_cert_chain_verified": "1 if the served chain verifies against the CA bundle.",
    "mailfleet_tls_cert_hostname_match": "1 if the leaf certificate matches mail_hostname.",
    "mailfleet_tls_version_info": "TLS version negotiated by the latest probe (value 1).",
    "mailfleet_imap_login_success": "1 if the probe account logged in with the mechanism.",
    "mailfleet_smtp_starttls_offered": "1 if the SMTP server offers STARTTLS.",
    "mailfleet_smtp_auth_before_tls": "1 if the SMTP server offers AUTH before TLS (a leak).",
    "mailfleet_quota_used_bytes": "Storage used by the probe account.",
    "mailfleet_quota_limit_bytes": "Storage quota of the probe account.",
    "mailfleet_quota_used_messages": "Messages stored by the probe account.",
    "mailfleet_quota_limit_messages": "Message quota of the probe account.",
    "mailfleet_quota_used_ratio": "Highest used/limit ratio of the probe account's quotas.",
    "mailfleet_sync_latency_seconds": "Sync latency by kind: delivery (submitted to visible "
    "over IMAP), push (submitted to announced by IDLE), client (change by one client seen "
    "by another), append.",
    "mailfleet_sync_mesh_latency_seconds": "Fleet mesh: submitted on host `source` to "
    "visible over IMAP on this host, over the real MX path (one pair per host per sweep, "
    "rotating).",
    "mailfleet_dns_mx_ok": "1 if every mail domain's MX points at this server.",
    "mailfleet_dns_rdns_ok": "1 if the server address has forward-confirmed rDNS "
    "matching mail_hostname.",
    "mailfleet_dns_spf_ok": "1 if SPF records are present and parse.",
    "mailfleet_dns_dmarc_ok": "1 if DMARC records are present and parse.",
    "mailfleet_dns_tlsa_ok": "1 if TLSA records (when present) match the served certificate.",
}

Extractor = Callable[[Mapping[str, Any]], Iterable[Sample]]
EXTRACTORS: dict[str, Extractor] = {}

# Modules that register more extractors (``register_extractor``) and gauges
# (``declare``) when imported; the exporter imports them at start.
EXTENSION_MODULES: tuple[str, ...] = ()


def load_extensions() -> None:
    import importlib

    for name in EXTENSION_MODULES:
        importlib.import_module(name)


def register_extractor(check: str) -> Callable[[Extractor], Extractor]:
    def decorate(fn: Extractor) -> Extractor:
        EXTRACTORS[check] = fn
        return fn

    return decorate


def declare(name: str, help_text: str) -> None:
    """Declare a gauge an extractor of another module emits."""
    GAUGES.setdefault(name, help_text)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _flag(values: Mapping[str, Any], key: str, name: str) -> Iterator[Sample]:
    value = values.get(key)
    if isinstance(value, bool):
        yield Sample(name, {}, float(value))


def _stamp(values: Mapping[str, Any], key: str, name: str) -> Iterator[Sample]:
    value = _number(values.get(key))
    if value is not None and not isinstance(values.get(key), bool):
        yield Sample(name, {}, value)


@register_extractor("tls")
def _tls(values: Mapping[str, Any]) -> Iterator[Sample]:
    yield from _stamp(values, "cert_not_after", "mailfleet_tls_cert_not_after_timestamp_seconds")
    yield from _stamp(values, "cert_not_before", "mailfleet_tls_cert_not_before_timestamp_seconds")
    yield from _stamp(
        values,
        "chain_earliest_not_after",
        "mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds",
    )
    yield from _stamp(
        values,
        "served_earliest_not_after",
        "mailfleet_tls_served_earliest_not_after_timestamp_seconds",
    )
    yield from _flag(values, "chain_verified", "mailfleet_tls_cert_chain_verified")
    yield from _flag(values, "hostname_match", "mailfleet_tls_cert_hostname_match")
    version = values.get("tls_version")
    if isinstance(version, str) and version:
        yield Sample("mailfleet_tls_version_info", {"version": version}, 1.0)


@register_extractor("imap_login")
def _imap_login(values: Mapping[str, Any]) -> Iterator[Sample]:
    mechanism = values.get("mechanism")
    if isinstance(mechanism, str) and mechanism:
        ok = bool(values.get("logged_in"))
        yield Sample("mailfleet_imap_login_success", {"mechanism": mechanism.upper()}, float(ok))


@register_extractor("smtp")
def _smtp(values: Mapping[str, Any]) -> Iterator[Sample]:
    yield from _flag(values, "starttls_offered", "mailfleet_smtp_starttls_offered")
    if "auth_before_tls" in values:
        yield Sample("mailfleet_smtp_auth_before_tls", {}, float(bool(values["auth_before_tls"])))


@register_extractor("quota")
def _quota(values: Mapping[str, Any]) -> Iterator[Sample]:
    pairs = (
        ("storage_used_bytes", "mailfleet_quota_used_bytes"),
        ("storage_limit_bytes", "mailfleet_quota_limit_bytes"),
        ("messages_used", "mailfleet_quota_used_messages"),
        ("messages_limit", "mailfleet_quota_limit_messages"),
    )
    for key, name in pairs:
        yield from _stamp(values, key, name)
    ratios = []
    for used, limit in (("storage_used_bytes", "storage_limit_bytes"),
                        ("messages_used", "messages_limit")):
        u, lim = _number(values.get(used)), _number(values.get(limit))
        if u is not None and lim:
            ratios.append(u / lim)
    if ratios:
        yield Sample("mailfleet_quota_used_ratio", {}, max(ratios))


@register_extractor("sync")
def _sync(values: Mapping[str, Any]) -> Iterator[Sample]:
    for key, kind in (
        ("delivery_latency_seconds", "delivery"),
        ("push_latency_seconds", "push"),
        ("client_latency_seconds", "client"),
        ("append_latency_seconds", "append"),
    ):
        value = _number(values.get(key))
        if value is not None:
            yield Sample("mailfleet_sync_latency_seconds", {"kind": kind}, value)


@register_extractor("sync_mesh")
def _sync_mesh(values: Mapping[str, Any]) -> Iterator[Sample]:
    value = _number(values.get("delivery_latency_seconds"))
    if value is not None:
        yield Sample("mailfleet_sync_mesh_latency_seconds", {}, value)


@register_extractor("dns")
def _dns(values: Mapping[str, Any]) -> Iterator[Sample]:
    for what in ("mx", "rdns", "spf", "dmarc", "tlsa"):
        yield from _flag(values, f"{what}_ok", f"mailfleet_dns_{what}_ok")



# The server check (checks/server, over SSH); value keys documented in checks/SERVER.md.
for _name, _help in (
    ("mailfleet_server_ssh_up", "1 if the server check logged in over SSH and ran its commands."),
    ("mailfleet_postfix_queue_messages", "Messages in each Postfix queue."),
    ("mailfleet_postfix_queue_oldest_seconds", "Age of the oldest message waiting in Postfix's "
     "queues (maildrop, incoming, active, deferred; not hold)."),
    ("mailfleet_dovecot_sessions", "Dovecot sessions (doveadm who), all protocols."),
    ("mailfleet_dovecot_protocol_sessions", "Dovecot sessions by protocol."),
    ("mailfleet_fs_size_bytes", "Size of the file system holding the path."),
    ("mailfleet_fs_free_bytes", "Bytes free for unprivileged users on the path's file system."),
    ("mailfleet_fs_inodes", "Inodes of the file system holding the path."),
    ("mailfleet_fs_free_inodes", "Free inodes of the file system holding the path."),
    ("mailfleet_service_up", "1 if the service's master process runs on the host."),
    ("mailfleet_tls_cert_file_not_after_timestamp_seconds", "Not-after of the certificate "
     "file on the host's disk."),
    ("mailfleet_tls_cert_reload_pending", "1 if the certificate file on disk is not the one "
     "the service serves (renewed but not reloaded)."),
):
    declare(_name, _help)


@register_extractor("server")
def _server(values: Mapping[str, Any]) -> Iterator[Sample]:
    ran = _number(values.get("commands_run")) or 0
    yield Sample("mailfleet_server_ssh_up", {}, float(ran > 0 and "ssh_error" not in values))
    for queue, count in sorted((values.get("queue_messages") or {}).items()):
        if _number(count) is not None:
            yield Sample("mailfleet_postfix_queue_messages", {"queue": str(queue)}, float(count))
    if "queue_messages" in values:
        # An empty queue has no oldest message: its age is 0, not absent.
        oldest = _number(values.get("queue_oldest_seconds"))
        yield Sample("mailfleet_postfix_queue_oldest_seconds", {}, oldest or 0.0)
    yield from _stamp(values, "dovecot_sessions", "mailfleet_dovecot_sessions")
    for proto, count in sorted((values.get("dovecot_sessions_by_protocol") or {}).items()):
        yield Sample("mailfleet_dovecot_protocol_sessions", {"protocol": str(proto)}, float(count))
    for path, fs in sorted((values.get("filesystems") or {}).items()):
        for key, name in (("size_bytes", "mailfleet_fs_size_bytes"),
                          ("free_bytes", "mailfleet_fs_free_bytes"),
                          ("inodes", "mailfleet_fs_inodes"),
                          ("free_inodes", "mailfleet_fs_free_inodes")):
            value = _number(fs.get(key))
            if value is not None:
                yield Sample(name, {"path": str(path)}, value)
    for service, up in sorted((values.get("services") or {}).items()):
        yield Sample("mailfleet_service_up", {"service": str(service)}, float(bool(up)))
    yield from _stamp(values, "cert_file_not_after",
                      "mailfleet_tls_cert_file_not_after_timestamp_seconds")
    for service, pending in sorted((values.get("cert_reload_pending_by_service") or {}).items()):
        yield Sample("mailfleet_tls_cert_reload_pending", {"service": str(service)},
                     float(bool(pending)))

def check_labels(check: str) -> dict[str, str]:
    """Labels of a stored check name: a mesh pair ``sync_mesh:<source>`` is
    ``{check="sync_mesh", source="<source>"}`` (its destination is the host)."""
    name, sep, source = check.partition(":")
    return {"check": name, "source": source} if sep else {"check": check}


def result_samples(result: ResultLike) -> Iterator[Sample]:
    """Every sample of one result, without host label."""
    check = check_labels(result.check)
    yield Sample("mailfleet_probe_success", check, float(bool(result.success)))
    yield Sample("mailfleet_probe_status", check, float(int(result.status)))
    for phase, seconds in sorted(result.phases.items()):
        value = _number(seconds)
        if value is not None:
            yield Sample("mailfleet_probe_duration_seconds", {**check, "phase": phase}, value)
    extractor = EXTRACTORS.get(check["check"])
    if extractor is not None:
        extra = {k: v for k, v in check.items() if k != "check"}
        try:
            for sample in extractor(result.values):
                yield Sample(sample.name, {**extra, **sample.labels}, sample.value)
        except Exception:  # a malformed value must not break the whole scrape
            return


def gauge_families(
    samples: Iterable[Sample], label_order: Sequence[str] = ()
) -> list[GaugeMetricFamily]:
    """Group samples into one GaugeMetricFamily per name, in GAUGES order.

    Label names are sorted, with ``label_order`` first, so that every sample of a
    family has the same label names in the same order.
    """
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.name, []).append(sample)
    families = []
    for name in [*GAUGES, *sorted(set(grouped) - set(GAUGES))]:
        found = grouped.get(name)
        if not found:
            continue
        keys = sorted({k for s in found for k in s.labels})
        keys = [k for k in label_order if k in keys] + [k for k in keys if k not in label_order]
        family = GaugeMetricFamily(name, GAUGES.get(name, name), labels=keys)
        for s in found:
            family.add_metric([str(s.labels.get(k, "")) for k in keys], s.value)
        families.append(family)
    return families


def counter_family(
    name: str, help_text: str, labels: Sequence[str], counts: Mapping[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=list(labels))
    for key, value in sorted(counts.items()):
        family.add_metric(list(key), value)
    return family


def with_labels(samples: Iterable[Sample], labels: Mapping[str, str]) -> Iterator[Sample]:
    for s in samples:
        yield Sample(s.name, {**labels, **s.labels}, s.value)


__all__ = [
    "EXTENSION_MODULES",
    "EXTRACTORS",
    "GAUGES",
    "Metric",
    "Sample",
    "counter_family",
    "declare",
    "gauge_families",
    "load_extensions",
    "register_extractor",
    "result_samples",
    "with_labels",
]
