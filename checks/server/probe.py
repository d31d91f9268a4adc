"""``server``: the inside view over SSH — Postfix queue, Dovecot sessions, services,
free space and inodes, and the certificate on disk against the one being served.

One SSH connection per run; a fixed list of read-only commands, each an argv; every
section is parsed on its own so one missing tool does not hide the others.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailfleet.checks.base import Acquisition, ProbeFailure, Verdict, guess_reason, run, worst
from mailfleet.checks.result import ProbeResult, Reason, Status
from mailfleet.checks.server import parse
from mailfleet.checks.server.config import ServerConfigError, ServerSettings, ServerTarget
from mailfleet.checks.server.ssh import CommandResult, SshError, SshSession
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.tlsinfo import span, utc
from mailfleet.checks.values import Values, declared

CHECK = "server"


@declared
@dataclass(frozen=True)
class ServerValues(Values):
    """What ``server`` saw on the host (see checks/SERVER.md); a section that failed is absent.

    Nested mappings: ``filesystems`` path -> FsSpace.to_values, ``services`` name -> up,
    ``served_certs_by_service`` service -> {sha256, not_after}.
    """

    ssh_user: str = ""
    paths: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ssh_error: str = ""  # SshError.kind when the login failed
    commands_run: int = 0
    command_errors: Mapping[str, str] = dataclasses.field(default_factory=dict)  # by section
    queue_messages: Mapping[str, int] | None = None
    queue_oldest_seconds: float | None = None
    queue_oldest_seconds_by_queue: Mapping[str, float] | None = None
    queue_recipients_deferred: int | None = None
    deferral_reasons: Sequence[Mapping[str, Any]] = ()
    queue_listing_truncated: bool | None = None
    dovecot_sessions: int | None = None
    dovecot_sessions_by_protocol: Mapping[str, int] | None = None
    dovecot_users: int | None = None
    services: Mapping[str, bool] | None = None
    filesystems: Mapping[str, Mapping[str, Any]] | None = None
    cert_file: str = ""
    cert_file_not_after: float | None = None
    cert_file_sha256: str = ""
    served_certs_by_service: Mapping[str, Mapping[str, Any]] | None = None
    cert_reload_pending_by_service: Mapping[str, bool] | None = None
    cert_reload_pending: bool | None = None

# Absolute paths: a non-root login's PATH lacks /usr/sbin. Debian's locations.
POSTQUEUE = "/usr/sbin/postqueue"
DOVEADM = "/usr/bin/doveadm"
PGREP = "/usr/bin/pgrep"
STAT = "/usr/bin/stat"
OPENSSL = "/usr/bin/openssl"

# What each tool needs on the host, for "command missing" errors.
PACKAGE = {POSTQUEUE: "postfix", DOVEADM: "dovecot-core", PGREP: "procps", STAT: "coreutils",
           OPENSSL: "openssl"}


def commands(settings: ServerSettings) -> dict[str, tuple[str, ...]]:
    """Section -> argv. The complete list of what the probe ever runs on a host."""
    return {
        "queue": (POSTQUEUE, "-j"),
        "sessions": (DOVEADM, "-f", "tab", "who", "-1"),
        "services": (PGREP, "-a", "-f", parse.service_regex(parse.SERVICE_PATTERNS)),
        "filesystems": (STAT, "-f", "-c", parse.STAT_FORMAT, *settings.paths),
        "cert_file": (OPENSSL, "x509", "-noout", "-enddate", "-fingerprint", "-sha256",
                      "-in", settings.cert_file),
    }


class SectionError(Exception):
    """One command failed; the others still count."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def command_failure(section: str, res: CommandResult) -> str:
    """Words for a failed command: missing, refused by the wrapper, needs root, or as told."""
    tool = res.argv[0]
    err = res.stderr.strip()
    low = err.lower()
    if res.exit_status == 127 or (tool in err and "no such file or directory" in low
                                  and low.count("no such file") == 1 and section != "cert_file"
                                  and section != "filesystems"):
        return (f"command missing on the host: {tool} (package {PACKAGE.get(tool, '?')}); "
                "exit 127")
    if "mailfleet-probe-command" in low and "refused" in low:
        return (f"the host's forced-command wrapper refused `{res.command}`: {_last_line(err)} "
                "(re-apply roles/mailfleet_probe_access so it knows this command)")
    if "sudo:" in low and ("password is required" in low or "not allowed" in low
                           or "not in the sudoers" in low):
        return (f"`{res.command}` needs root and sudo refused: {_last_line(err)} "
                "(the sudoers rule of roles/mailfleet_probe_access is missing)")
    if "permission denied" in low or res.exit_status == 126:
        return (f"`{res.command}` was denied (permission denied); it needs root or the "
                f"least-privilege set-up of roles/mailfleet_probe_access: {_last_line(err)}")
    return f"`{res.command}` failed (exit {res.exit_status}): {_last_line(err) or 'no message'}"


