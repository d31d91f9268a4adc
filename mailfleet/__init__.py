"""mailfleet: deploy a Postfix + Dovecot mail fleet with Ansible, watch it from one inventory.

Every installed module lives under this namespace. ``mailfleet.checks`` (the probe
library) and ``mailfleet.dashboard`` (scheduler, store, exporter, pages) are the
repository's top-level ``checks/`` and ``dashboard/`` folders, linked here so that
an editable install, mypy and the wheel all see one package tree;
``mailfleet.lab`` (the lab fleet, ``lab/``) is a development tool that runs from a
checkout and is not part of the wheel.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("mailfleet")
except metadata.PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0+unknown"
