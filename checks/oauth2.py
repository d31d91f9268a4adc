"""OAuth2 access tokens for probes and tests: mint, inspect, never log.

A monitoring probe that logs in with XOAUTH2/OAUTHBEARER needs a valid token
for its probe account. Two ways, both from the inventory:

* ``mailfleet_probe_token_file``: a file an external process keeps fresh (read
  at probe time by ``checks.target.Credentials``);
* a signing key the server trusts (vault it): ``mint_access_token`` makes a
  short-lived JWT for the probe account at each run, so nothing expires
  unnoticed between runs.

The tokens are what Dovecot 2.3's oauth2 passdb validates locally
(``introspection_mode = local``); verified against Debian's 2.3.19.1: ``kid``
selects the key, ``iss`` must be in ``issuers``, ``aud`` must contain
``client_id`` (2.3 checks aud only when client_id is set), ``scope`` must
contain the configured scope, ``exp``/``nbf`` are enforced, and ``sub`` is
required even when the user name comes from another claim (``email``).
``typ: JWT`` is not required by 2.3.19.1 but is always set (other validators
want it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# Asymmetric algorithms Dovecot 2.3 validates locally and we allow (no EdDSA in 2.3).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class TokenError(ValueError):
    """A token cannot be made from these inputs; the message says which one is wrong."""


def mint_access_token(
    *,
    private_key_pem: bytes,
    algorithm: str,
    user: str,
    issuer: str,
    audience: str | Sequence[str],
    user_claim: str = "sub",
    subject: str | None = None,
    lifetime: float = 300.0,
    kid: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A signed JWT access token for ``user``, valid from ``now`` for ``lifetime`` seconds.

    ``user`` goes into ``user_claim`` (Dovecot's ``username_attribute``);
    ``sub`` is ``subject`` or, by default, the user too.
    """
    algorithm = algorithm.upper()
    if algorithm not in ALGORITHMS:
        raise TokenError(
            f"algorithm {algorithm!r} is not one Dovecot 2.3 validates with a public key; "
            f"use one of {', '.join(ALGORITHMS)}"
        )
    if lifetime <= 0:
        raise TokenError(f"token lifetime must be positive, not {lifetime}")
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TokenError(f"signing key is not an unencrypted PEM private key ({exc})") from None
    wanted = ec.EllipticCurvePrivateKey if algorithm.startswith("ES") else rsa.RSAPrivateKey
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) or not isinstance(
        key, wanted
    ):
        raise TokenError(f"a {type(key).__name__} cannot sign {algorithm} tokens")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience if isinstance(audience, str) else list(audience),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime),
        "sub": subject or user,  # Dovecot 2.3 refuses tokens without sub
        user_claim: user,
    }
    claims.update(extra_claims or {})
    headers: dict[str, Any] = {"typ": "JWT"}
    if kid:
        headers["kid"] = kid
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def public_key_pem(private_key_pem: bytes) -> bytes:
    """The PEM public key to install on the servers for a signing key."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TokenError(f"{type(key).__name__} keys are not supported")
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def describe_token(token: str) -> dict[str, Any]:
    """What a token says about itself, without the signature or the token: safe to show."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenError(f"not a JWT: {exc}") from None
    keep = ("iss", "aud", "exp", "iat", "nbf", "sub", "email", "azp", "scope")
    return {
        "alg": header.get("alg"),
        "kid": header.get("kid"),
        **{k: claims[k] for k in keep if k in claims},
        "length": len(token),
    }
