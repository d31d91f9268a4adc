"""SASL client responses for PLAIN, XOAUTH2 and OAUTHBEARER (and LOGIN's two steps).

Pure functions; the callers decide how to frame them (IMAP AUTHENTICATE,
SMTP AUTH). The returned bytes contain secrets: callers must never log them.
"""

from __future__ import annotations

import base64
import binascii
import json

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
