"""The probe account's secret for a mechanism, or a failure that says what to configure."""

from __future__ import annotations

from mailfleet.checks import sasl
from mailfleet.checks.base import ProbeFailure
from mailfleet.checks.result import Reason, Status
from mailfleet.checks.target import CredentialsError, Target


def secret_for(target: Target, mechanism: str) -> tuple[str, str]:
    """(user, password or token) for the mechanism; ProbeFailure(UNKNOWN) when missing."""
    creds = target.credentials
    if creds is None or not creds.user:
        raise ProbeFailure(
            f"no probe account for {target.name} (set mailfleet_probe_user)", Status.UNKNOWN,
            Reason.NOT_CONFIGURED,
        )
    try:
        if mechanism in sasl.TOKEN_MECHANISMS:
            return creds.user, creds.secret_token()
        return creds.user, creds.secret_password()
    except CredentialsError as exc:
        raise ProbeFailure(str(exc), Status.UNKNOWN, Reason.NOT_CONFIGURED) from None
