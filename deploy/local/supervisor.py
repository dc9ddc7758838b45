"""The local process supervisor behind `make run`, also used by the end-to-end test harness.

`python -m deploy.local.supervisor` starts, in order, the dev SMTP sink, every service named in
`JICM_SERVICES` and the gunicorn gateway, waits for each to be ready, restarts a part that dies
(back-off 1 s, 2 s, 4 s... up to 30 s; five quick crashes in a row stop everything), and on
Ctrl-C / SIGTERM / SIGHUP stops them in reverse order. A second Ctrl-C kills at once.

Every child is started in a session (and so a process group) of its own: the terminal's Ctrl-C
reaches only the supervisor, which decides the order, and stopping a child signals its whole
group, so gunicorn workers and any other grandchildren go with it. `Supervisor` installs no
signal handler and no atexit hook, so a test harness can use it freely; `main()` does both.

For tests, `--specs-module MODULE` replaces the default parts by `MODULE.specs(environ)` (and
the start-up banner by `MODULE.BANNER` when present).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import http.client
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_SINK_PORT = 1025
DEFAULT_GATEWAY_BIND = "127.0.0.1:8000"
DEFAULT_SERVICES = "accounts,billing,delivery,privacy,scheduler,vault"
MAILDIR = "var/mail"
DEFAULT_STRIPE_STANDIN_PORT = 12111
# Each service serves its metrics on a port of its own: the first of these goes to the
# first service of DEFAULT_SERVICES, and so on (`JICM_METRICS_PORT_BASE` moves them all).
DEFAULT_METRICS_PORT_BASE = 9101
# Used only with the local Stripe stand-in (STRIPE_API_BASE unset): a test key and the
# stand-in's prices. Pointing STRIPE_API_BASE at Stripe means giving your own.
STRIPE_STANDIN_DEFAULTS = {
    "STRIPE_API_KEY": "sk_test_jicm_local_standin",
    "STRIPE_PRICE_MONTHLY": "price_jicm_premium_monthly",
    "STRIPE_PRICE_YEARLY": "price_jicm_premium_yearly",
}
STRIPE_STANDIN_PRICES = {"STRIPE_PRICE_MONTHLY": "400:eur:month",
                         "STRIPE_PRICE_YEARLY": "4000:eur:year"}

POLL = 0.05  # how often waits look again; short enough to feel instant, cheap enough to ignore
KILL_GRACE = 5.0  # after SIGKILL the kernel needs only a moment; this is a safety net
TAIL_LINES = 200


# --- describing what to run ----------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSpec:
    """One part of the system: how to start it and how to know it is ready.

    `env_overrides` is laid over the supervisor's base environment. `ready` is polled until it
    returns True (None: ready as soon as started). `ports` are `(host, port)` pairs the part will
    listen on; `run()` checks they are free before starting anything.
    """

    name: str
    argv: Sequence[str]
    env_overrides: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 30.0
    ports: tuple[tuple[str, int], ...] = ()


def port_accepts(host: str, port: int, timeout: float = 0.5) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on host:port."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return check


def http_ok(
    host: str, port: int, path: str = "/healthz", timeout: float = 1.0
) -> Callable[[], bool]:
    """A readiness check: `GET http://host:port/path` answers 200.

    http.client rather than urllib: no proxy settings from the environment get in the way.
    """

    def check() -> bool:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    return check


# --- process groups ------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`.

    Zombies are left out: where PID 1 does not reap orphans (some containers), a dead grandchild
    stays a zombie in the group for ever although it holds nothing. Without /proc, falls back to
    `killpg(pgid, 0)`, which cannot tell zombies apart.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return _group_members_by_signal(pgid)
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we were looking
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _group_members_by_signal(pgid: int) -> list[int]:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # exists, but not ours
    return [pgid]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def describe_exit(code: int | None) -> str:
    """`exit code 3` / `killed by SIGKILL` / `still running`."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --- the supervisor ------------------------------------------------------------------------


class NotReadyError(Exception):
    """A part did not become ready; `tail` holds its last lines of output."""

    def __init__(self, name: str, reason: str, tail: list[str]):
        self.name = name
        self.reason = reason
        self.tail = tail
        super().__init__(f"{name} did not come up: {reason}")


