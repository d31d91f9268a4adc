"""``mailfleet probe --warning/--critical``: the common thresholds, as Nagios users set them.

``--warning tls_days=30,quota_percent=80 --critical tls_days=14,quota_percent=95`` sets
the fields of ``ProbeOptions`` the tls and quota checks judge by, for every host probed
(over what the inventory's ``mailfleet_probe_options`` says). A bad value is a usage
error (``ThresholdError``), which ``probe`` reports as UNKNOWN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from mailfleet.checks import ProbeOptions


class ThresholdError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    warning_field: str
    critical_field: str
    low: float
    high: float | None
    alert_below: bool  # days left: alert when fewer; percent used: alert when more


THRESHOLDS: Mapping[str, Threshold] = {
    "tls_days": Threshold("tls_warning_days", "tls_critical_days", 0.0, None, True),
    "tls_lifetime_percent": Threshold("tls_warning_lifetime_percent",
                                      "tls_critical_lifetime_percent", 0.0, 100.0, False),
    "quota_percent": Threshold("quota_warning_percent", "quota_critical_percent", 0.0, 100.0,
                               False),
}


def parse(option: str, text: str | None) -> dict[str, float]:
    """``"tls_days=21,quota_percent=80"`` -> {"tls_days": 21.0, "quota_percent": 80.0}."""
    found: dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ThresholdError(f"{option} {item!r}: write NAME=NUMBER, e.g. "
                                 f"{option} tls_days=21,quota_percent=80")
        limits = THRESHOLDS.get(name)
        if limits is None:
            raise ThresholdError(f"{option}: unknown threshold {name!r} "
                                 f"(known: {', '.join(THRESHOLDS)})")
        try:
            number = float(value)
        except ValueError:
            raise ThresholdError(f"{option} {name}={value!r}: not a number") from None
        too_high = limits.high is not None and number > limits.high
        if not math.isfinite(number) or number < limits.low or too_high:
            upto = f" to {limits.high:g}" if limits.high is not None else " or more"
            raise ThresholdError(f"{option} {name}={value}: must be {limits.low:g}{upto}")
        if name in found:
            raise ThresholdError(f"{option}: {name} given twice")
        found[name] = number
    return found


def apply(options: ProbeOptions, warning: Mapping[str, float], critical: Mapping[str, float]
          ) -> ProbeOptions:
    """The options with these thresholds; the pair must make sense (warning before critical)."""
    changes: dict[str, float] = {}
    for name, t in THRESHOLDS.items():
        warn = warning.get(name, getattr(options, t.warning_field))
        crit = critical.get(name, getattr(options, t.critical_field))
        if (warn < crit) if t.alert_below else (warn > crit):
            relation = "at least" if t.alert_below else "at most"
            first, second = (max(warn, crit), min(warn, crit)) if t.alert_below else (
                min(warn, crit), max(warn, crit))
            raise ThresholdError(
                f"the warning {name} ({warn:g}) must be {relation} the critical one ({crit:g}): "
                f"set both, e.g. --warning {name}={first:g} --critical {name}={second:g}")
        changes[t.warning_field] = warn
        changes[t.critical_field] = crit
    return replace(options, **changes)  # type: ignore[arg-type]
