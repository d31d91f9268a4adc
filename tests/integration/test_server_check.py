"""The `server` check against real Postfix and Dovecot on lab hosts, over SSH as the
least-privilege user that roles/mailfleet_probe_access creates.

Runs on its own lab (default ``srvcheck`` on 10.77.249.0/24; MAILFLEET_SERVER_TEST_LAB
and MAILFLEET_SERVER_TEST_SUBNET choose another, e.g. to reuse a kept lab) because it
reconfigures Postfix and Dovecot on the hosts (tests/integration/server_lab/setup-mail.sh:
relayhost to an address of the lab subnet where nothing listens, so mail to anywhere
else is deferred and never leaves the lab). MAILFLEET_KEEP_LAB=1 keeps it afterwards.
"""

from __future__ import annotations

import imaplib
import ipaddress
import os
import shutil
import ssl
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from mailfleet.checks import PROBES
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.server import ServerSettings, ServerTarget, settings_from_hostvars
from mailfleet.checks.server.ssh import POOL, ConnectionPool, keep_connections
from mailfleet.checks.target import Deadline, ProbeOptions
from mailfleet.dashboard.metrics import result_samples
from mailfleet.dashboard.targets import run_ansible_inventory
from mailfleet.lab.fleet import Lab
from mailfleet.lab.hosts import LabHost
from tests.conftest import own_lab

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "server_lab"
AUDIT_LOG = "/var/log/mailfleet-probe/commands.log"
PROBE_BUDGET = 15.0


@dataclass
class ServerLab:
    lab: Lab
    hosts: dict[str, LabHost]
    hostvars: dict[str, dict[str, Any]]
    probe_key: Path
    relayhost: str
    tmp: Path

    def settings(self, name: str, **server: Any) -> ServerSettings:
        hv = dict(self.hostvars[name])
        hv["mailfleet_server"] = {"ssh_user": "mailfleet", "ssh_key_file": str(self.probe_key),
                                  **server}
        return settings_from_hostvars(name, hv)

    def target(self, name: str, settings: ServerSettings) -> ServerTarget:
        h = self.hosts[name]
        return ServerTarget(name=name, address=h.address, mail_hostname=h.fqdn, server=settings)

    def probe(self, name: str, settings: ServerSettings | None = None) -> ProbeResult:
        """The check as the scheduler runs it: PROBES["server"](target, options, deadline)."""
        self.lab.require_up()
        started = time.monotonic()
        target = self.target(name, settings or self.settings(name))
        result = PROBES["server"](target, ProbeOptions(), Deadline(PROBE_BUDGET))
        assert time.monotonic() - started < PROBE_BUDGET + 1
        return result

    def sh(self, name: str, script: str, check: bool = True) -> str:
        proc = self.lab.exec(self.hosts[name], ["sh", "-c", script], check=check, timeout=120)
        return proc.stdout.decode()

    def wait_for(self, name: str, ok: Callable[[ProbeResult], bool], what: str,
                 timeout: float = 60, settings: ServerSettings | None = None) -> ProbeResult:
        deadline = time.monotonic() + timeout
        while True:
            result = self.probe(name, settings)
            if ok(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not seen within {timeout:.0f} s: {result.to_dict()}")
            time.sleep(1)


def metrics(result: ProbeResult) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in result_samples(result)}


@pytest.fixture(scope="module")
def server_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerLab]:
    fleet = own_lab("srvcheck", "10.77.249.0/24", "MAILFLEET_SERVER_TEST")
    yield from prepared_server_lab(fleet, tmp_path_factory.mktemp("server"))


