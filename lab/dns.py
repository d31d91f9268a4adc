"""The lab's authoritative DNS: zone files for knot, built from the hosts (pure)."""

from __future__ import annotations

from pathlib import Path

from mailfleet.lab.config import DOMAIN, LabConfig
from mailfleet.lab.hosts import LabHost, reverse_zone

# The TSIG key the mail hosts' DKIM records are published with (RFC 2136 update
# of the mail domains' zones, from the controller; rspamd_dkim_dns_update).
UPDATE_KEY = "mailfleet-update"
UPDATE_ALGORITHM = "hmac-sha256"

# The lab's DNS block list (postscreen's postfix_postscreen_dnsbl_sites in the lab
# inventory): one lab address listed, one answered with Spamhaus's "query refused"
# code (127.255.255.254, never a listing), and RFC 5782's test entry 127.0.0.2.
DNSBL_ZONE = "dnsbl.test"
DNSBL_LISTED_HOST = 250  # subnet address + 250: listed
DNSBL_REFUSED_HOST = 251  # subnet address + 251: answered 127.255.255.254


def dnsbl_addresses(config: LabConfig) -> tuple[str, str]:
    """The lab addresses the block list lists and answers with a refusal code."""
    net = config.subnet.network_address
    return str(net + DNSBL_LISTED_HOST), str(net + DNSBL_REFUSED_HOST)


def _reversed(address: str) -> str:
    return ".".join(reversed(address.split(".")))


SOA = (
    "@ 300 IN SOA ns.{domain}. hostmaster.{domain}. {serial} 60 60 600 60\n"
    "@ 300 IN NS ns.{domain}.\n"
)


def _soa(serial: int) -> str:
    return SOA.format(domain=DOMAIN, serial=serial)


def zones(config: LabConfig, hosts: list[LabHost], serial: int) -> dict[str, str]:
    """Zone name -> zone file text: lab.test, the reverse zone, one zone per mail domain."""
    forward = [f"$ORIGIN {DOMAIN}.\n", _soa(serial), f"ns 300 IN A {config.gateway}\n"]
    forward += [f"{h.name} 300 IN A {h.address}\n" for h in hosts]
    rev = [f"$ORIGIN {reverse_zone(config)}.\n", _soa(serial)]
    rev += [f"{h.address.rsplit('.', 1)[1]} 300 IN PTR {h.fqdn}.\n" for h in hosts]
    # The gateway (the controller, which the tests send "outside" mail from) has
    # forward-confirmed reverse DNS, as any host that sends mail on the internet
    # has: without it rspamd scores its mail as from an unknown host.
    rev.append(f"{config.gateway.rsplit('.', 1)[1]} 300 IN PTR ns.{DOMAIN}.\n")
    result = {DOMAIN: "".join(forward), reverse_zone(config): "".join(rev)}
    listed, refused = dnsbl_addresses(config)
    result[DNSBL_ZONE] = "".join([
        f"$ORIGIN {DNSBL_ZONE}.\n", _soa(serial),
        f"{_reversed(listed)} 300 IN A 127.0.0.2\n",
        f'{_reversed(listed)} 300 IN TXT "listed by the mailfleet lab"\n',
        f"{_reversed(refused)} 300 IN A 127.255.255.254\n",
        "2.0.0.127 300 IN A 127.0.0.2\n",
    ])
    for h in hosts:
        d = h.mail_domain
        result[d] = "".join(
            [
                f"$ORIGIN {d}.\n",
                _soa(serial),
                f"@ 300 IN MX 10 {h.fqdn}.\n",
                '@ 300 IN TXT "v=spf1 mx -all"\n',
                f'_dmarc 300 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{d}"\n',
            ]
        )
    return result


def knot_conf(
    config: LabConfig, zone_names: list[str], knot_dir: Path, update_secret: str
) -> str:
    """knot's configuration: every zone served, and updatable with the lab's TSIG key only.

    Updates live in memory (no journal, zone files never written back): the
    next ``lab up`` reloads the zone files and the next deploy publishes again.
    """
    zone_lines = "".join(f"  - domain: {z}\n" for z in sorted(zone_names))
    return (
        "# knot for the mailfleet lab {name!r}; written by `mailfleet lab up`.\n"
        "server:\n"
        f"  listen: {config.gateway}@{config.dns_port}\n"
        f"  rundir: {knot_dir}\n"
        "log:\n"
        "  - target: stderr\n"
        "    any: info\n"
        "database:\n"
        f"  storage: {knot_dir}/db\n"
        "key:\n"
        f"  - id: {UPDATE_KEY}\n"
        f"    algorithm: {UPDATE_ALGORITHM}\n"
        f"    secret: {update_secret}\n"
        "acl:\n"
        "  - id: dkim-update\n"
        f"    key: {UPDATE_KEY}\n"
        "    action: update\n"
        "control:\n"
        f"  listen: {knot_dir}/knot.sock\n"
        "template:\n"
        "  - id: default\n"
        f"    storage: {knot_dir}/zones\n"
        '    file: "%s.zone"\n'
        "    zonefile-sync: -1\n"
        "    zonefile-load: whole\n"
        "    journal-content: none\n"
        "    acl: dkim-update\n"
        "zone:\n" + zone_lines
    ).replace("{name!r}", repr(config.name))
