"""Jinja filters the templates share."""

from __future__ import annotations

import time

from flask import Flask

from mailfleet.dashboard.web.model import utc


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, time.time() - ts)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def register_filters(app: Flask) -> None:
    app.add_template_filter(utc, "utc")
    app.add_template_filter(ago, "ago")
    app.add_template_filter(seconds, "seconds")
