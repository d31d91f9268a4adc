"""DKIM: the key record of each selector the host signs with (RFC 6376 3.6.1), and DMARC
alignment of the domain's own mail (RFC 7489 3.1).

A selector whose record is missing, revoked (``p=``), unparsable or holding a key
other than the one the host signs with is an error: every message signed with it
fails DKIM at the receiver, and after a key rotation nothing else says so.

The record's tag list is split here rather than with dkimpy: the check needs only
that syntax (RFC 6376 3.2) and the key itself, which ``cryptography`` (already a
dependency of the watcher) loads; dkimpy would be one more package on every
monitoring host for five lines.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from mailfleet.checks.dns.lookups import Resolvers
from mailfleet.checks.dns.report import ERROR, OK, WARNING, DnsReport, no_answer, several


def parse_tags(record: str) -> tuple[dict[str, str], list[str]]:
    """``tag=value; ...`` as a mapping (whitespace inside values removed) and syntax errors."""
    tags: dict[str, str] = {}
    errors: list[str] = []
    for part in (p.strip() for p in record.split(";")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not name:
            errors.append(f"malformed tag {part!r}")
        elif name in tags:
            errors.append(f"tag {name} given twice")
        else:
            tags[name] = "".join(value.split())
    return tags, errors


def public_key_der(p_value: str) -> bytes:
    """The DER SubjectPublicKeyInfo of a ``p=`` value; ValueError when it is not a key."""
    compact = "".join(p_value.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not base64") from None
    try:
        key = load_der_public_key(raw)
    except (ValueError, TypeError):
        # Ed25519 keys (RFC 8463) are the bare 32 bytes, not a SubjectPublicKeyInfo.
        if len(raw) == 32:
            return raw
        raise ValueError("p= holds no public key") from None
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def dkim_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def check_dkim(res: Resolvers, report: DnsReport, domain: str, selector: str,
               expected: str | None = None, retired: bool = False,
               pending: str = "") -> None:
    """One selector's record; ``expected`` the ``p=`` value of the key the host holds.

    A retired selector (its mail may still be in flight) missing from DNS is a
    warning; the signing one is an error, unless ``pending`` says why the
    deployment under way will set it right (its key is not made yet; it
    publishes the record by DNS update): then a missing or other record is a
    warning with that reason.
    """
    name = dkim_name(selector, domain)
    subject = f"{domain} {selector}"
    lk = res.ask(name, "TXT")
    if not lk.answered:
        no_answer(report, "dkim", subject, lk, f"TXT {name}")
        return
    records = [r for r in lk.records if "p=" in r.replace(" ", "")]
    missing_status = WARNING if retired or pending else ERROR
    use = "the retired selector" if retired else "the selector the host signs with"
    fix = pending or "publish the record the rspamd role reports"
    if not records:
        report.add("dkim", subject, missing_status,
                   f"no DKIM record for {use} {selector!r} at {name}: {fix}",
                   seen="none", expected="v=DKIM1; k=rsa; p=...")
        return
    if several(report, "dkim", subject, name, "DKIM", records):
        return
    tags, errors = parse_tags(records[0])
    if tags.get("v", "DKIM1") != "DKIM1":
        errors.append(f"v={tags['v']} is not DKIM1")
    if "p" not in tags:
        errors.append("no p= tag")
    elif not tags["p"]:
        errors.append("p= is empty: the key is revoked")
    if not errors:
        try:
            seen_key = public_key_der(tags["p"])
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        report.add("dkim", subject, ERROR,
                   f"DKIM record of selector {selector!r} for {domain} is unusable: "
                   f"{'; '.join(errors)}", seen=records[0], expected="RFC 6376 key record")
        return
    if expected is not None and public_key_der(expected) != seen_key:
        report.add("dkim", subject, WARNING if pending else ERROR,
                   f"DKIM record of selector {selector!r} for {domain} holds another key than "
                   f"the one the host signs with: {fix}",
                   seen=records[0][:60] + "...", expected=f"p={expected[:40]}...")
        return
    matched = "matches the host's key" if expected is not None else "holds a usable key"
    report.add("dkim", subject, OK, f"DKIM record of selector {selector!r} for {domain} {matched}",
               seen=records[0][:60] + "...")


def check_dkim_domain(res: Resolvers, report: DnsReport, domain: str,
                      selectors: Iterable[str], retired: Iterable[str] = (),
                      keys: Mapping[str, str] | None = None,
                      keyless_pending: bool = False, updated: bool = False) -> None:
    """Every signing and retired selector of one domain; ``keys``: record name -> p= value.

    Before a deployment (``check_dkim``'s ``pending``): ``keyless_pending`` says
    ``keys`` holds every key the host has, so a selector without one there is
    made by this deployment; ``updated``, that it publishes the records by DNS update.
    """
    keys = keys or {}
    for selector in selectors:
        key = keys.get(dkim_name(selector, domain))
        pending = ("this deployment publishes it by DNS update" if updated
                   else "this deployment makes its key and reports the record"
                   if keyless_pending and key is None else "")
        check_dkim(res, report, domain, selector, key, pending=pending)
    for selector in retired:
        check_dkim(res, report, domain, selector, keys.get(dkim_name(selector, domain)),
                   retired=True)


def check_alignment(report: DnsReport, domain: str, dkim_checked: bool) -> None:
    """Does the host's own mail from ``domain`` pass DMARC, by SPF or by DKIM?

    The host signs with d= the From domain and sends with an envelope sender of
    that domain, so both identifiers align under relaxed and strict modes alike:
    what decides is whether SPF authorises the host and whether the signing
    selector's record is good. Only judged for a valid DMARC record with a policy
    that acts (quarantine, reject).
    """
    dmarc = [f for f in report.findings if f.check == "dmarc" and f.subject == domain]
    if not dmarc or dmarc[-1].status != OK or "p=none" in dmarc[-1].message:
        return
    spf_pass = any(f.check == "spf" and f.subject == domain and f.status == OK
                   and "authorizes" in f.message for f in report.findings)
    dkim = [f for f in report.findings if f.check == "dkim"
            and f.subject.split(" ")[0] == domain and "retired" not in f.message]
    dkim_pass = dkim_checked and bool(dkim) and all(f.status == OK for f in dkim)
    ways = [w for w, ok in (("SPF", spf_pass), ("DKIM", dkim_pass)) if ok]
    if ways:
        report.add("dmarc", domain, OK,
                   f"mail from {domain} aligns with its DMARC policy through {' and '.join(ways)}")
        return
    why = "SPF does not authorise the server" + (
        " and its DKIM record is not good" if dkim_checked else " and DKIM is not checked")
    # a DKIM record the deployment under way publishes (a warning, not an error) must
    # not stop that deployment here
    pending = bool(dkim) and all(f.status != ERROR for f in dkim)
    report.add("dmarc", domain, WARNING if pending else ERROR,
               f"mail from {domain} fails its DMARC policy ({dmarc[-1].message.split(': ')[-1]}): "
               f"{why}", seen=dmarc[-1].seen, expected="SPF or DKIM aligned and passing")
