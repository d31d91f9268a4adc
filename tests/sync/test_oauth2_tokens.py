"""checks.oauth2: tokens Dovecot's local JWT validation accepts, refusals with reasons."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailfleet.checks.oauth2 import TokenError, describe_token, mint_access_token, public_key_pem


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def ec_key() -> bytes:
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def rsa_key() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize(("alg", "key_name"), [("ES256", "ec_key"), ("RS256", "rsa_key")])
def test_a_minted_token_verifies_with_the_public_key(
    alg: str, key_name: str, request: pytest.FixtureRequest
) -> None:
    key = request.getfixturevalue(key_name)
    token = mint_access_token(
        private_key_pem=key, algorithm=alg, user="probe@example1.test",
        issuer="https://idp.lab.test", audience="mail", user_claim="email", kid="k1",
    )
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "typ": "JWT", "kid": "k1"}
    claims = jwt.decode(token, public_key_pem(key), algorithms=[alg], audience="mail",
                        issuer="https://idp.lab.test")
    assert claims["email"] == "probe@example1.test"
    assert claims["sub"] == "probe@example1.test"  # Dovecot 2.3 requires sub
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 300


def test_expiry_is_enforced_by_a_verifier(ec_key: bytes) -> None:
    token = mint_access_token(private_key_pem=ec_key, algorithm="ES256", user="u",
                              issuer="i", audience="mail", lifetime=60, now=time.time() - 3600)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, public_key_pem(ec_key), algorithms=["ES256"], audience="mail")


@pytest.mark.parametrize("alg", ["none", "HS256", "EdDSA"])
def test_algorithms_dovecot_cannot_validate_with_a_public_key_are_refused(
    alg: str, ec_key: bytes
) -> None:
    with pytest.raises(TokenError, match="use one of RS256"):
        mint_access_token(private_key_pem=ec_key, algorithm=alg, user="u", issuer="i",
                          audience="a")


def test_a_key_that_cannot_sign_the_algorithm_is_refused(ec_key: bytes, rsa_key: bytes) -> None:
    with pytest.raises(TokenError, match="cannot sign RS256"):
        mint_access_token(private_key_pem=ec_key, algorithm="RS256", user="u", issuer="i",
                          audience="a")
    with pytest.raises(TokenError, match="cannot sign ES256"):
        mint_access_token(private_key_pem=rsa_key, algorithm="ES256", user="u", issuer="i",
                          audience="a")
    with pytest.raises(TokenError, match="not an unencrypted PEM"):
        mint_access_token(private_key_pem=b"garbage", algorithm="ES256", user="u",
                          issuer="i", audience="a")


def test_long_tokens_can_be_made_for_line_limit_tests(rsa_key: bytes) -> None:
    token = mint_access_token(private_key_pem=rsa_key, algorithm="RS256", user="u", issuer="i",
                              audience="mail", extra_claims={"groups": ["g" * 40] * 60})
    assert 2500 < len(token) < 4500


def test_describe_shows_claims_but_never_the_token(ec_key: bytes) -> None:
    token = mint_access_token(private_key_pem=ec_key, algorithm="ES256", user="probe",
                              issuer="i", audience="mail", kid="k2")
    described = describe_token(token)
    assert described["kid"] == "k2" and described["sub"] == "probe"
    assert token not in repr(described)
    assert token.split(".")[2] not in repr(described)
    with pytest.raises(TokenError, match="not a JWT"):
        describe_token("not.a.jwt")
