"""A fleet row as HTML, written directly (500 rows through Jinja cost ~0.3 s here).

Mirrors ``newRow``/``updateRow`` in static/js/fleet.js: the page's script keeps
these rows current, so both must produce the same structure.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from mailfleet.dashboard.web import model
from mailfleet.dashboard.web.templating import ago


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return '<span class="muted">never</span>'
    iso = model.utc(ts)
    return f'<time datetime="{iso}" data-ts="{ts!r}" title="{iso}">{ago(ts)}</time>'


def fleet_row(row: model.Row, host_url_prefix: str) -> str:
    status = _attr(row["status"])
    reason = _attr(row["reason"])
    name = _attr(row["name"])
    last = row["last_probe_at"]
    parts = [
        f'<tr data-host="{name}" data-status="{status}" '
        f'data-groups="{_attr(" ".join(row["groups"]))}" '
        f'data-last="{"" if last is None else repr(last)}">',
        f'<td class="status-cell"><span class="badge s-{status}">{status}</span>'
        f'<span class="reason" title="{reason}">{reason}</span></td>',
        f'<th scope="row" class="host"><a href="{host_url_prefix}{_attr(quote(row["name"]))}">'
        f"{name}</a></th>",
    ]
    for column in model.COLUMNS:
        cell = row["cells"][column.key]
        sort = "" if cell["sort"] is None else _attr(cell["sort"])
        title = cell["status"] + (f": {cell['detail']}" if cell["detail"] else "")
        num = " num" if column.numeric else ""
        parts.append(
            f'<td class="c s-{_attr(cell["status"])}{num}" data-key="{column.key}" '
            f'data-sort="{sort}" title="{_attr(title)}">{escape(cell["text"])}</td>'
        )
    parts.append(f'<td class="last">{when(last)}</td></tr>')
    return "".join(parts)
