"""A real Dovecot of our own on loopback addresses, for the benches and the reliability suite.

It never touches the system Dovecot: its own config, ``base_dir``, ``state_dir``
and ``instance_name`` under a temp dir, passwd-file users (no PAM), a TLS
certificate from a throw-away test CA, and listeners only on the loopback
addresses asked for (``127.x.y.z`` — Linux routes all of 127.0.0.0/8 to ``lo``,
so binding any of them needs no ``ip addr add``; nothing is ever bound to
0.0.0.0), on an unprivileged port found free at start.

``mail_max_userip_connections`` is raised: the benches log in as one account
from one address many times at once (the issue's trap: the default 10 makes ~3%
of such probes fail). Login processes run in high-performance mode
(``service_count = 0``) so the server is not what a client bench measures.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DOVECOT = "/usr/sbin/dovecot"
HOSTNAME = "imap.bench.test"
USER = "probe"
PASSWORD = "probe-secret-1"


def dovecot_available() -> str | None:
    """None when a local Dovecot can run here, else why not."""
    if not Path(DOVECOT).exists():
        return "Dovecot is not installed (apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "a local Dovecot needs root (it drops to its own users)"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"user {user} missing (install dovecot-core)"
    return None


def loopback_addresses(count: int, base: str = "127.77.0.1") -> list[str]:
    """``count`` consecutive 127.x addresses from ``base`` (never .0 or .255 octets)."""
    start = ipaddress.IPv4Address(base)
    found: list[str] = []
    addr = start
    while len(found) < count:
        if not ipaddress.IPv4Network("127.0.0.0/8").supernet_of(
            ipaddress.IPv4Network(f"{addr}/32")
        ):
            raise ValueError("ran out of loopback addresses")
        last = int(addr) & 0xFF
        if last not in (0, 255):
            found.append(str(addr))
        addr += 1
    return found


# -- certificates ------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def write_test_pki(directory: Path, key_type: str = "ecdsa") -> tuple[Path, Path, Path]:
    """A test CA and a leaf for ``imap.bench.test`` / ``*.bench.test``: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key(key_type)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("mailfleet bench CA"))
        .issuer_name(_name("mailfleet bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = _key(key_type)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(HOSTNAME))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(HOSTNAME), x509.DNSName("*.bench.test")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


# -- Dovecot -----------------------------------------------------------------------
CONFIG = """\
# mailfleet bench/test Dovecot: loopback only, its own dirs, no PAM.
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = {listen}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_max_userip_connections = 100000
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
login_trusted_networks =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {login_processes}
  client_limit = 4000
  vsz_limit = 1G
}}
service imap {{
  service_count = 1000
  process_min_avail = 4
  process_limit = 4096
}}
service auth {{
  client_limit = 8000
}}
service anvil {{
  client_limit = 8000
}}
default_client_limit = 8000
default_process_limit = 4096
"""


# A 1 MiB storage quota on the probe account (what the quota check reads).
QUOTA_CONFIG = """\
mail_plugins = $mail_plugins quota
protocol imap {
  mail_plugins = $mail_plugins imap_quota
}
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=1M
}
"""


@dataclass
class LocalDovecot:
    """One Dovecot master process we started; stop() ends it (by its PID) and its children."""

    root: Path
    addresses: list[str]
    port: int
    ca: Path
    process: subprocess.Popen[bytes]
    owns_root: bool = True
    pids_seen: list[int] = field(default_factory=list)

    @property
    def user(self) -> str:
        return USER

    @property
    def password(self) -> str:
        return PASSWORD

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the master (a crash); its children lose their parent and exit.

        Returns once nothing listens any more (a login process may accept for a few
        ms after its master died)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        _wait_ports_closed(self.addresses[:1], self.port, 5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        _wait_ports_closed(self.addresses[:1], self.port, 5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _port_open(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.3):
        return True
    return False


def _wait_ports_closed(addresses: Sequence[str], port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(_port_open(a, port) for a in addresses):
        time.sleep(0.05)


def _free_port(addresses: Sequence[str]) -> int:
    """A port no one listens on at any of the addresses (checked by binding them all)."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        socks: list[socket.socket] = []
        try:
            for a in addresses:
                s = socket.socket()
                socks.append(s)
                s.bind((a, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port found for the local Dovecot")


def start_dovecot(
    addresses: Sequence[str],
    root: Path | None = None,
    key_type: str = "ecdsa",
    login_processes: int = 2,
    timeout: float = 20.0,
    extra_config: str = "",
) -> LocalDovecot:
    """Start Dovecot listening on ``addresses`` (all loopback) and wait until each answers.

    ``extra_config`` is appended to the configuration (``QUOTA_CONFIG``: a quota).
    """
    why = dovecot_available()
    if why:
        raise RuntimeError(why)
    for a in addresses:
        if not ipaddress.IPv4Address(a).is_loopback:
            raise ValueError(f"{a} is not a loopback address: the local Dovecot listens on lo only")
    owns = root is None
    root = root or Path(tempfile.mkdtemp(prefix="mailfleet-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "home"):
        (root / sub).mkdir(exist_ok=True)
    nobody = pwd.getpwnam("nobody")
    (root / "home").chmod(0o777)
    ca, cert, key = write_test_pki(root, key_type)
    users = root / "users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    users.chmod(0o644)
    port = _free_port(addresses[:50])
    conf = root / "dovecot.conf"
    conf.write_text(
        CONFIG.format(
            instance=f"mailfleet-{root.name}",
            root=root,
            listen=", ".join(addresses),
            cert=cert,
            key=key,
            port=port,
            uid=nobody.pw_uid,
            gid=nobody.pw_gid,
            login_processes=login_processes,
        )
        + extra_config
    )
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(conf)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    server = LocalDovecot(root, list(addresses), port, ca, proc, owns_root=owns)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            log = server.log.read_text(errors="replace") if server.log.exists() else ""
            if proc.stderr is not None:
                proc.stderr.close()
            if owns:
                shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"dovecot exited {proc.returncode}: {err.strip()} {log[-2000:]}")
        if _port_open(addresses[0], port) and _port_open(addresses[-1], port):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"dovecot did not listen on {addresses[0]}:{port} within {timeout} s")


@contextlib.contextmanager
def running_dovecot(addresses: Sequence[str], **kwargs: object) -> Iterator[LocalDovecot]:
    server = start_dovecot(addresses, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
