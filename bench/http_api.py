"""`http`: the public API through the gunicorn gateway, with accounts behind it.

The system is `make run`'s: the SMTP sink, the accounts service and the gateway under
gunicorn with its default workers and threads. It runs twice: once with
`JICM_PASSWORD_HASH=min` (the tests' setting) and once with `interactive`, the
production default, so the difference in sign-ups and log-ins per second is the price
of argon2id. An in-process hash of each cost is measured too, as a reference.

Every client request comes from its own address, given in `X-Forwarded-For` with
`JICM_TRUSTED_PROXIES=1`, as a reverse proxy would: otherwise the per-client limits
(20 sign-ups an hour, 30 log-ins in 15 minutes) would turn the figures into the speed
of answering 429. Each client thread keeps one `requests.Session` (keep-alive), as a
browser or mobile app would.
"""

from __future__ import annotations

import itertools
import runpy
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.pwhash
import requests

from bench.measure import WorkerFactory, measure
from bench.report import BenchResult
from bench.system import running_system

PARTS = ("smtp", "accounts", "gateway")
GUNICORN_CONF = Path(__file__).resolve().parent.parent / "gateway" / "gunicorn_conf.py"
THREADS = 8
REQUEST_TIMEOUT = 30.0
# Passes the password policy (length, not common, zxcvbn score); every bench account uses it.
PASSWORD = "correct horse battery staple"  # noqa: S105 (throw-away accounts in a temp dir)
POLICY_VERSION = "2024-04-29"
COSTS = {
    "min": (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN),
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
}

SignUpItem = tuple[str, str]  # (email, client address)


@dataclass(frozen=True)
class CostSizes:
    """Sign-ups and log-ins for one argon2id cost: sequential, then with THREADS threads."""

    sequential: int
    concurrent: int


@dataclass(frozen=True)
class Sizes:
    per_cost: dict[str, CostSizes]
    me_sequential: int
    me_concurrent: int
    hash_reference: int


FULL = Sizes(
    per_cost={"min": CostSizes(100, 200), "interactive": CostSizes(24, 96)},
    me_sequential=1_000,
    me_concurrent=4_000,
    hash_reference=10,
)
QUICK = Sizes(
    per_cost={"min": CostSizes(10, 16), "interactive": CostSizes(4, 8)},
    me_sequential=50,
    me_concurrent=200,
    hash_reference=3,
)


class UnexpectedStatus(Exception):
    """The API answered something other than success (counted per status and code)."""


def run(result: BenchResult) -> None:
    """Run the system once per argon2id cost and measure the API on each."""
    sizes = QUICK if result.quick else FULL
    result.parameters = _parameters(sizes)
    result.notes += [
        "Each request comes from its own client address (X-Forwarded-For with "
        "JICM_TRUSTED_PROXIES=1), so the per-client rate limits never answer 429.",
        "A sign-up also scores the password (zxcvbn) and counts a throttle hit; a log-in "
        "counts a throttle hit and opens a session: both include one argon2id hash.",
        "The argon2id in-process cases are a reference: the hash alone, no HTTP, no RPC.",
    ]
    addresses = _addresses()
    for cost, cost_sizes in sizes.per_cost.items():
        print(f"http: JICM_PASSWORD_HASH={cost}", file=sys.stderr, flush=True)
        env = {"JICM_PASSWORD_HASH": cost, "JICM_TRUSTED_PROXIES": "1"}
        with running_system(PARTS, env) as system, _Client(system.base_url) as client:
            emails = _sign_ups(result, client, cost, cost_sizes, addresses)
            tokens = _log_ins(result, client, cost, emails, cost_sizes.sequential, addresses)
            if cost == "min":  # reading a profile hashes no password: one cost is enough
                _me(result, client, tokens, sizes)
    _hash_reference(result, sizes.hash_reference)


def _parameters(sizes: Sizes) -> dict[str, Any]:
    gunicorn = gunicorn_settings()
    return {
        "threads": THREADS,
        "per_cost": {cost: vars(s) for cost, s in sizes.per_cost.items()},
        "me_sequential": sizes.me_sequential,
        "me_concurrent": sizes.me_concurrent,
        "hash_reference": sizes.hash_reference,
        "argon2id": {cost: {"opslimit": o, "memlimit_bytes": m} for cost, (o, m) in COSTS.items()},
        # The gateway's gunicorn settings, read from its config file under the environment
        # the gateway gets (the bench measures the gateway from outside: it imports none).
        "gunicorn": {key: gunicorn[key] for key in ("worker_class", "workers", "threads")},
    }


def gunicorn_settings() -> dict:
    """What `gateway/gunicorn_conf.py` sets, as gunicorn reads it."""
    return runpy.run_path(str(GUNICORN_CONF))


def _addresses() -> Iterator[str]:
    """Distinct client addresses in 10.0.0.0/8, one per request that a limit counts."""
    return (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))


# --- the client side -----------------------------------------------------------------------


