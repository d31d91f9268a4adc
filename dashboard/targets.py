"""Probe targets from the Ansible inventory, read through Ansible's own machinery.

``ansible-inventory --list`` does the reading, so every inventory Ansible
understands works: YAML/INI files, directories with ``group_vars``/``host_vars``,
whole-file vault encryption, dynamic inventory scripts and plugins. Inline
``!vault`` values come back still encrypted (``{"__ansible_vault": ...}``);
they are decrypted here with Ansible's ``VaultLib`` and the same password file.

Inventory variables a watched host may set (all optional):

``ansible_host``                 where to connect (default: the inventory name)
``mail_hostname``                name the server presents: SNI, certificate, HELO, PTR
``mail_domains``                 mail domains it is the MX of (``dns`` check)
``mailfleet_watch``              false: not watched at all
``mailfleet_checks``             list of check names (default: see ``default_checks``)
``mailfleet_probe_user``         probe account for ``imap_login``/``quota``/``sync``
``mailfleet_probe_password``     its password (vault it)
``mailfleet_probe_token``        an OAuth2 token (vault it) ...
``mailfleet_probe_token_file``   ... or a file holding one, read at probe time
``mailfleet_ports``              service -> port overrides, e.g. ``{imaps: 10993}``
``mailfleet_ca_bundle``          CA bundle the certificate chain is verified against
``mailfleet_probe_options``      overrides of ``checks.target.ProbeOptions`` fields
``mailfleet_server``             settings of the ``server`` check (checks/server/config.py)
``rspamd_dkim_selector``         (roles/rspamd) the ``dns`` check looks at this selector's
``rspamd_dkim_retired_selectors`` record, and the retired ones', unless the probe options
                                 name ``dns_dkim_selectors`` themselves
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailfleet.checks import DEFAULT_CHECKS, server
from mailfleet.checks.target import Credentials, ProbeOptions, Secret, Target

# Checks every host gets unless it lists its own; those that log in need a probe account.
ANONYMOUS_CHECKS: tuple[str, ...] = DEFAULT_CHECKS
ACCOUNT_CHECKS: tuple[str, ...] = ("imap_login", "quota")
DEFAULT_GROUP = "mailservers"
VAULT_KEY = "__ansible_vault"


class InventoryError(RuntimeError):
    """The inventory cannot be read or describes a host that cannot be probed."""


@dataclass(frozen=True)
class WatchedHost:
    """One inventory host as the scheduler, ``/probe`` and ``/sd`` see it."""

    name: str
    target: Target
    options: ProbeOptions
    groups: tuple[str, ...]

    @property
    def checks(self) -> tuple[str, ...]:
        return self.target.checks

    def to_dict(self) -> dict[str, Any]:
        """Secret-free, JSON-ready."""
        return {**self.target.to_dict(), "groups": list(self.groups)}


def default_checks(has_account: bool) -> tuple[str, ...]:
    return ANONYMOUS_CHECKS + (ACCOUNT_CHECKS if has_account else ())


def _ansible_inventory_binary() -> str:
    beside = Path(sys.executable).parent / "ansible-inventory"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-inventory")
    if found is None:
        raise InventoryError("ansible-inventory not found (is Ansible installed?)")
    return found


def _vault_password_file(explicit: str | Path | None) -> str | None:
    if explicit:
        return str(explicit)
    # The same fallback ansible-inventory itself uses.
    return os.environ.get("ANSIBLE_VAULT_PASSWORD_FILE") or None


def run_ansible_inventory(
    sources: Sequence[str | Path],
    vault_password_file: str | Path | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """The JSON of ``ansible-inventory -i SRC... --list``."""
    argv = [_ansible_inventory_binary()]
    for source in sources:
        argv += ["-i", str(source)]
    vault_file = _vault_password_file(vault_password_file)
    if vault_file:
        argv += ["--vault-password-file", vault_file]
    argv.append("--list")
    env = {**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true", "ANSIBLE_NOCOLOR": "1"}
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise InventoryError(f"ansible-inventory took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()
        raise InventoryError(
            "ansible-inventory failed: " + (" / ".join(detail[-3:]) or f"exit {proc.returncode}")
        )
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"ansible-inventory printed invalid JSON: {exc}") from None
    return data


class _VaultDecrypter:
    """Decrypts inline vault values with Ansible's VaultLib (loaded lazily)."""

    def __init__(self, password_file: str | None) -> None:
        self._password_file = password_file
        self._vault: Any = None

    def decrypt(self, ciphertext: str, where: str) -> str:
        if self._vault is None:
            if not self._password_file:
                raise InventoryError(
                    f"{where} is vault-encrypted: give a vault password file "
                    "(--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE)"
                )
            from ansible.parsing.dataloader import DataLoader
            from ansible.parsing.vault import VaultLib, get_file_vault_secret

            secret = get_file_vault_secret(filename=self._password_file, loader=DataLoader())
            secret.load()
            self._vault = VaultLib([("default", secret)])
        try:
            plain: bytes = self._vault.decrypt(ciphertext)
        except Exception as exc:
            raise InventoryError(f"cannot decrypt {where}: {exc}") from None
        return plain.decode()

    def walk(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            if set(value) == {VAULT_KEY}:
                return self.decrypt(str(value[VAULT_KEY]), where)
            return {k: self.walk(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value


def host_groups(data: Mapping[str, Any]) -> dict[str, set[str]]:
    """Every group a host belongs to, directly or through child groups (not ``all``)."""
    direct: dict[str, set[str]] = {}
    children: dict[str, list[str]] = {}
    for group, body in data.items():
        if group == "_meta" or not isinstance(body, dict):
            continue
        for host in body.get("hosts", []):
            direct.setdefault(host, set()).add(group)
        children[group] = list(body.get("children", []))
    parents: dict[str, set[str]] = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, set()).add(parent)

    def ancestors(group: str, seen: set[str]) -> set[str]:
        for parent in parents.get(group, set()):
            if parent not in seen:
                seen.add(parent)
                ancestors(parent, seen)
        return seen

    result: dict[str, set[str]] = {}
    for host, groups in direct.items():
        everything = set(groups)
        for group in groups:
            everything |= ancestors(group, set())
        everything.discard("all")
        result[host] = everything
    return result


_OPTION_FIELDS = {f.name: f for f in dataclasses.fields(ProbeOptions)}


def _probe_options(name: str, raw: Any, default_timeout: float | None) -> ProbeOptions:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InventoryError(f"{name}: mailfleet_probe_options must be a mapping")
    unknown = sorted(set(raw) - set(_OPTION_FIELDS))
    if unknown:
        raise InventoryError(
            f"{name}: unknown mailfleet_probe_options {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_OPTION_FIELDS))})"
        )
    settings: dict[str, Any] = {}
    if default_timeout is not None:
        settings["timeout"] = default_timeout
    for key, value in raw.items():
        settings[key] = _option_value(f"{name}: mailfleet_probe_options.{key}", key, value)
    return ProbeOptions(**settings)


def _with_dkim_selectors(hostvars: Mapping[str, Any], raw: Any) -> Any:
    """The probe options, with the DKIM selectors of roles/rspamd when they name none."""
    if not isinstance(raw, dict | None) or "rspamd_dkim_selector" not in hostvars:
        return raw
    raw = dict(raw or {})
    if "dns_dkim_selectors" not in raw:
        raw["dns_dkim_selectors"] = [hostvars["rspamd_dkim_selector"]]
        raw.setdefault("dns_dkim_retired_selectors",
                       hostvars.get("rspamd_dkim_retired_selectors") or [])
    return raw


# Bounds of numeric probe options: a wrong type or an absurd value of one host
# must be an inventory error, not a sweep that crashes for the whole fleet.
_OPTION_LIMITS: dict[str, tuple[float, float]] = {
    "timeout": (0.1, 3600.0), "dns_attempts": (1, 10),
    **dict.fromkeys(("quota_warning_percent", "quota_critical_percent",
                     "tls_warning_lifetime_percent", "tls_critical_lifetime_percent"),
                    (0.0, 100.0)),
}


def _option_value(where: str, key: str, value: Any) -> Any:
    """``value`` checked against the type of the ProbeOptions field ``key``."""
    default = _OPTION_FIELDS[key].default
    if key == "ca_bundle":
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise InventoryError(f"{where} must be a file path")
        return Path(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InventoryError(f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(default, int | float):
        low, high = _OPTION_LIMITS.get(key, (0.0, 1e9))
        wanted = int if isinstance(default, int) else (int, float)
        if (isinstance(value, bool) or not isinstance(value, wanted)
                or not math.isfinite(value) or not low <= value <= high):
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise InventoryError(f"{where} must be {kind} from {low:g} to {high:g}, not {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InventoryError(f"{where} must be a string, not {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise InventoryError(f"{where} must be a list of strings, not {value!r}")
        return tuple(value)
    return value


def _credentials(hostvars: Mapping[str, Any]) -> Credentials | None:
    user = hostvars.get("mailfleet_probe_user")
    if not user:
        return None
    password = hostvars.get("mailfleet_probe_password")
    token = hostvars.get("mailfleet_probe_token")
    token_file = hostvars.get("mailfleet_probe_token_file")
    return Credentials(
        user=str(user),
        password=Secret(str(password)) if password else None,
        token=Secret(str(token)) if token else None,
        token_file=Path(token_file) if token_file else None,
    )


def watched_host(
    name: str,
    hostvars: Mapping[str, Any],
    groups: Sequence[str],
    default_timeout: float | None = None,
) -> WatchedHost:
    """Build one host's target from its (decrypted) variables."""
    credentials = _credentials(hostvars)
    checks = hostvars.get("mailfleet_checks")
    if checks is None:
        checks = default_checks(credentials is not None)
    if isinstance(checks, str) or not isinstance(checks, list | tuple):
        raise InventoryError(f"{name}: mailfleet_checks must be a list of check names")
    domains = hostvars.get("mail_domains") or []
    if isinstance(domains, str):
        domains = [domains]
    ports = hostvars.get("mailfleet_ports") or {}
    if not isinstance(ports, dict):
        raise InventoryError(f"{name}: mailfleet_ports must be a mapping of service to port")
    try:
        ports = {str(k): int(v) for k, v in ports.items()}
    except (TypeError, ValueError):
        raise InventoryError(f"{name}: mailfleet_ports values must be port numbers") from None
    if not all(1 <= p <= 65535 for p in ports.values()):
        raise InventoryError(f"{name}: mailfleet_ports values must be from 1 to 65535")
    ca_bundle = hostvars.get("mailfleet_ca_bundle")
    target = Target(
        name=name,
        address=str(hostvars.get("ansible_host") or name),
        mail_hostname=str(hostvars.get("mail_hostname") or ""),
        domains=tuple(str(d) for d in domains),
        ports=ports,
        ca_bundle=Path(ca_bundle) if ca_bundle else None,
        credentials=credentials,
        checks=tuple(str(c) for c in checks),
    )
    if "server" in target.checks:
        try:
            target = server.with_server_settings(target, hostvars)
        except server.ServerConfigError as exc:
            raise InventoryError(str(exc)) from None
    raw_options = _with_dkim_selectors(hostvars, hostvars.get("mailfleet_probe_options"))
    options = _probe_options(name, raw_options, default_timeout)
    return WatchedHost(name=name, target=target, options=options, groups=tuple(sorted(groups)))


def watched_hosts(
    data: Mapping[str, Any],
    group: str | None = DEFAULT_GROUP,
    vault_password_file: str | Path | None = None,
    default_timeout: float | None = None,
) -> list[WatchedHost]:
    """Hosts of ``group`` (every host when None) from ``ansible-inventory --list`` JSON.

    Every problem of every host is collected and raised at once, so an operator
    fixes the inventory in one go.
    """
    all_hostvars: Mapping[str, Any] = data.get("_meta", {}).get("hostvars", {})
    membership = host_groups(data)
    names = set(all_hostvars) | set(membership)
    decrypter = _VaultDecrypter(_vault_password_file(vault_password_file))
    hosts: list[WatchedHost] = []
    errors: list[str] = []
    for name in sorted(names):
        groups = membership.get(name, set())
        if group is not None and group not in groups:
            continue
        try:
            hostvars = decrypter.walk(dict(all_hostvars.get(name, {})), name)
            if hostvars.get("mailfleet_watch", True) in (False, "false", "no"):
                continue
            hosts.append(watched_host(name, hostvars, sorted(groups), default_timeout))
        except (InventoryError, TypeError, ValueError) as exc:
            errors.append(str(exc))
    if errors:
        raise InventoryError("; ".join(errors))
    return hosts


def load_inventory(
    sources: Sequence[str | Path],
    group: str | None = DEFAULT_GROUP,
    vault_password_file: str | Path | None = None,
    default_timeout: float | None = None,
) -> list[WatchedHost]:
    """Read the inventory with Ansible and return the watched hosts, sorted by name."""
    data = run_ansible_inventory(sources, vault_password_file)
    return watched_hosts(data, group, vault_password_file, default_timeout)
