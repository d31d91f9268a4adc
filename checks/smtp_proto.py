"""SMTP reply parsing (RFC 5321 4.2). Pure; never raises."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailfleet.checks.imap_proto import clean

_REPLY_RE = re.compile(rb"\A([2-5][0-9][0-9])([ -]|\Z)(.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class ReplyLine:
    code: int
    last: bool
    text: str


def parse_reply_line(line: bytes) -> ReplyLine | None:
    """``250-PIPELINING`` -> (250, False, "PIPELINING"); None for anything else."""
    m = _REPLY_RE.match(line.rstrip(b"\r\n"))
    if m is None:
        return None
    return ReplyLine(int(m.group(1)), m.group(2) != b"-", m.group(3).decode("utf-8", "replace"))


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def describe(self) -> str:
        return f"{self.code} {clean(self.text)}".strip()


def ehlo_keywords(reply: Reply) -> dict[str, str]:
    """EHLO extensions: keyword (upper case) -> parameters; the first line is the greeting."""
    found: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword and keyword.isascii() and keyword.replace("-", "").isalnum():
            found[keyword.upper()] = params.strip()
    return found


def auth_mechanisms(keywords: dict[str, str]) -> list[str]:
    return sorted({m.upper() for m in keywords.get("AUTH", "").split() if m.isascii()})


def banner_hostname(reply: Reply) -> str:
    """The host name a 220 banner starts with (``220 mx1.lab.test ESMTP Postfix``)."""
    first = reply.lines[0].split() if reply.lines and reply.lines[0].strip() else []
    return first[0].lower().rstrip(".") if first else ""