class WaitCancelledError(Exception):
    """`wait_ready` gave up because its `cancel` callable said so."""


class Exit(NamedTuple):
    """A child that exited without being asked to."""

    name: str
    code: int
    uptime: float


@dataclass
class _Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    expected_exit: bool = False
    reported: bool = False
    reader: threading.Thread | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class Supervisor:
    """Starts, watches and stops a set of child processes, one process group each.

    Children's stdout and stderr are merged and either copied to `output` with a `name | `
    prefix, or appended to `<log_dir>/<name>.log`; the last lines are kept for error messages.
    """

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_dir: Path | None = None,
        output: IO[str] | None = None,
    ):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate part names in {names}")
        self.specs = list(specs)
        self._children = {s.name: _Child(s) for s in specs}
        self._env = dict(os.environ if env is None else env)
        self._cwd = cwd
        self._log_dir = log_dir
        self._output = output if output is not None else sys.stdout
        self._out_lock = threading.Lock()
        self._width = max([len(n) for n in names] + [len("supervisor")])
        # A plain flag, not an Event: kill_all() runs inside signal handlers, where taking a
        # lock the interrupted code may hold would deadlock.
        self._hurry = False

    # -- queries --

    @property
    def names(self) -> list[str]:
        """Part names in start order."""
        return [s.name for s in self.specs]

    def alive(self, name: str) -> bool:
        """Whether the part's main process is running."""
        proc = self._child(name).proc
        return proc is not None and proc.poll() is None

    def pid(self, name: str) -> int | None:
        """The main process id, which is also its process group id; None if never started."""
        proc = self._child(name).proc
        return None if proc is None else proc.pid

    def returncode(self, name: str) -> int | None:
        """The main process's exit status (negative: killed by that signal); None if running."""
        proc = self._child(name).proc
        return None if proc is None else proc.poll()

    def tail(self, name: str, n: int = 20) -> list[str]:
        """The last `n` lines the part printed."""
        return list(self._child(name).lines)[-n:]

    def exited(self) -> list[Exit]:
        """Parts that exited without being stopped, each reported once."""
        found = []
        for name, child in self._children.items():
            proc = child.proc
            if proc is None or child.expected_exit or child.reported or proc.poll() is None:
                continue
            child.reported = True
            found.append(Exit(name, proc.returncode, time.monotonic() - child.started_at))
        return found

    # -- starting --

    def start(self, name: str) -> int:
        """Start the part in a new session; returns its pid. It must not be running."""
        child = self._child(name)
        if self.alive(name):
            raise RuntimeError(f"{name} is already running (pid {self.pid(name)})")
        self._hurry = False
        env = {**self._env, **child.spec.env_overrides}
        proc = subprocess.Popen(  # noqa: S603 (argv comes from the spec, not from a shell)
            list(child.spec.argv),
            env=env,
            cwd=self._cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session and process group: Ctrl-C in the terminal does not reach it, and
            # stop() can signal it together with everything it spawned.
            start_new_session=True,
        )
        child.proc = proc
        child.started_at = time.monotonic()
        child.expected_exit = False
        child.reported = False
        child.lines.clear()
        child.reader = threading.Thread(
            target=self._pump, args=(child, proc), name=f"output-{name}", daemon=True
        )
        child.reader.start()
        self.say(f"started {name} (pid {proc.pid})")
        return proc.pid

    def wait_ready(
        self, name: str, timeout: float | None = None, cancel: Callable[[], bool] | None = None
    ) -> None:
        """Poll the part's readiness check until it passes.

        Raises `NotReadyError` if the part exits first or `timeout` (default: the spec's) passes,
        and `WaitCancelledError` as soon as `cancel()` returns True.
        """
        child = self._child(name)
        limit = child.spec.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            if cancel is not None and cancel():
                raise WaitCancelledError(name)
            if not self.alive(name):
                self._drain(child)  # so the tail holds its last words
                reason = f"it exited ({describe_exit(self.returncode(name))}) before it was ready"
                raise NotReadyError(name, reason, self.tail(name))
            if child.spec.ready is None or child.spec.ready():
                return
            if time.monotonic() >= deadline:
                raise NotReadyError(name, f"not ready after {limit:g} s", self.tail(name))
            time.sleep(POLL)

    def wait_for_output(self, name: str, pattern: str, timeout: float = 10.0) -> str:
        """Wait until the part prints a line matching `pattern` (re.search); returns the line."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self._child(name).lines):
                if regex.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{name} printed nothing matching {pattern!r} in {timeout} s")
            time.sleep(POLL)

    # -- stopping --

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        """SIGTERM the part's process group, wait up to `timeout`, then SIGKILL the group.

        Returns the main process's exit status (None if it was never started). Returns only
        once no live process is left in the group.
        """
        child = self._child(name)
        proc = child.proc
        if proc is None:
            return None
        child.expected_exit = True
        deadline = time.monotonic() + timeout
        if self._group_gone(proc):
            return self._finish(child, proc)
        _signal_group(proc.pid, signal.SIGTERM)
        if not self._wait_group_gone(proc, deadline):
            why = "asked to hurry" if self._hurry else f"did not stop within {timeout:g} s"
            self.say(f"{name} {why}: killing it")
            _signal_group(proc.pid, signal.SIGKILL)
            self._wait_group_gone(proc, time.monotonic() + KILL_GRACE, hurry_ok=False)
        code = self._finish(child, proc)
        self.say(f"stopped {name} ({describe_exit(code)})")
        return code

    def kill(self, name: str) -> int | None:
        """SIGKILL the part's whole process group at once (fault tests); returns its status."""
        child = self._child(name)
        proc = child.proc
        if proc is None:
            return None
        child.expected_exit = True
        _signal_group(proc.pid, signal.SIGKILL)
        self._wait_group_gone(proc, time.monotonic() + KILL_GRACE, hurry_ok=False)
        return self._finish(child, proc)

    def restart(self, name: str, timeout: float = 10.0) -> int:
        """Stop the part (whatever is left of it) and start it again; returns the new pid."""
        self.stop(name, timeout)
        return self.start(name)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every part in reverse start order, all within about `timeout` seconds.

        The time left is shared: a part that overstays its welcome makes the later ones
        escalate to SIGKILL sooner, but each still gets a short chance to exit cleanly.
        """
        deadline = time.monotonic() + timeout
        for name in reversed(self.names):
            if self._child(name).proc is None:
                continue
            self.stop(name, max(deadline - time.monotonic(), 0.5))

    @property
    def hurried(self) -> bool:
        """Whether `kill_all()` was called since the last `start()`."""
        return self._hurry

    def kill_all(self) -> None:
        """SIGKILL every part's group now; stops in progress stop waiting. Signal-handler safe."""
        self._hurry = True
        for child in list(self._children.values()):
            if child.proc is not None:
                child.expected_exit = True
                _signal_group(child.proc.pid, signal.SIGKILL)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- output --

    def say(self, message: str, *, bare: bool = False) -> None:
        """Print a line of the supervisor's own (`bare`: without the `supervisor |` prefix)."""
        self._write(message if bare else self._prefixed("supervisor", message))

    def _prefixed(self, name: str, line: str) -> str:
        return f"{name:<{self._width}} | {line}"

    def _write(self, line: str) -> None:
        # A closed terminal or pipe must not stop the output threads: a child whose output is
        # no longer drained would block on its next write.
        with self._out_lock, contextlib.suppress(OSError, ValueError):
            self._output.write(line + "\n")
            self._output.flush()

    def _pump(self, child: _Child, proc: subprocess.Popen[bytes]) -> None:
        """Copy the child's output line by line (runs in a thread per child)."""
        assert proc.stdout is not None
        log = self._open_log(child.spec.name)
        try:
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                child.lines.append(line)
                if log is None:
                    self._write(self._prefixed(child.spec.name, line))
                else:
                    log.write(line + "\n")
                    log.flush()
        except (OSError, ValueError):
            pass  # the pipe was closed under us: the process is gone
        finally:
            if log is not None:
                log.close()

    def _open_log(self, name: str) -> IO[str] | None:
        if self._log_dir is None:
            return None
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return open(self._log_dir / f"{name}.log", "a", encoding="utf-8")

    # -- internals --

    def _child(self, name: str) -> _Child:
        try:
            return self._children[name]
        except KeyError:
            raise KeyError(f"no part named {name!r}; parts: {', '.join(self.names)}") from None

    @staticmethod
    def _group_gone(proc: subprocess.Popen[bytes]) -> bool:
        # poll() reaps the leader, so it stops counting as a member once it has exited.
        return proc.poll() is not None and not group_members(proc.pid)

    def _wait_group_gone(
        self, proc: subprocess.Popen[bytes], deadline: float, hurry_ok: bool = True
    ) -> bool:
        while not self._group_gone(proc):
            if time.monotonic() >= deadline or (hurry_ok and self._hurry):
                return False
            time.sleep(POLL)
        return True

    @staticmethod
    def _drain(child: _Child) -> None:
        # Let the output thread copy what the child said last, so it appears before we move
        # on. Bounded: a grandchild that escaped the group may still hold the pipe open.
        if child.reader is not None:
            child.reader.join(timeout=1.0)

    def _finish(self, child: _Child, proc: subprocess.Popen[bytes]) -> int | None:
        self._drain(child)
        return proc.poll()


