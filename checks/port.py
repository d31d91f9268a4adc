"""``port``: can a client open a TCP connection to the IMAPS port (993)?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailfleet.checks.base import Acquisition, Verdict, run
from mailfleet.checks.net import connect
from mailfleet.checks.result import ProbeResult, Status
from mailfleet.checks.target import Deadline, ProbeOptions, Target
from mailfleet.checks.values import Values, declared

CHECK = "port"

@declared
@dataclass(frozen=True)
class PortValues(Values):
    """What ``port`` measured."""

    address: str = ""
    port: int | None = None
    service: str = ""
    open: bool = False



def acquire(target: Target, service: str, deadline: Deadline, acq: Acquisition) -> None:
    port = target.port(service)
    acq.values.update({"address": target.address, "port": port, "service": service})
    with acq.measure("connect"):
        sock = connect(target.address, port, deadline)
    sock.close()
    acq.values["open"] = True


def judge(values: dict[str, Any]) -> Verdict:
    return Verdict(Status.OK if values.get("open") else Status.CRITICAL)


def probe(target: Target, options: ProbeOptions, deadline: Deadline) -> ProbeResult:
    return run(CHECK, target, lambda acq: acquire(target, "imaps", deadline, acq), judge)
