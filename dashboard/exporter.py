"""The Prometheus endpoints: ``/metrics``, ``/probe``, ``/sd``, ``/healthz``.

``/metrics`` serves the store's latest results (fleet view; never probes in the
scrape path). ``/probe?target=&module=`` runs one probe now, blackbox-style, in
a fresh ``CollectorRegistry``, within Prometheus' scrape timeout; it only
probes inventory hosts unless the operator allows any target. ``/sd`` is
Prometheus HTTP service discovery built from the inventory.
"""

from __future__ import annotations

import json
import math
import platform
import threading
import time
from collections.abc import Iterator
from importlib import metadata

from flask import Blueprint, Flask, Response, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.metrics import (
    MeshTally,
    Sample,
    check_labels,
    counter_family,
    gauge_families,
    result_samples,
    with_labels,
)
from mailfleet.dashboard.monitor import Monitor, current_monitor
from mailfleet.dashboard.scheduler import is_mesh_check
from mailfleet.dashboard.targets import WatchedHost

bp = Blueprint("exporter", __name__)

TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


def version() -> str:
    try:
        return metadata.version("mailfleet")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "mailfleet_build_info", "mailfleet version and Python it runs on (value 1).",
        labels=["version", "python"],
    )
    family.add_metric([version(), platform.python_version()], 1.0)
    return family


class FleetCollector(Collector):
    """Latest results of every watched host (from the store; never probes)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # no probing at registration time; families vary with the fleet

    def collect(self) -> Iterator[Metric]:
        mon = self.monitor
        names = {h.name for h in mon.own_hosts()}
        samples: list[Sample] = []
        mesh = MeshTally()
        for r in mon.store.latest():
            if r.host not in names:
                continue
            if is_mesh_check(r.check):
                mesh.add(r.host, r)
                continue
            labels = {"host": r.host}
            samples.extend(with_labels(result_samples(r), labels))
            samples.append(
                Sample("mailfleet_probe_timestamp_seconds", {**labels, **check_labels(r.check)},
                       r.started_at)
            )
            if r.last_success_at is not None:
                samples.append(
                    Sample("mailfleet_probe_last_success_timestamp_seconds",
                           {**labels, **check_labels(r.check)}, r.last_success_at)
                )
        samples.extend(mesh.samples())
        yield from gauge_families(samples, label_order=("host", "check"))


class SelfCollector(Collector):
    """The exporter's own state: build, inventory, sweeps, probe counters."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        mon = self.monitor
        yield build_info()
        yield GaugeMetricFamily(
            "mailfleet_targets", "Inventory hosts watched by this exporter (its shard's).",
            value=len(mon.own_hosts()),
        )
        shard = GaugeMetricFamily(
            "mailfleet_shard_info", "The shard this exporter watches (--shard SHARD/SHARDS; "
            "0/1 when it watches the whole inventory), value 1.", labels=["shard", "shards"],
        )
        shard.add_metric([str(mon.shard.index), str(mon.shard.count)], 1.0)
        yield shard
        yield GaugeMetricFamily(
            "mailfleet_inventory_ok",
            "1 if the last read of the inventory worked (0: the previous hosts are kept).",
            value=0.0 if mon.inventory.last_error else 1.0,
        )
        yield GaugeMetricFamily(
            "mailfleet_sweep_interval_seconds", "Configured time between sweep starts.",
            value=mon.interval,
        )
        if mon.scheduler is None:
            return
        stats = mon.scheduler.stats.snapshot()
        yield GaugeMetricFamily(
            "mailfleet_sweep_duration_seconds", "Duration of the last completed sweep.",
            value=stats.last_sweep_duration,
        )
        yield GaugeMetricFamily(
            "mailfleet_sweep_last_timestamp_seconds", "When the last completed sweep started.",
            value=stats.last_sweep_started,
        )
        yield GaugeMetricFamily(
            "mailfleet_sweep_overrun",
            "1 if the last sweep took longer than the interval.",
            value=float(stats.last_sweep_overrun),
        )
        yield counter_family(
            "mailfleet_sweeps", "Completed sweeps.", [], {(): float(stats.sweeps)}
        )
        yield counter_family(
            "mailfleet_sweep_overruns", "Sweeps that took longer than the interval.", [],
            {(): float(stats.overruns)},
        )
        yield counter_family(
            "mailfleet_probes", "Probes run, by check.", ["check"],
            {(c,): float(n) for c, n in stats.probes.items()},
        )
        yield counter_family(
            "mailfleet_probe_errors", "Failed probes, by check and reason.", ["check", "reason"],
            {k: float(n) for k, n in stats.errors.items()},
        )
        yield counter_family(
            "mailfleet_probes_abandoned",
            "Probes that did not return by their deadline and were abandoned.", [],
            {(): float(stats.abandoned)},
        )


