"""IMAP/SMTP/SPF/DMARC parsing: known answers, and fuzzing that proves nothing raises."""

from __future__ import annotations

import base64
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfleet.checks import Credentials, Secret, Target
from mailfleet.checks.base import ProbeFailure
from mailfleet.checks.dns import Tlsa, parse_dmarc, parse_resolver, parse_spf
from mailfleet.checks.imap_client import ImapClient
from mailfleet.checks.imap_proto import (
    capabilities_of,
    literal_size,
    parse_line,
    parse_quota,
    parse_quotaroot,
    tokens,
)
from mailfleet.checks.net import Connection
from mailfleet.checks.sasl import describe_oauth_challenge, redact
from mailfleet.checks.smtp_client import SmtpClient
from mailfleet.checks.smtp_proto import Reply, banner_hostname, ehlo_keywords, parse_reply_line
from mailfleet.checks.target import Deadline

lines = st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
imapish = st.builds(
    lambda tag, status, code, text: f"{tag} {status} {code}{text}".encode(),
    st.sampled_from(["*", "a1", "mf1", "+", "", "((", "*{3}"]),
    st.sampled_from(["OK", "NO", "BAD", "BYE", "PREAUTH", "CAPABILITY", "QUOTA", "ok", "x"]),
    st.sampled_from(["", "[", "[]", "[AUTHENTICATIONFAILED] ", "[CAPABILITY IMAP4rev1 ",
                     '"User quota" (STORAGE 1 ', "(((", '"\\']),
    st.text(max_size=60),
)


# -- known answers -------------------------------------------------------------
def test_imap_tagged_failure_with_code() -> None:
    resp = parse_line(b"mf2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert (resp.kind, resp.tag, resp.status, resp.code) == (
        "tagged", "mf2", "NO", "AUTHENTICATIONFAILED")
    assert resp.describe() == "[AUTHENTICATIONFAILED] Authentication failed."


def test_imap_capabilities_from_greeting_code_and_data() -> None:
    greet = parse_line(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN STARTTLS] Dovecot ready.")
    assert capabilities_of(greet) == frozenset({"IMAP4REV1", "SASL-IR", "AUTH=PLAIN", "STARTTLS"})
    data = parse_line(b"* CAPABILITY IMAP4rev1 QUOTA")
    assert capabilities_of(data) == frozenset({"IMAP4REV1", "QUOTA"})
    assert capabilities_of(parse_line(b"* OK hello")) is None


def test_imap_quota_responses() -> None:
    root = parse_quotaroot(parse_line(b'* QUOTAROOT INBOX "User quota"'))
    assert root == ("INBOX", ["User quota"])
    quota = parse_quota(parse_line(b'* QUOTA "User quota" (STORAGE 10 1024 MESSAGE 2 1000)'))
    assert quota is not None
    name, resources = quota
    assert name == "User quota"
    assert [(r.name, r.usage, r.limit) for r in resources] == [
        ("STORAGE", 10, 1024), ("MESSAGE", 2, 1000)]


def test_literal_and_tokens() -> None:
    assert literal_size(b"* 1 FETCH (BODY[] {42}") == 42
    assert literal_size(b"a LOGIN {5+}") == 5
    assert literal_size(b"* OK no literal") is None
    assert tokens('"a \\"b" (X (Y)) Z') == ['a "b', ["X", ["Y"]], "Z"]


def test_smtp_multiline_ehlo() -> None:
    reply = Reply(250, ("mx1.lab.test", "PIPELINING", "AUTH PLAIN LOGIN", "STARTTLS"))
    assert ehlo_keywords(reply) == {"PIPELINING": "", "AUTH": "PLAIN LOGIN", "STARTTLS": ""}
    assert parse_reply_line(b"250-PIPELINING") is not None
    assert parse_reply_line(b"250 OK\r\n") is not None
    assert parse_reply_line(b"HTTP/1.1 200 OK") is None
    assert banner_hostname(Reply(220, ("mx1.lab.test ESMTP Postfix",))) == "mx1.lab.test"


def test_spf_syntax() -> None:
    terms, errors = parse_spf("v=spf1 mx a:mail.example.test ip4:10.0.0.0/8 ip6:2001:db8::/32 "
                              "include:_spf.example.test ~all")
    assert errors == [] and terms[-1] == ("~", "all", "")
    assert parse_spf("v=spf1 ip4:999.1.1.1 -all")[1] == ["invalid ip4 term 'ip4:999.1.1.1'"]
    assert parse_spf("v=spf1 foo:bar -all")[1] == ["unknown term 'foo:bar'"]
    assert parse_spf("v=spf1 redirect=a redirect=b")[1] == ["redirect= appears twice"]


def test_dmarc_syntax() -> None:
    tags, errors = parse_dmarc("v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test")
    assert errors == [] and tags["p"] == "quarantine"
    assert parse_dmarc("v=DMARC1; p=maybe")[1] == ["p=maybe is not none, quarantine or reject"]
    assert "no p= policy" in parse_dmarc("v=DMARC1")[1]


def test_resolver_addresses() -> None:
    assert parse_resolver("127.0.0.1").label == "127.0.0.1:53"
    assert parse_resolver("127.0.5.53:5353").port == 5353
    assert parse_resolver("[::1]:5353").label == "[::1]:5353"
    assert parse_resolver("::1").port == 53


