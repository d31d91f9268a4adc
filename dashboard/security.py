"""Where the dashboard may listen, and the headers every response carries.

``check_bind_allowed(listen, auth)`` is what ``mailfleet serve`` calls before it
binds: loopback is always allowed; any other address (``0.0.0.0``, ``::``, a LAN
address, a host name) only with authentication configured, because the pages
name every mail server of the fleet and what is wrong with it.

``init_app`` sets the security headers: a CSP with no inline script or style
(the pages load everything from ``/static``), ``nosniff``, no framing, no
referrer leaving the site, and no caching of fleet data.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Flask only when serving: `mailfleet lab ...` registers these flags too
    from flask import Flask, Response

    from mailfleet.dashboard.auth import AuthConfig

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class BindRefused(ValueError):
    """``serve`` was asked to listen beyond loopback without authentication."""


def _host_of(listen: str | tuple[str, int]) -> str:
    if isinstance(listen, tuple):
        return listen[0]
    host, sep, _port = listen.rpartition(":")
    return (host if sep else listen).strip("[]")


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name may resolve to anything: treat it as public


def check_bind_allowed(listen: str | tuple[str, int], auth: AuthConfig | None) -> None:
    """Raise ``BindRefused`` unless ``listen`` is loopback or authentication is configured."""
    host = _host_of(listen)
    if is_loopback(host):
        return
    if auth is not None and auth.enabled:
        return
    shown = host or "every address"
    raise BindRefused(
        f"refusing to listen on {shown}: the dashboard shows every mail server of the fleet; "
        "configure authentication first (--auth-file FILE with lines from "
        "`mailfleet hash-password USER`, or --trusted-proxy-header HEADER with "
        "--trusted-proxy ADDRESS), or listen on 127.0.0.1"
    )


# -- serve's flags ------------------------------------------------------------------------
def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "authentication (required to --listen beyond loopback)"
    )
    group.add_argument("--auth-file", metavar="FILE",
                       help="USER:HASH lines (make them with `mailfleet hash-password USER`)")
    group.add_argument("--trusted-proxy-header", metavar="HEADER",
                       help="user name header set by an authenticating reverse proxy, "
                       "e.g. X-Remote-User")
    group.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                       help="address or network of that proxy (repeatable); the header is "
                       "ignored from anyone else")


def auth_from_args(args: argparse.Namespace) -> AuthConfig | None:
    from mailfleet.dashboard.auth import auth_config

    return auth_config(
        getattr(args, "auth_file", None),
        getattr(args, "trusted_proxy_header", None),
        getattr(args, "trusted_proxy", None) or (),
    )


def serve_auth(args: argparse.Namespace) -> AuthConfig | None:
    """``serve``'s authentication from its flags, after checking ``--listen`` against it.

    Raises ``ValueError`` (``BindRefused``, ``AuthConfigError``) with a message for the admin.
    """
    auth = auth_from_args(args)
    check_bind_allowed(args.listen, auth)
    return auth


# -- headers -------------------------------------------------------------------------------
def _add_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if response.mimetype in ("text/html", "application/json") and (
        "Cache-Control" not in response.headers
    ):
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.after_request(_add_headers)

