"""HTML pages: the fleet (``/``) and one host (``/hosts/<name>``).

Rendered once on the server (usable without JavaScript); the page's script then
keeps it current from the JSON API without reloading.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from mailfleet.dashboard.monitor import current_monitor
from mailfleet.dashboard.web import model, views

fleet_bp = Blueprint("fleet", __name__)
hosts_bp = Blueprint("hosts", __name__)


@fleet_bp.get("/")
def fleet() -> str:
    meta, entries = views.fleet_entries(current_monitor())
    return render_template("fleet.html", data=meta, rows=[e.html for e in entries],
                           statuses=model.STATUSES)


@hosts_bp.get("/hosts/<name>")
def host(name: str) -> str:
    mon = current_monitor()
    watched = mon.inventory.get(name)
    if watched is None:
        abort(404, description=f"No host {name!r} in the inventory.")
    data = views.host(mon, watched, with_history=False)
    return render_template("host.html", data=data, columns=model.COLUMNS)
