"""Fixtures shared by the whole suite.

``lab`` brings up the session's lab fleet (named by MAILFLEET_LAB, default
``mailfleet``) with MAILFLEET_TEST_HOSTS hosts (default 3) and takes it down at
the end unless MAILFLEET_KEEP_LAB=1. Where the lab cannot run (not root, no
podman) lab tests are skipped — unless MAILFLEET_REQUIRE_LAB=1 (as in
`make test`), where that is an error: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from mailfleet.lab.config import LabConfig
from mailfleet.lab.fleet import Lab

if TYPE_CHECKING:
    from tests.integration.conftest import MailFleet


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (podman networks with fixed addresses)"
    for tool in ("podman", "debootstrap", "knotd", "apt-cacher-ng"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed (run `make setup`)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip a test whose lab or local server cannot run here; with MAILFLEET_REQUIRE_LAB=1, fail."""
    if os.environ.get("MAILFLEET_REQUIRE_LAB") == "1":
        pytest.fail(f"required but unavailable: {reason}")
    pytest.skip(reason)


def require_lab() -> None:
    reason = lab_unavailable()
    if reason:
        skip_or_fail(reason)


def own_lab(name: str, subnet: str, env_prefix: str | None = None) -> Lab:
    """A test module's own lab, beside the session's (skipped or failed where none can run).

    With ``env_prefix`` X, ``X_LAB`` and ``X_SUBNET`` override the name and subnet.
    """
    require_lab()
    if env_prefix:
        name = os.environ.get(f"{env_prefix}_LAB", name)
        subnet = os.environ.get(f"{env_prefix}_SUBNET", subnet)
    return Lab(LabConfig.create(name, subnet))


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    require_lab()
    fleet = Lab(LabConfig.from_env())
    hosts = int(os.environ.get("MAILFLEET_TEST_HOSTS", "3"))
    fleet.up(hosts)
    fleet.require_up()
    yield fleet
    if os.environ.get("MAILFLEET_KEEP_LAB") != "1":
        fleet.down()


@pytest.fixture(scope="session")
def mail_fleet(lab: Lab) -> MailFleet:
    """The session's lab with playbooks/site.yml converged (tests/integration/conftest.py).

    Defined here, once: integration, browser and reliability tests share one deploy.
    """
    from tests.integration.conftest import deploy_mail_fleet

    return deploy_mail_fleet(lab)
