"""The local supervisor: process groups, stop/kill/restart, and `main()` as `make run` runs it."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.supervisor import (
    NotReadyError,
    ProcessSpec,
    RestartPolicy,
    Supervisor,
    child_environment,
    default_banner,
    default_specs,
)
from tests.local.fake_specs import child
from tests.local.helpers import Output, live_group_members, poll_until, wait_group_gone

REPO_ROOT = Path(__file__).resolve().parents[2]


def pid_of(pid_dir: Path, name: str, suffix: str = "pid") -> int:
    return int((pid_dir / f"{name}.{suffix}").read_text())


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pids"
    d.mkdir()
    return d


@pytest.fixture
def sup_factory() -> Iterator[list[Supervisor]]:
    """Supervisors made by a test are stopped even if the test fails half-way."""
    made: list[Supervisor] = []
    yield made
    for sup in made:
        sup.stop_all(timeout=2)


def make(made: list[Supervisor], specs: list[ProcessSpec], **kw) -> Supervisor:
    kw.setdefault("output", io.StringIO())
    sup = Supervisor(specs, cwd=REPO_ROOT, **kw)
    made.append(sup)
    return sup


# --- the Supervisor class, in-process ------------------------------------------------------


def test_stop_all_leaves_no_process_of_any_group(pid_dir: Path, sup_factory: list[Supervisor]):
    sup = make(sup_factory, [child("sink", pid_dir), child("web", pid_dir, "--grandchild")])
    for name in sup.names:
        sup.start(name)
        sup.wait_ready(name, timeout=10)
    groups = [pid_of(pid_dir, "sink"), pid_of(pid_dir, "web")]
    grandchild = pid_of(pid_dir, "web", "grandchild")
    assert groups == [sup.pid("sink"), sup.pid("web")]
    assert grandchild in live_group_members(groups[1]), "the grandchild shares the group"

    sup.stop_all(timeout=5)

    for pgid in groups:
        assert live_group_members(pgid) == [], "stop_all returns only when every group is gone"
    assert not sup.alive("sink") and not sup.alive("web")
    assert sup.returncode("web") == -signal.SIGTERM


def test_kill_then_restart(pid_dir: Path, sup_factory: list[Supervisor]):
    sup = make(sup_factory, [child("web", pid_dir, "--grandchild")])
    first = sup.start("web")
    sup.wait_ready("web", timeout=10)

    assert sup.kill("web") == -signal.SIGKILL
    assert not sup.alive("web")
    assert live_group_members(first) == []
    assert sup.exited() == [], "a deliberate kill is not reported as a crash"

    (pid_dir / "web.pid").unlink()
    second = sup.restart("web")
    sup.wait_ready("web", timeout=10)
    assert second != first
    assert sup.alive("web")
    assert pid_of(pid_dir, "web") == second


def test_child_ignoring_sigterm_is_sigkilled_after_the_timeout(
    pid_dir: Path, sup_factory: list[Supervisor]
):
    sup = make(sup_factory, [child("stubborn", pid_dir, "--ignore-term")])
    pgid = sup.start("stubborn")
    sup.wait_for_output("stubborn", "stubborn ready", timeout=10)  # SIGTERM is ignored by now

    started = time.monotonic()
    code = sup.stop("stubborn", timeout=1.0)
    took = time.monotonic() - started

    assert code == -signal.SIGKILL
    assert 1.0 <= took < 5.0
    assert live_group_members(pgid) == []


def test_unexpected_exit_is_reported_once_with_its_code(
    pid_dir: Path, sup_factory: list[Supervisor]
):
    sup = make(sup_factory, [child("crashy", pid_dir, "--exit", "3")])
    sup.start("crashy")
    poll_until(lambda: not sup.alive("crashy"), 10, "crashy to exit")

    [ex] = sup.exited()
    assert (ex.name, ex.code) == ("crashy", 3)
    assert sup.exited() == []


def test_wait_ready_names_a_part_that_exits_and_shows_its_last_lines(
    pid_dir: Path, sup_factory: list[Supervisor]
):
    sup = make(sup_factory, [child("broken", pid_dir, "--say", "fatal: no config", "--exit", "3")])
    sup.start("broken")

    with pytest.raises(NotReadyError, match=r"broken did not come up: .*exit code 3") as err:
        sup.wait_ready("broken", timeout=10)
    assert err.value.tail == ["fatal: no config"]


def test_output_is_prefixed_with_the_part_name(pid_dir: Path, sup_factory: list[Supervisor]):
    out = io.StringIO()
    sup = make(sup_factory, [child("web", pid_dir, "--say", "hello there")], output=out)
    sup.start("web")
    sup.wait_for_output("web", "web ready", timeout=10)
    sup.stop("web", timeout=5)

    lines = out.getvalue().splitlines()
    assert "web        | hello there" in lines
    assert "web        | web ready" in lines


def test_output_goes_to_a_log_file_when_asked(
    pid_dir: Path, tmp_path: Path, sup_factory: list[Supervisor]
):
    out = io.StringIO()
    logs = tmp_path / "log"
    sup = make(
        sup_factory, [child("web", pid_dir, "--say", "to the file")], output=out, log_dir=logs
    )
    sup.start("web")
    sup.wait_for_output("web", "web ready", timeout=10)
    sup.stop("web", timeout=5)

    assert (logs / "web.log").read_text().splitlines() == ["to the file", "web ready"]
    assert "to the file" not in out.getvalue()


def test_restart_policy_doubles_up_to_the_cap():
    policy = RestartPolicy(base=1.0, cap=30.0)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


# --- what `make run` starts ----------------------------------------------------------------


def test_default_specs_order_commands_and_environment(tmp_path: Path):
    (tmp_path / ".env").write_text("SMTP_TLS=starttls\nJICM_SMTP_SINK_PORT=2525\nFROM_DOTENV=1\n")
    parent = {"JICM_SERVICES": "accounts, vault,switches", "SMTP_TLS": "tls", "PATH": "/bin"}

    specs = default_specs(parent, repo_root=tmp_path)

    assert [s.name for s in specs] == ["smtp", "accounts", "vault", "switches", "gateway"]
    smtp, accounts, gateway = specs[0], specs[1], specs[-1]
    assert smtp.argv[:3] == [sys.executable, "-m", "deploy.local.smtp_sink"]
    assert smtp.argv[smtp.argv.index("--port") + 1] == "2525"
    assert smtp.argv[smtp.argv.index("--maildir") + 1] == "var/mail"
    assert smtp.ports == (("127.0.0.1", 2525),)
    assert accounts.argv == [sys.executable, "-m", "shared.runner", "accounts"]
    assert accounts.ready is None
    assert gateway.argv[0] == str(Path(sys.executable).parent / "gunicorn")
    assert gateway.argv[-1] == "gateway.app:create_app()"
    assert gateway.argv[1:3] == ["--config", "gateway/gunicorn_conf.py"]
    assert gateway.ports == (("127.0.0.1", 8000),)
    env = {**parent, **accounts.env_overrides}
    assert env["SMTP_TLS"] == "tls", "the parent's environment beats .env"
    assert env["FROM_DOTENV"] == "1"
    assert env["SMTP_PORT"] == "2525", "SMTP goes to the sink by default"
    assert env["SMTP_HOST"] == "127.0.0.1"
    assert env["JICM_ENV"] == "local"
    assert env["JICM_PUBLIC_URL"] == "http://127.0.0.1:8000"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" not in accounts.env_overrides, "overrides carry only what changes"


def test_defaults_never_override_what_is_set(tmp_path: Path):
    parent = {
        "JICM_ENV": "test",
        "SMTP_HOST": "mail",
        "SMTP_PORT": "25",
        "SMTP_TLS": "tls",
        "JICM_PUBLIC_URL": "https://jic.example",
        "JICM_GATEWAY_BIND": "0.0.0.0:9000",
    }

    env = child_environment(parent, repo_root=tmp_path)

    assert {k: env[k] for k in parent} == parent
    gateway = default_specs(parent, repo_root=tmp_path)[-1]
    assert gateway.ports == (("0.0.0.0", 9000),)  # noqa: S104 (checked, not bound)
    assert "http://127.0.0.1:9000" in default_banner(parent)


def test_billing_gets_the_local_stripe_stand_in_when_no_stripe_is_configured(tmp_path: Path):
    (tmp_path / ".env").write_text("STRIPE_API_KEY=\nSTRIPE_API_BASE=\n")  # as .env.example
    parent = {"JICM_STRIPE_STANDIN_PORT": "12999", "JICM_DATA_DIR": "/tmp/jic/data"}

    specs = default_specs(parent, repo_root=tmp_path)

    names = [s.name for s in specs]
    assert names[:2] == ["smtp", "stripe"] and names[-1] == "gateway"
    assert {"accounts", "billing"} <= set(names)
    stripe, billing = specs[1], specs[names.index("billing")]
    assert stripe.argv[1:3] == ["-m", "deploy.local.stripe_standin"]
    assert stripe.ports == (("127.0.0.1", 12999),)
    assert stripe.argv[stripe.argv.index("--webhook-url") + 1] == (
        "http://127.0.0.1:8000/webhooks/stripe")
    assert stripe.argv[stripe.argv.index("--state") + 1] == "/tmp/jic/stripe-standin.json"
    env = {**parent, **billing.env_overrides}
    assert env["STRIPE_API_BASE"] == "http://127.0.0.1:12999"
    assert env["STRIPE_API_KEY"] == stripe.argv[stripe.argv.index("--api-key") + 1]
    prices = [stripe.argv[i + 1] for i, arg in enumerate(stripe.argv) if arg == "--price"]
    assert prices == [f"{env['STRIPE_PRICE_MONTHLY']}:400:eur:month",
                      f"{env['STRIPE_PRICE_YEARLY']}:4000:eur:year"]


def test_a_configured_stripe_gets_no_stand_in_and_no_invented_keys(tmp_path: Path):
    parent = {"STRIPE_API_BASE": "https://api.stripe.com"}
    specs = default_specs(parent, repo_root=tmp_path)
    assert "stripe" not in [s.name for s in specs]
    env = child_environment(parent, repo_root=tmp_path)
    assert env["STRIPE_API_BASE"] == "https://api.stripe.com"
    assert "STRIPE_API_KEY" not in env


def test_bad_port_settings_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="JICM_SMTP_SINK_PORT must be a TCP port number"):
        default_specs({"JICM_SMTP_SINK_PORT": "smtp"}, repo_root=tmp_path)
    with pytest.raises(ValueError, match="JICM_GATEWAY_BIND must be host:port"):
        default_specs({"JICM_GATEWAY_BIND": "unix:/run/gw.sock"}, repo_root=tmp_path)


# --- main(), as a subprocess ---------------------------------------------------------------


def start_main(
    pid_dir: Path, scenario: str, *args: str, **env: str
) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deploy.local.supervisor",
            "--specs-module",
            "tests.local.fake_specs",
            *args,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "FAKE_PID_DIR": str(pid_dir), "FAKE_SCENARIO": scenario, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, Output(proc)


@pytest.fixture
def mains(pid_dir: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Supervisor subprocesses started by a test.

    If a failing test leaves one running, it is SIGKILLed, and so (since a SIGKILLed supervisor
    cannot clean up) is every process group its fake parts recorded.
    """
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid_file in pid_dir.glob("*.pid"):
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_main_stops_everything_on_a_signal(pid_dir: Path, mains: list, sig: signal.Signals):
    proc, out = start_main(pid_dir, "two")
    mains.append(proc)
    out.wait_for("fake system is running")
    groups = [pid_of(pid_dir, "sink"), pid_of(pid_dir, "web")]
    assert pid_of(pid_dir, "web", "grandchild") in live_group_members(groups[1])

    proc.send_signal(sig)

    assert proc.wait(timeout=15) == 0
    for pgid in groups:
        wait_group_gone(pgid, timeout=1)
    text = out.finish()
    assert text.index("stopped web") < text.index("stopped sink"), "reverse start order"


