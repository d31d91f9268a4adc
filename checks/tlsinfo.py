"""Pure TLS helpers: certificate facts, hostname matching, chain extraction, dates in words."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertInfo:
    """What an admin wants to know about one certificate (no volatile labels: values only)."""

    subject: str
    issuer: str
    common_name: str
    sans: tuple[str, ...]
    not_before: float  # Unix seconds
    not_after: float
    serial: str
    sha256: str
    der: bytes

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "serial": self.serial,
            "sha256": self.sha256,
        }

    def spki_der(self) -> bytes:
        cert = x509.load_der_x509_certificate(self.der)
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


# A fleet serves the same few certificates sweep after sweep: parse each once
# (pure and immutable; ~60 us and 4 parses per tls probe otherwise; bench/README.md).
@functools.lru_cache(maxsize=1024)
def cert_info(der: bytes) -> CertInfo:
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += [str(n) for n in ext.get_values_for_type(x509.DNSName)]
        sans += [str(a) for a in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=common_name,
        sans=tuple(sans),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        serial=format(cert.serial_number, "x"),
        sha256=hashlib.sha256(der).hexdigest(),
        der=der,
    )


def _label_match(pattern: str, host: str) -> bool:
    # RFC 6125 6.4.3: a wildcard only as the whole left-most label, never across dots.
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels) or (len(p_labels) < 3 and p_labels[0] == "*"):
        return False
    if p_labels[0] == "*":
        return p_labels[1:] == h_labels[1:] and h_labels[0] != ""
    return p_labels == h_labels


def hostname_matches(hostname: str, info: CertInfo) -> bool:
    """Does the certificate name this host? SANs only; the CN counts only without SANs."""
    host = hostname.rstrip(".").lower()
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    names = info.sans or ((info.common_name,) if info.common_name else ())
    for name in names:
        name = name.lower().rstrip(".")
        if ip is not None:
            try:
                if ipaddress.ip_address(name) == ip:
                    return True
            except ValueError:
                continue
        elif _label_match(name, host):
            return True
    return False


def _chain(tls: ssl.SSLSocket, which: str) -> list[bytes]:
    """DER certificates of the peer: ``unverified`` (as sent) or ``verified`` (path built).

    Python 3.13 has the public methods; 3.11/3.12 have them on the private
    ``_sslobj``. Without either, only the leaf is known.
    """
    method = getattr(tls, f"get_{which}_chain", None)
    if method is None:
        method = getattr(getattr(tls, "_sslobj", None), f"get_{which}_chain", None)
    if method is not None:
        certs = method() or []
        out: list[bytes] = []
        for c in certs:
            out.append(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        return out
    if which == "unverified":
        leaf = tls.getpeercert(binary_form=True)
        return [leaf] if leaf else []
    return []


def served_chain(tls: ssl.SSLSocket) -> list[CertInfo]:
    return [cert_info(d) for d in _chain(tls, "unverified")]


def verified_chain(tls: ssl.SSLSocket) -> list[CertInfo]:
    return [cert_info(d) for d in _chain(tls, "verified")]


def session_values(tls: ssl.SSLSocket) -> dict[str, Any]:
    cipher = tls.cipher()
    return {"tls_version": tls.version() or "", "tls_cipher": cipher[0] if cipher else ""}


def earliest(certs: Sequence[CertInfo]) -> float | None:
    return min((c.not_after for c in certs), default=None)


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def span(seconds: float) -> str:
    """A duration in words: "3 days", "5 hours", "1 day"."""
    seconds = abs(seconds)
    if seconds >= 86400:
        n, unit = int(seconds // 86400), "day"
    elif seconds >= 3600:
        n, unit = int(seconds // 3600), "hour"
    else:
        n, unit = max(1, int(seconds // 60)), "minute"
    return f"{n} {unit}{'' if n == 1 else 's'}"
