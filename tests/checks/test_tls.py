"""The tls probe against real TLS servers on loopback with certificates made here."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Status, Target
from mailfleet.checks.result import ProbeResult
from tests.checks.certs import (
    DAY,
    MINUTE,
    Issued,
    make_ca,
    make_leaf,
    now,
    write_bundle,
    write_chain,
)
from tests.checks.servers import LoopbackServer, tls_greeter, tls_server_context

HOST = "mx1.lab.test"


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("mailfleet test root")


@pytest.fixture(scope="module")
def intermediate(root: Issued) -> Issued:
    return make_ca("mailfleet test intermediate", issuer=root)


def probe_tls(tmp_path: Path, chain: list[Issued], bundle: list[Issued],
              options: ProbeOptions | None = None, host: str = HOST) -> ProbeResult:
    cert, key = write_chain(tmp_path, "server", chain[0], *chain[1:])
    ca = write_bundle(tmp_path, "ca", *bundle)
    with LoopbackServer(tls_greeter(tls_server_context(cert, key))) as server:
        target = Target(name="mx1", address="127.0.0.1", mail_hostname=host,
                        ports={"imaps": server.port}, ca_bundle=ca)
        return PROBES["tls"](target, options or ProbeOptions(), Deadline(5))


def test_valid_chain_reports_version_dates_and_both_expiries(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    leaf = make_leaf(intermediate, [HOST, "mail.example1.test"])
    result = probe_tls(tmp_path, [leaf, intermediate], [root])
    assert result.status == Status.OK, result.error
    assert result.success and result.error == ""
    v = result.values
    assert v["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert v["chain_verified"] is True and v["hostname_match"] is True
    assert v["cert_sans"] == [HOST, "mail.example1.test"]
    assert v["cert_not_after"] == leaf.cert.not_valid_after_utc.timestamp()
    assert 89 < v["cert_days_left"] <= 90
    # the verified chain is leaf, intermediate, root: the leaf expires first
    assert v["chain_earliest_not_after"] == leaf.cert.not_valid_after_utc.timestamp()
    assert len(v["served_certs"]) == 2
    assert {"connect", "tls", "total"} <= set(result.phases)


def test_expired_certificate_fails_but_still_reports_its_dates(
    tmp_path: Path, root: Issued
) -> None:
    leaf = make_leaf(root, [HOST], not_before=now() - 93 * DAY, not_after=now() - 3 * DAY - MINUTE)
    result = probe_tls(tmp_path, [leaf], [root])
    assert result.status == Status.CRITICAL and not result.success
    assert result.error.startswith(f"certificate for {HOST} expired 3 days ago")
    assert result.values["cert_not_after"] == leaf.cert.not_valid_after_utc.timestamp()
    assert result.values["chain_verified"] is False
    assert "expired" in result.values["verify_error"]
    assert result.values["cert_days_left"] <= -3


def test_not_yet_valid_certificate(tmp_path: Path, root: Issued) -> None:
    leaf = make_leaf(root, [HOST], not_before=now() + 2 * DAY + MINUTE, not_after=now() + 90 * DAY)
    result = probe_tls(tmp_path, [leaf], [root])
    assert result.status == Status.CRITICAL
    assert result.error.startswith(f"certificate for {HOST} is not valid until ")
    assert "(in 2 days)" in result.error
    assert result.values["cert_not_before"] == leaf.cert.not_valid_before_utc.timestamp()


def test_wrong_hostname(tmp_path: Path, root: Issued) -> None:
    leaf = make_leaf(root, ["mx9.lab.test"])
    result = probe_tls(tmp_path, [leaf], [root])
    assert result.status == Status.CRITICAL
    assert result.error == f"certificate is for mx9.lab.test, not {HOST}"
    assert result.values["hostname_match"] is False
    assert result.values["cert_not_after"] == leaf.cert.not_valid_after_utc.timestamp()


def test_untrusted_ca(tmp_path: Path, root: Issued) -> None:
    stranger = make_ca("somebody else's CA")
    leaf = make_leaf(stranger, [HOST])
    result = probe_tls(tmp_path, [leaf], [root])
    assert result.status == Status.CRITICAL
    assert result.error.startswith(f"certificate chain for {HOST} is not trusted by ")
    assert "unable to get local issuer certificate" in result.error
    assert result.values["chain_earliest_not_after"] is None
    assert result.values["served_earliest_not_after"] == leaf.cert.not_valid_after_utc.timestamp()


def test_extra_old_root_counts_only_for_served_not_for_the_verified_chain(
    tmp_path: Path, root: Issued, intermediate: Issued
) -> None:
    # blackbox_exporter#340: a server also sends an old, expired root. Clients
    # build the path to the trusted root and never use it; no false alarm.
    old_root = make_ca("old root", not_before=now() - 4000 * DAY, not_after=now() - 30 * DAY)
    leaf = make_leaf(intermediate, [HOST])
    result = probe_tls(tmp_path, [leaf, intermediate, old_root], [root])
    assert result.status == Status.OK, result.error
    v = result.values
    assert v["served_earliest_not_after"] == old_root.cert.not_valid_after_utc.timestamp()
    assert v["chain_earliest_not_after"] == leaf.cert.not_valid_after_utc.timestamp()
    assert len(v["served_certs"]) == 3


def _aged(root: Issued, lifetime_days: float, used_days: float) -> Issued:
    """A leaf of that lifetime, issued ``used_days`` ago."""
    start = now() - dt.timedelta(days=used_days)
    return make_leaf(root, [HOST], not_before=start,
                     not_after=start + dt.timedelta(days=lifetime_days))


@pytest.mark.parametrize(("lifetime", "used", "status"), [
    # 6-day certificates: due at two thirds (day 4), critical at 90% (day 5.4)
    (6, 1, Status.OK), (6, 3.9, Status.OK), (6, 4.1, Status.WARNING),
    (6, 5.3, Status.WARNING), (6, 5.5, Status.CRITICAL),
    # 45 days: day 30 and day 40.5
    (45, 29, Status.OK), (45, 31, Status.WARNING), (45, 41, Status.CRITICAL),
    # 90 days: day 60 (30 days left) and day 81 (9 left)
    (90, 59, Status.OK), (90, 61, Status.WARNING), (90, 82, Status.CRITICAL),
    # a year: never due before 30 days left, critical under 14
    (398, 300, Status.OK), (398, 370, Status.WARNING), (398, 385, Status.CRITICAL),
])
def test_expiry_is_judged_by_the_share_of_the_lifetime_used(
    tmp_path: Path, root: Issued, lifetime: float, used: float, status: Status
) -> None:
    result = probe_tls(tmp_path, [_aged(root, lifetime, used)], [root])
    assert result.status == status, result.error
    if status != Status.OK:
        assert result.error.startswith(f"certificate chain for {HOST} expires in "), result.error
        assert "% of its lifetime of " in result.error, result.error


def test_an_intermediate_ending_first_counts_as_the_end(tmp_path: Path, root: Issued) -> None:
    """A fresh leaf whose intermediate ends in 5 days: 94% of the leaf's lifetime is gone."""
    intermediate = make_ca("short intermediate", issuer=root,
                           not_after=now() + dt.timedelta(days=5, hours=1))
    leaf = make_leaf(intermediate, [HOST])
    result = probe_tls(tmp_path, [leaf, intermediate], [root])
    assert result.status == Status.CRITICAL, result.error
    assert result.error.startswith(f"certificate chain for {HOST} expires in 5 days")


