"""Fixtures: the real app factory over a real SQLite store filled with a realistic fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mailfleet.dashboard.app import create_app
from tests.dashboard_web.fleetdata import fill_store, make_hosts

FLEET_SIZE = 12


def make_app(tmp_path: Path, **config: Any) -> Flask:
    hosts = make_hosts(FLEET_SIZE)
    app = create_app({
        "TESTING": True,
        "MAILFLEET_HOSTS": hosts,
        "MAILFLEET_DB": str(tmp_path / "results.sqlite3"),
        "MAILFLEET_INTERVAL": 60.0,
        **config,
    })
    fill_store(app.extensions["mailfleet"].store, hosts, sweeps=20)
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    app.extensions["mailfleet"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
