"""deploy/local/ensure_rabbitmq.sh, against stand-in RabbitMQ commands (never the real broker:
the machine's RabbitMQ is neither stopped nor started by these tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.local.helpers import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "local" / "ensure_rabbitmq.sh"

# A stand-in broker part: `listen.py amqp PORT` accepts and drops TCP connections;
# `listen.py http PORT` answers the management API's /api/overview for guest:guest.
LISTEN_PY = """\
import base64, http.server, socket, sys, time
kind, port = sys.argv[1], int(sys.argv[2])
time.sleep(0.3)  # like a real broker, not there at once: the script has to wait
if kind == "amqp":
    with socket.create_server(("127.0.0.1", port)) as srv:
        while True:
            srv.accept()[0].close()
GUEST = "Basic " + base64.b64encode(b"guest:guest").decode()
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/api/overview" and self.headers.get("Authorization") == GUEST
        self.send_response(200 if ok else 401)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Api).serve_forever()
"""

# Each stub records its call; the ports come from a file, not the environment, because the
# script may run RabbitMQ's commands through `sudo`, which resets the environment.
STUB = """\
#!/usr/bin/env bash
d="$(cd "$(dirname "$0")" && pwd)"
name="$(basename "$0")"
echo "$name $*" >> "$d/calls"
read -r amqp mgmt < "$d/ports"
spawn() {{ nohup {python} "$d/listen.py" "$1" "$2" >/dev/null 2>&1 & echo $! >> "$d/pids"; }}
case "$name $1" in
  "rabbitmq-server -detached") spawn amqp "$amqp" ;;
  "rabbitmq-plugins list") [[ -e "$d/enabled" ]] && echo rabbitmq_management ;;
  "rabbitmq-plugins enable") touch "$d/enabled"; spawn http "$mgmt" ;;
  "rabbitmqctl await_startup") ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def stubs(tmp_path: Path) -> Iterator[Path]:
    """A directory of stand-in rabbitmq-server, rabbitmqctl, rabbitmq-plugins and apt-get."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "listen.py").write_text(LISTEN_PY)
    for name in ("rabbitmq-server", "rabbitmqctl", "rabbitmq-plugins", "apt-get"):
        (d / name).write_text(STUB.format(python=sys.executable))
        (d / name).chmod(0o755)
    yield d
    pids = d / "pids"
    for pid in pids.read_text().split() if pids.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def run_script(stubs: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(stubs: Path) -> list[str]:
    path = stubs / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_starts_an_installed_but_stopped_broker_then_is_idempotent(stubs: Path):
    amqp, mgmt = free_port(), free_port()
    (stubs / "ports").write_text(f"{amqp} {mgmt}\n")
    env = {"RABBITMQ_NODE_PORT": str(amqp), "JICM_RABBITMQ_MGMT_PORT": str(mgmt)}

    first = run_script(stubs, **env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert calls(stubs) == [
        "rabbitmq-server -detached",
        "rabbitmqctl await_startup --timeout 60",
        "rabbitmq-plugins list --enabled --minimal",
        "rabbitmq-plugins enable rabbitmq_management",
    ]
    assert f"ready: amqp://guest:guest@127.0.0.1:{amqp}/" in first.stdout

    second = run_script(stubs, **env)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "already answers" in second.stdout
    assert len(calls(stubs)) == 4, "a running broker is left alone"


def test_leaves_the_machines_running_broker_alone(stubs: Path):
    probe = subprocess.run(
        ["bash", "-c", "(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null"], check=False
    )
    if probe.returncode != 0:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 here (this test never starts one)")
    (stubs / "ports").write_text("1 1\n")

    done = run_script(stubs, JICM_RABBITMQ_WAIT="5")

    assert "a broker already answers on 127.0.0.1:5672" in done.stdout
    assert [c for c in calls(stubs) if not c.startswith("rabbitmq-plugins list")] == [], (
        "nothing started, installed or enabled"
    )
    assert done.returncode == 0, done.stdout + done.stderr
