"""The Ansible inventory ``lab up`` writes: the lab's hosts, reached over SSH."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mailfleet.lab.config import DEFAULT_NAME, LabConfig
from mailfleet.lab.dns import DNSBL_ZONE, UPDATE_ALGORITHM, UPDATE_KEY
from mailfleet.lab.hosts import LabHost

HEADER = (
    "# Written by `mailfleet lab up` for the lab {name!r}; `mailfleet lab down` removes it.\n"
    "# Do not edit: the next `lab up` rewrites it. Shared lab variables live in\n"
    "# inventory/lab/group_vars/.\n"
)


def inventory_data(
    config: LabConfig, hosts: list[LabHost], dns_update_secret: str | None = None
) -> dict[str, Any]:
    ssh_args = (
        f"-o UserKnownHostsFile={config.known_hosts} -o StrictHostKeyChecking=yes "
        "-o ControlMaster=auto -o ControlPersist=60s -o ConnectTimeout=10"
        # A connection whose peer went away (a host stopped, a partition) ends in a
        # minute instead of TCP's quarter hour, failing its task by name.
        " -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
    )
    data: dict[str, Any] = {
        "all": {
            "children": {
                "mailservers": {
                    "hosts": {
                        h.name: {
                            "ansible_host": h.address,
                            "mail_hostname": h.fqdn,
                            "mail_domains": [h.mail_domain],
                            # literal, not a template: the watcher reads the
                            # inventory with ansible-inventory, which renders none
                            "mailfleet_probe_user": f"probe@{h.mail_domain}",
                            # what `lab up --release` made it (the roles read the host)
                            "mailfleet_lab_release": h.release,
                        }
                        for h in hosts
                    }
                }
            },
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(config.ssh_key),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
                "mailfleet_lab_name": config.name,
                "mailfleet_lab_gateway": config.gateway,
                "mailfleet_lab_dns_server": config.gateway,
                "mailfleet_lab_apt_proxy": f"http://{config.gateway}:{config.apt_proxy_port}",
                "mailfleet_lab_state_dir": str(config.state_dir),
                "mailfleet_known_hosts": str(config.known_hosts),
                # the lab CA mail_tls creates (lab_ca source): what probes trust
                "mailfleet_ca_bundle": str(config.state_dir / "ca" / "ca.crt"),
                # lab names (lab.test, exampleN.test) exist only in the lab's DNS:
                # the dns probe must never ask a resolver outside the lab for them
                # and the dns check looks every host up on the lab's block list
                "mailfleet_probe_options": {"dns_resolvers": [config.gateway],
                                            "dns_blocklists": [DNSBL_ZONE]},
            },
        }
    }
    if dns_update_secret is not None:
        # the lab's knot takes the DKIM records by TSIG-signed update (roles/rspamd)
        data["all"]["vars"]["rspamd_dkim_dns_update"] = {
            "server": config.gateway,
            "port": config.dns_port,
            "key_name": UPDATE_KEY,
            "key_algorithm": UPDATE_ALGORITHM,
            "key_secret": dns_update_secret,
            "ttl": 300,
        }
    return data


def write_inventory(
    config: LabConfig, hosts: list[LabHost], dns_update_secret: str | None = None
) -> Path:
    """Write hosts.yml atomically; a non-default lab links the shared group_vars in."""
    path = config.inventory_path
    path.parent.mkdir(parents=True, exist_ok=True)
    body = HEADER.format(name=config.name) + yaml.safe_dump(
        inventory_data(config, hosts, dns_update_secret), sort_keys=False, default_flow_style=False
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body)
    os.replace(tmp, path)
    if config.name != DEFAULT_NAME:
        shared = config.root / "inventory" / "lab" / "group_vars"
        link = path.parent / "group_vars"
        if shared.is_dir() and not link.exists():
            link.symlink_to(shared)
    return path


def remove_inventory(config: LabConfig) -> None:
    config.inventory_path.unlink(missing_ok=True)
    if config.name != DEFAULT_NAME:
        link = config.inventory_dir / "group_vars"
        if link.is_symlink():
            link.unlink()
