"""Parsers of the server probe, fed with outputs recorded on a lab host (Debian 12,
Postfix 3.7.11, Dovecot 2.3.19.1) — see tests/checks/server_outputs/."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailfleet.checks.server import parse

OUTPUTS = Path(__file__).parent / "server_outputs"
# The recordings' clock: arrival times are around 1795395336 (2026-11-23 00:55 UTC).
NOW = 1795395336 + 600


def recorded(name: str) -> str:
    return (OUTPUTS / name).read_text()


def test_deferred_and_held_mail_is_counted_per_queue() -> None:
    summary = parse.parse_postqueue_json(recorded("postqueue-j-deferred-hold.jsonl"), NOW)
    assert summary.counts == {"maildrop": 0, "incoming": 0, "active": 0, "deferred": 3, "hold": 1}
    # Oldest of the waiting queues (deferred), not of the held message.
    assert summary.oldest_seconds == pytest.approx(600)
    assert summary.oldest_by_queue["hold"] == pytest.approx(599)


def test_reasons_are_normalized_and_counted_per_recipient() -> None:
    summary = parse.parse_postqueue_json(recorded("postqueue-j-multi.jsonl"), NOW)
    # qmgr's "delivery temporarily suspended: " wrapper is the same cause.
    assert summary.top_reasons[0] == (
        "connect to 10.77.4.250[10.77.4.250]:25: No route to host", 6)
    assert summary.counts["deferred"] == 4  # and the held one
    assert summary.recipients_deferred == 5


def test_a_just_submitted_message_shows_in_active_without_a_reason() -> None:
    summary = parse.parse_postqueue_json(recorded("postqueue-j-just-submitted.jsonl"), NOW)
    assert summary.counts["active"] == 1
    assert summary.counts["deferred"] == 3


def test_empty_queue() -> None:
    summary = parse.parse_postqueue_json("", NOW)
    assert summary.counts["deferred"] == 0
    assert summary.oldest_seconds is None
    assert summary.top_reasons == ()


def test_values_are_json_ready_and_reasons_are_values_not_labels() -> None:
    values = parse.parse_postqueue_json(recorded("postqueue-j-multi.jsonl"), NOW).to_values()
    json.dumps(values)
    assert values["deferral_reasons"][0]["count"] == 6


def test_a_line_cut_short_by_the_output_cap_is_skipped_and_counted() -> None:
    lines = recorded("postqueue-j-deferred-hold.jsonl").splitlines()
    summary = parse.parse_postqueue_json("\n".join([*lines, lines[0][:50]]), NOW)
    assert summary.counts["deferred"] == 3
    assert summary.skipped_lines == 1


def test_garbage_is_an_output_error_that_names_the_command() -> None:
    with pytest.raises(parse.OutputError, match="postqueue -j"):
        parse.parse_postqueue_json("postqueue: fatal: Queue report unavailable", NOW)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("host mx.example.com[192.0.2.7] said: 450 4.2.0 <bob@example.com>: Recipient "
         "address rejected: Greylisted, see http://postgrey.schweikert.ch/ (in reply to "
         "RCPT TO command)",
         "host mx.example.com[192.0.2.7] said: 450 4.2.0 <address>: Recipient address "
         "rejected: Greylisted, see http://postgrey.schweikert.ch/ (in reply to RCPT TO command)"),
        ("host mx.example.org[198.51.100.2] said: 451 4.7.1 Please try again in 297 seconds",
         "host mx.example.org[198.51.100.2] said: 451 4.7.1 Please try again in N seconds"),
        ("delivery temporarily suspended: connect to 10.77.4.250[10.77.4.250]:25: No route "
         "to host", "connect to 10.77.4.250[10.77.4.250]:25: No route to host"),
        ("conversation with x[192.0.2.1] timed out while sending message body 3C93317A973",
         "conversation with x[192.0.2.1] timed out while sending message body <id>"),
        ("  ", "(no reason given)"),
    ],
)
def test_normalize_reason(raw: str, normalized: str) -> None:
    assert parse.normalize_reason(raw) == normalized


def test_long_reasons_are_cut() -> None:
    assert len(parse.normalize_reason("x" * 1000)) == parse.REASON_MAX


def test_doveadm_who_counts_sessions_protocols_and_users_never_names() -> None:
    sessions = parse.parse_doveadm_who(recorded("doveadm-who-tab.txt"))
    assert sessions.total == 4
    assert sessions.by_protocol == {"imap": 4}
    assert sessions.users == 3
    assert "alice" not in json.dumps(sessions.to_values())


def test_doveadm_who_of_dovecot_2_4_names_the_protocol_service() -> None:
    sessions = parse.parse_doveadm_who(recorded("doveadm-who-tab-2.4.txt"))
    assert (sessions.total, sessions.by_protocol, sessions.users) == (3, {"imap": 3}, 2)


def test_doveadm_who_with_nobody_logged_in() -> None:
    sessions = parse.parse_doveadm_who(recorded("doveadm-who-tab-empty.txt"))
    assert (sessions.total, sessions.by_protocol, sessions.users) == (0, {}, 0)


def test_doveadm_who_without_tab_format_is_refused() -> None:
    with pytest.raises(parse.OutputError, match="tab header"):
        parse.parse_doveadm_who(recorded("doveadm-who-1.txt"))


def test_stat_f_reports_bytes_and_inodes_per_path() -> None:
    found = parse.parse_stat_f(recorded("stat-f.txt"))
    assert set(found) == {"/var/mail", "/var/spool/postfix"}
    fs = found["/var/mail"]
    assert fs.size_bytes == 4096 * 66053021
    assert fs.free_bytes == 4096 * 20013798  # available to users, as df's Avail
    assert fs.inodes == 16777216 and fs.free_inodes == 16283248
    assert fs.free_ratio == pytest.approx(20013798 / 66053021)


def test_stat_f_keeps_spaces_in_paths() -> None:
    found = parse.parse_stat_f("4096 100 5 50 10 /srv/mail store\n")
    assert found["/srv/mail store"].free_bytes == 5 * 4096


def test_pgrep_says_which_master_runs() -> None:
    out = ("5314 /usr/sbin/dovecot -c /etc/dovecot/dovecot.conf\n"
           "5645 /usr/lib/postfix/sbin/master -w\n")
    assert parse.parse_pgrep(out) == {"postfix": True, "dovecot": True}
    assert parse.parse_pgrep(out.splitlines()[0]) == {"postfix": False, "dovecot": True}
    assert parse.parse_pgrep("") == {"postfix": False, "dovecot": False}


def test_service_regex_matches_only_the_masters() -> None:
    import re

    rx = re.compile(parse.service_regex(parse.SERVICE_PATTERNS))
    assert rx.search("/usr/lib/postfix/sbin/master -w")
    assert rx.search("/usr/sbin/dovecot -c /etc/dovecot/dovecot.conf")
    assert not rx.search("/usr/sbin/dovecotx")
    assert not rx.search("vi /usr/sbin/dovecot")


def test_openssl_x509_gives_not_after_and_fingerprint() -> None:
    cert = parse.parse_openssl_x509(recorded("openssl-x509.txt"))
    assert cert.not_after == 1797987137.0  # Dec 23 00:52:17 2026 GMT
    assert cert.sha256 == "40aab02d3fa342380de496aa00050d062105ce0dd8b528719de1088cc8ecda5d"


def test_openssl_dates_with_a_padded_day() -> None:
    assert parse.parse_openssl_date("Jan  3 00:00:00 2030 GMT") == 1893628800.0


def test_openssl_without_fingerprint_is_an_error() -> None:
    with pytest.raises(parse.OutputError):
        parse.parse_openssl_x509("notAfter=Dec 23 00:52:17 2026 GMT\n")


@settings(max_examples=300, deadline=None)  # no wall-clock limit on a loaded CI box
@given(st.text())
def test_parsers_never_raise_anything_but_output_error(text: str) -> None:
    for fn in (lambda t: parse.parse_postqueue_json(t, NOW), parse.parse_doveadm_who,
               parse.parse_stat_f, parse.parse_openssl_x509, parse.parse_pgrep):
        with contextlib.suppress(parse.OutputError):
            fn(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(
    ["queue_name", "arrival_time", "recipients", "queue_id"]),
    st.one_of(st.none(), st.integers(), st.text(), st.lists(st.dictionaries(
        st.sampled_from(["address", "delay_reason"]), st.one_of(st.text(), st.integers())))))))
def test_postqueue_parser_survives_odd_json(messages: list[dict[str, object]]) -> None:
    text = "\n".join(json.dumps(m) for m in messages)
    summary = parse.parse_postqueue_json(text, NOW)
    assert sum(summary.counts.values()) == len(messages)