def test_main_second_ctrl_c_kills_at_once(pid_dir: Path, mains: list):
    proc, out = start_main(pid_dir, "stubborn", "--stop-timeout", "30")
    mains.append(proc)
    out.wait_for("fake system is running")
    pgid = pid_of(pid_dir, "stubborn")

    proc.send_signal(signal.SIGINT)
    out.wait_for("Ctrl-C again")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)

    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5, "did not wait for the 30 s stop timeout"
    wait_group_gone(pgid, timeout=1)
    wait_group_gone(pid_of(pid_dir, "sink"), timeout=1)
    assert "killed every part at once" in out.finish()


def test_main_exits_1_naming_the_part_that_does_not_come_up(pid_dir: Path, mains: list):
    proc, out = start_main(pid_dir, "notready")
    mains.append(proc)

    assert proc.wait(timeout=20) == 1
    text = out.finish()
    assert "slow did not come up: not ready after 1 s" in text
    assert "supervisor |     slow: still warming up" in text, "its last lines are shown"
    assert "fake system is running" not in text
    for name in ("sink", "slow"):
        wait_group_gone(pid_of(pid_dir, name), timeout=1)


def test_main_gives_up_after_five_quick_crashes(pid_dir: Path, mains: list):
    proc, out = start_main(pid_dir, "crashy", "--backoff-base", "0.05")
    mains.append(proc)

    assert proc.wait(timeout=20) == 1
    text = out.finish()
    assert text.count("crashy exited (exit code 3)") == 5
    assert "restarting in 0.05 s" in text and "restarting in 0.4 s" in text
    assert "5 quick crashes in a row: giving up" in text
    wait_group_gone(pid_of(pid_dir, "sink"), timeout=1)


def test_main_refuses_to_start_when_a_port_is_taken(pid_dir: Path, mains: list):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, out = start_main(pid_dir, "port", FAKE_PORT=str(port))
        mains.append(proc)

        assert proc.wait(timeout=20) == 1
    text = out.finish()
    assert f"web needs 127.0.0.1:{port}, but it is already taken by" in text
    if shutil.which("ss") or shutil.which("lsof"):
        assert f"(pid {os.getpid()})" in text, "says which process holds it"
    assert list(pid_dir.iterdir()) == [], "nothing was started"