class MetricsPage:
    """What /metrics serves: the exporter's own metrics, rendered per scrape, and the
    fleet's, rendered again only when the store or the inventory changed.

    With 1000 hosts the fleet part is ~60k series: rendering it costs a good part
    of a second, so it is cached; while a sweep writes results, it is re-rendered
    at most every ``max_staleness`` seconds (a fraction of the sweep interval).
    """

    def __init__(self, monitor: Monitor) -> None:
        from prometheus_client import ProcessCollector

        self.monitor = monitor
        self.own = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.own)
        self.own.register(SelfCollector(monitor))
        self.fleet = CollectorRegistry(auto_describe=False)
        self.fleet.register(FleetCollector(monitor))
        self.max_staleness = min(5.0, monitor.interval / 4)
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._body = b""
        self._rendered_at = -math.inf

    def fleet_text(self) -> bytes:
        key = (self.monitor.store.generation, id(self.monitor.own_hosts()))
        with self._lock:
            fresh = time.monotonic() - self._rendered_at < self.max_staleness
            if key != self._key and not (fresh and self._key is not None):
                self._body = generate_latest(self.fleet)
                self._key = key
                self._rendered_at = time.monotonic()
            return self._body

    def render(self) -> bytes:
        return generate_latest(self.own) + self.fleet_text()


@bp.get("/metrics")
def metrics() -> Response:
    from flask import current_app

    page: MetricsPage = current_app.extensions["mailfleet_metrics"]
    return Response(page.render(), content_type=CONTENT_TYPE_LATEST)


# -- /probe ----------------------------------------------------------------------------------
class _ResultCollector(Collector):
    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        yield from gauge_families(self.samples, label_order=("check",))


def _text(status: int, message: str) -> Response:
    return Response(message.rstrip() + "\n", status=status, mimetype="text/plain")


def _scrape_budget(options: ProbeOptions, margin: float) -> float:
    """Seconds the probe may take: the scrape timeout minus a margin, capped by the options."""
    budget = options.timeout
    header = request.headers.get(TIMEOUT_HEADER)
    if header:
        try:
            scrape = float(header)
        except ValueError:
            scrape = math.nan
        if math.isfinite(scrape) and scrape > 0:
            budget = min(budget, scrape - margin)
    return max(0.1, budget)


def _ad_hoc_host(target: str) -> WatchedHost:
    name = target.strip()
    return WatchedHost(name=name, target=Target(name=name, address=name), options=ProbeOptions(),
                       groups=())


