"""IMAP response parsing (RFC 9051/3501 subset a probe needs). Pure; never raises.

Whatever bytes a server sends, these functions return a value: garbage is
``kind == "garbage"``, unknown statuses are kept as text. The client decides
what is a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STATUSES = ("OK", "NO", "BAD", "BYE", "PREAUTH")
_LITERAL_RE = re.compile(rb"\{(\d{1,10})\+?\}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str, limit: int = 200) -> str:
    """Server text made safe for a message: no control characters, bounded length."""
    text = _CONTROL_RE.sub("?", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Response:
    """One response line. ``kind``: tagged | untagged | continuation | garbage."""

    kind: str
    tag: str = ""
    status: str = ""  # OK NO BAD BYE PREAUTH, or "" for data (``* CAPABILITY ...``)
    code: str = ""  # inside [...], e.g. "AUTHENTICATIONFAILED" or "CAPABILITY IMAP4rev1 ..."
    text: str = ""  # human text after the code, or the data after ``*``
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def describe(self) -> str:
        """``[AUTHENTICATIONFAILED] Authentication failed.`` (bounded, cleaned)."""
        parts = [f"[{clean(self.code, 80)}]" if self.code else "", clean(self.text)]
        return " ".join(p for p in parts if p) or clean(self.raw) or "(empty)"


def _split_code(rest: str) -> tuple[str, str]:
    rest = rest.lstrip(" ")
    if rest.startswith("["):
        end = rest.find("]")
        if end > 0:
            return rest[1:end].strip(), rest[end + 1 :].strip()
    return "", rest.strip()


def parse_line(line: bytes) -> Response:
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if text.startswith("+"):
        return Response("continuation", text=text[1:].strip(), raw=text)
    head, _, rest = text.partition(" ")
    if not head or (not rest and head != "*"):
        return Response("garbage", raw=text)
    word, _, after = rest.partition(" ")
    status = word.upper()
    if head == "*":
        if status in STATUSES:
            code, human = _split_code(after)
            return Response("untagged", tag="*", status=status, code=code, text=human, raw=text)
        return Response("untagged", tag="*", text=rest, raw=text)
    if not _is_tag(head) or status not in STATUSES:
        return Response("garbage", raw=text)
    code, human = _split_code(after)
    return Response("tagged", tag=head, status=status, code=code, text=human, raw=text)


def _is_tag(word: str) -> bool:
    return all(c.isascii() and c.isprintable() and c not in '(){%*"\\+ ]' for c in word)


def literal_size(line: bytes) -> int | None:
    """``{123}`` / ``{123+}`` at the end of a line announces a literal of that many bytes."""
    m = _LITERAL_RE.search(line.rstrip(b"\r\n"))
    return int(m.group(1)) if m else None


def capabilities_of(resp: Response) -> frozenset[str] | None:
    """Capabilities from ``* CAPABILITY ...`` data or a ``[CAPABILITY ...]`` code."""
    source = ""
    if resp.code.upper().startswith("CAPABILITY "):
        source = resp.code[len("CAPABILITY ") :]
    elif resp.kind == "untagged" and not resp.status and resp.text.upper().startswith("CAPABILITY"):
        source = resp.text[len("CAPABILITY") :]
    else:
        return None
    return frozenset(w.upper() for w in source.split() if w.isascii() and w.isprintable())


def tokens(text: str) -> list[str | list[object]]:
    """Atoms, quoted strings and parenthesised lists of an IMAP data line (lenient)."""
    stack: list[list[object]] = [[]]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == " ":
            i += 1
        elif c == "(":
            stack.append([])
            i += 1
        elif c == ")":
            if len(stack) > 1:
                inner = stack.pop()
                stack[-1].append(inner)
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            stack[-1].append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ' ()"':
                j += 1
            stack[-1].append(text[i:j])
            i = j
    while len(stack) > 1:  # unbalanced: close what is open
        inner = stack.pop()
        stack[-1].append(inner)
    return stack[0]  # type: ignore[return-value]


@dataclass(frozen=True)
class QuotaResource:
    name: str  # STORAGE (KiB), MESSAGE, ...
    usage: int
    limit: int


def parse_quota(resp: Response) -> tuple[str, list[QuotaResource]] | None:
    """``* QUOTA "User quota" (STORAGE 10 1024 MESSAGE 2 1000)`` -> root and resources."""
    if resp.kind != "untagged" or resp.status or not resp.text.upper().startswith("QUOTA "):
        return None
    parts = tokens(resp.text[len("QUOTA ") :])
    if len(parts) < 2 or not isinstance(parts[0], str) or not isinstance(parts[1], list):
        return None
    items = parts[1]
    found: list[QuotaResource] = []
    for k in range(0, len(items) - 2, 3):
        name, usage, limit = items[k], items[k + 1], items[k + 2]
        if (
            isinstance(name, str)
            and isinstance(usage, str)
            and isinstance(limit, str)
            and usage.isdigit()
            and limit.isdigit()
            and len(usage) < 20
            and len(limit) < 20
        ):
            found.append(QuotaResource(name.upper(), int(usage), int(limit)))
    return parts[0], found


def parse_quotaroot(resp: Response) -> tuple[str, list[str]] | None:
    """``* QUOTAROOT INBOX "User quota"`` -> mailbox and its quota roots."""
    if resp.kind != "untagged" or resp.status or not resp.text.upper().startswith("QUOTAROOT "):
        return None
    parts = tokens(resp.text[len("QUOTAROOT ") :])
    names = [p for p in parts if isinstance(p, str)]
    if not names:
        return None
    return names[0], names[1:]


def quote(value: str) -> bytes | None:
    """An IMAP quoted string, or None when it needs a literal (CR, LF, NUL, 8-bit)."""
    if any(c in value for c in "\r\n\0") or not value.isascii():
        return None
    return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
