"""DMARC: one ``v=DMARC1`` record at ``_dmarc.DOMAIN`` with a valid policy (RFC 7489)."""

from __future__ import annotations

from mailfleet.checks.dns.lookups import Resolvers
from mailfleet.checks.dns.report import ERROR, OK, WARNING, DnsReport, no_answer, several

_POLICIES = ("none", "quarantine", "reject")


def parse_dmarc(record: str) -> tuple[dict[str, str], list[str]]:
    tags: dict[str, str] = {}
    errors: list[str] = []
    parts = [p.strip() for p in record.split(";") if p.strip()]
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not name:
            errors.append(f"malformed tag {part!r}")
            continue
        if i == 0 and (name != "v" or value != "DMARC1"):
            errors.append("does not start with v=DMARC1")
        tags[name] = value
    if "p" not in tags:
        errors.append("no p= policy")
    elif tags["p"].lower() not in _POLICIES:
        errors.append(f"p={tags['p']} is not none, quarantine or reject")
    if "sp" in tags and tags["sp"].lower() not in _POLICIES:
        errors.append(f"sp={tags['sp']} is not none, quarantine or reject")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        errors.append(f"pct={tags['pct']} is not 0-100")
    for tag in ("adkim", "aspf"):
        if tag in tags and tags[tag].lower() not in ("r", "s"):
            errors.append(f"{tag}={tags[tag]} is not r or s")
    return tags, errors


def check_dmarc(res: Resolvers, report: DnsReport, domain: str) -> None:
    name = f"_dmarc.{domain}"
    lk = res.ask(name, "TXT")
    if not lk.answered:
        no_answer(report, "dmarc", domain, lk, f"TXT {name}")
        return
    records = [r for r in lk.records if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if not records:
        report.add("dmarc", domain, WARNING, f"no DMARC record at {name}", seen="none",
                   expected="v=DMARC1; p=...")
        return
    if several(report, "dmarc", domain, name, "DMARC", records):
        return
    tags, errors = parse_dmarc(records[0])
    if errors:
        report.add("dmarc", domain, ERROR, f"DMARC of {domain} is invalid: {'; '.join(errors)}",
                   seen=records[0], expected="RFC 7489 syntax")
        return
    report.add("dmarc", domain, OK, f"DMARC of {domain}: p={tags['p']}", seen=records[0])
