"""Process measurements for the benches: CPU and memory of a PID, rusage of a waited child."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _all_stats() -> dict[int, list[str]]:
    """``/proc/PID/stat`` fields (after the command name) of every process."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stats[int(entry)] = _stat_fields(int(entry))
        except OSError:
            continue
    return stats


def process_tree(root: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """``root`` and every process under it, by parent PID, parents first; [] when gone."""
    stats = _all_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = [], [root] if root in stats else []
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: every live descendant, plus what its reaped ones used.

    Good enough for a server whose workers outlive the measurement (Dovecot's
    login and imap processes); a worker that exits mid-run and whose parent
    has not reaped it yet is missed.
    """
    stats = _all_stats()
    ticks = sum(  # utime stime cutime cstime
        sum(int(x) for x in stats[pid][11:15]) for pid in process_tree(root, stats)
    )
    return ticks / TICK


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` memory field in KiB (VmRSS, VmHWM); 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or os.getpid()}/fd"))


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass(frozen=True)
class ChildUsage:
    """What ``wait4`` says about one child and its waited-for descendants."""

    returncode: int
    cpu: float
    max_rss_kib: int


def wait_usage(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> ChildUsage:
    """Wait for ``proc`` with wait4 (bounded by ``timeout``), returning its rusage."""
    end = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ChildUsage(proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
        if time.monotonic() > end:
            proc.kill()
            end = time.monotonic() + 10
        time.sleep(0.02)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"