# --- ports ---------------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind host:port now (SO_REUSEADDR, as servers do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_owner(port: int) -> str | None:
    """Who listens on TCP `port`, e.g. `beam.smp (pid 2937)`, when `ss` or `lsof` can tell."""
    return _owner_from_ss(port) or _owner_from_lsof(port)


def _run_quietly(argv: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 (fixed argv of a system tool)
            argv, capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def _owner_from_ss(port: int) -> str | None:
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = _run_quietly([ss, "-Htlnp", f"sport = :{port}"])
    match = re.search(r'\("([^"]+)",pid=(\d+)', out)
    return f"{match[1]} (pid {match[2]})" if match else None


def _owner_from_lsof(port: int) -> str | None:
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    out = _run_quietly([lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"])
    pid = re.search(r"^p(\d+)$", out, re.M)
    cmd = re.search(r"^c(.+)$", out, re.M)
    return f"{cmd[1] if cmd else 'a process'} (pid {pid[1]})" if pid else None


def port_problems(specs: Sequence[ProcessSpec]) -> list[str]:
    """One sentence per port a part needs that is already taken."""
    problems = []
    for spec in specs:
        for host, port in spec.ports:
            try:
                if port_free(host, port):
                    continue
            except OSError as exc:
                problems.append(f"{spec.name} cannot listen on {host}:{port}: {exc}")
                continue
            owner = port_owner(port)
            by = f" by {owner}" if owner else " by another process"
            problems.append(f"{spec.name} needs {host}:{port}, but it is already taken{by}")
    return problems


# --- the parts of Just in Case -------------------------------------------------------------


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port number from the environment, with a message naming the variable if bad."""
    value = env.get(name, str(default)).strip()
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{name} must be a TCP port number, not {value!r}")
    return int(value)


def parse_bind(bind: str) -> tuple[str, int]:
    """`127.0.0.1:8000` / `[::1]:8000` / `:8000` -> (host, port)."""
    host, sep, port = bind.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"JICM_GATEWAY_BIND must be host:port, not {bind!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (gunicorn's meaning of ':port')


def _local_host(host: str) -> str:
    """Where to connect to reach a server bound on `host` (wildcards mean this machine)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def gateway_url(environ: Mapping[str, str]) -> str:
    """The gateway's local URL, from `JICM_GATEWAY_BIND`."""
    host, port = parse_bind(environ.get("JICM_GATEWAY_BIND", DEFAULT_GATEWAY_BIND))
    host = _local_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def child_environment(
    environ: Mapping[str, str] | None = None, repo_root: Path = REPO_ROOT
) -> dict[str, str]:
    """The environment every part gets.

    The given (parent's) environment wins; `.env` in the repo root fills in what it leaves
    unset (as python-dotenv and docker compose do, so `SMTP_PORT=2525 make run` beats `.env`);
    then the local defaults fill in the rest.
    """
    from dotenv import dotenv_values

    env = dict(os.environ if environ is None else environ)
    dotenv = repo_root / ".env"
    if dotenv.is_file():
        for key, value in dotenv_values(dotenv).items():
            if value is not None:
                env.setdefault(key, value)
    sink_port = str(env_port(env, "JICM_SMTP_SINK_PORT", DEFAULT_SINK_PORT))
    if "billing" in _service_names(env) and not env.get("STRIPE_API_BASE"):
        # No Stripe configured: billing talks to the local stand-in.
        env["STRIPE_API_BASE"] = stripe_standin_url(env)
        for key, value in STRIPE_STANDIN_DEFAULTS.items():
            if not env.get(key):  # an empty line copied from .env.example counts as unset
                env[key] = value
    defaults = {
        "JICM_ENV": "local",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": sink_port,
        "SMTP_TLS": "none",
        "JICM_PUBLIC_URL": gateway_url(env),
        "JICM_GATEWAY_BIND": DEFAULT_GATEWAY_BIND,
        "JICM_SERVICES": DEFAULT_SERVICES,
        "JICM_MAILDIR": MAILDIR,
        "JICM_LOG_FORMAT": "text",
        # Short enough to try a switch by hand (production's minimum is a day).
        "JICM_MIN_INTERVAL": "60",
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env


def _service_names(env: Mapping[str, str]) -> list[str]:
    return [s.strip() for s in env.get("JICM_SERVICES", DEFAULT_SERVICES).split(",") if s.strip()]


def stripe_standin_url(env: Mapping[str, str]) -> str:
    """Where the local Stripe stand-in listens (`JICM_STRIPE_STANDIN_PORT`)."""
    port = env_port(env, "JICM_STRIPE_STANDIN_PORT", DEFAULT_STRIPE_STANDIN_PORT)
    return f"http://127.0.0.1:{port}"


def stripe_standin_spec(env: Mapping[str, str], overrides: Mapping[str, str]) -> ProcessSpec:
    """The local Stripe stand-in, delivering signed webhooks to the gateway."""
    port = env_port(env, "JICM_STRIPE_STANDIN_PORT", DEFAULT_STRIPE_STANDIN_PORT)
    state = Path(env.get("JICM_DATA_DIR", "var/data")).parent / "stripe-standin.json"
    argv = [sys.executable, "-m", "deploy.local.stripe_standin", "--host", "127.0.0.1",
            "--port", str(port), "--api-key", env["STRIPE_API_KEY"],
            "--webhook-url", gateway_url(env) + "/webhooks/stripe", "--state", str(state)]
    for key, terms in STRIPE_STANDIN_PRICES.items():
        argv += ["--price", f"{env[key]}:{terms}"]
    return ProcessSpec(
        name="stripe",
        argv=argv,
        env_overrides=overrides,
        ready=port_accepts("127.0.0.1", port),
        ready_timeout=15.0,
        ports=(("127.0.0.1", port),),
    )


def default_specs(
    environ: Mapping[str, str] | None = None, repo_root: Path = REPO_ROOT
) -> list[ProcessSpec]:
    """What `make run` starts, in order: the SMTP sink, the services, the gateway.

    Each spec's `env_overrides` carries what `child_environment()` adds to `environ`, so a
    `Supervisor(specs, env=environ)` gives the parts the full local environment.
    """
    base = dict(os.environ if environ is None else environ)
    env = child_environment(base, repo_root)
    overrides = {k: v for k, v in env.items() if base.get(k) != v}
    python = sys.executable
    sink_port = env_port(env, "JICM_SMTP_SINK_PORT", DEFAULT_SINK_PORT)
    gw_host, gw_port = parse_bind(env["JICM_GATEWAY_BIND"])
    services = [s.strip() for s in env["JICM_SERVICES"].split(",")]

    smtp = ProcessSpec(
        name="smtp",
        argv=[
            python,
            "-m",
            "deploy.local.smtp_sink",
            "--host",
            "127.0.0.1",
            "--port",
            str(sink_port),
            "--maildir",
            env["JICM_MAILDIR"],
        ],
        env_overrides=overrides,
        ready=port_accepts("127.0.0.1", sink_port),
        ready_timeout=15.0,
        ports=(("127.0.0.1", sink_port),),
    )
    workers = [service_spec(name, env, overrides) for name in services if name]
    gateway = ProcessSpec(
        name="gateway",
        # The venv's gunicorn, next to its python: no PATH lookup, no other installation.
        argv=[
            str(Path(python).parent / "gunicorn"),
            "--config",
            "gateway/gunicorn_conf.py",
            "--bind",
            env["JICM_GATEWAY_BIND"],
            "gateway.app:create_app()",
        ],
        env_overrides=overrides,
        # /readyz: up only once the broker and every service answer through the gateway.
        ready=http_ok(_local_host(gw_host), gw_port, "/readyz"),
        ready_timeout=60.0,
        ports=((gw_host, gw_port),),
    )
    # The stand-in runs when billing is pointed at it (the default without a Stripe).
    standin = "billing" in services and env.get("STRIPE_API_BASE") == stripe_standin_url(env)
    stripe = [stripe_standin_spec(env, overrides)] if standin else []
    return [smtp, *stripe, *workers, gateway]


def free_port_block(count: int, attempts: int = 50) -> int:
    """A port from which `count` consecutive ports are free now (for JICM_METRICS_PORT_BASE
    in tests and benchmarks, which run beside other systems on one machine)."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65536 and all(port_free("127.0.0.1", base + n) for n in range(count)):
            return base
    raise RuntimeError(f"found no {count} free consecutive ports")


def metrics_port(env: Mapping[str, str], service: str) -> int:
    """Where `service` serves its metrics under `make run`."""
    base = env_port(env, "JICM_METRICS_PORT_BASE", DEFAULT_METRICS_PORT_BASE)
    names = DEFAULT_SERVICES.split(",")
    return base + (names.index(service) if service in names else len(names))


def service_spec(name: str, env: Mapping[str, str], overrides: Mapping[str, str]) -> ProcessSpec:
    """One service under the runner, its metrics on a port of its own."""
    port = metrics_port(env, name)
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", "shared.runner", name],
        env_overrides={**overrides, "JICM_METRICS_BIND": f"127.0.0.1:{port}"},
        ports=(("127.0.0.1", port),),
    )


def default_banner(environ: Mapping[str, str] | None = None) -> str:
    """The line printed once everything is up."""
    env = child_environment(environ)
    url, maildir = gateway_url(env), env["JICM_MAILDIR"]
    return f"Just in Case is running at {url} (mail lands in {maildir}/). Press Ctrl-C to stop."


# --- running everything --------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """Back-off for parts that die: base, 2x base, 4x base... capped; a crash is "quick" when
    the part ran less than `stable_after` seconds, and `max_quick_crashes` in a row give up."""

    base: float = 1.0
    cap: float = 30.0
    max_quick_crashes: int = 5
    stable_after: float = 60.0

    def delay(self, crashes: int) -> float:
        """The wait before the restart that follows the `crashes`-th crash in a row."""
        return min(self.cap, self.base * 2 ** max(crashes - 1, 0))


class StopRequest:
    """Counts SIGINT/SIGTERM/SIGHUP; the first asks for a clean stop, the next kills at once.

    Only plain attribute writes and os.killpg happen in the handler: no locks, no printing.
    """

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            self.supervisor.kill_all()

    def __bool__(self) -> bool:
        return self.count > 0

    def install(self) -> None:
        """Become the handler of SIGINT, SIGTERM and SIGHUP (a closed terminal)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self)


def _start_in_order(sup: Supervisor, stopping: Callable[[], bool]) -> None:
    for name in sup.names:
        if stopping():
            return
        sup.start(name)
        sup.wait_ready(name, cancel=stopping)


def _report_not_ready(sup: Supervisor, exc: NotReadyError) -> None:
    sup.say(str(exc))
    if exc.tail:
        sup.say(f"last lines from {exc.name}:")
        for line in exc.tail:
            sup.say(f"    {line}")


def _sleep_unless(stopping: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stopping() and time.monotonic() < deadline:
        time.sleep(POLL)


def watch(
    sup: Supervisor, stopping: Callable[[], bool], policy: RestartPolicy, interval: float = 0.2
) -> int:
    """Restart parts that die, with back-off, until `stopping()`; 1 if a part keeps crashing."""
    crashes: dict[str, int] = {}
    due: dict[str, float] = {}
    while not stopping():
        now = time.monotonic()
        for ex in sup.exited():
            quick = ex.uptime < policy.stable_after
            crashes[ex.name] = crashes.get(ex.name, 0) + 1 if quick else 1
            n = crashes[ex.name]
            if n >= policy.max_quick_crashes:
                sup.say(
                    f"{ex.name} exited ({describe_exit(ex.code)}), {n} quick crashes in a "
                    "row: giving up"
                )
                return 1
            delay = policy.delay(n)
            sup.say(f"{ex.name} exited ({describe_exit(ex.code)}); restarting in {delay:g} s")
            due[ex.name] = now + delay
        for name, when in list(due.items()):
            if now >= when and not stopping():
                del due[name]
                sup.restart(name)
        _sleep_unless(stopping, interval)
    return 0


def run(
    sup: Supervisor,
    *,
    banner: str,
    stopping: Callable[[], bool] = lambda: False,
    policy: RestartPolicy | None = None,
    stop_timeout: float = 10.0,
) -> int:
    """Check ports, start every part in order, watch them, stop them; returns the exit code.

    0 when stopped on request; 1 when a port is taken, a part does not come up or a part keeps
    crashing. Every child is stopped before this returns, whatever happens.
    """
    problems = port_problems(sup.specs)
    if problems:
        for problem in problems:
            sup.say(problem)
        return 1
    try:
        _start_in_order(sup, stopping)
        if stopping():
            return 0
        sup.say(banner, bare=True)
        return watch(sup, stopping, policy or RestartPolicy())
    except NotReadyError as exc:
        _report_not_ready(sup, exc)
        return 1
    except WaitCancelledError:
        return 0
    except OSError as exc:
        sup.say(f"cannot start a part: {exc}")
        return 1
    finally:
        if stopping():
            sup.say("stopping (Ctrl-C again to kill at once)")
        sup.stop_all(stop_timeout)
        sup.say("killed every part at once" if sup.hurried else "stopped")


def _load_specs(module_name: str | None) -> tuple[list[ProcessSpec], str]:
    if module_name is None:
        return default_specs(os.environ), default_banner(os.environ)
    module = importlib.import_module(module_name)
    banner = getattr(module, "BANNER", "all parts are running. Press Ctrl-C to stop.")
    return list(module.specs(os.environ)), banner


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m deploy.local.supervisor`."""
    p = argparse.ArgumentParser(
        prog="python -m deploy.local.supervisor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        help="write each part's output to DIR/<name>.log instead of the terminal",
    )
    p.add_argument("--specs-module", help="run MODULE.specs(environ) instead (tests)")
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds to stop everything before SIGKILL (default 10)",
    )
    p.add_argument(
        "--backoff-base", type=float, default=1.0, help="first restart delay in seconds (default 1)"
    )
    p.add_argument(
        "--backoff-cap",
        type=float,
        default=30.0,
        help="longest restart delay in seconds (default 30)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m deploy.local.supervisor` (`make run`)."""
    args = build_parser().parse_args(argv)
    try:
        specs, banner = _load_specs(args.specs_module)
    except ValueError as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return 2
    sup = Supervisor(specs, env=os.environ, cwd=REPO_ROOT, log_dir=args.log_dir)
    stop = StopRequest(sup)
    stop.install()
    # Belt and braces: whatever ends this process short of SIGKILL, no child outlives it.
    atexit.register(sup.stop_all, args.stop_timeout)
    policy = RestartPolicy(base=args.backoff_base, cap=args.backoff_cap)
    return run(
        sup, banner=banner, stopping=stop.__bool__, policy=policy, stop_timeout=args.stop_timeout
    )


if __name__ == "__main__":
    sys.exit(main())
