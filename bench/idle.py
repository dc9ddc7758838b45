"""`idle`: what the scheduler costs when nothing is due, however many switches there are.

N armed switches (1,000,000 at full size), none of them due, are seeded straight into the
scheduler's embedded store: one switch is made through the scheduler's own code (a user
registered and verified, its settings changed), then cloned with bulk inserts, each clone
with its own ids and a deadline spread over 30 days, and without outbox events (nothing
is waiting to be published). Then, in process, over that store:

- `tick, nothing due`: one whole tick of the loop (`DueSwitches.tick`: the due query and
  the heartbeat), many times; the target is p99 at most 5 ms;
- `census slice`: one slice of the census of switches by state (one indexed count per
  state), the longest the census holds the event loop at a time; `census, whole` is the
  sum of its slices, paid in the background;
- `tick, K due` for K = 1, 100 and 10,000 (1,000 at quick size): a tick that finds K
  switches whose reminder is due and sends it; each switch's cost stays the same as K
  grows, and none of it depends on N;

and then through the real gateway, with the scheduler running over the same store:
`GET /readyz` and `GET /metrics` (neither counts the switches: they report the census).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.measure import Case, measure
from bench.report import BenchResult
from bench.system import running_system
from services.scheduler import census
from services.scheduler.loop import DueSwitches, LoopSettings
from services.scheduler.scheduler import Scheduler, switch_id_for
from services.scheduler.schemas import SwitchSettings
from services.scheduler.storage import INDEXES, SWITCHES, SchedulerRepository
from services.scheduler.switches import ARMED, STATES
from services.scheduler.tokens import link_key
from shared.clock import SystemClock
from shared.events.outbox import strip_outbox
from shared.storage import _sql
from shared.storage._rules import normalize_document
from shared.storage.provider import open_store
from shared.storage.sqlite import SqliteDatabase

PARTS = ("scheduler", "gateway")
DAY = 86_400
SPREAD = timedelta(days=30)
INSERT_CHUNK = 10_000
TICK_P99_TARGET_MS = 5.0
SECRET = b"b" * 32
SEED = 20261204


@dataclass(frozen=True)
class Sizes:
    switches: int
    idle_ticks: int
    due: tuple[int, ...]
    requests: int


FULL = Sizes(switches=1_000_000, idle_ticks=2_000, due=(1, 100, 10_000), requests=500)
QUICK = Sizes(switches=10_000, idle_ticks=300, due=(1, 100, 1_000), requests=50)


def run(result: BenchResult) -> None:
    """Seed the store, measure the loop in process, then the gateway's two probes."""
    sizes = QUICK if result.quick else FULL
    result.parameters = vars(sizes) | {"deadlines_spread_days": SPREAD.days,
                                       "targets": {"idle_tick_p99_ms": TICK_P99_TARGET_MS}}
    result.notes += [
        "In process, one thread, the embedded SQLite store (WAL, synchronous=NORMAL), as in "
        "the scheduler service; the delivery question is never asked (nothing is overdue).",
        "A tick with nothing due is the due query (an index range that finds nothing) and "
        "the heartbeat (one upsert).",
        "The census runs in the background every minute; its slices are what the event "
        "loop waits for at a time.",
        "/readyz asks the scheduler for its health and liveness; /metrics also lists the "
        "broker's queues through the management API.",
    ]
    with tempfile.TemporaryDirectory(prefix="jicm-bench-idle-") as tmp:
        data_dir = Path(tmp) / "data"
        print(f"  seeding {sizes.switches:,} switches", file=sys.stderr, flush=True)
        began = time.monotonic()
        db = open_store("scheduler", INDEXES, data_dir=data_dir)
        repo = SchedulerRepository(db)
        seed(db, repo, sizes.switches)
        result.extra["seed_seconds"] = round(time.monotonic() - began, 2)
        _idle_ticks(result, repo, sizes.idle_ticks)
        _census(result, repo, sizes.switches)
        for due in sizes.due:
            _due_tick(result, repo, due)
        db.close()
        _probes(result, data_dir, sizes.requests)


# --- seeding --------------------------------------------------------------------------------


def seed(db: Any, repo: SchedulerRepository, count: int) -> None:
    """`count` armed switches, none due: one made by the scheduler, cloned in bulk."""
    template = _template(repo)
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    lead = timedelta(seconds=template["reminders_seconds"][0])
    rows: list[tuple[str, str]] = []
    for _ in range(count):
        rows.append(_clone(template, now + lead + timedelta(days=1) + SPREAD * rng.random(),
                           lead, rng))
        if len(rows) == INSERT_CHUNK:
            _insert(db, rows)
            rows = []
    if rows:
        _insert(db, rows)


def _template(repo: SchedulerRepository) -> dict[str, Any]:
    now = datetime.now(UTC)
    scheduler = Scheduler(repo, now, min_interval=60, link_key=link_key(SECRET))
    user_id = str(uuid.uuid4())
    scheduler.on_user_registered(user_id, "template@example.org")
    scheduler.on_email_verified(user_id, "template@example.org")
    switch_id = switch_id_for(user_id, 0)
    scheduler.update(user_id, switch_id, SwitchSettings.model_validate(
        {"interval_seconds": 30 * DAY, "grace_seconds": DAY, "reminders_seconds": [DAY]}))
    doc = strip_outbox(repo.switches.get(switch_id))
    assert doc is not None and doc["state"] == ARMED, doc
    repo.switches.delete_one({"_id": switch_id})  # it carries events; its clones do not
    return doc


