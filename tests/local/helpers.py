"""Helpers for tests that drive local processes: read their output with deadlines, find ports,
and see which processes of a group are still alive (independently of the code under test)."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers that cannot be told `--port 0`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it passes or fail the test naming `what`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Output:
    """Collects a child's (text) stdout in a thread so tests can wait for lines with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]):
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._pipe = proc.stdout
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in iter(self._pipe.readline, ""):
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first line matching `pattern` (re.search), waiting up to `timeout` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                match = regex.search(line)
                if match:
                    return match
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s; got:\n" + self.text()
                )
            time.sleep(0.05)

    def text(self) -> str:
        """Everything read so far."""
        return "\n".join(self.lines)

    def finish(self, timeout: float = 5.0) -> str:
        """Wait for end of output (the process and its group closed the pipe); all of it."""
        self._thread.join(timeout)
        return self.text()


def live_group_members(pgid: int) -> list[int]:
    """Non-zombie processes in group `pgid`, according to `ps`.

    Zombies are ignored: on this machine PID 1 does not reap orphans, so a killed grandchild
    stays a zombie in its group for ever although nothing of it runs; `os.killpg(pgid, 0)`
    would still find it.
    """
    out = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    members = []
    for line in out.splitlines():
        pid, group, stat = line.split(None, 2)
        if int(group) == pgid and not stat.startswith("Z"):
            members.append(int(pid))
    return members


def wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """Fail unless every process of group `pgid` is gone within `timeout`."""
    poll_until(lambda: not live_group_members(pgid), timeout, f"process group {pgid} to end")
