"""A second, private Dovecot instance on a lab host, run by the checks lab tests.

It never touches the host's own Dovecot or Postfix (which the mail roles may
deploy in the same session): its own config under /etc/mfcheck, its own
base_dir, state_dir and log, its own ports (10993 IMAPS, 10143 IMAP), and it is
stopped by its master PID at the end. It serves what the deployed stack does
not: one certificate per SNI name (so expired, wrong-hostname and untrusted
certificates are served at once), OAuth2 with local JWT validation, a quota.
A passwd-file passdb (not PAM: ~2 s per login).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from mailfleet.lab.fleet import Lab, LabHost
from tests.checks.certs import DAY, MINUTE, Issued, make_ca, make_leaf, now

USER = "probe@example1.test"
PASSWORD = "probe-lab-password"  # a throwaway lab account
QUOTA_KIB = 1024
SNI_CASES = ("expired", "wrongname", "untrusted")

IMAPS_PORT = 10993
IMAP_PORT = 10143
ETC = "/etc/mfcheck"

DOVECOT_CONF = """\
# Written by tests/checks/labmail.py: a private instance for the checks lab tests.
instance_name = mfcheck
base_dir = /run/mfcheck/
state_dir = /var/lib/mfcheck
protocols = imap
listen = *
log_path = /var/log/mfcheck-dovecot.log
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
ssl = yes
ssl_cert = <{etc}/good.crt
ssl_key = <{etc}/good.key
{local_names}
disable_plaintext_auth = yes
auth_mechanisms = plain login xoauth2 oauthbearer
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {etc}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {etc}/oauth2.conf.ext
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home=/var/lib/mfcheck-mail/%d/%n
}}
first_valid_uid = 8
first_valid_gid = 8
mail_location = maildir:~/Maildir
mail_plugins = quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = count:User quota
  quota_rule = *:storage={quota}K
  quota_vsizes = yes
}}
"""

OAUTH2_CONF = f"""\
introspection_mode = local
local_validation_key_dict = fs:posix:prefix={ETC}/keys/
username_attribute = email
"""


@dataclass(frozen=True)
class MailHost:
    host: LabHost
    ca_bundle: Path  # the test CA, on the controller
    hmac_key: bytes

    def token(self, user: str = USER, pad: int = 0, key: bytes | None = None,
              lifetime: int = 600) -> str:
        """A JWT the lab Dovecot accepts (HS256, typ JWT); ``pad`` bytes of extra claim."""
        issued = int(time.time())
        claims: dict[str, object] = {"sub": user, "email": user, "iat": issued - 5,
                                     "nbf": issued - 5, "exp": issued + lifetime}
        if pad:
            claims["pad"] = "x" * pad
        return jwt.encode(claims, key or self.hmac_key, algorithm="HS256",
                          headers={"typ": "JWT"})


def _put(lab: Lab, host: LabHost, path: str, data: bytes, mode: str = "0644") -> None:
    lab.exec(host, ["sh", "-c", f"mkdir -p \"$(dirname {path})\" && cat > {path} && "
                    f"chmod {mode} {path}"], input=data)


def _wait_ports(address: str, ports: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address}:{port} did not open within {timeout:.0f} s")
            time.sleep(0.2)


def setup_mail_host(lab: Lab, host: LabHost, workdir: Path) -> MailHost:
    """Start the private instance (installing dovecot-imapd if the host has none)."""
    lab.require_up()
    installed = lab.exec(host, ["dpkg-query", "-W", "-f", "${Status}", "dovecot-imapd"],
                         check=False)
    if b"install ok installed" not in installed.stdout:
        lab.exec(host, ["sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
                        "apt-get install -y -q dovecot-imapd </dev/null"], timeout=600)
    stop_mail_host(lab, host)  # a leftover from an interrupted run
    ca = make_ca("mailfleet checks lab CA")
    stranger = make_ca("a CA nobody trusts")
    leaves: dict[str, Issued] = {
        "good": make_leaf(ca, [host.fqdn]),
        "expired": make_leaf(ca, [f"expired.{host.fqdn}"], not_before=now() - 90 * DAY,
                             not_after=now() - 3 * DAY - MINUTE),
        "wrongname": make_leaf(ca, ["elsewhere.lab.test"]),
        "untrusted": make_leaf(stranger, [f"untrusted.{host.fqdn}"]),
    }
    for name, leaf in leaves.items():
        _put(lab, host, f"{ETC}/{name}.crt", leaf.pem)
        _put(lab, host, f"{ETC}/{name}.key", leaf.key_pem, "0600")
    local_names = "".join(
        f"local_name {case}.{host.fqdn} {{\n  ssl_cert = <{ETC}/{case}.crt\n"
        f"  ssl_key = <{ETC}/{case}.key\n}}\n" for case in SNI_CASES
    )
    conf = DOVECOT_CONF.format(local_names=local_names, quota=QUOTA_KIB, etc=ETC,
                               imap_port=IMAP_PORT, imaps_port=IMAPS_PORT)
    _put(lab, host, f"{ETC}/dovecot.conf", conf.encode())
    _put(lab, host, f"{ETC}/users", f"{USER}:{{PLAIN}}{PASSWORD}::::::\n".encode(), "0640")
    hmac_key = secrets.token_bytes(32)
    _put(lab, host, f"{ETC}/oauth2.conf.ext", OAUTH2_CONF.encode())
    _put(lab, host, f"{ETC}/keys/default/HS256/default", base64.b64encode(hmac_key))
    lab.exec(host, ["sh", "-c", f"chgrp dovecot {ETC}/users; install -d /var/lib/mfcheck; "
                    "install -d -o mail -g mail /var/lib/mfcheck-mail"])
    lab.exec(host, ["doveconf", "-c", f"{ETC}/dovecot.conf", "-n"])  # loud on a config error
    lab.exec(host, ["sh", "-c", f"dovecot -c {ETC}/dovecot.conf </dev/null >/dev/null 2>&1"])
    _wait_ports(host.address, [IMAPS_PORT, IMAP_PORT])
    bundle = workdir / "lab-ca.pem"
    bundle.write_bytes(ca.pem)
    return MailHost(host=host, ca_bundle=bundle, hmac_key=hmac_key)


def stop_mail_host(lab: Lab, host: LabHost) -> None:
    """Stop the private instance by its master PID (dovecot stop reads base_dir/master.pid)."""
    lab.exec(host, ["sh", "-c", f"test -f {ETC}/dovecot.conf && test -f /run/mfcheck/master.pid"
                    f" && dovecot -c {ETC}/dovecot.conf stop </dev/null >/dev/null 2>&1; true"],
             check=False)


HOSTILE = r"""
import socket, sys, threading, time
kind, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(16)
end = time.time() + 300  # stops by itself
def serve(c):
    if kind == "garbage":
        c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    elif kind == "stalltls":
        c.recv(4096)
    time.sleep(max(0, end - time.time()))
s.settimeout(1)
while time.time() < end:
    try:
        c, _ = s.accept()
    except OSError:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def start_hostile(lab: Lab, host: LabHost, kind: str, port: int) -> int:
    """A hostile server on the lab host (stops by itself after 300 s); returns its PID."""
    _put(lab, host, "/root/mf-hostile.py", HOSTILE.encode())
    proc = lab.exec(host, ["sh", "-c", f"python3 /root/mf-hostile.py {kind} {port} "
                           "</dev/null >/dev/null 2>&1 & echo $!"])
    pid = int(proc.stdout.decode().strip())
    _wait_ports(host.address, [port], timeout=10)
    return pid


def stop_hostile(lab: Lab, host: LabHost, pid: int) -> None:
    lab.exec(host, ["kill", str(pid)], check=False)
