"""Milter bench: what rspamd in Postfix's path costs a delivery, as the sync probe sees it,
with and without the milter, on the same converged lab hosts; and the memory (PSS) of
rspamd and of its Redis per host. rspamd scans during DATA, before Postfix's 250, so the
sync probe's ``delivery_latency_seconds`` (250 -> IDLE reports it) alone would not show it: the
figure here is its ``submit`` phase (connect, STARTTLS, AUTH, the message, 250) plus that
latency, submission on a host's 587 to the message visible in the same host's INBOX.

    .venv/bin/python -m bench.milter_latency --rounds 30

Needs a converged lab (``mailfleet lab up`` and playbooks/site.yml, as the integration
tests leave it). Between the two measurements it re-runs playbooks/mail.yml with
``postfix_milters: []`` on the measured hosts and then restores them (a third run), so the
hosts end as they began. Prints the median and p90 of each and the difference last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from mailfleet.checks import PROBES, Deadline, ProbeOptions, Target
from mailfleet.checks.target import Credentials, Secret
from mailfleet.lab.fleet import Lab

ROOT = Path(__file__).resolve().parent.parent


def _vars(lab: Lab) -> dict[str, object]:
    data = yaml.safe_load(lab.config.inventory_path.read_text())
    watch = yaml.safe_load((ROOT / "inventory" / "lab" / "group_vars" / "all" / "watch.yml")
                           .read_text())
    return {**data["all"]["vars"], **watch}


def latencies(lab: Lab, host: str, rounds: int) -> list[float]:
    h = lab.host(host)
    v = _vars(lab)
    target = Target(name=h.name, address=h.address, mail_hostname=h.fqdn,
                    domains=(h.mail_domain,), ca_bundle=Path(str(v["mailfleet_ca_bundle"])),
                    credentials=Credentials(f"probe@{h.mail_domain}",
                                            Secret(str(v["mailfleet_probe_password"]))))
    found = []
    for _ in range(rounds):
        result = PROBES["sync"](target, ProbeOptions(), Deadline(30))
        seconds = result.values.get("delivery_latency_seconds")
        if seconds is None or "submit" not in result.phases:
            raise SystemExit(f"sync on {host} failed: {result.error}")
        found.append(float(result.phases["submit"]) + float(seconds))
    return found


def pss_kib(lab: Lab, host: str, program: str) -> int:
    """PSS of every process of ``program`` on the host (rspamd: main and workers),
    from smaps_rollup; 0 when none runs."""
    script = (f"for p in $(pidof {program}); do awk '/^Pss:/{{s+=$2}} END{{print s}}' "
              "/proc/$p/smaps_rollup; done")
    out = lab.exec(host, ["sh", "-c", script], check=False).stdout.decode().split()
    return sum(int(x) for x in out)


def set_milters(lab: Lab, hosts: list[str], on: bool) -> None:
    extra = [] if on else ["-e", json.dumps({"postfix_milters": []})]
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i",
            str(lab.config.inventory_path), "playbooks/mail.yml", "--limit", ",".join(hosts),
            *extra]
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"mail.yml (milters {'on' if on else 'off'}) failed:\n"
                         + proc.stdout[-3000:])


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"median {statistics.median(ms):6.1f} ms  p90 {p90:6.1f} ms  (n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--hosts", default="mx1,mx2", help="lab hosts (Debian 12 and 13)")
    args = parser.parse_args()
    lab = Lab.from_env()
    lab.require_up()
    hosts = args.hosts.split(",")
    with_milter = {h: latencies(lab, h, args.rounds) for h in hosts}
    memory = {h: pss_kib(lab, h, "rspamd") for h in hosts}
    redis = {h: pss_kib(lab, h, "redis-server") for h in hosts}
    set_milters(lab, hosts, on=False)
    try:
        without = {h: latencies(lab, h, args.rounds) for h in hosts}
    finally:
        set_milters(lab, hosts, on=True)
    for h in hosts:
        release = lab.host(h).release
        print(f"{h} (Debian {release}) with rspamd:    {summary(with_milter[h])}")
        print(f"{h} (Debian {release}) without rspamd: {summary(without[h])}")
        print(f"{h} rspamd PSS: {memory[h] / 1024:.0f} MiB, its Redis (Bayes): "
              f"{redis[h] / 1024:.1f} MiB")
    for h in hosts:
        delta = (statistics.median(with_milter[h]) - statistics.median(without[h])) * 1000
        print(f"{h}: rspamd adds {delta:+.1f} ms to the median delivery (goal: under +50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
