"""What the server probe needs to know about a host, from its inventory variables.

SSH comes from the variables Ansible itself uses (``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file``) plus ``mailfleet_known_hosts``;
the rest from one optional mapping, ``mailfleet_server``, whose keys are the fields of
``ServerSettings`` below (its defaults match the dovecot/postfix/mail_tls roles)::

    mailfleet_server:
      ssh_user: mailfleet            # the least-privilege user (roles/mailfleet_probe_access)
      ssh_key_file: ~/.ssh/mailfleet_probe
      mail_store: /var/vmail
      queue_directory: /var/spool/postfix
      cert_file: /etc/ssl/mailfleet/fullchain.pem
      cert_services: [imaps, smtp]
"""

from __future__ import annotations

import dataclasses
import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailfleet.checks.server.ssh import SshAccess
from mailfleet.checks.target import Target

CERT_SERVICES = ("imaps", "imap", "smtp", "submission", "submissions")


class ServerConfigError(ValueError):
    """The inventory's settings for the server check are unusable; says which and why."""


@dataclass(frozen=True)
class ServerSettings:
    ssh: SshAccess
    # Paths whose file system's free space and inodes are reported (metric label `path`).
    mail_store: str = "/var/vmail"
    queue_directory: str = "/var/spool/postfix"
    # The certificate file the daemons are configured with; compared with what they serve.
    cert_file: str = "/etc/ssl/mailfleet/fullchain.pem"
    # Which served certificates to compare with it (TLS handshake from the controller).
    cert_services: tuple[str, ...] = ("imaps",)
    # The served leaf's SHA-256 from a fresh `tls` probe: saves the handshake (imaps only).
    served_cert_sha256: str | None = None
    # Judgement (alerts live in Prometheus; these set the probe's own status).
    deferred_warning: int = 100
    oldest_warning_seconds: float = 4 * 3600
    free_ratio_warning: float = 0.10
    free_ratio_critical: float = 0.05

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.mail_store, self.queue_directory)))


_FIELDS = {f.name for f in dataclasses.fields(ServerSettings)} - {"ssh"}
_SSH_KEYS = {"ssh_user", "ssh_key_file", "ssh_port"}


def _check_path(name: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or re.search(r"[\x00-\x1f]", value):
        raise ServerConfigError(f"{name}: mailfleet_server.{key} must be an absolute path "
                                f"without control characters, not {value!r}")
    return value


def settings_from_hostvars(name: str, hostvars: Mapping[str, Any]) -> ServerSettings:
    """Every problem is reported at once."""
    raw = hostvars.get("mailfleet_server") or {}
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        raise ServerConfigError(f"{name}: mailfleet_server must be a mapping")
    unknown = sorted(set(raw) - _FIELDS - _SSH_KEYS)
    if unknown:
        errors.append(f"unknown mailfleet_server keys {', '.join(unknown)} "
                      f"(known: {', '.join(sorted(_FIELDS | _SSH_KEYS))})")
    user = raw.get("ssh_user") or hostvars.get("ansible_user") or getpass.getuser()
    key = raw.get("ssh_key_file") or hostvars.get("ansible_ssh_private_key_file")
    known = hostvars.get("mailfleet_known_hosts") or str(Path.home() / ".ssh" / "known_hosts")
    try:
        port = int(raw.get("ssh_port") or hostvars.get("ansible_port") or 22)
    except (TypeError, ValueError):
        errors.append("ansible_port must be a port number")
        port = 22
    values: dict[str, Any] = {}
    for field_name in ("mail_store", "queue_directory", "cert_file"):
        if field_name in raw:
            try:
                values[field_name] = _check_path(name, field_name, raw[field_name])
            except ServerConfigError as exc:
                errors.append(str(exc).removeprefix(f"{name}: "))
    if "cert_services" in raw:
        services = raw["cert_services"]
        if isinstance(services, str) or not isinstance(services, list | tuple) or any(
            s not in CERT_SERVICES for s in services
        ):
            errors.append(f"mailfleet_server.cert_services must be a list of "
                          f"{', '.join(CERT_SERVICES)}")
        else:
            values["cert_services"] = tuple(services)
    fp = raw.get("served_cert_sha256")
    if fp:
        clean = str(fp).replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", clean):
            errors.append("mailfleet_server.served_cert_sha256 must be a SHA-256 in hex")
        values["served_cert_sha256"] = clean
    for numeric in ("deferred_warning", "oldest_warning_seconds", "free_ratio_warning",
                    "free_ratio_critical"):
        if numeric in raw:
            try:
                values[numeric] = type(getattr(ServerSettings, numeric))(raw[numeric])
            except (TypeError, ValueError):
                errors.append(f"mailfleet_server.{numeric} must be a number")
    if errors:
        raise ServerConfigError(f"{name}: " + "; ".join(errors))
    ssh = SshAccess(
        address=str(hostvars.get("ansible_host") or name),
        user=str(user),
        known_hosts=Path(str(known)).expanduser(),
        port=port,
        key_file=Path(str(key)).expanduser() if key else None,
    )
    return ServerSettings(ssh=ssh, **values)


@dataclass(frozen=True)
class ServerTarget(Target):
    """A ``Target`` that also knows how to log in for the server check."""

    server: ServerSettings | None = field(default=None, repr=False, compare=False)


def with_server_settings(target: Target, hostvars: Mapping[str, Any]) -> ServerTarget:
    """``target`` plus its server settings (raises ServerConfigError, every problem at once).

    The one line an inventory reader needs for the ``server`` check::

        target = with_server_settings(target, hostvars)
    """
    base = {f.name: getattr(target, f.name) for f in dataclasses.fields(Target)}
    hostvars = {"ansible_host": target.address, **hostvars}
    return ServerTarget(**base, server=settings_from_hostvars(target.name, hostvars))
