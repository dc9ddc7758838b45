"""`checkin`: the request every living user sends, and what each layer under it costs.

Authenticated `POST /api/v1/checkins` through the gateway under gunicorn (its own
settings, `gateway/gunicorn_conf.py`) with accounts and the scheduler behind it (and
delivery, for the senders' verification mail), at 1, 16 and 64 connections, driven by
wrk (`bench/load.py`). In the same run, at the same concurrency, the two layers under it:

- the bare pooled RPC round trip (`accounts.health` through `shared/rpc`'s client pool,
  from threads of this process, the pool as large as one gateway worker's);
- a no-op Flask route (`bench/noop_app.py`) under the same gunicorn settings, driven by
  the same wrk script.

So `checkin / rpc` and `checkin / noop` say what the gateway adds to the round trip and
to serving HTTP at all. The targets (check-ins at 16 connections at least 70% of the bare
RPC rate, p99 at most 100 ms) are written next to the figures; the harness never asserts.

The senders are real: signed up through the API with the local mode's (production)
argon2id cost, their address confirmed from the mailed link so that their default
switch is armed, then logged in. A check-in moves an armed switch's deadline: the
scheduler's conditional update, its outbox event, its throttle counts. Each request is
sent as the next sender of a wrk thread's share, from the sender's own address, so the
per-user limit (120 check-ins an hour) and the per-client one are never what is measured.
"""

from __future__ import annotations

import itertools
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.http_api import gunicorn_settings
from bench.load import User, drive
from bench.measure import Case, measure
from bench.report import BenchResult
from bench.system import RunningSystem, free_port, running_system
from deploy.local.smtp_sink import HEADER_TO, mail_files, read_message
from deploy.local.supervisor import REPO_ROOT, ProcessSpec, Supervisor, http_ok
from shared.rpc.client import RpcClientPool

PARTS = ("smtp", "accounts", "delivery", "scheduler", "gateway")
CONNECTIONS = (1, 16, 64)
TARGET_CONNECTIONS = 16
TARGET_SHARE_OF_RPC = 0.70
TARGET_P99_MS = 100.0
POOL_SIZE = 16  # as one gateway worker's pool (gateway/app.py)
CALL_TIMEOUT = 10.0
SIGN_UP_THREADS = 8
PATIENCE = 120.0  # for each user's mail and armed switch, on a busy machine
PASSWORD = "correct horse battery staple"  # noqa: S105 (throw-away accounts in a temp dir)
POLICY_VERSION = "2024-04-29"
VERIFY_LINK = re.compile(r"/verify\?token=([A-Za-z0-9_-]+)")
CHECKIN_PATH = "/api/v1/checkins"
NOOP_PATH = "/noop"


@dataclass(frozen=True)
class Sizes:
    """How many senders; how long each load runs; how many RPCs at each concurrency."""

    senders: int
    seconds: float
    rpc_calls: dict[int, int]


# Senders: even at the no-op route's rate (about 3,000 a second here, a ceiling for
# check-ins), three loads of 10 s spread over 768 senders stay under the per-user limit of
# 120 check-ins an hour; an error count in a case would show the limit answering.
FULL = Sizes(senders=768, seconds=10.0, rpc_calls={1: 3_000, 16: 10_000, 64: 10_000})
QUICK = Sizes(senders=64, seconds=3.0, rpc_calls={1: 300, 16: 1_000, 64: 1_000})


