"""The suite's playbook runner: a stuck run fails by name, and leaves no process behind.

CI once lost a whole session to a site.yml that stopped printing and never ended:
pytest-timeout killed the session with no word of which task hung. These run a
real ansible-playbook on the controller (localhost); only the last needs the lab.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mailfleet.lab.fleet import Lab
from tests.integration import conftest as runner

SLEEPER = """\
- name: Sleep on the controller
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Say hello first
      ansible.builtin.debug:
        msg: hello
    - name: Sleep for a long time
      ansible.builtin.command: sleep {seconds}
      changed_when: false
"""


def _sleeper(tmp_path: Path, seconds: int) -> tuple[Path, Path]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n"
                         "      ansible_python_interpreter: /usr/bin/python3\n")
    playbook = tmp_path / "sleep.yml"
    playbook.write_text(SLEEPER.format(seconds=seconds))
    return inventory, playbook


def _sleep_pids(seconds: int) -> list[int]:
    """PIDs of ``sleep <seconds>`` processes (the sleeper's own task), from /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", str(seconds).encode()]:
                pids.append(int(d.name))
    return pids


def test_a_run_that_outlives_its_timeout_names_the_task_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    inventory, playbook = _sleeper(tmp_path, 3917)
    started = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        runner.run_playbook(inventory, str(playbook), timeout=8)
    assert time.monotonic() - started < 30
    message = str(failed.value)
    assert "did not finish in 8 s" in message
    assert "during TASK [Sleep for a long time] (no host had answered)" in message
    log = Path(message.split("whole log: ", 1)[1].split(")", 1)[0])
    assert "TASK [Say hello first]" in log.read_text()
    deadline = time.monotonic() + 5
    while _sleep_pids(3917) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sleep_pids(3917), "the stuck task outlived its run"


class _Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted


def test_a_run_interrupted_from_outside_leaves_nothing(tmp_path: Path) -> None:
    """What pytest-timeout (signal method) or Ctrl-C do: an exception in the middle of the wait."""
    inventory, playbook = _sleeper(tmp_path, 3919)
    previous = signal.signal(signal.SIGALRM, _interrupt)
    signal.alarm(6)
    try:
        with pytest.raises(_Interrupted):
            runner.run_playbook(inventory, str(playbook), timeout=120)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    deadline = time.monotonic() + 5
    while _sleep_pids(3919) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sleep_pids(3919), "an interrupted run left its task running"


def test_a_stuck_task_fails_by_name_and_counts_as_outside_the_roles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "TASK_TIMEOUT", 2)
    inventory, playbook = _sleeper(tmp_path, 3918)
    try:
        run = runner.run_playbook(inventory, str(playbook), timeout=60)
    finally:
        # ansible's task timeout ends the task, not the command it started
        for pid in _sleep_pids(3918):
            runner.kill_tree(pid)
    assert run.returncode == 2, run.output[-2000:]
    assert "Timed out after 2 second(s)" in run.output
    assert runner.outside_failure(run.output)
    assert run.recap()["localhost"]["failed"] == 1


def test_a_role_failure_is_not_mistaken_for_an_outside_one(tmp_path: Path) -> None:
    inventory, _ = _sleeper(tmp_path, 1)
    playbook = tmp_path / "fail.yml"
    playbook.write_text(
        "- name: Fail on purpose\n  hosts: localhost\n  connection: local\n"
        "  gather_facts: false\n  tasks:\n    - name: Refuse\n"
        "      ansible.builtin.fail:\n        msg: mail_users[0] has no password hash\n"
    )
    run = runner.run_playbook(inventory, str(playbook), timeout=60)
    assert run.returncode == 2
    assert not runner.outside_failure(run.output)


def test_last_task_reports_the_hosts_that_answered() -> None:
    output = (
        "TASK [postfix : Install] ***\nok: [mx1]\nchanged: [mx2]\n\n"
        "TASK [dovecot : Install] ***\nok: [mx1]\n"
    )
    assert runner.last_task(output) == "TASK [dovecot : Install] (answered: ok: [mx1])"
    assert runner.last_task("PLAY [x] ***\n") == ""


def test_diagnostics_keep_every_hosts_processes_and_the_apt_proxy_logs(lab: Lab) -> None:
    lab.require_up()
    path = runner.save_diagnostics(lab, "why it was kept", "the run's last words")
    text = path.read_text()
    assert text.startswith("# why it was kept\n")
    assert "the run's last words" in text
    for h in lab.hosts():
        section = text.split(f"## ps on {h.name}\n", 1)[1].split("\n## ", 1)[0]
        assert "init" in section and "sshd" in section, section
    assert "apt-cacher-ng/log/apt-cacher.log (last 40 lines)" in text
    path.unlink()  # artifacts/ keeps only the diagnostics of a real failure
