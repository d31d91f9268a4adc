"""The ``server`` check: the inside view of a mail host over SSH (see checks/SERVER.md)."""

from mailfleet.checks.server.config import (
    ServerConfigError,
    ServerSettings,
    ServerTarget,
    settings_from_hostvars,
    with_server_settings,
)
from mailfleet.checks.server.probe import CHECK, ServerValues, commands, probe, probe_with

__all__ = [
    "CHECK",
    "ServerConfigError",
    "ServerSettings",
    "ServerTarget",
    "ServerValues",
    "commands",
    "probe",
    "probe_with",
    "settings_from_hostvars",
    "with_server_settings",
]
