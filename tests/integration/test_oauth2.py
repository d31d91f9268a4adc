"""OAuth2 logins (XOAUTH2, OAUTHBEARER) on the lab fleet, with real tokens.

inventory/lab/group_vars/all/oauth2.yml turns on local JWT validation with two
lab keys (ES256, RS256); tests/integration/oauth2_keys/ holds their private
halves and a stranger's key. Tokens are minted with checks.oauth2 (the
probes' helper). A valid token logs in over IMAPS and submits over 587 and
465; each broken token differs from a valid one in one respect only and is
refused with an authentication failure. Dovecot delays the answer to each
failure (auth_failure_delay) and penalises the client address more with each
one in a row: a successful login after a refusal resets the penalty. The
broken logins of a host are tried all at once, each on its own connection, so
the host's refusals cost one delay and one penalty, not one each.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import smtplib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailfleet.checks.oauth2 import mint_access_token
from tests.integration.conftest import MailFleet, MailUser

pytestmark = [pytest.mark.lab]

KEYS = Path(__file__).parent / "oauth2_keys"
ISSUER = "https://idp.lab.test"
AUDIENCE = "mail"
SCOPE = "openid mail"
TIMEOUT = 45.0  # a refused login waits auth_failure_delay plus any per-address penalty


def key(name: str) -> bytes:
    return (KEYS / f"{name}.pem").read_bytes()


def token(user: str, *, alg: str = "ES256", kid: str | None = None, pem: bytes | None = None,
          issuer: str = ISSUER, audience: str | list[str] = AUDIENCE, lifetime: float = 300,
          now: float | None = None, extra: dict[str, Any] | None = None) -> str:
    claims: dict[str, Any] = {"scope": SCOPE}
    claims.update(extra or {})
    return mint_access_token(
        private_key_pem=pem or key(f"lab-{alg.lower()}"), algorithm=alg, user=user,
        issuer=issuer, audience=audience, user_claim="email", lifetime=lifetime,
        kid=kid or f"lab-{alg.lower()}", extra_claims=claims, now=now,
    )


def xoauth2(user: str, tok: str) -> bytes:
    return f"user={user}\x01auth=Bearer {tok}\x01\x01".encode()


def oauthbearer(user: str, tok: str, host: str, port: int) -> bytes:
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {tok}\x01\x01".encode()


def sasl_steps(first: bytes) -> Callable[[bytes], bytes]:
    """imaplib/smtplib auth object: the response, then an empty answer to an error challenge."""
    calls: list[bytes] = []

    def answer(challenge: bytes | None = None) -> bytes:
        calls.append(challenge or b"")
        return first if len(calls) == 1 else b""

    return answer


@contextlib.contextmanager
def imap(fleet: MailFleet, user: MailUser) -> Iterator[imaplib.IMAP4_SSL]:
    conn = fleet.imaps(user.host.name, timeout=TIMEOUT)
    try:
        yield conn
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            conn.logout()


def imap_token_login(fleet: MailFleet, user: MailUser, mechanism: str, tok: str) -> None:
    """Log in with the token; raises imaplib.IMAP4.error on refusal."""
    with imap(fleet, user) as conn:
        blob = (xoauth2(user.address, tok) if mechanism == "XOAUTH2"
                else oauthbearer(user.address, tok, user.host.fqdn, 993))
        typ, _ = conn.authenticate(mechanism, sasl_steps(blob))
        assert typ == "OK"
        typ, data = conn.select("INBOX")
        assert typ == "OK", data


def imap_refused(fleet: MailFleet, user: MailUser, blob: bytes,
                 mechanism: str = "XOAUTH2", good: str | None = None) -> str:
    """The server's refusal of ``blob``; then a good login (token ``good`` or a fresh
    lab token) resets the failure penalty."""
    why = imap_refusals(fleet, user, {"": (mechanism, blob)}, good)[""]
    assert why != "accepted", f"{mechanism} {blob[:60]!r} logged in"
    return why


def imap_refusals(fleet: MailFleet, user: MailUser, attempts: dict[str, tuple[str, bytes]],
                  good: str | None = None) -> dict[str, str]:
    """Each attempt (name -> mechanism, SASL blob) on its own IMAPS connection, all at
    once: name -> the server's refusal, or "accepted". Then a good login (token ``good``
    or a fresh lab token) resets the penalty."""
    def attempt(mechanism: str, blob: bytes) -> str:
        with imap(fleet, user) as conn:
            try:
                conn.authenticate(mechanism, sasl_steps(blob))
            except imaplib.IMAP4.error as refused:
                return str(refused)
        return "accepted"

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        started = {name: pool.submit(attempt, *how) for name, how in attempts.items()}
        answers = {name: future.result() for name, future in started.items()}
    imap_token_login(fleet, user, "XOAUTH2", good or token(user.address))
    return answers


def last_host_on(fleet: MailFleet, release: str) -> str:
    """The fleet's last host on that Debian release (the lab's default fleet is mixed:
    mx1 Debian 12, mx2 and mx3 13; mx2 is the introspection tests' host, whose inventory
    they leave in that mode)."""
    found = [h.name for h in fleet.hosts if h.release == release]
    assert found, f"the lab has no Debian {release} host: {[h.release for h in fleet.hosts]}"
    return found[-1]


# Every test here runs on a Debian 12 host (Dovecot 2.3) and a Debian 13 one (2.4).
@pytest.fixture(scope="module", params=["12", "13"], ids=["debian12", "debian13"])
def token_host(mail_fleet: MailFleet, request: pytest.FixtureRequest) -> str:
    return last_host_on(mail_fleet, request.param)


@pytest.fixture(scope="module")
def alice(mail_fleet: MailFleet, token_host: str) -> MailUser:
    return mail_fleet.user(token_host, "alice")


@pytest.fixture(scope="module")
def bob(mail_fleet: MailFleet, token_host: str) -> MailUser:
    return mail_fleet.user(token_host, "bob")


def test_tokens_are_offered_only_after_tls_beside_passwords(
    mail_fleet: MailFleet, alice: MailUser
) -> None:
    with imap(mail_fleet, alice) as conn:
        caps = set(conn.capabilities)
    assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "AUTH=PLAIN"} <= caps
    with mail_fleet.smtp(alice.host.name, 587, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.lab.test")
        assert not smtp.has_extn("auth"), "AUTH before STARTTLS"
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        offered = set(smtp.esmtp_features["auth"].upper().split())
    assert {"XOAUTH2", "OAUTHBEARER", "PLAIN", "LOGIN"} <= offered


@pytest.mark.parametrize(("mechanism", "alg"), [("XOAUTH2", "ES256"), ("OAUTHBEARER", "RS256"),
                                                ("XOAUTH2", "RS256"), ("OAUTHBEARER", "ES256")])
def test_a_valid_token_logs_in_over_imaps(
    mail_fleet: MailFleet, alice: MailUser, mechanism: str, alg: str
) -> None:
    imap_token_login(mail_fleet, alice, mechanism, token(alice.address, alg=alg))


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("sent with an OAuth2 token\n")
    return msg


def _wait_for_subject(fleet: MailFleet, user: MailUser, subject: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with imap(fleet, user) as conn:
            conn.login(user.address, user.password)
            conn.select("INBOX", readonly=True)
            typ, data = conn.search(None, "SUBJECT", f'"{subject}"')
            if typ == "OK" and data[0].split():
                return True
        time.sleep(1)
    return False


@pytest.mark.parametrize(("port", "mechanism"), [(587, "XOAUTH2"), (465, "OAUTHBEARER")])
def test_a_valid_token_submits(
    mail_fleet: MailFleet, alice: MailUser, bob: MailUser, port: int, mechanism: str
) -> None:
    tok = token(alice.address)
    blob = (xoauth2(alice.address, tok) if mechanism == "XOAUTH2"
            else oauthbearer(alice.address, tok, alice.host.fqdn, port))
    subject = f"oauth2 submission {port} {time.time_ns()}"
    smtp_cm = (mail_fleet.smtps(alice.host.name, port, timeout=TIMEOUT) if port == 465
               else mail_fleet.smtp(alice.host.name, port, timeout=TIMEOUT))
    with smtp_cm as smtp:
        smtp.ehlo("client.lab.test")
        if port == 587:
            smtp.starttls(context=mail_fleet.tls_context())
            smtp.ehlo("client.lab.test")
        steps = sasl_steps(blob)
        code, _ = smtp.auth(mechanism, lambda c=None: steps(c).decode(),
                            initial_response_ok=False)
        assert code == 235
        smtp.send_message(_message(alice.address, bob.address, subject))
    assert _wait_for_subject(mail_fleet, bob, subject), "the submitted message did not arrive"


def test_a_long_token_through_587_and_imaps(mail_fleet: MailFleet, alice: MailUser) -> None:
    """A 3.5 KB JWT (roundcube#8623): sent after the 334 / "+" continuation, never on
    the command line, it logs in on both."""
    long_tok = token(alice.address, alg="RS256", extra={"groups": ["g" * 40] * 60})
    assert 3000 <= len(long_tok) <= 4096, len(long_tok)
    imap_token_login(mail_fleet, alice, "XOAUTH2", long_tok)
    if alice.host.release == "12":
        # Dovecot 2.4.1 (Debian 13): a validly signed token this long over OAUTHBEARER
        # crashes the auth process (signal 11) for some lengths; XOAUTH2 is not affected.
        # roles/dovecot/README.md documents it.
        imap_token_login(mail_fleet, alice, "OAUTHBEARER", long_tok)
    blob = xoauth2(alice.address, long_tok).decode()
    with mail_fleet.smtp(alice.host.name, 587, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        code, _ = smtp.auth("XOAUTH2", lambda c=None: blob, initial_response_ok=False)
        assert code == 235


@pytest.mark.timeout(300)
def test_a_long_token_on_the_smtp_auth_line_breaks(mail_fleet: MailFleet, alice: MailUser) -> None:
    """Why clients must wait for 334: Postfix cuts the AUTH line at 2048 bytes."""
    long_tok = token(alice.address, alg="RS256", extra={"groups": ["g" * 40] * 60})
    blob = xoauth2(alice.address, long_tok).decode()
    smtp = mail_fleet.smtp(alice.host.name, 587, timeout=TIMEOUT)
    try:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("XOAUTH2", lambda c=None: blob if c is None else "",
                      initial_response_ok=True)
    finally:
        # No QUIT: Postfix 3.10 answers the rest of the cut line (500) where 3.7
        # dropped it, so the next reply read would not be QUIT's.
        smtp.close()
    assert refused.value.smtp_code == 535
    assert b"initial response" in refused.value.smtp_error, refused.value
    imap_token_login(mail_fleet, alice, "XOAUTH2", token(alice.address))  # reset the penalty


def _stranger_kid_token(user: str) -> str:
    # signed by another key under a kid the servers know: the signature fails
    return token(user, alg="ES256", kid="lab-es256", pem=key("stranger-es256"))


def _alg_none_token(user: str) -> str:
    now = int(time.time())
    header = {"alg": "none", "typ": "JWT", "kid": "lab-es256"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "email": user, "scope": SCOPE,
              "iat": now, "nbf": now, "exp": now + 300}

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


REFUSED: dict[str, Callable[[str], str]] = {
    "expired": lambda u: token(u, now=time.time() - 3600, lifetime=600),
    "wrong-audience": lambda u: token(u, audience="calendar"),
    "wrong-issuer": lambda u: token(u, issuer="https://evil.example"),
    "unknown-key": lambda u: token(u, kid="k9"),
    "signed-by-a-stranger": _stranger_kid_token,
    "without-the-scope": lambda u: token(u, extra={"scope": "openid"}),
    "alg-none": _alg_none_token,
}


MALFORMED = [b"this is not xoauth2", b"user=\x01\x01", b"n,a=x,\x01auth=Basic abc\x01\x01"]


@pytest.fixture(scope="module")
def refusals(mail_fleet: MailFleet, alice: MailUser, bob: MailUser) -> dict[str, str]:
    """Every broken login of the tests below, tried at once on the token host."""
    attempts = {f"token {case}": ("XOAUTH2", xoauth2(alice.address, make(alice.address)))
                for case, make in REFUSED.items()}
    attempts["another user's token XOAUTH2"] = (
        "XOAUTH2", xoauth2(alice.address, token(bob.address)))
    attempts["another user's token OAUTHBEARER"] = (
        "OAUTHBEARER", oauthbearer(alice.address, token(bob.address), alice.host.fqdn, 993))
    for blob in MALFORMED:
        attempts[f"malformed {blob!r}"] = (
            "OAUTHBEARER" if blob.startswith(b"n,") else "XOAUTH2", blob)
    return imap_refusals(mail_fleet, alice, attempts)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_token_is_refused(refusals: dict[str, str], case: str) -> None:
    why = refusals[f"token {case}"]
    assert "AUTHENTICATIONFAILED" in why, why


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_token_for_another_user_is_refused(refusals: dict[str, str], mechanism: str) -> None:
    why = refusals[f"another user's token {mechanism}"]
    assert "AUTHENTICATIONFAILED" in why, why


@pytest.mark.timeout(300)
@pytest.mark.parametrize("blob", MALFORMED)
def test_a_malformed_sasl_blob_is_refused(refusals: dict[str, str], blob: bytes) -> None:
    why = refusals[f"malformed {blob!r}"]
    assert "AUTHENTICATIONFAILED" in why or "BAD" in why or "NO" in why, why


@pytest.mark.timeout(300)
def test_submission_refuses_an_expired_token(mail_fleet: MailFleet, alice: MailUser) -> None:
    blob = xoauth2(alice.address, REFUSED["expired"](alice.address)).decode()
    with mail_fleet.smtp(alice.host.name, 587, timeout=TIMEOUT) as smtp:
        smtp.ehlo("client.lab.test")
        smtp.starttls(context=mail_fleet.tls_context())
        smtp.ehlo("client.lab.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("XOAUTH2", lambda c=None: blob if c is None or c == b"" else "",
                      initial_response_ok=False)
    assert refused.value.smtp_code == 535, refused.value
    imap_token_login(mail_fleet, alice, "XOAUTH2", token(alice.address))  # reset the penalty


@pytest.mark.parametrize(
    ("bad_vars", "message"),
    [
        ({"dovecot_oauth2_client_id": ""}, "checks aud only through client_id"),
        ({"dovecot_oauth2_keys": [{"kid": "../../etc/passwd", "algorithm": "ES256",
                                   "public_key": "-----BEGIN PUBLIC KEY-----\nAA==\n"
                                                 "-----END PUBLIC KEY-----"}]}, "a file name"),
        ({"dovecot_oauth2_keys": [{"kid": "k1", "algorithm": "ES256",
                                   "public_key": "-----BEGIN PRIVATE KEY-----\nAA==\n"
                                                 "-----END PRIVATE KEY-----"}]},
         "never a private key"),
        ({"dovecot_oauth2_mode": "introspection",
          "dovecot_oauth2_introspection_url": "http://idp.example.org/introspect"},
         "must be an https:// URL"),
    ],
    ids=["no-audience", "kid-path", "private-key", "plain-http-endpoint"],
)
def test_an_unsafe_oauth2_setting_stops_the_run_before_any_host(
    mail_fleet: MailFleet, bad_vars: dict[str, object], message: str
) -> None:
    unreachable = str(mail_fleet.lab.config.subnet.network_address + 250)
    run = mail_fleet.playbook(extra_vars={**bad_vars, "ansible_host": unreachable},
                              playbook="playbooks/mail.yml")
    assert run.returncode != 0
    assert message in run.output, run.output[-4000:]
    assert "UNREACHABLE" not in run.output, "a host was contacted before the input was checked"
