"""`footprint`: what each of `make run`'s processes needs, idle and under load.

The whole system runs (every service, the gateway under gunicorn with its default
workers, the SMTP sink and the Stripe stand-in) with the production argon2id cost, so a
log-in costs here what it costs in production. Each part's resident memory (VmRSS of its
process group, gunicorn's workers included) is sampled every 0.2 s from /proc: once idle,
then while client threads drive a sender's day through the API (sign up, confirm the
address with the mailed link, log in, read the switches, write a message, check in, read
the messages), and last while wrk sends those senders' check-ins on 16 connections
(`bench/load.py`, as the `checkin` benchmark does). Its CPU time (utime + stime) over the
day, divided by the requests served, says what a request costs each part.

These figures size the Kubernetes requests and limits (deploy/k8s, docs/scaling.md).
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.load import LoadError, User, drive
from bench.measure import measure
from bench.report import BenchResult
from bench.system import running_system
from deploy.local.smtp_sink import mail_files, read_message
from deploy.local.supervisor import DEFAULT_SERVICES, group_members

SAMPLE_SECONDS = 0.2
IDLE_SECONDS = 5.0
THREADS = 8
PASSWORD = "correct horse battery staple"  # noqa: S105 (throw-away accounts in a temp dir)
POLICY_VERSION = "2024-04-29"
VERIFY_LINK = re.compile(r"/verify\?token=([A-Za-z0-9_-]+)")
REQUESTS_PER_SENDER = 7
CHECKIN_CONNECTIONS = 16
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class PartFigures:
    """One part's memory and CPU, as sampled."""

    idle_rss: list[int] = field(default_factory=list)
    load_rss: list[int] = field(default_factory=list)
    checkin_rss: list[int] = field(default_factory=list)
    cpu_before: float = 0.0
    cpu_after: float = 0.0

    def to_dict(self, requests_served: int) -> dict:
        cpu = self.cpu_after - self.cpu_before
        return {
            "footprint_idle_mib": _mib(max(self.idle_rss, default=0)),
            "footprint_under_day_load_mib": _mib(max(self.load_rss, default=0)),
            "footprint_under_checkin_load_mib": _mib(max(self.checkin_rss, default=0)),
            "footprint_under_checkin_load_mib_median": _mib(_median(self.checkin_rss)),
            "idle_rss_mib": _mib(max(self.idle_rss, default=0)),
            "load_rss_mib_peak": _mib(max(self.load_rss, default=0)),
            "load_rss_mib_median": _mib(_median(self.load_rss)),
            "cpu_seconds_under_load": round(cpu, 3),
            "cpu_ms_per_request": round(1000 * cpu / requests_served, 3)
            if requests_served else None,
        }


