"""Where a lab lives: its name, subnet, addresses and files.

Several labs can exist side by side (one per engineer or CI job), each with
its own name, internal podman network and subnet. Everything a lab creates is
named after it, so ``lab down`` can remove exactly what ``lab up`` made.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "mailfleet"
DEFAULT_SUBNET = "10.77.0.0/24"

@dataclass(frozen=True)
class Release:
    """A Debian release lab hosts can run: its base image is built once and cached."""

    version: str  # "12"
    codename: str  # "bookworm"

    @property
    def image(self) -> str:
        return f"localhost/mailfleet-lab:{self.codename}-1"

    @property
    def label(self) -> str:
        return f"Debian {self.version}"


RELEASES = {r.version: r for r in (Release("12", "bookworm"), Release("13", "trixie"))}
# What hosts get when nothing is asked for: a mixed fleet, mx1 on Debian 12
# and every later host on Debian 13 (the last release repeats), so the demo
# and every integration test meet both releases without running twice.
DEFAULT_RELEASES = ("12", "13")
DOMAIN = "lab.test"
FIRST_HOST_OFFSET = 10  # mx1 is .11, mx2 .12, ...
MAX_HOSTS = 200
# Labs may only use this private range: it is what the safety rules allow.
ALLOWED_RANGE = ipaddress.IPv4Network("10.77.0.0/16")

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,20}$")


class LabConfigError(ValueError):
    """A lab setting is unusable; the message says which and how to fix it."""


def project_root() -> Path:
    """The checkout this package belongs to (editable install), else the cwd."""
    here = Path(__file__).resolve().parent.parent
    if (here / "ansible.cfg").exists() and (here / "lab").is_dir():
        return here
    return Path.cwd()


def state_root() -> Path:
    return Path(os.environ.get("MAILFLEET_STATE", "/var/lib/mailfleet"))


@dataclass(frozen=True)
class LabConfig:
    name: str
    subnet: ipaddress.IPv4Network
    root: Path

    @classmethod
    def create(cls, name: str, subnet: str, root: Path | None = None) -> LabConfig:
        if not _NAME_RE.match(name):
            raise LabConfigError(
                f"lab name {name!r} is not usable: use 1-21 lower-case letters, digits or '-', "
                "starting with a letter (set MAILFLEET_LAB)"
            )
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as exc:
            raise LabConfigError(
                f"lab subnet {subnet!r} is not an IPv4 network ({exc}); "
                "set MAILFLEET_LAB_SUBNET to e.g. 10.77.0.0/24"
            ) from None
        if not net.subnet_of(ALLOWED_RANGE):
            raise LabConfigError(
                f"lab subnet {net} is outside {ALLOWED_RANGE}, the only range lab traffic may "
                "use; pick e.g. 10.77.5.0/24"
            )
        if net.prefixlen != 24:
            raise LabConfigError(f"lab subnet {net} is not a /24; use e.g. 10.77.5.0/24")
        return cls(name=name, subnet=net, root=(root or project_root()).resolve())

    @classmethod
    def from_env(cls, root: Path | None = None) -> LabConfig:
        return cls.create(
            os.environ.get("MAILFLEET_LAB", DEFAULT_NAME),
            os.environ.get("MAILFLEET_LAB_SUBNET", DEFAULT_SUBNET),
            root,
        )

    # -- names podman knows the lab's objects by -----------------------------
    @property
    def network(self) -> str:
        return f"{self.name}-net"

    @property
    def label(self) -> str:
        """Label put on every container of this lab (``mailfleet.lab=<name>``)."""
        return f"mailfleet.lab={self.name}"

    def container(self, host: str) -> str:
        return f"{self.name}-{host}"

    # -- addresses -------------------------------------------------------------
    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def dns_port(self) -> int:
        return 53

    @property
    def apt_proxy_port(self) -> int:
        return 3142

    # -- files -----------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        """Outside the checkout, so a fresh clone still finds a lab an earlier run left."""
        return state_root() / "labs" / self.name

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory_dir(self) -> Path:
        """inventory/lab for the default lab; the state dir for the others."""
        if self.name == DEFAULT_NAME:
            return self.root / "inventory" / "lab"
        return self.state_dir / "inventory"

    @property
    def inventory_path(self) -> Path:
        return self.inventory_dir / "hosts.yml"

    @property
    def containers_conf(self) -> Path:
        return Path(__file__).resolve().parent / "files" / "containers.conf"

    @property
    def cache_dir(self) -> Path:
        """Survives ``lab down``: the apt proxy's cache makes the next lab faster."""
        return Path(os.environ.get("MAILFLEET_CACHE", "/var/cache/mailfleet")) / self.name


def check_releases(releases: Sequence[str], given: str | None = None) -> None:
    """Raise unless every entry is a release the lab builds and there is at least one."""
    unknown = [r for r in releases if r not in RELEASES]
    if unknown or not releases:
        what = ", ".join(unknown) or repr(given if given is not None else "")
        raise LabConfigError(
            f"lab release {what} is not one the lab builds: "
            f"use {' or '.join(RELEASES)} (Debian's version number), one per host, "
            "e.g. --release 12,13,13"
        )


def parse_releases(text: str) -> tuple[str, ...]:
    """``"12,13,13"`` -> ("12", "13", "13"): one release per host, in host order."""
    releases = tuple(part.strip() for part in text.split(",") if part.strip())
    check_releases(releases, text)
    return releases
