"""The Flask application factory: ``create_app(config)``.

Configuration keys (``MAILFLEET_*``; ``mailfleet serve`` fills them from flags):

``MAILFLEET_INVENTORY``            list of inventory sources (``-i``), read by Ansible
``MAILFLEET_VAULT_PASSWORD_FILE``  vault password file for the inventory
``MAILFLEET_GROUP``                inventory group to watch (default ``mailservers``; None: all)
``MAILFLEET_HOSTS``                a list of ``WatchedHost`` instead of an inventory (tests)
``MAILFLEET_DB``                   SQLite file of the result store (default: a new temporary file)
``MAILFLEET_RETENTION``            seconds of history kept (default 7 days)
``MAILFLEET_INTERVAL``             seconds between sweep starts (default 60)
``MAILFLEET_TIMEOUT``              default probe deadline for hosts that set none
``MAILFLEET_CONCURRENCY``          probes at once (default 32); ``MAILFLEET_PER_HOST`` (2)
``MAILFLEET_PROBES``               a name -> probe table instead of ``checks.PROBES`` (tests)
``MAILFLEET_ALLOW_ANY_TARGET``     let ``/probe`` probe targets outside the inventory
``MAILFLEET_START_SCHEDULER``      start sweeping in the background (``serve`` does)
``MAILFLEET_INVENTORY_REFRESH``    seconds between re-reads of the inventory (default 300)
``MAILFLEET_SHARD``                a ``Shard``: sweep only its hosts (default: the whole fleet)
``MAILFLEET_PROMETHEUS``           Prometheus' base URL: the fleet pages read the whole fleet
                                 from its HTTP API (checked at start-up)

Features are blueprints, each in its own module with ``init_app(app)``; a new
page adds its module to ``FEATURE_MODULES``.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from mailfleet.dashboard.monitor import Inventory, Monitor
from mailfleet.dashboard.promfleet import PrometheusFleet, check_url
from mailfleet.dashboard.scheduler import Scheduler
from mailfleet.dashboard.shard import WHOLE_FLEET
from mailfleet.dashboard.store import ResultStore

# Modules with ``init_app(app)`` that register one feature's blueprint, in order.
FEATURE_MODULES: tuple[str, ...] = ("mailfleet.dashboard.exporter", "mailfleet.dashboard.web")

DEFAULTS: dict[str, Any] = {
    "MAILFLEET_INVENTORY": [],
    "MAILFLEET_VAULT_PASSWORD_FILE": None,
    "MAILFLEET_GROUP": "mailservers",
    "MAILFLEET_HOSTS": None,
    "MAILFLEET_DB": None,
    "MAILFLEET_RETENTION": 7 * 86400.0,
    "MAILFLEET_INTERVAL": 60.0,
    "MAILFLEET_TIMEOUT": None,
    "MAILFLEET_CONCURRENCY": 32,
    "MAILFLEET_PER_HOST": 2,
    "MAILFLEET_PROBES": None,
    "MAILFLEET_ALLOW_ANY_TARGET": False,
    "MAILFLEET_START_SCHEDULER": False,
    "MAILFLEET_INVENTORY_REFRESH": 300.0,
    "MAILFLEET_SHARD": WHOLE_FLEET,
    "MAILFLEET_PROMETHEUS": None,
}


def build_monitor(config: Mapping[str, Any]) -> Monitor:
    if config["MAILFLEET_HOSTS"] is not None:
        inventory = Inventory.static(config["MAILFLEET_HOSTS"])
    else:
        inventory = Inventory.from_ansible(
            config["MAILFLEET_INVENTORY"],
            group=config["MAILFLEET_GROUP"],
            vault_password_file=config["MAILFLEET_VAULT_PASSWORD_FILE"],
            default_timeout=config["MAILFLEET_TIMEOUT"],
            refresh=float(config["MAILFLEET_INVENTORY_REFRESH"]),
        )
    db = config["MAILFLEET_DB"]
    if db is None:
        # Results that live as long as this process (a quick look, tests): still a file,
        # so every reader sees what the scheduler wrote.
        db = Path(tempfile.mkdtemp(prefix="mailfleet-")) / "results.sqlite3"
    store = ResultStore(db, retention=float(config["MAILFLEET_RETENTION"]))
    interval = float(config["MAILFLEET_INTERVAL"])
    shard = config["MAILFLEET_SHARD"]
    prometheus = None
    if config["MAILFLEET_PROMETHEUS"]:
        # PrometheusError when it does not answer: a clear error at start-up, not later.
        prometheus = PrometheusFleet(check_url(config["MAILFLEET_PROMETHEUS"]),
                                     ttl=max(2.0, min(15.0, interval / 4)))
    scheduler = Scheduler(
        inventory.refreshed_hosts,
        store,
        probes=config["MAILFLEET_PROBES"],
        interval=interval,
        concurrency=int(config["MAILFLEET_CONCURRENCY"]),
        per_host=int(config["MAILFLEET_PER_HOST"]),
        shard=shard,
    )
    return Monitor(
        inventory=inventory,
        store=store,
        scheduler=scheduler,
        probes_override=config["MAILFLEET_PROBES"],
        allow_any_target=bool(config["MAILFLEET_ALLOW_ANY_TARGET"]),
        interval=interval,
        shard=shard,
        prometheus=prometheus,
    )


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    if config:
        app.config.update(config)
    monitor = build_monitor(app.config)
    app.extensions["mailfleet"] = monitor
    for name in FEATURE_MODULES:
        importlib.import_module(name).init_app(app)
    if app.config["MAILFLEET_START_SCHEDULER"] and monitor.scheduler is not None:
        monitor.scheduler.start()
    return app