@bp.get("/probe")
def probe() -> Response:
    mon = current_monitor()
    target = request.args.get("target", "").strip()
    module = request.args.get("module", "").strip()
    known = sorted(mon.probes)
    if not target:
        return _text(400, "missing 'target' parameter (an inventory host name)")
    if not module:
        return _text(400, f"missing 'module' parameter; known modules: {', '.join(known)}")
    fn = mon.probes.get(module)
    if fn is None:
        return _text(400, f"unknown module {module!r}; known modules: {', '.join(known)}")
    host = mon.inventory.find(target)
    if host is None:
        if not mon.allow_any_target:
            # Not an open proxy: only what the inventory lists is probed.
            return _text(
                403,
                f"target {target!r} is not in the inventory; probing it needs "
                "--allow-any-target",
            )
        host = _ad_hoc_host(target)
    elif not mon.shard.owns(host.name):
        # Prometheus' hashmod sent another shard's host here: its relabelling and this
        # watcher's --shard disagree, and probing anyway would hide that.
        return _text(
            421,
            f"host {host.name!r} belongs to shard {mon.owner_of(host.name)}, and this exporter "
            f"is shard {mon.shard}: keep the targets whose hashmod of __address__ "
            f"(modulus {mon.shard.count}) is {mon.shard.index}",
        )
    budget = _scrape_budget(host.options, mon.probe_margin)
    started = time.monotonic()
    result = fn(host.target, host.options, Deadline(budget))
    elapsed = time.monotonic() - started
    if request.args.get("debug", "").lower() in ("1", "true", "yes"):
        body = {"budget_seconds": budget, "elapsed_seconds": elapsed, "result": result.to_dict()}
        return Response(json.dumps(body, indent=2, default=str) + "\n",
                        mimetype="application/json")
    samples = list(result_samples(result))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ResultCollector(samples))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


# -- /sd and /healthz ---------------------------------------------------------------------------
def sd_entry(host: WatchedHost, module: str | None) -> dict[str, object]:
    labels = {
        "host": host.name,
        "__meta_mailfleet_host": host.name,
        "__meta_mailfleet_address": host.target.address,
        "__meta_mailfleet_mail_hostname": host.target.mail_hostname,
        # Comma-wrapped like Prometheus' own list metas, so `.*,eu,.*` matches one group.
        "__meta_mailfleet_groups": "," + ",".join(host.groups) + "," if host.groups else "",
        "__meta_mailfleet_checks": "," + ",".join(host.checks) + "," if host.checks else "",
    }
    if module:
        labels["__param_module"] = module
    return {"targets": [host.name], "labels": labels}


@bp.get("/sd")
def service_discovery() -> Response:
    """One target group per inventory host (``?module=`` keeps hosts with that check).

    Every host, whichever shard watches it: Prometheus' ``hashmod`` splits them."""
    mon = current_monitor()
    module = request.args.get("module", "").strip() or None
    group = request.args.get("group", "").strip() or None
    entries = [
        sd_entry(h, module)
        for h in mon.inventory.hosts()
        if (module is None or module in h.checks) and (group is None or group in h.groups)
    ]
    return Response(json.dumps(entries, indent=1) + "\n", mimetype="application/json")


@bp.get("/healthz")
def healthz() -> tuple[dict[str, object], int]:
    """200 while sweeps keep coming (or no scheduler runs); 503 when they stalled."""
    mon = current_monitor()
    body: dict[str, object] = {
        "status": "ok",
        "version": version(),
        "hosts": len(mon.own_hosts()),
        "shard": str(mon.shard),
        "inventory_error": mon.inventory.last_error or None,
    }
    if mon.scheduler is not None:
        stats = mon.scheduler.stats.snapshot()
        last = stats.last_sweep_started + stats.last_sweep_duration if stats.sweeps else None
        reference = last if last is not None else mon.started_at
        age = time.time() - reference
        body["sweeps"] = stats.sweeps
        body["last_sweep_age_seconds"] = round(age, 3) if last is not None else None
        # Three intervals plus the longest probe budget without a finished sweep: stalled.
        slack = max((h.options.timeout for h in mon.own_hosts()), default=10.0)
        if age > 3 * mon.interval + slack:
            body["status"] = "stalled"
            return body, 503
    return body, 200


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.extensions["mailfleet_metrics"] = MetricsPage(app.extensions["mailfleet"])
