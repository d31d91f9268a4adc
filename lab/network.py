"""The lab's podman network: internal (no NAT, no default route), one /24."""

from __future__ import annotations

import ipaddress
import json
import subprocess

from mailfleet.lab.config import LabConfig, LabConfigError
from mailfleet.lab.podman import podman, text


def inspect(config: LabConfig) -> dict[str, object] | None:
    proc = podman(config, ["network", "inspect", config.network], check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(text(proc))
    return data[0] if isinstance(data, list) and data else None


def _subnets(net: dict[str, object]) -> list[str]:
    subnets = net.get("subnets") or []
    assert isinstance(subnets, list)
    return [str(s.get("subnet")) for s in subnets if isinstance(s, dict)]


def check_safe(config: LabConfig, existing: dict[str, object] | None) -> None:
    """Refuse a network that would let lab traffic leave the lab."""
    if existing is not None:
        if not existing.get("internal"):
            raise LabConfigError(
                f"podman network {config.network} exists but is not --internal: lab hosts "
                f"would reach the outside. Remove it (podman network rm {config.network})."
            )
        if str(config.subnet) not in _subnets(existing):
            raise LabConfigError(
                f"podman network {config.network} exists with subnet {_subnets(existing)}, "
                f"not {config.subnet}; run `mailfleet lab down` for this lab first"
            )
        return
    # The subnet must not already be in use by another network or interface.
    proc = podman(config, ["network", "ls", "--format", "json"])
    for other in json.loads(text(proc)) or []:
        for subnet in _subnets(other):
            if ipaddress.ip_network(subnet).overlaps(config.subnet):
                raise LabConfigError(
                    f"subnet {config.subnet} is already used by podman network "
                    f"{other.get('name')}; choose another MAILFLEET_LAB_SUBNET"
                )
    routes = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=False
    )
    if routes.returncode == 0:
        for link in json.loads(routes.stdout or "[]"):
            for addr in link.get("addr_info", []):
                ip = ipaddress.ip_address(addr.get("local", "0.0.0.0"))
                if ip in config.subnet:
                    raise LabConfigError(
                        f"interface {link.get('ifname')} already has {ip} in {config.subnet}; "
                        "choose another MAILFLEET_LAB_SUBNET"
                    )


def create(config: LabConfig) -> bool:
    """Create the network unless it exists (and is safe). True when created now."""
    existing = inspect(config)
    check_safe(config, existing)
    if existing is not None:
        return False
    podman(
        config,
        [
            "network", "create", "--internal", "--disable-dns",
            "--subnet", str(config.subnet), "--gateway", config.gateway,
            "--label", config.label, config.network,
        ],
    )
    return True


def remove(config: LabConfig) -> bool:
    if inspect(config) is None:
        return False
    podman(config, ["network", "rm", "-f", config.network])
    return True


def bridge_has_gateway(config: LabConfig) -> bool:
    """True once the bridge exists in the root namespace with the gateway address."""
    proc = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=False
    )
    for link in json.loads(proc.stdout or "[]"):
        for addr in link.get("addr_info", []):
            if addr.get("local") == config.gateway:
                return True
    return False