def _queue(res: CommandResult, now: float) -> dict[str, Any]:
    if res.exit_status != 0:
        if "mail system is down" in res.stderr:
            raise SectionError("Postfix queue unavailable: the mail system is down "
                               "(postqueue: Queue report unavailable)")
        raise SectionError(command_failure("queue", res))
    summary = parse.parse_postqueue_json(res.stdout, now)
    values = summary.to_values()
    values["queue_listing_truncated"] = res.truncated or summary.skipped_lines > 0
    return values


def _sessions(res: CommandResult, now: float) -> dict[str, Any]:
    if res.exit_status != 0:
        if "anvil" in res.stderr and "No such file or directory" in res.stderr:
            raise SectionError("Dovecot sessions unavailable: Dovecot is not running "
                               "(no anvil socket)")
        raise SectionError(command_failure("sessions", res))
    return parse.parse_doveadm_who(res.stdout).to_values()


def _services(res: CommandResult, now: float) -> dict[str, Any]:
    if res.exit_status not in (0, 1):  # 1: no process matched, i.e. everything is down
        raise SectionError(command_failure("services", res))
    return {"services": parse.parse_pgrep(res.stdout)}


def _filesystems(res: CommandResult, now: float) -> dict[str, Any]:
    found = parse.parse_stat_f(res.stdout)
    values: dict[str, Any] = {"filesystems": {p: fs.to_values() for p, fs in found.items()}}
    if res.exit_status != 0:
        missing = [p for p in res.argv[4:] if p not in found]
        if not found:
            raise SectionError(command_failure("filesystems", res))
        values["filesystems_missing"] = missing
    return values


def _cert_file(res: CommandResult, now: float) -> dict[str, Any]:
    if res.exit_status != 0:
        path = res.argv[-1]
        if "No such file or directory" in res.stderr:
            raise SectionError(f"certificate file {path} does not exist on the host "
                               "(mailfleet_server.cert_file)")
        raise SectionError(command_failure("cert_file", res))
    cert = parse.parse_openssl_x509(res.stdout)
    return {"cert_file": res.argv[-1], "cert_file_not_after": cert.not_after,
            "cert_file_sha256": cert.sha256}


PARSERS: dict[str, Callable[[CommandResult, float], dict[str, Any]]] = {
    "queue": _queue,
    "sessions": _sessions,
    "services": _services,
    "filesystems": _filesystems,
    "cert_file": _cert_file,
}


@dataclass(frozen=True)
class Served:
    sha256: str
    not_after: float | None


def served_cert(target: Target, service: str, deadline: Deadline, acq: Acquisition) -> Served:
    """The leaf certificate a service presents, fetched without verification (dates only)."""
    from mailfleet.checks.net import tls_context
    from mailfleet.checks.tls import handshake
    from mailfleet.checks.tlsinfo import served_chain

    conn, tls = handshake(target, service, tls_context(None, verify=False), deadline, acq)
    try:
        chain = served_chain(tls)
    finally:
        conn.close()
    if not chain:
        raise ProbeFailure(f"{service} sent no certificate", reason=Reason.PROTOCOL)
    return Served(chain[0].sha256, chain[0].not_after)


def compare_certs(
    target: Target, settings: ServerSettings, deadline: Deadline, acq: Acquisition,
    errors: dict[str, str],
) -> None:
    disk = acq.values.get("cert_file_sha256")
    if not isinstance(disk, str):
        return
    pending: dict[str, bool] = {}
    served_values: dict[str, dict[str, Any]] = {}
    for service in settings.cert_services:
        if service == "imaps" and settings.served_cert_sha256:
            served = Served(settings.served_cert_sha256, None)
        else:
            try:
                with acq.measure("tls"):
                    served = served_cert(target, service, deadline, acq)
            except (ProbeFailure, OSError, TimeoutError) as exc:
                why = exc.message if isinstance(exc, ProbeFailure) else str(exc) or type(exc)
                errors[f"served_cert_{service}"] = f"cannot fetch the {service} certificate: {why}"
                continue
        served_values[service] = {"sha256": served.sha256, "not_after": served.not_after}
        pending[service] = served.sha256 != disk
    acq.values["served_certs_by_service"] = served_values
    acq.values["cert_reload_pending_by_service"] = pending
    acq.values["cert_reload_pending"] = any(pending.values()) if pending else None


