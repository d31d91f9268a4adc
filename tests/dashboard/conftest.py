"""Fixtures of the exporter/scheduler tests: hosts on loopback, a probe table, an app."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mailfleet.checks import PROBES
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.dashboard.app import create_app
from mailfleet.dashboard.targets import WatchedHost


def host(
    name: str,
    port: int,
    checks: tuple[str, ...] = ("port",),
    timeout: float = 2.0,
    groups: tuple[str, ...] = ("mailservers",),
) -> WatchedHost:
    """A watched host on loopback whose IMAPS port (and TLS port) is ``port``."""
    return WatchedHost(
        name=name,
        target=Target(name=name, address="127.0.0.1", mail_hostname=f"{name}.lab.test",
                      ports={"imaps": port}, checks=checks),
        options=ProbeOptions(timeout=timeout),
        groups=groups,
    )


def hung_probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """A buggy probe that ignores its deadline."""
    time.sleep(5)
    return ProbeResult(check="hung", target=target.name, success=True)


def crashing_probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    raise RuntimeError("boom")


def quota_like_probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """Reports fixed quota values, to see them as metrics."""
    return ProbeResult(
        check="quota", target=target.name, success=True, status=Status.WARNING,
        phases={"total": 0.01},
        values={"storage_used_bytes": 900, "storage_limit_bytes": 1000,
                "user": "probe@example1.test"},
        error="storage 90% used",
    )


TEST_PROBES = {**PROBES, "hung": hung_probe, "crash": crashing_probe,
               "quota": quota_like_probe}


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback port that accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        yield s.getsockname()[1]


def make_app(hosts: list[WatchedHost], **config: Any) -> Flask:
    return create_app({"TESTING": True, "MAILFLEET_HOSTS": hosts,
                       "MAILFLEET_PROBES": TEST_PROBES, "MAILFLEET_INTERVAL": 5.0, **config})


@pytest.fixture
def app(listener: int) -> Flask:
    return make_app([host("mx1", listener, ("port", "quota"), groups=("eu", "mailservers")),
                     host("mx2", listener, ("port",))])


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
