"""Which hosts a lab has: names, FQDNs, addresses, mail domains (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailfleet.lab.config import DOMAIN, FIRST_HOST_OFFSET, MAX_HOSTS, LabConfig, LabConfigError


@dataclass(frozen=True, order=True)
class LabHost:
    index: int
    name: str
    fqdn: str
    address: str
    container: str

    @property
    def mail_domain(self) -> str:
        """The mail domain this host is the MX of (``example<i>.test``)."""
        return f"example{self.index}.test"


def allocate(config: LabConfig, count: int) -> list[LabHost]:
    """Hosts 1..count: ``mx<i>.lab.test`` at the subnet's ``.<10+i>``."""
    if count < 0:
        raise LabConfigError(f"--hosts must be 0 or more, not {count}")
    usable = config.subnet.num_addresses - 2 - FIRST_HOST_OFFSET
    limit = min(MAX_HOSTS, usable)
    if count > limit:
        raise LabConfigError(f"a lab on {config.subnet} holds at most {limit} hosts, not {count}")
    base = config.subnet.network_address + FIRST_HOST_OFFSET
    return [
        LabHost(
            index=i,
            name=f"mx{i}",
            fqdn=f"mx{i}.{DOMAIN}",
            address=str(ipaddress.IPv4Address(int(base) + i)),
            container=config.container(f"mx{i}"),
        )
        for i in range(1, count + 1)
    ]


def reverse_zone(config: LabConfig) -> str:
    """``0.77.10.in-addr.arpa`` for 10.77.0.0/24 (labs are /24s)."""
    octets = str(config.subnet.network_address).split(".")[:3]
    return ".".join(reversed(octets)) + ".in-addr.arpa"