def group_rss(pgid: int) -> int:
    """Resident bytes of every live process in the group."""
    total = 0
    for pid in group_members(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total


def group_cpu_seconds(pgid: int) -> float:
    """User and system CPU seconds of every live process in the group."""
    total = 0
    for pid in group_members(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


class Sampler:
    """Samples every part's RSS into `target` (idle or load) in a background thread."""

    def __init__(self, pgids: dict[str, int], figures: dict[str, PartFigures]) -> None:
        self.pgids = pgids
        self.figures = figures
        self.phase = "idle_rss"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for name, pgid in self.pgids.items():
                getattr(self.figures[name], self.phase).append(group_rss(pgid))


def run(result: BenchResult) -> None:
    """Start the whole system, sample it idle, under a sender's day of requests, then
    under the senders' check-ins."""
    senders = 16 if result.quick else 120
    # Each sender checks in about rate x seconds / senders times: under the per-user limit
    # of 120 an hour up to about 1,400 check-ins a second at full size (120 senders).
    checkin_seconds = 3.0 if result.quick else 10.0
    result.parameters = {"threads": THREADS, "senders": senders,
                         "requests_per_sender": REQUESTS_PER_SENDER, "argon2id": "interactive",
                         "sample_seconds": SAMPLE_SECONDS, "idle_seconds": IDLE_SECONDS,
                         "checkin_connections": CHECKIN_CONNECTIONS,
                         "checkin_seconds": checkin_seconds}
    env = {"JICM_SERVICES": DEFAULT_SERVICES, "JICM_PASSWORD_HASH": "interactive",
           "JICM_TRUSTED_PROXIES": "1"}
    parts = ("smtp", "stripe", *DEFAULT_SERVICES.split(","), "gateway")
    with running_system(parts, env) as system:
        pgids = {name: system.supervisor.pid(name) for name in system.supervisor.names}
        figures = {name: PartFigures() for name in pgids}
        with Sampler(pgids, figures) as sampler:
            time.sleep(IDLE_SECONDS)  # the idle samples accumulate meanwhile
            for name, pgid in pgids.items():
                figures[name].cpu_before = group_cpu_seconds(pgid)
            sampler.phase = "load_rss"
            maildir = Path(system.environ["JICM_MAILDIR"])
            users: list[User] = []  # list.append is atomic: the threads may share it
            case = result.add(measure(f"a sender's day ({REQUESTS_PER_SENDER} requests)",
                                      _day(system.base_url, maildir, users), _senders(senders),
                                      threads=THREADS))
            for name, pgid in pgids.items():
                figures[name].cpu_after = group_cpu_seconds(pgid)
            sampler.phase = "checkin_rss"
            _checkins(result, system.base_url, users, checkin_seconds)
    served = case.succeeded * REQUESTS_PER_SENDER
    result.extra["parts"] = {name: part.to_dict(served) for name, part in figures.items()}
    result.notes.append("RSS counts shared pages once per process (gunicorn's workers "
                        "share the master's code pages): a conservative figure.")


def _checkins(result: BenchResult, base_url: str, users: list[User], seconds: float) -> None:
    if not users:
        result.notes.append("the check-in load was skipped: no sender lived through the day")
        return
    try:
        result.add(drive(f"POST /api/v1/checkins, {CHECKIN_CONNECTIONS} connections",
                         f"{base_url}/api/v1/checkins", connections=CHECKIN_CONNECTIONS,
                         seconds=seconds, method="POST", body="{}", users=users,
                         notes="the day's senders in turn, each from its own address"))
    except LoadError as exc:
        # The idle and day figures are measured already: keep them, and say what is missing.
        print(f"footprint: no check-in load: {exc}", file=sys.stderr, flush=True)
        result.notes.append(f"no check-in load, so no figures under it: {exc}")


def _senders(count: int) -> list[tuple[str, str]]:
    addresses = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count(1))
    stamp = int(time.time())
    return [(f"footprint-{stamp}-{n}@example.org", next(addresses)) for n in range(count)]


def _day(base_url: str, maildir: Path, users: list[User]):
    """One client thread: each item is a new sender living through the API's main calls;
    each sender who got through joins `users`."""

    def worker(index: int):
        session = requests.Session()
        session.trust_env = False

        def one(item: tuple[str, str]) -> None:
            email, address = item
            headers = {"X-Forwarded-For": address}
            _ok(session.post(f"{base_url}/api/v1/accounts", headers=headers, timeout=60,
                             json={"email": email, "password": PASSWORD,
                                   "date_of_birth": "1990-01-01",
                                   "accept_policy_version": POLICY_VERSION}), 201)
            _ok(session.post(f"{base_url}/api/v1/accounts/verify", timeout=60,
                             json={"token": _verification_token(maildir, email)}), 200)
            token = _ok(session.post(f"{base_url}/api/v1/sessions", headers=headers,
                                     timeout=60, json={"email": email, "password": PASSWORD}),
                        201).json()["token"]
            auth = {**headers, "Authorization": f"Bearer {token}"}
            for _ in _until_switch(session, base_url, auth):
                pass
            _ok(session.post(f"{base_url}/api/v1/messages", headers=auth, timeout=60, json={
                "subject": "for you", "body": "the keys are in the blue box",
                "recipients": [{"name": "Friend", "email": "friend@example.org"}]}), 201)
            _ok(session.post(f"{base_url}/api/v1/checkins", headers=auth, json={}, timeout=60),
                200)
            _ok(session.get(f"{base_url}/api/v1/messages", headers=auth, timeout=60), 200)
            users.append(User(token=token, address=address))

        return one

    return worker


def _verification_token(maildir: Path, email: str) -> str:
    """The token of the verification mail to `email`, once it has arrived."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in mail_files(maildir):
            if email in path.read_bytes().decode(errors="replace"):
                found = VERIFY_LINK.search(read_message(path).get_body(("plain",)).get_content())
                if found:
                    return found.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"no verification mail reached {email}")


def _until_switch(session: requests.Session, base_url: str, auth: dict) -> Iterator[None]:
    """The default switch is made from UserRegistered and armed from EmailVerified: read
    the switches until it is armed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        switches = _ok(session.get(f"{base_url}/api/v1/switches", headers=auth, timeout=60),
                       200).json()["switches"]
        if switches and switches[0]["state"] == "armed":
            return
        yield
        time.sleep(0.05)
    raise RuntimeError("the default switch never appeared")


def _ok(response: requests.Response, status: int) -> requests.Response:
    if response.status_code != status:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0