def run(result: BenchResult) -> None:
    """Start the system and the no-op app, sign the senders up, measure the three layers."""
    sizes = QUICK if result.quick else FULL
    gunicorn = gunicorn_settings()
    result.parameters = {
        "connections": list(CONNECTIONS),
        "seconds_per_load": sizes.seconds,
        "senders": sizes.senders,
        "rpc_calls": sizes.rpc_calls,
        "rpc_pool_size": POOL_SIZE,
        "rpc_call": "accounts.health",
        "argon2id": "interactive",
        "gunicorn": {key: gunicorn[key] for key in ("worker_class", "workers", "threads")},
    }
    result.notes += [
        "check-in: wrk, each request as the next of many armed senders (own token, own "
        "X-Forwarded-For with JICM_TRUSTED_PROXIES=1); one RPC (scheduler.check_in): "
        "the session comes from the gateway worker's cache.",
        "rpc: accounts.health from threads of the bench process through one pool, "
        f"{POOL_SIZE} connections, as one gateway worker holds.",
        "noop: bench/noop_app.py under gateway/gunicorn_conf.py, the same wrk script.",
    ]
    env = {"JICM_SERVICES": ",".join(p for p in PARTS if p not in ("smtp", "gateway")),
           "JICM_TRUSTED_PROXIES": "1"}
    with running_system(PARTS, env) as system:
        began = time.monotonic()
        senders = armed_senders(system, sizes.senders)
        result.extra["seconds_to_sign_up_senders"] = round(time.monotonic() - began, 1)
        with noop_app(system) as noop_url, _pool(system) as pool:
            measured = {c: _layers(result, system, noop_url, pool, senders, sizes, c)
                        for c in CONNECTIONS}
    result.extra["ratios"] = {str(c): _ratios(*cases) for c, cases in measured.items()}
    result.extra["targets"] = _targets(*measured[TARGET_CONNECTIONS])


def _layers(
    result: BenchResult,
    system: RunningSystem,
    noop_url: str,
    pool: RpcClientPool,
    senders: list[User],
    sizes: Sizes,
    connections: int,
) -> tuple[Case, Case, Case]:
    """The three layers at one concurrency, one after the other."""
    checkin = result.add(drive(
        f"POST {CHECKIN_PATH}, {connections} connection(s)", system.base_url + CHECKIN_PATH,
        connections=connections, seconds=sizes.seconds, method="POST", body="{}",
        users=senders,
    ))
    rpc = result.add(measure(
        f"bare pooled RPC, {connections} thread(s)",
        lambda _thread: lambda _call: pool.call("accounts", "health"),
        range(sizes.rpc_calls[connections]), threads=connections,
    ))
    noop = result.add(drive(
        f"no-op Flask route, {connections} connection(s)", noop_url,
        connections=connections, seconds=sizes.seconds, method="POST", body="{}",
    ))
    return checkin, rpc, noop


def _ratios(checkin: Case, rpc: Case, noop: Case) -> dict[str, float | None]:
    return {
        "checkin_over_rpc": _share(checkin.ops_per_s, rpc.ops_per_s),
        "checkin_over_noop": _share(checkin.ops_per_s, noop.ops_per_s),
        "rpc_over_noop": _share(rpc.ops_per_s, noop.ops_per_s),
    }


def _targets(checkin: Case, rpc: Case, noop: Case) -> dict[str, dict[str, Any]]:
    share = _share(checkin.ops_per_s, rpc.ops_per_s)
    p99 = checkin.latency()["p99"]
    return {
        f"checkin_{TARGET_CONNECTIONS}_share_of_rpc": {
            "target": f">= {TARGET_SHARE_OF_RPC}",
            "measured": share,
            "checkin_ops_per_s": round(checkin.ops_per_s, 1),
            "rpc_ops_per_s": round(rpc.ops_per_s, 1),
            "met": share is not None and share >= TARGET_SHARE_OF_RPC,
        },
        f"checkin_{TARGET_CONNECTIONS}_p99_ms": {
            "target": f"<= {TARGET_P99_MS:g}",
            "measured": p99,
            "met": p99 is not None and p99 <= TARGET_P99_MS,
        },
        f"checkin_{TARGET_CONNECTIONS}_errors": {
            "target": "0",
            "measured": sum(checkin.errors.values()),
            "met": not checkin.errors,
        },
    }


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 3) if whole else None


@contextmanager
def _pool(system: RunningSystem) -> Iterator[RpcClientPool]:
    pool = RpcClientPool(system.amqp_uri, size=POOL_SIZE, timeout=CALL_TIMEOUT)
    try:
        # Open every pooled connection before any clock runs: the gateway keeps its open.
        measure("warm-up (not recorded)", lambda _t: lambda _c: pool.call("accounts", "health"),
                range(POOL_SIZE * 4), threads=POOL_SIZE)
        yield pool
    finally:
        pool.close()


# --- the no-op app -------------------------------------------------------------------------


