"""``--shard K/N``: which hosts a watcher owns, and the whole fleet read back from Prometheus."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from mailfleet.checks.result import Status
from mailfleet.dashboard.promfleet import PrometheusError, PrometheusFleet, check_url, decode
from mailfleet.dashboard.shard import Shard, ShardError, hashmod


def test_hashmod_is_prometheus_md5_low_eight_bytes_modulo_n() -> None:
    # Prometheus' relabel.go: sum64(md5(value)) % modulus, where sum64 keeps the low
    # 64 bits (the digest's last eight bytes, big-endian). The real Prometheus agrees in
    # tests/dashboard/test_shards_prometheus.py.
    digest = hashlib.md5(b"mx1.example.org").digest()
    assert hashmod("mx1.example.org", 7) == int.from_bytes(digest[8:], "big") % 7
    names = [f"mx{i}" for i in range(3000)]
    for n in (2, 3, 5):
        counts = [sum(hashmod(name, n) == k for name in names) for k in range(n)]
        assert min(counts) > 3000 / n * 0.9, counts  # every shard gets its fair part


@pytest.mark.parametrize("text", ["3/2", "2/2", "0/0", "-1/2", "1", "", "1/2/3", "x/2"])
def test_a_shard_that_names_no_shard_is_refused_with_what_to_write(text: str) -> None:
    with pytest.raises(ShardError, match="--shard") as err:
        Shard.parse(text)
    assert "0/" in str(err.value) or "number of shards" in str(err.value)


def test_shards_partition_the_fleet() -> None:
    names = [f"host-{i}" for i in range(200)]
    shards = [Shard.parse(f"{k}/4") for k in range(4)]
    owners = [[s.owns(n) for s in shards] for n in names]
    assert all(sum(o) == 1 for o in owners)
    assert Shard.parse(" 1 / 4 ") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    assert all(Shard(0, 1).owns(n) for n in names)


def sample(name: str, value: float, **labels: str) -> dict[str, Any]:
    return {"metric": {"__name__": name, "job": "mailfleet", "instance": "w0:9865", **labels},
            "value": [1_700_000_100.0, str(value)]}


def test_the_fleet_is_rebuilt_from_the_samples_prometheus_holds() -> None:
    vector = [
        sample("mailfleet_probe_success", 1, host="mx1", check="tls"),
        sample("mailfleet_probe_status", 0, host="mx1", check="tls"),
        sample("mailfleet_probe_timestamp_seconds", 1_700_000_000, host="mx1", check="tls"),
        sample("mailfleet_probe_last_success_timestamp_seconds", 1_700_000_000, host="mx1",
               check="tls"),
        sample("mailfleet_tls_cert_not_after_timestamp_seconds", 1_800_000_000, host="mx1"),
        sample("mailfleet_tls_cert_chain_verified", 1, host="mx1"),
        sample("mailfleet_tls_version_info", 1, host="mx1", version="TLSv1.3"),
        sample("mailfleet_probe_success", 0, host="mx2", check="imap_login"),
        sample("mailfleet_probe_status", 2, host="mx2", check="imap_login"),
        sample("mailfleet_probe_timestamp_seconds", 1_700_000_050, host="mx2",
               check="imap_login"),
        sample("mailfleet_imap_login_success", 0, host="mx2", mechanism="PLAIN"),
        sample("mailfleet_probe_success", 1, host="mx2", check="sync"),
        sample("mailfleet_probe_timestamp_seconds", 1_700_000_050, host="mx2", check="sync"),
        sample("mailfleet_sync_latency_seconds", 0.8, host="mx2", kind="delivery"),
        sample("mailfleet_quota_used_ratio", 0.25, host="mx2"),  # no quota result: ignored
        # an older result of mx2's sync from a watcher that no longer owns it
        {**sample("mailfleet_probe_success", 0, host="mx2", check="sync"),
         "metric": {"__name__": "mailfleet_probe_success", "host": "mx2", "check": "sync",
                    "instance": "w1:9865"}},
        {**sample("mailfleet_probe_timestamp_seconds", 1_600_000_000, host="mx2",
                  check="sync"),
         "metric": {"__name__": "mailfleet_probe_timestamp_seconds", "host": "mx2",
                    "check": "sync", "instance": "w1:9865"}},
    ]
    fleet = decode(vector)
    tls = fleet["mx1"]["tls"]
    assert tls.success and tls.status is Status.OK and tls.started_at == 1_700_000_000
    assert tls.values == {"cert_not_after": 1_800_000_000, "chain_verified": True,
                          "tls_version": "TLSv1.3"}
    login = fleet["mx2"]["imap_login"]
    assert not login.success and login.status is Status.CRITICAL
    assert login.values == {"mechanism": "PLAIN"} and "w0:9865" in login.error
    assert login.last_success_at is None
    sync = fleet["mx2"]["sync"]
    assert sync.success and sync.values == {"delivery_latency_seconds": 0.8}
    assert set(fleet["mx2"]) == {"imap_login", "sync"}


def test_a_prometheus_that_stops_answering_keeps_the_last_state_and_says_why() -> None:
    answers: list[Any] = [
        {"resultType": "vector", "result": [
            sample("mailfleet_probe_success", 1, host="mx1", check="port"),
            sample("mailfleet_probe_timestamp_seconds", 1_700_000_000, host="mx1",
                   check="port")]},
        PrometheusError("cannot reach http://prom:9090/api/v1/query: connection refused"),
    ]

    def fetch(url: str, timeout: float) -> Any:
        assert "/api/v1/query?query=" in url and timeout == 5.0
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    fleet = PrometheusFleet("http://prom:9090/", ttl=0, fetch=fetch)
    first = fleet.latest()
    assert first["mx1"]["port"].success and fleet.version == 1 and not fleet.last_error
    assert fleet.latest() == first and "connection refused" in fleet.last_error
    assert fleet.version == 1


def test_the_start_up_check_wants_a_prometheus_base_url() -> None:
    def fetch(url: str, timeout: float) -> Any:
        assert url == "http://prom:9090/api/v1/status/buildinfo"
        return {"version": "2.42.0"}

    assert check_url("http://prom:9090/", fetch=fetch) == "http://prom:9090"
    with pytest.raises(PrometheusError, match="base URL"):
        check_url("prom:9090", fetch=fetch)
    with pytest.raises(PrometheusError, match="is it Prometheus"):
        check_url("http://prom:9090", fetch=lambda url, timeout: {"answer": 42})
