"""Who may see the dashboard, and where it may listen."""

from __future__ import annotations

import base64
import io
import ipaddress
from pathlib import Path

import pytest

from mailfleet import cli
from mailfleet.dashboard.auth import (
    AuthConfig,
    AuthConfigError,
    auth_config,
    hash_password,
    parse_auth_file,
)
from mailfleet.dashboard.security import BindRefused, check_bind_allowed
from tests.dashboard_web.conftest import make_app

PASSWORD = "correct horse battery staple"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password(PASSWORD)


def test_basic_auth_refuses_without_or_with_wrong_credentials(
    tmp_path: Path, alice_hash: str
) -> None:
    app = make_app(tmp_path, MAILFLEET_AUTH=AuthConfig(users={"alice": alice_hash}))
    c = app.test_client()
    for path in ("/", "/hosts/mx1", "/api/fleet", "/api/hosts/mx1", "/metrics", "/sd",
                 "/hosts/nope"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="mailfleet"')
        assert "mx1" not in r.get_data(as_text=True)
        assert c.get(path, headers=basic("alice", "wrong")).status_code == 401
        assert c.get(path, headers=basic("mallory", PASSWORD)).status_code == 401
    assert c.get("/", headers=basic("alice", PASSWORD)).status_code == 200
    assert c.get("/api/hosts/mx1", headers=basic("alice", PASSWORD)).status_code == 200
    assert c.get("/hosts/nope", headers=basic("alice", PASSWORD)).status_code == 404
    # Liveness checks carry no credentials and learn nothing but counts.
    assert c.get("/healthz").status_code == 200
    # A refusal still carries the security headers.
    assert c.get("/").headers["X-Content-Type-Options"] == "nosniff"


def test_proxy_header_is_believed_only_from_the_trusted_proxy(tmp_path: Path) -> None:
    config = AuthConfig(proxy_header="X-Remote-User",
                        trusted_proxies=(ipaddress.ip_network("10.9.0.5/32"),))
    c = make_app(tmp_path, MAILFLEET_AUTH=config).test_client()
    from_proxy = {"REMOTE_ADDR": "10.9.0.5"}
    assert c.get("/", headers={"X-Remote-User": "bob"},
                 environ_base=from_proxy).status_code == 200
    assert c.get("/", environ_base=from_proxy).status_code == 401  # proxy sent no user
    assert c.get("/", headers={"X-Remote-User": "bob"},
                 environ_base={"REMOTE_ADDR": "10.9.0.6"}).status_code == 401


def test_auth_file_holds_hashes_only(tmp_path: Path, alice_hash: str) -> None:
    assert parse_auth_file(f"# admins\nalice:{alice_hash}\n") == {"alice": alice_hash}
    with pytest.raises(AuthConfigError) as plain:
        parse_auth_file("alice:hunter2\n")
    assert "not a password hash" in str(plain.value) and "hunter2" not in str(plain.value)
    with pytest.raises(AuthConfigError):
        parse_auth_file("# nobody\n")
    with pytest.raises(AuthConfigError, match="listed twice"):
        parse_auth_file(f"alice:{alice_hash}\nalice:{alice_hash}\n")
    path = tmp_path / "users"
    path.write_text(f"alice:{alice_hash}\n")
    loaded = auth_config(path)
    assert loaded is not None and loaded.users == {"alice": alice_hash}
    assert auth_config() is None


def test_proxy_header_needs_a_trusted_proxy() -> None:
    with pytest.raises(AuthConfigError, match="--trusted-proxy"):
        auth_config(proxy_header="X-Remote-User")
    with pytest.raises(AuthConfigError):
        auth_config(proxy_header="X-Remote-User", trusted_proxies=["not-an-address"])


@pytest.mark.parametrize("listen", ["127.0.0.1:9865", "127.0.0.2:80", "[::1]:9865",
                                    "localhost:9865", ("127.0.0.1", 9865)])
def test_loopback_needs_no_auth(listen: str | tuple[str, int]) -> None:
    check_bind_allowed(listen, None)


@pytest.mark.parametrize("listen", ["0.0.0.0:9865", "[::]:9865", "10.77.5.1:9865",
                                    "mon.example.org:9865", ":9865", ("0.0.0.0", 80)])
def test_beyond_loopback_needs_auth(listen: str | tuple[str, int], alice_hash: str) -> None:
    with pytest.raises(BindRefused, match="configure authentication"):
        check_bind_allowed(listen, None)
    with pytest.raises(BindRefused):
        check_bind_allowed(listen, AuthConfig())
    check_bind_allowed(listen, AuthConfig(users={"alice": alice_hash}))


def test_serve_refuses_a_public_listen_without_auth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alice_hash: str
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    code = cli.main(["serve", "-i", str(inventory), "--listen", "0.0.0.0:0",
                     "--db", str(tmp_path / "r.db")])
    assert code == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.write_text("alice:hunter2\n")
    code = cli.main(["serve", "-i", str(inventory), "--listen", "0.0.0.0:0",
                     "--auth-file", str(plain), "--db", str(tmp_path / "r.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert "not a password hash" in err and "hunter2" not in err
    # a serve that did not start leaves this process's DNS and SSH as they were (no answers
    # kept, no connections kept): the caches are a running watcher's, not the process's
    from mailfleet.checks.dns import lookups
    from mailfleet.checks.server.ssh import POOL

    assert lookups._shared_seconds == 0 and POOL.max_idle == 0


def test_hash_password_prints_a_line_for_the_auth_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["hash-password", "alice"]) == 0
    line = capsys.readouterr().out.strip()
    assert PASSWORD not in line
    users = parse_auth_file(line)
    from werkzeug.security import check_password_hash

    assert check_password_hash(users["alice"], PASSWORD)
