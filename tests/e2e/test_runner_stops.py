"""A service process ends when its supervisor asks, even when its broker has vanished:
`make run`'s Ctrl-C and an orchestrator's SIGTERM must never leave a service behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import AUTH, MANAGEMENT
from tests.helpers import wait_for

pytestmark = pytest.mark.fault

REPO = Path(__file__).resolve().parents[2]


def start_accounts(tmp_path: Path, vhost: str) -> tuple[subprocess.Popen, list[str]]:
    env = {"PATH": "/usr/bin:/bin", "JICM_ENV": "test", "JICM_PASSWORD_HASH": "min",
           "AMQP_URI": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
           "JICM_DATA_DIR": str(tmp_path / "data"), "JICM_LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "shared.runner", "accounts"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    wait_for(lambda: any("accounts started" in line for line in lines), timeout=30)
    return proc, lines


def make_vhost() -> str:
    name = f"jicm-stop-{uuid.uuid4().hex[:8]}"
    requests.put(f"{MANAGEMENT}/vhosts/{name}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(f"{MANAGEMENT}/permissions/{name}/guest", auth=AUTH, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    return name


def stop(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, time.monotonic() - started


def test_sigterm_stops_a_service_gracefully(tmp_path):
    vhost = make_vhost()
    try:
        proc, lines = start_accounts(tmp_path, vhost)
        code, _ = stop(proc, timeout=20)
        assert code == 0
        assert any("accounts stopped" in line for line in lines)
    finally:
        requests.delete(f"{MANAGEMENT}/vhosts/{vhost}", auth=AUTH, timeout=10)


def test_sigterm_stops_a_service_whose_broker_vanished(tmp_path):
    vhost = make_vhost()
    proc, _ = start_accounts(tmp_path, vhost)
    requests.delete(f"{MANAGEMENT}/vhosts/{vhost}", auth=AUTH, timeout=10).raise_for_status()
    _, took = stop(proc, timeout=30)
    assert took < 25