@contextmanager
def noop_app(system: RunningSystem) -> Iterator[str]:
    """Serve bench/noop_app.py under the gateway's gunicorn settings; yield its URL."""
    port = free_port()
    # Its own metrics directory (gunicorn_conf makes one when none is given): the
    # gateway's, shared, would be emptied by this master's start.
    env = {k: v for k, v in system.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    spec = ProcessSpec(
        name="noop",
        argv=[str(Path(sys.executable).parent / "gunicorn"), "--config",
              "gateway/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}", "bench.noop_app:app"],
        ready=http_ok("127.0.0.1", port, NOOP_PATH),
        ready_timeout=60.0,
        ports=(("127.0.0.1", port),),
    )
    with tempfile.TemporaryDirectory(prefix="jicm-bench-noop-") as logs:
        supervisor = Supervisor([spec], env=env, cwd=REPO_ROOT, log_dir=Path(logs),
                                output=sys.stderr)
        try:
            supervisor.start("noop")
            supervisor.wait_ready("noop")
            yield f"http://127.0.0.1:{port}{NOOP_PATH}"
        finally:
            supervisor.stop_all()


# --- the senders ---------------------------------------------------------------------------


def armed_senders(system: RunningSystem, count: int) -> list[User]:
    """`count` senders signed up, confirmed, logged in, each with an armed default switch."""
    print(f"  signing up {count} senders", file=sys.stderr, flush=True)
    addresses = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))
    stamp = int(time.time())
    people = [(f"checkin-{stamp}-{n}@example.org", next(addresses)) for n in range(count)]
    maildir = Path(system.environ["JICM_MAILDIR"])
    with ThreadPoolExecutor(SIGN_UP_THREADS) as pool:
        users = list(pool.map(lambda person: _sign_up(system.base_url, *person), people))
        tokens = _verification_tokens(maildir, {email for email, _ in people})
        list(pool.map(lambda pair: _confirm(system.base_url, tokens[pair[0][0]], pair[1]),
                      zip(people, users, strict=True)))
    return users


def _sign_up(base_url: str, email: str, address: str) -> User:
    with _session() as http:
        headers = {"X-Forwarded-For": address}
        _ok(http.post(f"{base_url}/api/v1/accounts", headers=headers, timeout=60,
                      json={"email": email, "password": PASSWORD, "date_of_birth": "1990-01-01",
                            "accept_policy_version": POLICY_VERSION}), 201)
        answer = _ok(http.post(f"{base_url}/api/v1/sessions", headers=headers, timeout=60,
                               json={"email": email, "password": PASSWORD}), 201)
    return User(token=answer.json()["token"], address=address)


def _verification_tokens(maildir: Path, emails: set[str]) -> dict[str, str]:
    """Each address's verification token, read from the sink once every mail arrived."""
    tokens: dict[str, str] = {}
    seen: set[Path] = set()
    deadline = time.monotonic() + PATIENCE
    while len(tokens) < len(emails):
        for path in mail_files(maildir):
            if path in seen:
                continue
            seen.add(path)
            mail = read_message(path)
            text = mail.get_body(("plain",))
            found = VERIFY_LINK.search(text.get_content()) if text is not None else None
            recipient = str(mail.get(HEADER_TO, "")).strip()
            if found and recipient in emails:
                tokens[recipient] = found.group(1)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{len(emails) - len(tokens)} verification mail(s) never came")
        time.sleep(0.1)
    return tokens


def _confirm(base_url: str, token: str, user: User) -> None:
    """Confirm the address, then wait until the default switch is armed."""
    with _session() as http:
        _ok(http.post(f"{base_url}/api/v1/accounts/verify", json={"token": token},
                      timeout=60), 200)
        auth = {"Authorization": f"Bearer {user.token}", "X-Forwarded-For": user.address}
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            switches = _ok(http.get(f"{base_url}/api/v1/switches", headers=auth, timeout=60),
                           200).json()["switches"]
            if switches and switches[0]["state"] == "armed":
                return
            time.sleep(0.1)
    raise RuntimeError("a sender's default switch was never armed")


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment between us and 127.0.0.1
    return session


def _ok(response: requests.Response, status: int) -> requests.Response:
    if response.status_code != status:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response
