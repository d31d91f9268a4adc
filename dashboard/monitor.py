"""What a running ``mailfleet serve`` holds: the inventory, the store, the scheduler.

One ``Monitor`` per Flask app (``app.extensions["mailfleet"]``); every blueprint
reaches it with ``current_monitor()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app

from mailfleet.dashboard.promfleet import PrometheusFleet
from mailfleet.dashboard.scheduler import Probe, Scheduler, probe_table
from mailfleet.dashboard.shard import WHOLE_FLEET, Shard
from mailfleet.dashboard.store import ResultStore
from mailfleet.dashboard.targets import DEFAULT_GROUP, InventoryError, WatchedHost, load_inventory

log = logging.getLogger(__name__)


class Inventory:
    """The watched hosts, re-read from Ansible at most every ``refresh`` seconds.

    A failed re-read keeps the previous hosts (and is logged): a typo in
    group_vars must not blank the fleet view.
    """

    def __init__(
        self,
        load: Callable[[], Sequence[WatchedHost]],
        refresh: float = 300.0,
    ) -> None:
        self._load = load
        self.refresh = refresh
        self._lock = threading.Lock()
        self._hosts: tuple[WatchedHost, ...] = tuple(load())
        self._loaded_at = time.monotonic()
        self.last_error = ""

    @classmethod
    def from_ansible(
        cls,
        sources: Sequence[str | Path],
        group: str | None = DEFAULT_GROUP,
        vault_password_file: str | Path | None = None,
        default_timeout: float | None = None,
        refresh: float = 300.0,
    ) -> Inventory:
        return cls(
            lambda: load_inventory(sources, group, vault_password_file, default_timeout), refresh
        )

    @classmethod
    def static(cls, hosts: Sequence[WatchedHost]) -> Inventory:
        frozen = tuple(hosts)
        return cls(lambda: frozen, refresh=float("inf"))

    def hosts(self) -> tuple[WatchedHost, ...]:
        """The current hosts (never re-reads: a scrape must not wait for Ansible)."""
        return self._hosts

    def refreshed_hosts(self) -> tuple[WatchedHost, ...]:
        """The hosts, re-read first when ``refresh`` seconds have passed (the scheduler's call)."""
        if time.monotonic() - self._loaded_at >= self.refresh:
            self.reload()
        return self._hosts

    def reload(self) -> None:
        with self._lock:
            try:
                self._hosts = tuple(self._load())
                self.last_error = ""
            except InventoryError as exc:
                self.last_error = str(exc)
                log.error("keeping the previous inventory: %s", exc)
            self._loaded_at = time.monotonic()

    def get(self, name: str) -> WatchedHost | None:
        for h in self.hosts():
            if h.name == name:
                return h
        return None

    def find(self, target: str) -> WatchedHost | None:
        """The host a /probe ``target`` names: inventory name, address or mail_hostname."""
        wanted = target.strip().lower()
        hosts = self.hosts()
        for key in ("name", "address", "mail_hostname"):
            for h in hosts:
                value = h.name if key == "name" else getattr(h.target, key)
                if str(value).lower() == wanted:
                    return h
        return None


@dataclass
class Monitor:
    inventory: Inventory
    store: ResultStore
    scheduler: Scheduler | None = None
    probes_override: Mapping[str, Probe] | None = None
    allow_any_target: bool = False
    # Seconds kept off Prometheus' scrape timeout so the answer arrives in time.
    probe_margin: float = 0.5
    interval: float = 60.0
    started_at: float = field(default_factory=time.time)
    shard: Shard = WHOLE_FLEET
    # The whole fleet's latest state, when the pages read it from Prometheus (sharded).
    prometheus: PrometheusFleet | None = None
    # (the inventory's tuple, its shard's part): kept together so a new tuple is noticed
    _own: tuple[tuple[WatchedHost, ...] | None, tuple[WatchedHost, ...]] = field(
        default=(None, ()), repr=False)

    @property
    def probes(self) -> Mapping[str, Probe]:
        return self.probes_override if self.probes_override is not None else probe_table()

    def own_hosts(self) -> tuple[WatchedHost, ...]:
        """The inventory hosts this watcher sweeps: its shard's (all when unsharded).

        The same tuple until the inventory changes, so caches keyed on it hold."""
        hosts = self.inventory.hosts()
        if self.shard.count == 1:
            return hosts
        seen, own = self._own
        if seen is not hosts:
            own = tuple(h for h in hosts if self.shard.owns(h.name))
            self._own = (hosts, own)
        return own

    def owner_of(self, name: str) -> Shard:
        """The shard that watches the host ``name``."""
        return Shard(self.shard.owner(name), self.shard.count)


def current_monitor() -> Monitor:
    monitor: Monitor = current_app.extensions["mailfleet"]
    return monitor