def prepared_server_lab(fleet: Lab, tmp: Path) -> Iterator[ServerLab]:
    """Two hosts of ``fleet`` with Postfix and Dovecot set up and the least-privilege probe
    user (its key in ``tmp``); the lab goes down afterwards unless MAILFLEET_KEEP_LAB=1."""
    config = fleet.config
    hosts = {h.name: h for h in fleet.up(2)}
    fleet.require_up()
    # Nothing listens there: the lab's own subnet, never routed out (internal network).
    relayhost = str(ipaddress.ip_network(config.subnet).network_address + 250)
    for h in hosts.values():
        fleet.exec(h, ["sh", "-s", h.fqdn, f"[{relayhost}]"],
                   input=(HERE / "setup-mail.sh").read_bytes(), timeout=600)
    key = tmp / "probe_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailfleet-probe",
                    "-f", str(key)], check=True)
    run = subprocess.run(
        [shutil.which("ansible-playbook") or str(ROOT / ".venv/bin/ansible-playbook"),
         "-i", str(config.inventory_path), str(HERE / "probe_access.yml"),
         "-e", f"probe_public_key_file={key}.pub"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    hostvars = run_ansible_inventory([config.inventory_path])["_meta"]["hostvars"]
    yield ServerLab(fleet, hosts, hostvars, key, relayhost, tmp)
    if os.environ.get("MAILFLEET_KEEP_LAB") != "1":
        fleet.down()


@pytest.mark.parametrize("host", ["mx1", "mx2"])  # Debian 12 and Debian 13
def test_a_healthy_host_as_the_least_privilege_user(server_lab: ServerLab, host: str) -> None:
    result = server_lab.probe(host)
    assert result.values["ssh_user"] == "mailfleet"
    assert result.values["command_errors"] == {}, result.error
    assert result.values["services"] == {"postfix": True, "dovecot": True}
    assert set(result.values["filesystems"]) == {"/var/vmail", "/var/spool/postfix"}
    assert result.values["cert_reload_pending"] is False
    assert result.values["commands_run"] == 5
    assert result.phases["total"] < PROBE_BUDGET


def test_the_probe_key_runs_nothing_else(server_lab: ServerLab) -> None:
    h = server_lab.hosts["mx1"]
    proc = subprocess.run(
        ["ssh", "-i", str(server_lab.probe_key), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={server_lab.lab.config.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", f"mailfleet@{h.address}", "cat /etc/shadow"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 126
    assert "mailfleet-probe-command: refused" in proc.stderr
    assert "refused 'cat /etc/shadow'" in server_lab.sh("mx1", f"tail -n 1 {AUDIT_LOG}")


def test_deferred_mail_shows_count_age_and_reason_and_a_flush_clears_it(
    server_lab: ServerLab,
) -> None:
    sl = server_lab
    sl.sh("mx1", "postsuper -d ALL >/dev/null 2>&1; true")
    for i in range(3):
        sl.sh("mx1", f"printf 'Subject: stuck {i}\\n\\nhello\\n' | "
                     f"/usr/sbin/sendmail -f probe@mx1.lab.test user{i}@example.net")
    result = sl.wait_for("mx1", lambda r: r.values.get("queue_messages", {}).get("deferred") == 3,
                         "3 deferred messages")
    assert result.values["queue_oldest_seconds"] > 0
    reason = result.values["deferral_reasons"][0]
    assert reason["count"] == 3
    assert f"connect to {sl.relayhost}[{sl.relayhost}]:25" in reason["reason"]
    series = metrics(result)
    assert series[("mailfleet_postfix_queue_messages", (("queue", "deferred"),))] == 3
    assert series[("mailfleet_postfix_queue_oldest_seconds", ())] > 0
    # Fix the route (here: deliver nowhere), then flush: the queue empties.
    sl.sh("mx1", "postconf -e default_transport=discard relay_transport=discard "
                 "&& postfix reload >/dev/null 2>&1 && postqueue -f")
    try:
        cleared = sl.wait_for(
            "mx1", lambda r: sum(r.values.get("queue_messages", {"x": 1}).values()) == 0,
            "an empty queue after the flush")
        assert cleared.values["queue_oldest_seconds"] is None
        assert metrics(cleared)[("mailfleet_postfix_queue_oldest_seconds", ())] == 0
    finally:
        sl.sh("mx1", "postconf -X default_transport relay_transport "
                     "&& postfix reload >/dev/null 2>&1")


def test_dovecot_sessions_are_counted_without_names(server_lab: ServerLab) -> None:
    h = server_lab.hosts["mx1"]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the probe's account; the tls check verifies elsewhere
    clients = []
    try:
        for _ in range(2):
            c = imaplib.IMAP4_SSL(h.address, 993, ssl_context=ctx, timeout=10)
            c.login(f"probe@{h.fqdn}", "secret")
            clients.append(c)
        result = server_lab.probe("mx1")
    finally:
        for c in clients:
            c.logout()
    assert result.values["dovecot_sessions"] == 2
    assert result.values["dovecot_sessions_by_protocol"] == {"imap": 2}
    assert result.values["dovecot_users"] == 1
    assert "probe@" not in str(result.to_dict())


def test_stopping_dovecot_on_one_host_marks_it_down_there_alone(server_lab: ServerLab) -> None:
    sl = server_lab
    sl.sh("mx2", "/etc/init.d/dovecot stop </dev/null >/dev/null 2>&1")
    try:
        down = sl.wait_for("mx2", lambda r: r.values.get("services", {}).get("dovecot") is False,
                           "dovecot down on mx2", timeout=20)
        other = sl.probe("mx1")
        assert down.status is Status.CRITICAL
        assert "dovecot is not running" in down.error
        assert metrics(down)[("mailfleet_service_up", (("service", "dovecot"),))] == 0
        assert metrics(down)[("mailfleet_service_up", (("service", "postfix"),))] == 1
        assert metrics(other)[("mailfleet_service_up", (("service", "dovecot"),))] == 1
    finally:
        sl.sh("mx2", "/etc/init.d/dovecot start </dev/null >/dev/null 2>&1")
    sl.wait_for("mx2", lambda r: r.values.get("services", {}).get("dovecot") is True,
                "dovecot back on mx2", timeout=20)


def test_a_certificate_replaced_without_reload_is_flagged_until_dovecot_reloads(
    server_lab: ServerLab,
) -> None:
    sl = server_lab
    before = sl.probe("mx1")
    assert before.values["cert_reload_pending"] is False
    sl.sh("mx1", textwrap.dedent("""\
        set -e
        cd /etc/ssl/mailfleet
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 90 \
            -subj /CN=mx1.lab.test -addext subjectAltName=DNS:mx1.lab.test \
            -keyout privkey.new -out fullchain.new 2>/dev/null
        chmod 600 privkey.new
        mv privkey.new privkey.pem
        mv fullchain.new fullchain.pem
        """))
    renewed = sl.probe("mx1")
    assert renewed.values["cert_reload_pending"] is True
    assert renewed.values["cert_reload_pending_by_service"] == {"imaps": True}
    assert renewed.values["cert_file_sha256"] != before.values["cert_file_sha256"]
    assert renewed.values["served_certs_by_service"]["imaps"]["sha256"] == \
        before.values["cert_file_sha256"]
    assert metrics(renewed)[("mailfleet_tls_cert_reload_pending", (("service", "imaps"),))] == 1
    assert "renewed but not reloaded" in renewed.error
    sl.sh("mx1", "doveadm reload")
    reloaded = sl.wait_for("mx1", lambda r: r.values.get("cert_reload_pending") is False,
                           "the new certificate served after reload", timeout=20)
    assert metrics(reloaded)[("mailfleet_tls_cert_reload_pending", (("service", "imaps"),))] == 0


def test_a_served_fingerprint_from_the_tls_check_saves_the_handshake(
    server_lab: ServerLab,
) -> None:
    fresh = server_lab.probe("mx1")
    disk = fresh.values["cert_file_sha256"]
    same = server_lab.probe("mx1", server_lab.settings("mx1", served_cert_sha256=disk))
    assert same.values["cert_reload_pending"] is False
    assert "tls" not in same.phases
    other = server_lab.probe("mx1", server_lab.settings("mx1", served_cert_sha256="0" * 64))
    assert other.values["cert_reload_pending"] is True


def _audit_lines(sl: ServerLab, name: str) -> int:
    return int(sl.sh(name, f"wc -l < {AUDIT_LOG}").strip())


def test_an_unknown_host_key_is_refused_with_the_way_to_add_it_and_nothing_runs(
    server_lab: ServerLab,
) -> None:
    sl = server_lab
    h = sl.hosts["mx1"]
    known = sl.lab.config.known_hosts.read_text().splitlines()
    only_mx2 = sl.tmp / "known_hosts_without_mx1"
    only_mx2.write_text("\n".join(ln for ln in known if h.address not in ln.split()[0]) + "\n")
    before = _audit_lines(sl, "mx1")
    result = sl.probe("mx1", replace(sl.settings("mx1"),
                                     ssh=replace(sl.settings("mx1").ssh, known_hosts=only_mx2)))
    assert not result.success
    assert result.values["ssh_error"] == "host_key_unknown"
    assert result.values["commands_run"] == 0
    assert "no command was run" in result.error
    assert f"ssh-keyscan {h.address} >> {only_mx2}" in result.error
    assert "SHA256:" in result.error
    assert metrics(result)[("mailfleet_server_ssh_up", ())] == 0
    assert _audit_lines(sl, "mx1") == before  # the forced command never started


def test_a_changed_host_key_is_refused_and_nothing_runs(server_lab: ServerLab) -> None:
    sl = server_lab
    mx1, mx2 = sl.hosts["mx1"], sl.hosts["mx2"]
    lines = sl.lab.config.known_hosts.read_text().splitlines()
    # mx2's keys written down for mx1's address: what a MITM or a reinstall looks like.
    forged = [f"{mx1.address} {' '.join(ln.split()[1:])}" for ln in lines
              if mx2.address in ln.split()[0]]
    path = sl.tmp / "known_hosts_forged"
    path.write_text("\n".join(forged) + "\n")
    before = _audit_lines(sl, "mx1")
    settings = sl.settings("mx1")
    result = sl.probe("mx1", replace(settings, ssh=replace(settings.ssh, known_hosts=path)))
    assert result.values["ssh_error"] == "host_key_changed"
    assert "CHANGED" in result.error and "no command was run" in result.error
    assert _audit_lines(sl, "mx1") == before


def test_a_key_that_is_not_authorized_is_an_auth_error(server_lab: ServerLab) -> None:
    sl = server_lab
    stranger = sl.tmp / "stranger"
    if not stranger.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                       check=True)
    settings = sl.settings("mx1")
    result = sl.probe("mx1", replace(settings, ssh=replace(settings.ssh, key_file=stranger)))
    assert result.values["ssh_error"] == "auth"
    assert "authentication as 'mailfleet'" in result.error
    assert "authorized_keys" in result.error


def test_a_missing_command_is_named(server_lab: ServerLab) -> None:
    sl = server_lab
    # As root (no forced command) on a host where doveadm is moved away for a moment.
    hv = sl.hostvars["mx2"]
    settings = settings_from_hostvars("mx2", hv)
    sl.sh("mx2", "mv /usr/bin/doveadm /usr/bin/doveadm.away")
    try:
        result = sl.probe("mx2", settings)
    finally:
        sl.sh("mx2", "mv /usr/bin/doveadm.away /usr/bin/doveadm")
    assert result.status is Status.UNKNOWN
    assert "command missing on the host: /usr/bin/doveadm (package dovecot-core)" in result.error
    # The other sections still report.
    assert result.values["services"]["dovecot"] is True


def test_a_nearly_full_tmpfs_mail_store_fires_the_disk_alert(server_lab: ServerLab) -> None:
    """The lab hosts cannot mount (no CAP_SYS_ADMIN), but /dev/shm is a 64 MB tmpfs."""
    sl = server_lab
    store = "/dev/shm/vmail"
    sl.sh("mx1", f"install -d -o vmail -g vmail {store} && "
                 f"total=$(stat -f -c '%S * %b' {store} | sed 's/ //g') && "
                 f"dd if=/dev/zero of={store}/fill bs=4096 "
                 f"count=$(( $total * 96 / 100 / 4096 )) 2>/dev/null")
    try:
        result = sl.probe("mx1", sl.settings("mx1", mail_store=store))
    finally:
        sl.sh("mx1", f"rm -rf {store}")
    fs = result.values["filesystems"][store]
    assert fs["free_ratio"] < 0.05
    assert result.status is Status.CRITICAL and f"{store}: " in result.error
    # The same numbers, as /metrics would expose them, through the real alert rules.
    series = metrics(result)
    free = series[("mailfleet_fs_free_bytes", (("path", store),))]
    size = series[("mailfleet_fs_size_bytes", (("path", store),))]
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian prometheus) is not installed")
    test_file = sl.tmp / "disk_test.yml"
    firing = ('ALERTS{alertname="MailfleetDiskNearlyFull",alertstate="firing",host="mx1",'
              f'path="{store}",severity="warning"}}')
    test_file.write_text(textwrap.dedent(f"""\
        rule_files: [{ROOT / 'prometheus/rules/server.yml'}]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'mailfleet_fs_free_bytes{{host="mx1",path="{store}"}}'
                values: '{int(free)}x20'
              - series: 'mailfleet_fs_size_bytes{{host="mx1",path="{store}"}}'
                values: '{int(size)}x20'
            promql_expr_test:
              - expr: ALERTS{{alertname="MailfleetDiskNearlyFull"}}
                eval_time: 15m
                exp_samples:
                  - labels: '{firing}'
                    value: 1
        """))
    proc = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_without_the_sudo_rule_sessions_say_sudo_refused(server_lab: ServerLab) -> None:
    sl = server_lab
    rule = "/etc/sudoers.d/mailfleet-probe"
    sl.sh("mx2", f"mv {rule} /root/mailfleet-probe.sudoers")
    try:
        result = sl.probe("mx2")
    finally:
        sl.sh("mx2", f"mv /root/mailfleet-probe.sudoers {rule}")
    assert "needs root and sudo refused" in result.values["command_errors"]["sessions"]
    assert "roles/mailfleet_probe_access" in result.error
    assert result.values["services"] == {"postfix": True, "dovecot": True}


@pytest.fixture
def kept_connections() -> Iterator[ConnectionPool]:
    """The watcher's setting (serve --keep-ssh): connections kept between probes."""
    keep_connections(16)
    try:
        yield POOL
    finally:
        keep_connections(0)


def test_a_kept_connection_serves_later_probes_and_a_dead_one_is_replaced_in_the_probe(
    server_lab: ServerLab, kept_connections: ConnectionPool,
) -> None:
    pool = kept_connections
    connects, reused = pool.connects, pool.reused
    for _ in range(3):
        result = server_lab.probe("mx1")
        assert result.success and result.values["commands_run"] == 5, result.error
    assert (pool.connects - connects, pool.reused - reused) == (1, 2)
    assert len(pool) == 1
    # End the kept session on the host (its sshd process, by PID): the next probe finds
    # it dead, connects again and still answers.
    server_lab.sh("mx1", "for pid in $(pgrep -u mailfleet -x 'sshd|sshd-session'); do "
                         "kill $pid; done")
    result = server_lab.probe("mx1")
    assert result.success and result.values["commands_run"] == 5, result.error
    assert pool.connects - connects == 2 and pool.replaced >= 1
    # A kept session that stops answering while its TCP connection stays up (its process
    # stopped, as behind a firewall that drops packets): the first channel open gives up
    # after a short wait, and the probe connects anew within its deadline.
    replaced = pool.replaced
    stopped = server_lab.sh("mx1", "pids=$(pgrep -u mailfleet -x 'sshd|sshd-session'); "
                                   "kill -STOP $pids; echo $pids").split()
    assert stopped
    try:
        result = server_lab.probe("mx1")
        assert result.success and result.values["commands_run"] == 5, result.error
        assert pool.connects - connects == 3 and pool.replaced == replaced + 1
    finally:
        server_lab.sh("mx1", f"kill -CONT {' '.join(stopped)}; kill {' '.join(stopped)}",
                      check=False)


def test_a_kept_connection_is_not_used_once_known_hosts_changes(
    server_lab: ServerLab, kept_connections: ConnectionPool,
) -> None:
    sl = server_lab
    mx1, mx2 = sl.hosts["mx1"], sl.hosts["mx2"]
    known = sl.tmp / "known_hosts_kept"
    lines = sl.lab.config.known_hosts.read_text().splitlines()
    known.write_text("\n".join(lines) + "\n")
    settings = sl.settings("mx1")
    settings = replace(settings, ssh=replace(settings.ssh, known_hosts=known))
    assert sl.probe("mx1", settings).success
    assert len(kept_connections) == 1
    # mx2's keys written down for mx1's address, as a reinstall or a MITM looks: the kept
    # connection (checked against the old file) must not run anything.
    forged = [f"{mx1.address} {' '.join(ln.split()[1:])}" for ln in lines
              if mx2.address in ln.split()[0]]
    known.write_text("\n".join(forged) + "\n")
    before = _audit_lines(sl, "mx1")
    result = sl.probe("mx1", settings)
    assert result.values["ssh_error"] == "host_key_changed", result.error
    assert _audit_lines(sl, "mx1") == before
    assert len(kept_connections) == 0