def test_secrets_never_show() -> None:
    creds = Credentials(user="probe@example1.test", password=Secret("hunter2-pw"),
                        token=Secret("eyJtoken"))
    target = Target(name="mx1", address="10.0.0.1", credentials=creds)
    for text in (repr(target), str(target.to_dict()), repr(creds), f"{creds.password}",
                 str(creds.to_dict())):
        assert "hunter2" not in text and "eyJtoken" not in text
    assert creds.secret_password() == "hunter2-pw"
    assert redact("NO bad password hunter2-pw", ["hunter2-pw"]) == "NO bad password ***"


# -- fuzzing: whatever a server sends, parsing returns ---------------------------------
@settings(max_examples=400, deadline=None)
@given(st.one_of(lines, imapish))
def test_imap_parsers_never_raise(line: bytes) -> None:
    resp = parse_line(line)
    assert resp.kind in ("tagged", "untagged", "continuation", "garbage")
    resp.describe()
    capabilities_of(resp)
    parse_quota(resp)
    parse_quotaroot(resp)
    literal_size(line)
    tokens(line.decode("utf-8", "replace"))


@settings(max_examples=400, deadline=None)
@given(st.lists(lines, max_size=8))
def test_smtp_parsers_never_raise(raw: list[bytes]) -> None:
    parsed = [parse_reply_line(x) for x in raw]
    texts = tuple(p.text for p in parsed if p is not None)
    if texts:
        reply = Reply(250, texts)
        ehlo_keywords(reply)
        banner_hostname(reply)
        reply.describe()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_dns_record_parsers_never_raise(text: str) -> None:
    parse_spf("v=spf1 " + text)
    parse_spf(text)
    parse_dmarc(text)
    parse_dmarc("v=DMARC1; " + text)
    Tlsa.parse(text)
    describe_oauth_challenge(text)


def _feed(payload: bytes, run: str) -> None:
    """Run a client step against a peer that sends ``payload`` then closes."""
    ours, theirs = socket.socketpair()

    def peer() -> None:
        try:
            theirs.sendall(payload)
            theirs.shutdown(socket.SHUT_WR)
            while theirs.recv(4096):
                pass
        except OSError:
            pass

    t = threading.Thread(target=peer, daemon=True)
    t.start()
    conn = Connection(ours, Deadline(2), "fuzz")
    try:
        if run == "imap":
            client = ImapClient(conn)
            client.greeting()
            client.capability()
        else:
            smtp = SmtpClient(conn)
            smtp.banner()
            smtp.ehlo("probe.invalid")
    except ProbeFailure:
        pass
    finally:
        conn.close()
        theirs.close()
        t.join(timeout=2)


streams = st.lists(st.one_of(imapish, lines, st.sampled_from([
    b"* OK ready", b"mf1 OK done", b"* CAPABILITY IMAP4rev1", b"* 1 FETCH {5}", b"hello",
    b"220 mx ESMTP", b"250-x", b"250 y", b"+ ", b"{99999999999}"])), max_size=6).map(
    lambda parts: b"\r\n".join(parts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.sampled_from(["imap", "smtp"]))
def test_clients_fail_only_with_probe_failure(payload: bytes, which: str) -> None:
    _feed(payload, which)


def test_bare_lf_line_ends_are_accepted() -> None:
    """Some servers (and proxies) end lines with LF only (blackbox_exporter PR #703)."""
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\n"
                       b"220-mx1.lab.test ESMTP\n220 more\n")
        conn = Connection(ours, Deadline(2), "lf")
        client = ImapClient(conn)
        assert client.greeting().status == "OK"
        assert "AUTH=PLAIN" in client.capabilities
        assert SmtpClient(conn).banner().lines == ("mx1.lab.test ESMTP", "more")
    finally:
        ours.close()
        theirs.close()


# -- the layer's pure pieces: one SASL initial response for both clients, DATA, FETCH ----
def test_one_initial_response_serves_imap_and_smtp() -> None:
    from mailfleet.checks.sasl import initial_response

    assert initial_response("PLAIN", "u", "p", "h", 1) == base64.b64encode(b"\0u\0p")
    assert initial_response("LOGIN", "u", "p", "h", 1) is None  # two prompted steps
    assert b"port=993" in base64.b64decode(initial_response("OAUTHBEARER", "u", "t", "h", 993)
                                           or b"")
    with pytest.raises(ValueError, match="unknown mechanism"):
        initial_response("CRAM-MD5", "u", "p", "h", 1)


def test_a_message_is_dot_stuffed_with_crlf_line_ends() -> None:
    from mailfleet.checks.smtp_client import dot_stuffed

    assert dot_stuffed(b"a\n.b\r\n..c\n") == b"a\r\n..b\r\n...c\r\n.\r\n"


def test_fetch_flags_and_counts_of_pushed_responses() -> None:
    from mailfleet.checks.imap_client import counted
    from mailfleet.checks.imap_proto import parse_line
    from mailfleet.checks.sync_watch import fetch_flags

    item = counted(parse_line(b"* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (12))"))
    assert item is not None and item[:2] == (3, "FETCH")
    assert fetch_flags(item[2]) == ["\\Seen", "\\Recent"]
    assert fetch_flags("((((") == [] and fetch_flags("") == []
    assert counted(parse_line(b"* OK still here")) is None
