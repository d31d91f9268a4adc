"""The JSON API the pages use (documented in dashboard/web/README.md).

``GET /api/fleet``          every inventory host's row: status, reason, cells
``GET /api/hosts/<name>``   one host: latest results, certificate, DNS, mesh, and
                            chart series (``?history=0`` leaves them out,
                            ``?since=EPOCH`` narrows the window)
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, abort, jsonify, request

from mailfleet.dashboard.monitor import current_monitor
from mailfleet.dashboard.web import views

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/fleet")
def fleet() -> Response:
    return Response(views.fleet_json(current_monitor()), mimetype="application/json")


@bp.get("/hosts/<name>")
def host(name: str) -> Response:
    mon = current_monitor()
    watched = mon.inventory.get(name)
    if watched is None:
        abort(404, description=f"No host {name!r} in the inventory.")
    since_arg = request.args.get("since")
    since: float | None = None
    if since_arg:
        try:
            since = float(since_arg)
        except ValueError:
            abort(400, description="since must be a Unix timestamp")
        if not math.isfinite(since):
            abort(400, description="since must be a Unix timestamp")
    with_history = request.args.get("history", "1") not in ("0", "false", "no")
    return jsonify(views.host(mon, watched, with_history=with_history, since=since))
