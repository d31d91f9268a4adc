"""A small, real OAuth2 token introspection endpoint (RFC 7662) for the lab tests.

Built with Authlib's ``IntrospectionEndpoint`` on Flask, served over HTTPS by
werkzeug in a thread: Dovecot's oauth2 passdb (``introspection_mode = post``)
authenticates as a client with HTTP basic auth and POSTs ``token=...``.
Tokens are opaque random strings issued by :meth:`IntrospectionServer.issue`;
the endpoint answers ``active`` with the user's ``email`` claim, or
``{"active": false}`` for an unknown, expired or revoked token.

It binds on the lab gateway's address (the only one lab hosts can reach) on a
high port, and stops when the context manager exits.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin  # type: ignore[import-untyped]
from authlib.oauth2.rfc7662 import IntrospectionEndpoint  # type: ignore[import-untyped]
from flask import Flask, Response
from werkzeug.serving import BaseWSGIServer, make_server


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" and endpoint == "introspection"


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    access_token: str
    user: str
    client_id: str  # the application the token was issued to
    audience: str  # the service it is for
    scope: str
    expires_at: float
    revoked: bool = False


    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked


@dataclass
class Store:
    clients: dict[str, Client] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    requests: int = 0


class _Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]
    store: Store
    issuer: str

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        self.store.requests += 1
        return self.store.tokens.get(token_string)

    def check_permission(self, token: Token, client: Client, request: Any) -> bool:
        return True  # the mail servers may introspect every token of their audience

    def introspect_token(self, token: Token) -> dict[str, Any]:
        return {
            "active": True,
            "client_id": token.client_id,
            "token_type": "Bearer",
            "scope": token.scope,
            "sub": token.user,
            "email": token.user,
            "username": token.user,
            "aud": token.audience,
            "iss": self.issuer,
            "exp": int(token.expires_at),
        }


def make_app(store: Store, issuer: str) -> Flask:
    app = Flask("mailfleet-introspection")
    server = AuthorizationServer(
        app, query_client=store.clients.get, save_token=lambda *_: None
    )
    endpoint = type("Introspection", (_Introspection,), {"store": store, "issuer": issuer})
    server.register_endpoint(endpoint)

    @app.post("/introspect")
    def introspect() -> Response:
        response: Response = server.create_endpoint_response("introspection")
        return response

    return app


class IntrospectionServer:
    """The endpoint, with the clients (mail servers) and tokens the test gives it."""

    def __init__(self, store: Store, server: BaseWSGIServer, url: str) -> None:
        self.store = store
        self._server = server
        self.url = url  # without credentials

    def url_for(self, client: Client) -> str:
        """The introspection URL with the client's credentials in it (Dovecot's way)."""
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{client.client_id}:{client.client_secret}@{rest}"

    def add_client(self, client_id: str) -> Client:
        client = Client(client_id, secrets.token_urlsafe(24))
        self.store.clients[client_id] = client
        return client

    def issue(self, user: str, *, audience: str = "mail", lifetime: float = 300,
              scope: str = "openid mail", app: str = "webmail") -> str:
        """An opaque access token for ``user``, issued to the application ``app``."""
        token = secrets.token_urlsafe(48)
        self.store.tokens[token] = Token(token, user, app, audience, scope,
                                         time.time() + lifetime)
        return token

    def revoke(self, token: str) -> None:
        self.store.tokens[token].revoked = True


@contextmanager
def serve_introspection(
    address: str, port: int, cert: Path, key: Path, issuer: str = "https://idp.lab.test"
) -> Iterator[IntrospectionServer]:
    """Serve HTTPS on address:port (0: any free port) until the block ends."""
    store = Store()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    server = make_server(address, port, make_app(store, issuer), threaded=True, ssl_context=ctx)
    thread = threading.Thread(target=server.serve_forever, name="introspection", daemon=True)
    thread.start()
    try:
        yield IntrospectionServer(
            store, server, f"https://{address}:{server.server_port}/introspect")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
