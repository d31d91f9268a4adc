"""Playbook bench: converge 3 fresh lab hosts with playbooks/site.yml, then the idempotent
re-run, against an Ansible floor: a playbook of as many no-op tasks (``ansible.builtin.ping``,
a real module run on the host) as the re-run executed, on the same hosts. Prints re-run/floor
last, with and without pipelining (fact caching is moot: the playbooks gather no facts).

    MAILFLEET_LAB=bench MAILFLEET_LAB_SUBNET=10.77.9.0/24 \\
        .venv/bin/python -m bench.playbook_bench --fresh

``--fresh`` takes the lab named by MAILFLEET_LAB down and up again first (refused for the
default lab ``mailfleet`` and the CI lab ``ci``). Without it, the lab must be up; the
"converge" is then whatever the playbook still had to do.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mailfleet.lab.fleet import Lab

ROOT = Path(__file__).resolve().parent.parent
PROTECTED_LABS = ("mailfleet", "ci")


@dataclass(frozen=True)
class PlayRun:
    name: str
    seconds: float
    returncode: int
    recap: dict[str, dict[str, int]]

    def executed(self) -> int:
        """Tasks that ran a module on the busiest host (ok + changed + failed)."""
        return max((c.get("ok", 0) + c.get("changed", 0) + c.get("failed", 0)
                    for c in self.recap.values()), default=0)

    def changed(self) -> int:
        return sum(c.get("changed", 0) for c in self.recap.values())


def recap(output: str) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    if "PLAY RECAP" not in output:
        return result
    for line in output.split("PLAY RECAP", 1)[1].splitlines()[1:]:
        m = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if m:
            result[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return result


def playbook(name: str, inventory: Path, path: str, env: dict[str, str]) -> PlayRun:
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), path]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "ANSIBLE_NOCOLOR": "1", **env},
                          capture_output=True, text=True, timeout=1800, check=False)
    run = PlayRun(name, time.monotonic() - t0, proc.returncode, recap(proc.stdout))
    task, changed = "", []
    for line in proc.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]")[0]
        elif line.startswith("changed:") and task not in changed:
            changed.append(task)
    if changed and "floor" not in name:
        print(f"  changed in {name}: {'; '.join(changed)}", flush=True)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
    print(f"  {name}: {run.seconds:.1f} s, exit {run.returncode}, "
          f"{run.executed()} tasks run per host, {run.changed()} changed", flush=True)
    return run


def floor_playbook(directory: Path, tasks: int) -> Path:
    path = directory / "floor.yml"
    body = "".join(f"    - name: No-op {i}\n      ansible.builtin.ping:\n"
                   for i in range(tasks))
    path.write_text("---\n- name: Ansible floor\n  hosts: mailservers\n  gather_facts: false\n"
                    f"  tasks:\n{body}")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", action="store_true", help="lab down + up before the converge")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--playbook", default="playbooks/site.yml")
    p.add_argument("--no-converge", action="store_true",
                   help="the lab is converged already: measure the re-run and floor only")
    p.add_argument("--pipelining", choices=("both", "on", "off"), default="both")
    args = p.parse_args(argv)
    lab = Lab.from_env()
    if args.fresh:
        if lab.config.name in PROTECTED_LABS:
            print(f"refusing to recreate lab {lab.config.name!r}: set MAILFLEET_LAB to your own",
                  file=sys.stderr)
            return 2
        t0 = time.monotonic()
        lab.down()
        lab.up(args.hosts)
        print(f"lab {lab.config.name}: {args.hosts} fresh hosts in {time.monotonic() - t0:.1f} s")
    lab.require_up()
    inventory = lab.config.inventory_path
    runs: list[PlayRun] = []
    if not args.no_converge:
        runs.append(playbook("converge", inventory, args.playbook, {}))
        if runs[-1].returncode != 0:
            print("converge failed; no re-run measured", file=sys.stderr)
            return 1
    modes = ["on", "off"] if args.pipelining == "both" else [args.pipelining]
    pairs: dict[str, tuple[PlayRun, PlayRun]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        floor: Path | None = None
        for mode in modes:
            env = {"ANSIBLE_PIPELINING": "True" if mode == "on" else "False"}
            rerun = playbook(f"re-run (pipelining {mode})", inventory, args.playbook, env)
            if floor is None:
                floor = floor_playbook(Path(tmp), rerun.executed())
            base = playbook(f"floor (pipelining {mode})", inventory, str(floor), env)
            pairs[mode] = (rerun, base)
            runs += [rerun, base]
    print()
    print(f"{'run':28} {'seconds':>8} {'tasks/host':>10} {'changed':>8}")
    for r in runs:
        print(f"{r.name:28} {r.seconds:8.1f} {r.executed():10d} {r.changed():8d}")
    first = pairs[modes[0]][0]
    print(f"\nidempotent re-run changed {first.changed()} task(s) (want 0)")
    if len(pairs) == 2:
        on, off = pairs["on"][0], pairs["off"][0]
        print(f"pipelining: re-run {off.seconds:.1f} s off -> {on.seconds:.1f} s on "
              f"({on.seconds / off.seconds:.2f}x)")
    for mode, (rerun, base) in pairs.items():
        print(f"re-run / floor (pipelining {mode}): {rerun.seconds / base.seconds:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
