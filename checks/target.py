"""What a probe looks at (``Target``) and how (``ProbeOptions``), and a hard ``Deadline``.

A ``Target`` is built from one inventory host. Secrets (a password, an OAuth2
token) live in ``Secret`` objects whose ``repr`` and ``str`` never show the
value, and ``Target.to_dict`` leaves them out: a target can be logged, put in
an error message or returned over HTTP without leaking anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

# Service name -> default port. A target may override any of them.
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType(
    {
        "imaps": 993,
        "imap": 143,
        "smtp": 25,
        "submission": 587,
        "submissions": 465,
    }
)


class Secret:
    """A string that never shows itself in repr/str/format."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class CredentialsError(ValueError):
    """The probe account is unusable (no password, unreadable token file)."""


@dataclass(frozen=True)
class Credentials:
    """The probe account: a user and a password, a token, or a token file.

    A token file is read at probe time, so a token refreshed on disk is used
    without restarting anything.
    """

    user: str
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    token_file: Path | None = None

    def secret_password(self) -> str:
        if self.password is None or not self.password:
            raise CredentialsError(f"no password configured for probe user {self.user!r}")
        return self.password.reveal()

    def secret_token(self) -> str:
        if self.token is not None and self.token:
            return self.token.reveal()
        if self.token_file is not None:
            try:
                value = self.token_file.read_text().strip()
            except OSError as exc:
                raise CredentialsError(
                    f"cannot read token file {self.token_file}: {exc.strerror or exc}"
                ) from None
            if not value:
                raise CredentialsError(f"token file {self.token_file} is empty")
            return value
        raise CredentialsError(f"no OAuth2 token configured for probe user {self.user!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "password": "***" if self.password else None,
            "token": "***" if self.token else None,
            "token_file": str(self.token_file) if self.token_file else None,
        }


@dataclass(frozen=True)
class Target:
    """One mail server as the inventory describes it.

    ``name`` is the inventory host name (the label everything is reported
    under); ``address`` is where to connect (``ansible_host``);
    ``mail_hostname`` is the name the server presents (certificate, HELO,
    PTR) and the SNI sent.
    """

    name: str
    address: str
    mail_hostname: str = ""
    domains: tuple[str, ...] = ()
    ports: Mapping[str, int] = field(default_factory=dict)
    ca_bundle: Path | None = None
    credentials: Credentials | None = field(default=None, repr=False)
    checks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ports", MappingProxyType({**DEFAULT_PORTS, **self.ports}))
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "checks", tuple(self.checks))
        if isinstance(self.ca_bundle, str):  # a path given as text (JSON, a caller's spec)
            object.__setattr__(self, "ca_bundle", Path(self.ca_bundle) if self.ca_bundle else None)
        if not self.mail_hostname:
            object.__setattr__(self, "mail_hostname", self.name)

    def port(self, service: str) -> int:
        return self.ports[service]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and secret-free."""
        return {
            "name": self.name,
            "address": self.address,
            "mail_hostname": self.mail_hostname,
            "domains": list(self.domains),
            "ports": dict(self.ports),
            "ca_bundle": str(self.ca_bundle) if self.ca_bundle else None,
            "credentials": self.credentials.to_dict() if self.credentials else None,
            "checks": list(self.checks),
        }


@dataclass(frozen=True)
class ProbeOptions:
    """How to probe; thresholds are judgement, kept apart from acquisition.

    ``timeout`` is what a caller uses to build the ``Deadline`` when it has no
    better one (e.g. Prometheus' scrape timeout).
    """

    timeout: float = 10.0
    # tls: which service's certificate to look at.
    tls_service: str = "imaps"  # imaps | imap (STARTTLS) | smtp | submission | submissions
    # Expiry, judged by the share of the certificate's lifetime used (right for 6-day,
    # 45-day and 90-day certificates alike) within the last days before it ends (a
    # 1-year certificate is not due at two thirds): WARNING from 2/3 of the lifetime and
    # under 30 days left, CRITICAL from 90% and under 14 days left.
    tls_warning_lifetime_percent: float = 200 / 3
    tls_critical_lifetime_percent: float = 90.0
    tls_warning_days: float = 30.0
    tls_critical_days: float = 14.0
    # imap_login / quota
    imap_service: str = "imaps"  # imaps (implicit TLS) | imap (STARTTLS on 143)
    mechanism: str = "PLAIN"  # PLAIN | LOGIN | XOAUTH2 | OAUTHBEARER
    quota_warning_percent: float = 80.0
    quota_critical_percent: float = 95.0
    # smtp
    smtp_service: str = "smtp"  # smtp (25) | submission (587) | submissions (465)
    smtp_helo: str = "mailfleet-probe.invalid"
    smtp_auth: bool = False  # also log in (needs credentials; submission ports)
    # dns: "ADDR" or "ADDR:PORT" (IPv6: "[::1]:5353"); empty: the system resolver.
    dns_resolvers: tuple[str, ...] = ()
    # DNS block lists (zones, e.g. zen.spamhaus.org) the server's addresses are looked up
    # on; none by default: public lists refuse queries through public resolvers, and
    # some need a subscription at volume.
    dns_blocklists: tuple[str, ...] = ()
    dns_tlsa_services: tuple[str, ...] = ("smtp", "imaps")
    dns_attempts: int = 2
    # dns: DKIM selectors the host signs with, and retired ones still published, checked
    # for each of its domains; keys as "SELECTOR._domainkey.DOMAIN=P-VALUE" are compared
    # with the record (the mail_dns_check role passes the keys it reads on the host).
    dns_dkim_selectors: tuple[str, ...] = ()
    dns_dkim_retired_selectors: tuple[str, ...] = ()
    dns_dkim_keys: tuple[str, ...] = ()
    # Verify certificates against this bundle instead of the system store
    # (the target's ca_bundle, when set, wins).
    ca_bundle: Path | None = None


class Deadline:
    """A point in monotonic time every network operation of a probe must end by."""

    __slots__ = ("_end", "budget")

    def __init__(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"a deadline needs a positive number of seconds, not {seconds!r}")
        self.budget = float(seconds)
        self._end = time.monotonic() + self.budget

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def timeout(self) -> float:
        """A socket timeout that ends at the deadline; raises TimeoutError once past it."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline reached")
        return left

    def __repr__(self) -> str:
        return f"Deadline(budget={self.budget:.1f}s, remaining={self.remaining():.2f}s)"
