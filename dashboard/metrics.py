"""Probe results as Prometheus metric families (one place for every metric name).

The same extraction serves ``/metrics`` (latest results of every host, with a
``host`` label = inventory name) and ``/probe`` (one fresh result, no host or
target label: Prometheus adds ``instance``/``target``). Names follow
shared/DESIGN.md: ``mailfleet_`` prefix, base units (seconds, bytes, ratios,
Unix timestamps), and never a per-user or volatile label (no serial, no
fingerprint, no address, no error text).

Each check's values are read by its extractor in ``EXTRACTORS``, through the
check's declaration (``TlsValues.of(values).cert_not_after``); a new check adds
its gauges to ``GAUGES`` and its extractor to ``EXTRACTORS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mailfleet.checks.dns import report as dns_report
from mailfleet.dashboard.store.values import (
    DnsValues,
    ImapLoginValues,
    QuotaValues,
    ServerValues,
    SmtpValues,
    SyncValues,
    TlsValues,
)


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
    "mailfleet_sync_mesh_pairs": "Fleet mesh: pairs into this host (mail submitted on "
    "another host, read here over IMAP) whose latest probe succeeded (result=ok) or failed "
    "(result=failed). Per host, not per pair: n hosts make 2n series, not n(n-1).",
    "mailfleet_sync_mesh_latency_max_seconds": "Fleet mesh: the slowest latest delivery "
    "into this host over the real MX path, among the pairs that succeeded.",
    "mailfleet_dns_mx_ok": "1 if every mail domain's MX points at this server.",
    "mailfleet_dns_rdns_ok": "1 if the server address has forward-confirmed rDNS "
    "matching mail_hostname.",
    "mailfleet_dns_spf_ok": "1 if every mail domain has one valid SPF record that authorises "
    "the host; 0 if one is missing, invalid or does not authorise it.",
    "mailfleet_dns_dmarc_ok": "1 if every mail domain has one valid DMARC record; 0 if one is "
    "missing or invalid.",
    "mailfleet_dns_tlsa_ok": "1 if TLSA records (when present) match the served certificate.",
    "mailfleet_dns_dnsbl_ok": "1 if the server's addresses are on none of the block lists "
    "(dns_blocklists) that answered; 0 if on one. Absent when no list answered (a "
    "127.255.255.x answer is a refused query, not a listing).",
    # The server check (checks/server, over SSH); its values in checks/SERVER.md.
    "mailfleet_server_ssh_up": "1 if the server check logged in over SSH and ran its commands.",
    "mailfleet_postfix_queue_messages": "Messages in each Postfix queue.",
    "mailfleet_postfix_queue_oldest_seconds": "Age of the oldest message waiting in Postfix's "
    "queues (maildrop, incoming, active, deferred; not hold).",
    "mailfleet_dovecot_sessions": "Dovecot sessions (doveadm who), all protocols.",
    "mailfleet_dovecot_protocol_sessions": "Dovecot sessions by protocol.",
    "mailfleet_fs_size_bytes": "Size of the file system holding the path.",
    "mailfleet_fs_free_bytes": "Bytes free for unprivileged users on the path's file system.",
    "mailfleet_fs_inodes": "Inodes of the file system holding the path.",
    "mailfleet_fs_free_inodes": "Free inodes of the file system holding the path.",
    "mailfleet_service_up": "1 if the service's master process runs on the host.",
    "mailfleet_tls_cert_file_not_after_timestamp_seconds": "Not-after of the certificate "
    "file on the host's disk.",
    "mailfleet_tls_cert_reload_pending": "1 if the certificate file on disk is not the one "
    "the service serves (renewed but not reloaded).",
}

Extractor = Callable[[Mapping[str, Any]], Iterable[Sample]]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _flag(value: Any, name: str) -> Iterator[Sample]:
    if isinstance(value, bool):
        yield Sample(name, {}, float(value))


def _stamp(value: Any, name: str) -> Iterator[Sample]:
    number = _number(value)
    if number is not None and not isinstance(value, bool):
        yield Sample(name, {}, number)


def _tls(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = TlsValues.of(values)
    yield from _stamp(v.cert_not_after, "mailfleet_tls_cert_not_after_timestamp_seconds")
    yield from _stamp(v.cert_not_before, "mailfleet_tls_cert_not_before_timestamp_seconds")
    yield from _stamp(v.chain_earliest_not_after,
                      "mailfleet_tls_cert_chain_earliest_not_after_timestamp_seconds")
    yield from _stamp(v.served_earliest_not_after,
                      "mailfleet_tls_served_earliest_not_after_timestamp_seconds")
    yield from _flag(v.chain_verified, "mailfleet_tls_cert_chain_verified")
    yield from _flag(v.hostname_match, "mailfleet_tls_cert_hostname_match")
    if isinstance(v.tls_version, str) and v.tls_version:
        yield Sample("mailfleet_tls_version_info", {"version": v.tls_version}, 1.0)


def _imap_login(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = ImapLoginValues.of(values)
    if isinstance(v.mechanism, str) and v.mechanism:
        yield Sample("mailfleet_imap_login_success", {"mechanism": v.mechanism.upper()},
                     float(bool(v.logged_in)))


def _smtp(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = SmtpValues.of(values)
    yield from _flag(v.starttls_offered, "mailfleet_smtp_starttls_offered")
    if v.auth_before_tls is not None:
        yield Sample("mailfleet_smtp_auth_before_tls", {}, float(bool(v.auth_before_tls)))


def _quota(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = QuotaValues.of(values)
    yield from _stamp(v.storage_used_bytes, "mailfleet_quota_used_bytes")
    yield from _stamp(v.storage_limit_bytes, "mailfleet_quota_limit_bytes")
    yield from _stamp(v.messages_used, "mailfleet_quota_used_messages")
    yield from _stamp(v.messages_limit, "mailfleet_quota_limit_messages")
    ratios = []
    for used, limit in ((v.storage_used_bytes, v.storage_limit_bytes),
                        (v.messages_used, v.messages_limit)):
        u, lim = _number(used), _number(limit)
        if u is not None and lim:
            ratios.append(u / lim)
    if ratios:
        yield Sample("mailfleet_quota_used_ratio", {}, max(ratios))


def _sync(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = SyncValues.of(values)
    for value, kind in (
        (v.delivery_latency_seconds, "delivery"),
        (v.push_latency_seconds, "push"),
        (v.client_latency_seconds, "client"),
        (v.append_latency_seconds, "append"),
    ):
        number = _number(value)
        if number is not None:
            yield Sample("mailfleet_sync_latency_seconds", {"kind": kind}, number)


def _dns(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = DnsValues.of(values)
    # SPF and DMARC: a missing record is only a warning finding (spf_ok/dmarc_ok stay
    # true), but the gauges say whether the record is there and right.
    for value, what in ((v.mx_ok, "mx"), (v.rdns_ok, "rdns"),
                        (dns_report.clean(v.findings, "spf"), "spf"),
                        (dns_report.clean(v.findings, "dmarc"), "dmarc"), (v.tlsa_ok, "tlsa"),
                        (v.dnsbl_ok, "dnsbl")):
        yield from _flag(value, f"mailfleet_dns_{what}_ok")


def _server(values: Mapping[str, Any]) -> Iterator[Sample]:
    v = ServerValues.of(values)
    ran = _number(v.commands_run) or 0
    yield Sample("mailfleet_server_ssh_up", {}, float(ran > 0 and not v.ssh_error))
    for queue, count in sorted((v.queue_messages or {}).items()):
        if _number(count) is not None:
            yield Sample("mailfleet_postfix_queue_messages", {"queue": str(queue)}, float(count))
    if v.queue_messages is not None:
        # An empty queue has no oldest message: its age is 0, not absent.
        oldest = _number(v.queue_oldest_seconds)
        yield Sample("mailfleet_postfix_queue_oldest_seconds", {}, oldest or 0.0)
    yield from _stamp(v.dovecot_sessions, "mailfleet_dovecot_sessions")
    for proto, count in sorted((v.dovecot_sessions_by_protocol or {}).items()):
        yield Sample("mailfleet_dovecot_protocol_sessions", {"protocol": str(proto)}, float(count))
    for path, fs in sorted((v.filesystems or {}).items()):
        # FsSpace.to_values: a nested mapping of the server check (checks/SERVER.md).
        for key, name in (("size_bytes", "mailfleet_fs_size_bytes"),
                          ("free_bytes", "mailfleet_fs_free_bytes"),
                          ("inodes", "mailfleet_fs_inodes"),
                          ("free_inodes", "mailfleet_fs_free_inodes")):
            number = _number(fs.get(key))
            if number is not None:
                yield Sample(name, {"path": str(path)}, number)
    for service, up in sorted((v.services or {}).items()):
        yield Sample("mailfleet_service_up", {"service": str(service)}, float(bool(up)))
    yield from _stamp(v.cert_file_not_after,
                      "mailfleet_tls_cert_file_not_after_timestamp_seconds")
    for service, pending in sorted((v.cert_reload_pending_by_service or {}).items()):
        yield Sample("mailfleet_tls_cert_reload_pending", {"service": str(service)},
                     float(bool(pending)))


# check name -> what its values say as samples (a check without one has only the
# common families).
EXTRACTORS: Mapping[str, Extractor] = {
    "tls": _tls,
    "imap_login": _imap_login,
    "smtp": _smtp,
    "quota": _quota,
    "dns": _dns,
    "server": _server,
    "sync": _sync,
}


class MeshTally:
    """The fleet mesh's pairs as a bounded set of samples per destination host.

    A pair's latest result is stored on its destination as ``sync_mesh:<source>``;
    exporting each pair would make n(n-1) series (249,500 for 500 hosts, several
    families each). The tally keeps, per destination, how many of its pairs are
    ok and failed and the slowest successful delivery: 3 series per host. Which
    source fails is on the host's page and in ``/api/hosts/<name>``.
    """

    def __init__(self) -> None:
        self._ok: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._slowest: dict[str, float] = {}

    def add(self, host: str, result: ResultLike) -> None:
        if not result.success:
            self._failed[host] = self._failed.get(host, 0) + 1
            return
        self._ok[host] = self._ok.get(host, 0) + 1
        latency = _number(SyncValues.of(result.values).delivery_latency_seconds)
        if latency is not None:
            self._slowest[host] = max(latency, self._slowest.get(host, 0.0))

    def samples(self) -> Iterator[Sample]:
        for host in sorted(set(self._ok) | set(self._failed)):
            for word, counts in (("ok", self._ok), ("failed", self._failed)):
                yield Sample("mailfleet_sync_mesh_pairs", {"host": host, "result": word},
                             float(counts.get(host, 0)))
            if host in self._slowest:
                yield Sample("mailfleet_sync_mesh_latency_max_seconds", {"host": host},
                             self._slowest[host])


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
    "EXTRACTORS",
    "GAUGES",
    "MeshTally",
    "Metric",
    "Sample",
    "counter_family",
    "gauge_families",
    "result_samples",
    "with_labels",
]
