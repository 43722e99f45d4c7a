"""`dogops.processes.pid_alive`: the one liveness check both stops use (Prefect, endpoint)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from dogops.processes import pid_alive
from dogops.waiting import wait_until


def test_a_running_process_is_alive_and_a_finished_child_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
    # Killed but not yet reaped: a zombie of ours. It counts as gone (and is reaped), so a stop
    # that started it in this process does not wait out its timeout on it.
    assert wait_until(lambda: not pid_alive(child.pid), timeout_s=5, poll_s=0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_zombie_counts_as_gone_before_anyone_reaps_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 5
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)  # the test's own wait: independent of the code under test
    assert not pid_alive(child.pid)
