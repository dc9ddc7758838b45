"""`make run`'s supervisor with the real parts: it comes up, serves, and Ctrl-C leaves
no process behind (gunicorn's workers included)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import system_environment
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,pgid="], capture_output=True, text=True,
                         check=True).stdout
    rows = [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, ppid, _ in rows if ppid in frontier} - found
        found |= children
        frontier = children
    return found


def test_ctrl_c_stops_every_part_and_leaves_no_process(tmp_path, vhost):
    env = system_environment(tmp_path, vhost, "accounts")
    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "deploy.local.supervisor"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    parts: set[int] = set()
    try:
        wait_for(lambda: any("Just in Case is running at" in line for line in lines),
                 timeout=90, what="the banner")
        assert requests.get(f"http://{env['JICM_GATEWAY_BIND']}/readyz", timeout=10).ok
        parts = descendants(proc.pid)
        started = {int(m.group(1)) for line in lines if (m := re.search(r"\(pid (\d+)\)", line))}
        assert started <= parts
        assert len(parts) >= 4  # sink, accounts, gunicorn master and its worker
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in parts) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in parts if alive(pid)] == []
    finally:
        cleanup(proc, parts)


def cleanup(proc: subprocess.Popen, parts: set[int]) -> None:
    """Whatever the test's outcome, leave nothing running (a killed supervisor cannot)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for pid in parts | descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
