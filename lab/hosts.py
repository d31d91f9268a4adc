"""Which hosts a lab has: names, FQDNs, addresses, mail domains (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from mailfleet.lab.config import (
    DEFAULT_RELEASES,
    DOMAIN,
    FIRST_HOST_OFFSET,
    MAX_HOSTS,
    RELEASES,
    LabConfig,
    LabConfigError,
    Release,
    check_releases,
)


@dataclass(frozen=True, order=True)
class LabHost:
    index: int
    name: str
    fqdn: str
    address: str
    container: str
    release: str = DEFAULT_RELEASES[0]  # Debian's version number, a key of RELEASES

    @property
    def debian(self) -> Release:
        return RELEASES[self.release]

    @property
    def mail_domain(self) -> str:
        """The mail domain this host is the MX of (``example<i>.test``)."""
        return f"example{self.index}.test"


def release_of(releases: Sequence[str], i: int) -> str:
    """Host ``i``'s release (1-based): its own entry, or the last one for hosts past the list."""
    return releases[min(i, len(releases)) - 1]


def allocate(config: LabConfig, count: int,
             releases: Sequence[str] = DEFAULT_RELEASES) -> list[LabHost]:
    """Hosts 1..count: ``mx<i>.lab.test`` at the subnet's ``.<10+i>``.

    ``releases`` gives host i the i-th release; hosts past its end get the last one.
    """
    if count < 0:
        raise LabConfigError(f"--hosts must be 0 or more, not {count}")
    usable = config.subnet.num_addresses - 2 - FIRST_HOST_OFFSET
    limit = min(MAX_HOSTS, usable)
    if count > limit:
        raise LabConfigError(f"a lab on {config.subnet} holds at most {limit} hosts, not {count}")
    check_releases(releases)
    base = config.subnet.network_address + FIRST_HOST_OFFSET
    return [
        LabHost(
            index=i,
            name=f"mx{i}",
            fqdn=f"mx{i}.{DOMAIN}",
            address=str(ipaddress.IPv4Address(int(base) + i)),
            container=config.container(f"mx{i}"),
            release=release_of(releases, i),
        )
        for i in range(1, count + 1)
    ]


def reverse_zone(config: LabConfig) -> str:
    """``0.77.10.in-addr.arpa`` for 10.77.0.0/24 (labs are /24s)."""
    octets = str(config.subnet.network_address).split(".")[:3]
    return ".".join(reversed(octets)) + ".in-addr.arpa"