def test_expiry_thresholds_are_options(tmp_path: Path, root: Issued) -> None:
    leaf = _aged(root, 90, 50)  # 56% used, 40 days left
    assert probe_tls(tmp_path, [leaf], [root]).status == Status.OK
    days_only = ProbeOptions(tls_warning_lifetime_percent=0, tls_warning_days=45)
    warn = probe_tls(tmp_path, [leaf], [root], days_only)
    assert warn.status == Status.WARNING and warn.success
    crit = probe_tls(tmp_path, [leaf], [root],
                     ProbeOptions(tls_critical_lifetime_percent=50, tls_critical_days=41))
    assert crit.status == Status.CRITICAL and not crit.success


def test_sni_is_the_mail_hostname(tmp_path: Path, root: Issued) -> None:
    """A server with several certificates picks by SNI: we must send mail_hostname."""
    default = make_leaf(root, ["default.invalid"])
    right = make_leaf(root, [HOST])
    d_cert, d_key = write_chain(tmp_path, "default", default)
    r_cert, r_key = write_chain(tmp_path, "right", right)
    ca = write_bundle(tmp_path, "ca", root)
    base = tls_server_context(d_cert, d_key)
    by_name = tls_server_context(r_cert, r_key)

    def pick(sock: ssl.SSLObject, name: str, _ctx: ssl.SSLContext) -> None:
        if name == HOST:
            sock.context = by_name

    base.sni_callback = pick
    with LoopbackServer(tls_greeter(base)) as server:
        target = Target(name="mx1", address="127.0.0.1", mail_hostname=HOST,
                        ports={"imaps": server.port}, ca_bundle=ca)
        result = PROBES["tls"](target, ProbeOptions(), Deadline(5))
    assert result.status == Status.OK, result.error
    assert result.values["cert_sans"] == [HOST]


def test_no_volatile_value_in_target_or_check_names(tmp_path: Path, root: Issued) -> None:
    """Serial and fingerprint are values, never part of the check name or target label."""
    leaf = make_leaf(root, [HOST])
    result = probe_tls(tmp_path, [leaf], [root])
    assert result.check == "tls" and result.target == "mx1"
    assert result.values["served_certs"][0]["serial"] == format(leaf.cert.serial_number, "x")