def acquire(
    target: Target, settings: ServerSettings, deadline: Deadline, acq: Acquisition
) -> None:
    acq.values["ssh_user"] = settings.ssh.user
    acq.values["paths"] = {"mail_store": settings.mail_store,
                           "queue_directory": settings.queue_directory}
    wanted = commands(settings)
    session = SshSession(settings.ssh, deadline)
    try:
        with acq.measure("connect"):
            session.connect()
        with acq.measure("commands"):
            results = session.run_all(list(wanted.values()))
    except SshError as exc:
        acq.values["ssh_error"] = exc.kind
        acq.values["commands_run"] = session.commands_run
        status = Status.CRITICAL if exc.kind in ("connect", "timeout") else Status.UNKNOWN
        raise ProbeFailure(exc.message, status, ssh_reason(exc)) from None
    finally:
        session.close()
    acq.values["commands_run"] = session.commands_run
    now = time.time()
    errors: dict[str, str] = {}
    for section, res in zip(wanted, results, strict=True):
        try:
            acq.values.update(PARSERS[section](res, now))
            missing = acq.values.pop("filesystems_missing", None)
            if missing:
                errors[section] = f"no such path on the host: {', '.join(missing)}"
        except (SectionError, parse.OutputError) as exc:
            errors[section] = str(exc)
    compare_certs(target, settings, deadline, acq, errors)
    acq.values["command_errors"] = errors


# Why an SSH session failed, by SshError.kind (a connect failure is classed by its words:
# refused, unreachable).
_SSH_REASONS = {
    "timeout": Reason.TIMEOUT,
    "auth": Reason.AUTH_FAILED,
    "config": Reason.NOT_CONFIGURED,
    "host_key_unknown": Reason.NOT_CONFIGURED,  # the operator must pin the key first
    "host_key_changed": Reason.CERT_INVALID,  # the host's identity did not verify
}


def ssh_reason(exc: SshError) -> Reason:
    reason = _SSH_REASONS.get(exc.kind)
    if reason is not None:
        return reason
    guessed = guess_reason(exc.message)
    return guessed if guessed in (Reason.REFUSED, Reason.UNREACHABLE, Reason.TIMEOUT) else (
        Reason.PROTOCOL)


def judge(settings: ServerSettings) -> Callable[[dict[str, Any]], Verdict]:
    def verdict(values: dict[str, Any]) -> Verdict:
        found: list[tuple[Status, str, Reason]] = []
        for service, up in (values.get("services") or {}).items():
            if not up:
                found.append((Status.CRITICAL, f"{service} is not running", Reason.SERVICE_DOWN))
        for path, fs in (values.get("filesystems") or {}).items():
            for key, what in (("free_ratio", "space"), ("free_inodes_ratio", "inodes")):
                ratio = fs.get(key)
                if ratio is None:
                    continue
                if ratio < settings.free_ratio_critical:
                    found.append((Status.CRITICAL, f"{path}: {ratio:.1%} {what} free",
                                  Reason.THRESHOLD))
                elif ratio < settings.free_ratio_warning:
                    found.append((Status.WARNING, f"{path}: {ratio:.1%} {what} free",
                                  Reason.THRESHOLD))
        if values.get("cert_reload_pending"):
            stale = [s for s, p in values["cert_reload_pending_by_service"].items() if p]
            disk_after = values.get("cert_file_not_after")
            found.append((Status.WARNING, (
                f"certificate file {values.get('cert_file')} (not after "
                f"{utc(disk_after) if disk_after else '?'}) is not what {', '.join(stale)} "
                "serves: renewed but not reloaded? reload the daemon"), Reason.THRESHOLD))
        deferred = (values.get("queue_messages") or {}).get("deferred", 0)
        oldest = values.get("queue_oldest_seconds")
        if deferred >= settings.deferred_warning:
            found.append((Status.WARNING, f"{deferred} messages deferred", Reason.THRESHOLD))
        if oldest is not None and oldest >= settings.oldest_warning_seconds:
            found.append((Status.WARNING, f"oldest queued message waits for {span(oldest)}",
                          Reason.THRESHOLD))
        for section, message in (values.get("command_errors") or {}).items():
            found.append((Status.UNKNOWN, f"{section}: {message}", Reason.COMMAND_FAILED))
        if not found:
            return Verdict(Status.OK, "")
        status = worst([s for s, _, _ in found])
        order = [Status.CRITICAL, Status.WARNING, Status.UNKNOWN, Status.OK]
        found.sort(key=lambda smr: order.index(smr[0]))
        return Verdict(status, "; ".join(m for _, m, _ in found), found[0][2])

    return verdict


def probe_with(target: Target, settings: ServerSettings, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, settings, deadline, acq),
               judge(settings))


def settings_for(target: Target) -> ServerSettings:
    """The target's ``server`` settings (built from its inventory variables)."""
    settings = target.server if isinstance(target, ServerTarget) else None
    if settings is None:
        raise ServerConfigError(
            f"{target.name}: no SSH settings for the server check (build the target with "
            "checks.server.with_server_settings; see checks/SERVER.md)")
    return settings


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    """The ``server`` probe, with the signature every probe has."""
    try:
        settings = settings_for(target)
    except ServerConfigError as exc:
        return ProbeResult(check=CHECK, target=target.name, success=False,
                           status=Status.UNKNOWN, error=str(exc), reason=Reason.NOT_CONFIGURED)
    return probe_with(target, settings, deadline)

