"""``mailfleet serve``: the scheduler, the result store and the HTTP endpoints in one process."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from mailfleet.dashboard.shard import WHOLE_FLEET, Shard, ShardError

DEFAULT_LISTEN = "127.0.0.1:9865"


def default_db() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mailfleet" / "results.sqlite3"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_seconds(value: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (value[:-1], value[-1]) if value and value[-1] in units else (value, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 30s, 5m, 7d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, not {value!r}")
    return seconds


def parse_seconds_or_zero(value: str) -> float:
    """A duration, or ``0`` (turned off)."""
    return 0.0 if value.strip() in ("0", "0s") else parse_seconds(value)


def parse_count(value: str) -> int:
    """A whole number, 0 or more."""
    if not value.strip().isdigit():
        raise argparse.ArgumentTypeError(f"wants a whole number, 0 or more, not {value!r}")
    return int(value)


def parse_shard(value: str) -> Shard:
    try:
        return Shard.parse(value)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> None:
    from mailfleet.cli import add_inventory_arguments

    p = subparsers.add_parser(
        "serve",
        help="watch the inventory's hosts: scheduler, /metrics, /probe, /sd, dashboard",
        description="Probe every inventory host each interval, keep results in SQLite, "
        "and serve /metrics, /probe, /sd, /healthz (and the dashboard pages).",
    )
    add_inventory_arguments(p, "watch")
    p.add_argument("--listen", type=parse_listen, default=parse_listen(DEFAULT_LISTEN),
                   metavar="HOST:PORT", help=f"address to serve on (default {DEFAULT_LISTEN})")
    p.add_argument("--interval", type=parse_seconds, default=60.0,
                   help="time between sweep starts (default 60s)")
    p.add_argument("--timeout", type=parse_seconds, default=None,
                   help="probe deadline for hosts whose options set none (default 10s)")
    p.add_argument("--concurrency", type=int, default=32, help="probes at once (default 32)")
    p.add_argument("--db", type=Path, default=None,
                   help=f"SQLite result store (default {default_db()})")
    p.add_argument("--retention", type=parse_seconds, default=7 * 86400.0,
                   help="history kept in the store (default 7d)")
    p.add_argument("--allow-any-target", action="store_true",
                   help="let /probe probe targets that are not in the inventory (open proxy!)")
    p.add_argument("--dns-cache", type=parse_seconds_or_zero, default=300.0, metavar="SECONDS",
                   help="keep DNS answers across hosts and sweeps for their TTL, at most this "
                   "long (default 5m; 0 asks every time)")
    p.add_argument("--keep-ssh", type=parse_count, default=4096, metavar="HOSTS",
                   help="keep the server check's SSH connection to up to this many hosts "
                   "between sweeps (default 4096; 0: a new connection every probe)")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="K/N",
                   help="watch only shard K of N (from 0), the hosts Prometheus' hashmod of "
                   "the /sd targets gives K; run N watchers, 0/N to N-1/N")
    p.add_argument("--prometheus", default=None, metavar="URL",
                   help="Prometheus that scrapes every watcher: the fleet pages show the whole "
                   "fleet from its HTTP API (e.g. http://127.0.0.1:9090)")
    p.add_argument("--inventory-refresh", type=parse_seconds, default=300.0,
                   help="re-read the inventory this often (default 5m)")
    from mailfleet.dashboard.security import add_auth_arguments

    add_auth_arguments(p)  # --auth-file, --trusted-proxy-header, --trusted-proxy
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "MAILFLEET_INVENTORY": list(args.inventory),
        "MAILFLEET_VAULT_PASSWORD_FILE": args.vault_password_file,
        "MAILFLEET_GROUP": None if args.group == "all" else args.group,
        "MAILFLEET_DB": str(args.db or default_db()),
        "MAILFLEET_RETENTION": args.retention,
        "MAILFLEET_INTERVAL": args.interval,
        "MAILFLEET_TIMEOUT": args.timeout,
        "MAILFLEET_CONCURRENCY": args.concurrency,
        "MAILFLEET_ALLOW_ANY_TARGET": args.allow_any_target,
        "MAILFLEET_INVENTORY_REFRESH": args.inventory_refresh,
        "MAILFLEET_START_SCHEDULER": True,
        "MAILFLEET_LISTEN": f"{args.listen[0]}:{args.listen[1]}",
        "MAILFLEET_SHARD": args.shard or WHOLE_FLEET,
        "MAILFLEET_PROMETHEUS": args.prometheus,
    }


def configure_logging() -> None:
    """INFO for mailfleet's own loggers; only warnings from the chatty libraries."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log per scrape
    # paramiko logs every connection and login at INFO: two lines per host per sweep for
    # the server check. Its warnings (e.g. a refused host key) still show.
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from mailfleet.checks.dns.lookups import share_answers
    from mailfleet.checks.server.ssh import keep_connections
    from mailfleet.dashboard.app import create_app
    from mailfleet.dashboard.monitor import Monitor
    from mailfleet.dashboard.promfleet import PrometheusError
    from mailfleet.dashboard.store import StoreError
    from mailfleet.dashboard.targets import InventoryError

    configure_logging()
    from mailfleet.dashboard.security import serve_auth

    try:
        auth = serve_auth(args)  # refuses a non-loopback --listen without authentication
    except ValueError as exc:
        print(f"mailfleet serve: {exc}", file=sys.stderr)
        return 2
    config = {**config_from_args(args), "MAILFLEET_AUTH": auth}
    try:
        app = create_app(config)
    except InventoryError as exc:
        print(f"mailfleet serve: {exc}", file=sys.stderr)
        return 2
    except PrometheusError as exc:
        print(f"mailfleet serve: --prometheus: {exc}; start Prometheus or fix the URL",
              file=sys.stderr)
        return 2
    except StoreError as exc:
        # A damaged store is left as it is (no repair, no overwrite): the operator decides.
        print(f"mailfleet serve: cannot use the result store {config['MAILFLEET_DB']}: {exc}; "
              "move it aside (or restore a copy) and start again", file=sys.stderr)
        return 2
    monitor: Monitor = app.extensions["mailfleet"]
    host, port = args.listen
    server = make_server(host, port, app, threaded=True)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    hosts = len(monitor.own_hosts())
    shard = (f" (shard {monitor.shard} of {len(monitor.inventory.hosts())})"
             if monitor.shard.count > 1 else "")
    print(f"mailfleet serve: watching {hosts} host(s){shard} every {args.interval:g}s on "
          f"http://{host}:{server.server_port}/ (metrics at /metrics)", flush=True)
    try:
        # Process-wide, so only while serving: a serve that refused to start, or ended,
        # leaves a process that embeds it (tests, the CLI) asking DNS and SSH afresh.
        share_answers(args.dns_cache)
        keep_connections(args.keep_ssh)
        server.serve_forever()
    finally:
        share_answers(0)
        if monitor.scheduler is not None:
            monitor.scheduler.stop()
        monitor.store.close()
        keep_connections(0)  # the kept SSH connections end with the watcher
    return 0
