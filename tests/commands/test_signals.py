"""Process groups: one helper signals them (runner, supervisor), one lists their members."""
from __future__ import annotations

import signal
import subprocess

from angora_rq.commands.signals import group_members, signal_group


def test_signal_group_reaches_a_whole_group_and_says_when_it_is_gone() -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        for _ in range(500):
            if len(group_members(leader.pid)) == 3:
                break
            subprocess.run(["sleep", "0.01"])
        assert len(group_members(leader.pid)) == 3 and leader.pid in group_members(leader.pid)
        assert signal_group(leader.pid, signal.SIGKILL) is True
        leader.wait(10)
        for _ in range(500):
            if not group_members(leader.pid):
                break
            subprocess.run(["sleep", "0.01"])
        assert group_members(leader.pid) == []  # (their zombies wait for init: not members any more)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    assert signal_group(done.pid, signal.SIGTERM) is False  # a group that is gone
    assert signal_group(None, signal.SIGTERM) is False  # a command that never started has none
