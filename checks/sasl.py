"""SASL client responses for PLAIN, XOAUTH2 and OAUTHBEARER (and LOGIN's two steps).

Pure functions; the callers decide how to frame them (IMAP AUTHENTICATE,
SMTP AUTH). The returned bytes contain secrets: callers must never log them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable

MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")
TOKEN_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain(user: str, password: str) -> bytes:
    return b64(b"\0" + user.encode() + b"\0" + password.encode())


def xoauth2(user: str, token: str) -> bytes:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


def oauthbearer(user: str, token: str, host: str, port: int) -> bytes:
    # RFC 7628: gs2 header with the authzid, then key=value pairs separated by ^A.
    safe_user = user.replace("=", "=3D").replace(",", "=2C")
    fields = f"host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return b64(f"n,a={safe_user},\x01{fields}".encode())


def initial_response(mechanism: str, user: str, secret: str, host: str, port: int) -> bytes | None:
    """The client's first message for ``mechanism``; None for LOGIN (two prompted steps).

    Raises ValueError for a mechanism outside ``MECHANISMS``.
    """
    if mechanism == "PLAIN":
        return plain(user, secret)
    if mechanism == "XOAUTH2":
        return xoauth2(user, secret)
    if mechanism == "OAUTHBEARER":
        return oauthbearer(user, secret, host, port)
    if mechanism == "LOGIN":
        return None
    raise ValueError(f"unknown mechanism {mechanism!r}")


def login_steps(user: str, password: str) -> list[bytes]:
    """LOGIN's answers to the server's two prompts (user name, then password)."""
    return [b64(user.encode()), b64(password.encode())]


def redact(text: str, secrets: Iterable[str]) -> str:
    """Server text with any echo of a secret replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


# After a failed XOAUTH2/OAUTHBEARER the server sends a JSON challenge; the
# client answers with this to get the final (tagged / 5xx) failure.
FAILURE_ACK = {"XOAUTH2": b"", "OAUTHBEARER": b64(b"\x01")}


def describe_oauth_challenge(payload: str) -> str:
    """The server's JSON error (``{"status":"invalid_token",...}``) in a few words; never raises."""
    try:
        decoded = base64.b64decode(payload.strip(), validate=True)
        data = json.loads(decoded.decode("utf-8", "replace"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    status = data.get("status")
    return f"status {status}" if isinstance(status, str | int) else ""
