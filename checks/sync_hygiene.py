"""The sync probe's own messages: tags, the message itself, and removing exactly those.

The probe only ever touches messages that carry its ``X-Mailfleet-Probe``
header; it removes its own with ``UID EXPUNGE`` (never a plain EXPUNGE, which
would also purge the user's own ``\\Deleted`` messages). Every tag embeds the
deadline of the run that made it, so a later run removes any leftover whose
run must be over (killed half-way, or timed out).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate

from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.imap_proto import quote
from mailfleet.checks.target import Deadline

TAG_HEADER = "X-Mailfleet-Probe"
SUBJECT = "mailfleet sync probe"
FOLDER = "INBOX"
_TAG_RE = re.compile(r"^([0-9a-f]{32})\.(\d{10,16})$")
_UID_RE = re.compile(r"\bUID (\d{1,10})\b", re.IGNORECASE)
_HEADER_RE = re.compile(rf"^{TAG_HEADER}:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def make_tag(deadline: Deadline) -> str:
    """A unique tag that also says until when its run may still be using it."""
    ends_ms = int((time.time() + deadline.remaining()) * 1000)
    return f"{uuid.uuid4().hex}.{ends_ms}"


def tag_is_stale(tag: str, now: float, grace: float = 1.0) -> bool:
    """True when the run that made ``tag`` is certainly over (or the tag is not ours)."""
    match = _TAG_RE.match(tag.strip())
    if match is None:
        return True  # a malformed tag in our header: a broken earlier version; remove it
    return now > int(match.group(2)) / 1000 + grace


def probe_message(sender: str, recipient: str, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"{SUBJECT} {tag[:8]}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{tag}@mailfleet.invalid>"
    msg["Auto-Submitted"] = "auto-generated"
    msg[TAG_HEADER] = tag
    msg.set_content(
        "This message measures how fast mail reaches a client. mailfleet removes it "
        "within seconds; if you see it, a probe run was interrupted and the next run "
        "will remove it.\n"
    )
    return msg


def find_tagged(client: ImapClient, tag: str = "") -> list[int]:
    """UIDs of probe messages (with ``tag``: only that one) in the selected folder."""
    return client.uid_search(b"HEADER " + TAG_HEADER.encode() + b" " + (quote(tag) or b'""'))


def remove_uids(client: ImapClient, uids: Sequence[int]) -> None:
    """Delete exactly these messages: \\Deleted, then UID EXPUNGE of just them."""
    if not uids:
        return
    client.uid_store(uids, b"+FLAGS (\\Deleted)")
    client.uid_expunge(uids)


def clean_leftovers(client: ImapClient, now: float | None = None) -> int:
    """Remove probe messages whose run is over; returns how many were removed."""
    uids = find_tagged(client)
    if not uids:
        return 0
    now = time.time() if now is None else now
    fetched = client.uid_fetch(uids, f"(BODY.PEEK[HEADER.FIELDS ({TAG_HEADER})])".encode())
    stale: list[int] = []
    for resp in fetched:
        uid = _UID_RE.search(resp.text)
        if uid is None:
            continue
        header = _HEADER_RE.search(resp.text)
        if tag_is_stale(header.group(1) if header else "", now):
            stale.append(int(uid.group(1)))
    remove_uids(client, stale)
    return len(stale)
