"""Who may read the dashboard: HTTP basic auth with hashed passwords, or a trusted proxy.

Two ways, either or both (configured with ``mailfleet serve`` flags, or the
``MAILFLEET_AUTH`` config key holding an ``AuthConfig``):

* ``--auth-file FILE``: one ``user:hash`` per line (``#`` comments), the hash made
  by ``mailfleet hash-password USER`` (werkzeug's ``generate_password_hash``,
  scrypt). A plain-text password in the file is refused at start-up.
* ``--trusted-proxy-header X-Remote-User --trusted-proxy 10.0.0.5``: a reverse
  proxy that authenticates users (SSO, client certificates) passes the user name
  in a header; the header is believed only from the listed proxy addresses.

With no ``AuthConfig`` the dashboard is open, which ``security.check_bind_allowed``
only allows on loopback. ``/healthz`` stays open (liveness checks carry no
credentials and it reveals nothing but counts).
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Flask/werkzeug load when serving, not for `mailfleet hash-password`
    from flask import Flask, Request, Response

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Endpoints nobody has to log in for.
OPEN_ENDPOINTS: frozenset[str] = frozenset({"exporter.healthz", "static"})
# Hash methods werkzeug understands; anything else in an auth file is a mistake.
HASH_PREFIXES: tuple[str, ...] = ("scrypt:", "pbkdf2:")
REALM = "mailfleet"


class AuthConfigError(ValueError):
    """The auth file or the proxy settings cannot be used."""


@dataclass(frozen=True)
class AuthConfig:
    users: Mapping[str, str] = field(default_factory=dict)  # user -> password hash
    proxy_header: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if self.proxy_header and not self.trusted_proxies:
            raise AuthConfigError(
                f"--trusted-proxy-header {self.proxy_header} needs --trusted-proxy ADDRESS: "
                "without it anyone could send the header"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.users) or bool(self.proxy_header)

    def describe(self) -> str:
        parts = []
        if self.users:
            parts.append(f"basic auth ({len(self.users)} user(s))")
        if self.proxy_header:
            proxies = ", ".join(str(n) for n in self.trusted_proxies)
            parts.append(f"{self.proxy_header} from {proxies}")
        return " or ".join(parts) or "none"


def parse_auth_file(text: str, source: str = "auth file") -> dict[str, str]:
    """``user:hash`` lines -> {user: hash}; every bad line reported at once."""
    users: dict[str, str] = {}
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        user, hashed = user.strip(), hashed.strip()
        if not sep or not user or not hashed:
            errors.append(f"{source}:{number}: want USER:HASH")
        elif not hashed.startswith(HASH_PREFIXES):
            # Never echo the line: it may be a plain-text password.
            errors.append(
                f"{source}:{number}: {user}'s entry is not a password hash "
                "(make one with `mailfleet hash-password USER`)"
            )
        elif user in users:
            errors.append(f"{source}:{number}: user {user} listed twice")
        else:
            users[user] = hashed
    if errors:
        raise AuthConfigError("; ".join(errors))
    if not users:
        raise AuthConfigError(f"{source}: no users")
    return users


def load_auth_file(path: str | Path) -> dict[str, str]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AuthConfigError(f"cannot read auth file {path}: {exc.strerror or exc}") from None
    return parse_auth_file(text, str(path))


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    networks = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise AuthConfigError(f"--trusted-proxy {part!r} is not an address") from None
    return tuple(networks)


def auth_config(
    auth_file: str | Path | None = None,
    proxy_header: str | None = None,
    trusted_proxies: Sequence[str] = (),
) -> AuthConfig | None:
    """The configuration from ``serve``'s flags; None when nothing is configured."""
    if not auth_file and not proxy_header:
        if trusted_proxies:
            raise AuthConfigError("--trusted-proxy needs --trusted-proxy-header")
        return None
    users = load_auth_file(auth_file) if auth_file else {}
    return AuthConfig(users, proxy_header or None, parse_networks(trusted_proxies))


class Authenticator:
    """Checks one request; remembers verified credentials (a hash check costs ~50 ms)."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def _from_proxy(self, req: Request) -> str | None:
        if not self.config.proxy_header or not req.remote_addr:
            return None
        try:
            peer = ipaddress.ip_address(req.remote_addr)
        except ValueError:
            return None
        if not any(peer in net for net in self.config.trusted_proxies):
            return None
        user = req.headers.get(self.config.proxy_header, "").strip()
        return user or None

    def _from_basic(self, req: Request) -> str | None:
        auth = req.authorization
        if auth is None or auth.type != "basic" or not auth.username or auth.password is None:
            return None
        hashed = self.config.users.get(auth.username)
        if hashed is None:
            return None
        key = hashlib.sha256(
            "\0".join((auth.username, auth.password, hashed)).encode()
        ).digest()
        with self._lock:
            if key in self._verified:
                return auth.username
        from werkzeug.security import check_password_hash

        if not check_password_hash(hashed, auth.password):
            return None
        with self._lock:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified.add(key)
        return auth.username

    def user(self, req: Request) -> str | None:
        return self._from_proxy(req) or self._from_basic(req)


def unauthorized() -> Response:
    from flask import Response

    response = Response(
        "401 Unauthorized: log in to see the mail fleet.\n", status=401, mimetype="text/plain"
    )
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response


def _require_login() -> Response | None:
    from flask import current_app, g, request

    authenticator: Authenticator | None = current_app.extensions.get("mailfleet_auth")
    if authenticator is None or request.endpoint in OPEN_ENDPOINTS:
        return None
    user = authenticator.user(request)
    if user is None:
        return unauthorized()
    g.mailfleet_user = user
    return None


def init_app(app: Flask) -> None:
    config: AuthConfig | None = app.config.get("MAILFLEET_AUTH")
    if config is None or not config.enabled:
        return
    app.extensions["mailfleet_auth"] = Authenticator(config)
    app.before_request(_require_login)


# -- `mailfleet hash-password` ----------------------------------------------------------
def hash_password(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="scrypt")