class _Client:
    """The gateway's base URL and every session opened on it (closed together on exit)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return self.base_url + path

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment between us and 127.0.0.1
        with self._lock:
            self._sessions.append(session)
        return session

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        for session in self._sessions:
            session.close()


def _expect(response: requests.Response, status: int) -> requests.Response:
    if response.status_code != status:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
        raise UnexpectedStatus(f"HTTP {response.status_code} {code}")
    return response


# --- the cases -----------------------------------------------------------------------------


def _sign_ups(
    result: BenchResult,
    client: _Client,
    cost: str,
    sizes: CostSizes,
    addresses: Iterator[str],
) -> list[str]:
    """Sign up fresh addresses; return them all (failures are counted in the case)."""
    emails: list[str] = []
    for threads, count in ((1, sizes.sequential), (THREADS, sizes.concurrent)):
        start = len(emails)
        items = [(f"bench-{cost}-{start + i}@example.org", next(addresses)) for i in range(count)]
        emails += [email for email, _ in items]
        result.add(
            measure(
                f"sign-up, argon2id {cost}, {_how(threads)}",
                _sign_up_worker(client),
                items,
                threads=threads,
            )
        )
    return emails


def _log_ins(
    result: BenchResult,
    client: _Client,
    cost: str,
    emails: list[str],
    sequential: int,
    addresses: Iterator[str],
) -> list[str]:
    """Log each signed-up account in once; return the session tokens obtained."""
    tokens: list[str] = []  # list.append is atomic: the threads may share it
    for threads, chunk in ((1, emails[:sequential]), (THREADS, emails[sequential:])):
        items = [(email, next(addresses)) for email in chunk]
        result.add(
            measure(
                f"log-in, argon2id {cost}, {_how(threads)}",
                _log_in_worker(client, tokens),
                items,
                threads=threads,
            )
        )
    return tokens


def _me(result: BenchResult, client: _Client, tokens: list[str], sizes: Sizes) -> None:
    if not tokens:
        result.notes.append("GET /api/v1/me skipped: no log-in succeeded")
        return
    for threads, count in ((1, sizes.me_sequential), (THREADS, sizes.me_concurrent)):
        result.add(
            measure(
                f"GET /api/v1/me, {_how(threads)}",
                _me_worker(client, tokens),
                range(count),
                threads=threads,
                notes="each thread its own session token; once a worker has it cached "
                      "(JICM_SESSION_CACHE_SECONDS), /me asks no service",
            )
        )


def _hash_reference(result: BenchResult, count: int) -> None:
    """One argon2id hash per cost in this process: the floor under a sign-up's latency."""
    for cost, (opslimit, memlimit) in COSTS.items():
        result.add(
            measure(
                f"argon2id {cost}: one hash in process",
                _hash_worker(opslimit, memlimit),
                range(count),
                notes="reference: nacl.pwhash.argon2id.str, no HTTP, no RPC",
            )
        )


def _how(threads: int) -> str:
    return "sequential" if threads == 1 else f"{threads} threads"


# --- per-thread workers --------------------------------------------------------------------


def _sign_up_worker(client: _Client) -> WorkerFactory[SignUpItem]:
    def build(_: int) -> Callable[[SignUpItem], object]:
        http = client.session()

        def sign_up(item: SignUpItem) -> object:
            email, address = item
            body = {
                "email": email,
                "password": PASSWORD,
                "date_of_birth": "1990-01-01",
                "accept_policy_version": POLICY_VERSION,
            }
            return _expect(
                http.post(
                    client.url("/api/v1/accounts"),
                    json=body,
                    headers={"X-Forwarded-For": address},
                    timeout=REQUEST_TIMEOUT,
                ),
                201,
            )

        return sign_up

    return build


def _log_in_worker(client: _Client, tokens: list[str]) -> WorkerFactory[SignUpItem]:
    def build(_: int) -> Callable[[SignUpItem], object]:
        http = client.session()

        def log_in(item: SignUpItem) -> object:
            email, address = item
            response = _expect(
                http.post(
                    client.url("/api/v1/sessions"),
                    json={"email": email, "password": PASSWORD},
                    headers={"X-Forwarded-For": address},
                    timeout=REQUEST_TIMEOUT,
                ),
                201,
            )
            tokens.append(response.json()["token"])
            return response

        return log_in

    return build


def _me_worker(client: _Client, tokens: list[str]) -> WorkerFactory[int]:
    def build(index: int) -> Callable[[int], object]:
        http = client.session()
        http.headers["Authorization"] = f"Bearer {tokens[index % len(tokens)]}"

        def me(_: int) -> object:
            return _expect(http.get(client.url("/api/v1/me"), timeout=REQUEST_TIMEOUT), 200)

        return me

    return build


def _hash_worker(opslimit: int, memlimit: int) -> WorkerFactory[int]:
    password = PASSWORD.encode()
    return lambda _: lambda _: nacl.pwhash.argon2id.str(password, opslimit, memlimit)
