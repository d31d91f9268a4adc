"""The dashboard's pages and JSON API (issue 8), wired by ``init_app(app)``.

Blueprints: ``fleet`` (``/``), ``hosts`` (``/hosts/<name>``), ``api``
(``/api/fleet``, ``/api/hosts/<name>``). ``init_app`` also installs the
authentication check (``dashboard.auth``), the security headers
(``dashboard.security``) and error pages that never show a trace. Everything
is read-only: no route changes a server or the store.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from mailfleet.dashboard import auth, security
from mailfleet.dashboard.web.api import bp as api_bp
from mailfleet.dashboard.web.fleetcache import FleetCache
from mailfleet.dashboard.web.pages import fleet_bp, hosts_bp
from mailfleet.dashboard.web.templating import register_filters


def _error(exc: HTTPException) -> tuple[Response | str, int]:
    code = exc.code or 500
    if request.path.startswith("/api/"):
        return jsonify({"error": exc.name, "detail": exc.description, "status": code}), code
    return render_template("error.html", code=code, name=exc.name,
                           detail=exc.description), code


def _crash(_exc: Exception) -> tuple[Response | str, int]:
    # Flask logs the trace; the browser only learns that something failed.
    if request.path.startswith("/api/"):
        return jsonify({"error": "Internal Server Error", "status": 500}), 500
    return render_template("error.html", code=500, name="Internal Server Error",
                           detail="The dashboard failed to build this page; "
                                  "the server log has the details."), 500


def init_app(app: Flask) -> None:
    auth.init_app(app)
    security.init_app(app)
    register_filters(app)
    app.extensions["mailfleet_fleet_cache"] = FleetCache()
    app.register_blueprint(fleet_bp)
    app.register_blueprint(hosts_bp)
    app.register_blueprint(api_bp)
    for code in (400, 401, 403, 404, 405):
        app.register_error_handler(code, _error)
    app.register_error_handler(Exception, _crash)
    app.register_error_handler(HTTPException, _error)