def _clone(template: dict[str, Any], deadline: datetime, lead: timedelta,
           rng: random.Random) -> tuple[str, str]:
    user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    doc = {**template, "_id": switch_id_for(user_id, 0), "user_id": user_id,
           "email": f"{user_id[:12]}@example.org", "deadline": deadline,
           "due_at": deadline - lead, "next_step": 0}
    doc = normalize_document(doc)
    return doc["_id"], _sql.encode(doc)


def _insert(db: SqliteDatabase, rows: list[tuple[str, str]]) -> None:
    # One transaction per chunk (the port inserts one document per transaction); the table
    # name is the checked constant's.
    statement = f"INSERT INTO {_sql.table(SWITCHES)} (id, doc) VALUES (?, ?)"  # noqa: S608
    with db.write() as conn:
        conn.executemany(statement, rows)


# --- in process -------------------------------------------------------------------------------


def _settings(batch: int = 100) -> LoopSettings:
    return LoopSettings(instance="bench", batch=batch, lease=timedelta(seconds=30),
                        recheck=timedelta(seconds=15), link_key=link_key(SECRET))


def _tick(repo: SchedulerRepository) -> Any:
    clock = SystemClock()
    return DueSwitches(repo, clock.now(), _settings(), lambda references: {},
                       clock=clock.now).tick()


def _idle_ticks(result: BenchResult, repo: SchedulerRepository, ticks: int) -> None:
    case = result.add(measure("tick, nothing due", lambda _: lambda _i: _tick(repo),
                              range(ticks), notes="target: p99 <= 5 ms"))
    p99 = case.latency()["p99"]
    case.extra = {"target_p99_ms": TICK_P99_TARGET_MS,
                  "meets_target": p99 is not None and p99 <= TICK_P99_TARGET_MS}


def _census(result: BenchResult, repo: SchedulerRepository, switches: int) -> None:
    def one_slice(_worker: int):
        def count(bounds: tuple[str | None, str | None]) -> None:
            for state in STATES:
                repo.count_slice(state, *bounds)
        return count

    case = result.add(measure("census slice", one_slice, census.id_ranges(),
                              notes="one slice: an indexed count per state"))
    clock = SystemClock()
    began = time.perf_counter()
    taken = census.take(repo, clock.now, "bench")
    seconds = time.perf_counter() - began
    result.add(Case("census, whole", 1, seconds, [seconds * 1000],
                    notes=f"{len(census.SLICES)} slices, in the background",
                    extra={"counted": taken.counts, "expected_armed": switches,
                           "slowest_slice_ms": case.latency()["max"]}))


def _due_tick(result: BenchResult, repo: SchedulerRepository, due: int) -> None:
    """Ticks that each find `due` switches whose reminder is due (fresh ones every time)."""
    repetitions = max(1, min(20, 2_000 // due))
    latencies, per_switch, handled = [], [], 0
    for _ in range(repetitions):
        _make_due(repo, due)
        began = time.perf_counter()
        report = _tick(repo)
        elapsed = time.perf_counter() - began
        latencies.append(elapsed * 1000)
        per_switch.append(elapsed * 1000 / max(report.claimed, 1))
        handled += report.reminded
    seconds = sum(latencies) / 1000
    print(f"  tick, {due} due ({repetitions} ticks)", file=sys.stderr, flush=True)
    result.add(Case(f"tick, {due} due", repetitions, seconds, latencies,
                    notes="each due switch gets its reminder (one conditional write with "
                          "its ReminderDue in the outbox)",
                    extra={"due_per_tick": due, "reminded": handled,
                           "ms_per_due_switch_p50": round(sorted(per_switch)[
                               len(per_switch) // 2], 4)}))


def _make_due(repo: SchedulerRepository, count: int) -> None:
    """Bring `count` switches' deadlines to within their reminder: due now."""
    now = datetime.now(UTC)
    picked = repo.switches.find({"due_at": {"$gt": now + timedelta(days=2)}},
                                sort=[("due_at", -1)], limit=count)
    for doc in picked:
        repo.switches.update_one({"_id": doc["_id"]}, {"$set": {
            "deadline": now + timedelta(hours=1), "due_at": now - timedelta(seconds=1),
            "next_step": 0}})


# --- through the gateway -------------------------------------------------------------------------


def _probes(result: BenchResult, data_dir: Path, requests_each: int) -> None:
    env = {"JICM_DATA_DIR": str(data_dir), "JICM_SERVICES": "scheduler"}
    with running_system(PARTS, env) as system, requests.Session() as http:
        result.extra["census_seen_by_metrics"] = _first_census(http, system.base_url)
        for path in ("/readyz", "/metrics"):
            url = system.base_url + path
            result.add(measure(f"GET {path}", lambda _w, url=url: lambda _i: _get(http, url),
                               range(requests_each), notes="one client, keep-alive"))


def _first_census(http: requests.Session, base_url: str) -> list[str]:
    """The census lines of /metrics once the scheduler's first census is stored."""
    deadline = time.monotonic() + 120
    while True:
        text = http.get(base_url + "/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith("jicm_switches")]
        if any("census_age" in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def _get(http: requests.Session, url: str) -> None:
    response = http.get(url, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code}")
