"""`release`: many switches reach the end of grace in the same second; every recipient
must get exactly one mail, soon.

The system is `make run`'s release path: the SMTP sink, the scheduler, the vault and
delivery, with their production loop settings (only `JICM_MIN_INTERVAL=1`, so a cycle
can last seconds). Before any of them starts, N owners are seeded straight into the
scheduler's and the vault's stores through the services' own domain code: the handlers
of `UserRegistered` and `EmailVerified`, a message written with `Messages.create`, the
schedule set with `Scheduler.update`, which is what signing up and writing through the
gateway come down to, without N password hashes.

Grace counts from the moment the overdue notice was accepted by the mail server, when
that is later than the deadline (docs/switch.md), so N switches reach the end of grace
in the same second only if their notices were accepted in the same second, which no
relay does for thousands. The seeding builds that state with the services' own code: it
runs the scheduler's loop (`DueSwitches`, by the seed's clock) through each reminder's
moment and the deadline, records each reminder as accepted when it was due, and every
overdue notice as accepted at one instant a grace before the end of grace
(`Scheduler.on_reminder_settled`, the handler of delivery's `ReminderSettled`, which
restarts grace from a late notice as it does for real ones). What those writes announced
is taken out of the switches' outboxes by the outbox's own relay, as if published and
mailed before: the owners get no mail during the run. The end of grace is decided last,
so the parts always have `startup` seconds to start, however long the seeding took.

Each owner has one switch with one message for one recipient. The variant with
reminders gives every switch five reminders before its deadline (bigger documents, more
history to decide on), seeded the same way.

Measured from the end of grace, by the SMTP sink's own arrival stamps: the time to the
last release mail, release mails per second, each mail's lag, and the mails per
recipient (exactly one each; doubles and losses are counted, never hidden). After the
last expected mail the sink is watched a little longer, so a late double is seen.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.measure import Case
from bench.report import BenchResult
from bench.system import running_system
from deploy.local.smtp_sink import HEADER_TO, MAIL_SUFFIX
from services.scheduler.loop import DueSwitches, LoopSettings
from services.scheduler.scheduler import Scheduler
from services.scheduler.schemas import SwitchSettings
from services.scheduler.storage import INDEXES as SCHEDULER_INDEXES
from services.scheduler.storage import SchedulerRepository
from services.scheduler.tokens import link_key
from services.vault.keys import DataKeyCache, DataKeys, keyring_from_settings
from services.vault.messages import Messages
from services.vault.schemas import NewMessage
from services.vault.storage import INDEXES as VAULT_INDEXES
from services.vault.storage import VaultRepository
from shared.config import Settings, load_settings
from shared.entitlements import limits_for
from shared.events.outbox import relay_due
from shared.events.schemas import ReminderSettled
from shared.storage.provider import open_store

PARTS = ("smtp", "scheduler", "vault", "delivery")
SERVICES = "delivery,scheduler,vault"
ENVIRONMENT = {"JICM_SERVICES": SERVICES, "JICM_MIN_INTERVAL": "1"}

# The target of issue-sized releases: every mail accepted this soon after the end of grace.
TARGET_SWITCHES = 10_000
TARGET_SECONDS = 60.0
QUICK_SWITCHES = 500


@dataclass(frozen=True)
class Variant:
    """One release to measure: how many reminders each switch had before its deadline,
    and how many switches at full size."""

    reminders: int
    full_switches: int


VARIANTS = {
    "release": Variant(reminders=0, full_switches=TARGET_SWITCHES),
    "release_with_reminders": Variant(reminders=5, full_switches=TARGET_SWITCHES),
}

# The schedule, in seconds: the end of grace comes this long after the seeding, so that
# the parts have started and relayed what the seeding queued (the parts are ready within
# a few seconds; the rest is margin on a busy machine). Reminders are a round apart, the
# last a round before the deadline; the grace is one round too. Only the end of grace is
# in the future when the parts start: everything before it was seeded.
STARTUP_SECONDS = 30.0
STARTUP_SECONDS_PER_SWITCH = 0.002
ROUND_SECONDS = 3600
# How long to wait for the last release mail after the end of grace, and then for doubles.
PATIENCE_SECONDS = 120.0
PATIENCE_SECONDS_PER_SWITCH = 0.05
WATCH_FOR_DOUBLES_SECONDS = 3.0
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Plan:
    """One run's population and schedule (seconds)."""

    switches: int
    reminders: int
    startup: int
    round: int = ROUND_SECONDS

    @property
    def reminders_seconds(self) -> list[int]:
        """Offsets before the deadline, one round apart, the last one round before it."""
        return [self.round * (self.reminders - k) for k in range(self.reminders)]

    @property
    def interval(self) -> int:
        return self.round * (self.reminders + 1)

    @property
    def grace(self) -> int:
        return self.round


def plan_for(switches: int, reminders: int) -> Plan:
    """The population and schedule of one run."""
    startup = math.ceil(STARTUP_SECONDS + STARTUP_SECONDS_PER_SWITCH * switches)
    return Plan(switches, reminders, startup)


def owner_email(n: int) -> str:
    return f"owner{n}@example.org"


def recipient_email(n: int) -> str:
    return f"recipient{n}@example.org"


def owner_id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-release-owner-{n}"))


class _SeededSwitches:
    """The vault's view of the scheduler (its `SwitchDirectory`), answered by the
    scheduler's own domain code over the store being seeded, instead of over RPC."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def default_switch_id(self, user_id: str) -> str:
        return self.scheduler.default_switch_id(user_id)

    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        return self.scheduler.owns_switch(user_id, switch_id)

    def switch_state(self, user_id: str, switch_id: str) -> str | None:
        return self.scheduler.get(user_id, switch_id).state


@dataclass
class Seeded:
    """What the seeding decided: the schedule, when grace ends, and how long it took."""

    plan: Plan | None = None
    end_of_grace: datetime | None = None
    seconds: float = 0.0


def seed(environ: Mapping[str, str], switches: int, reminders: int, seeded: Seeded) -> None:
    """Owners, armed switches and one sealed message each; then every switch taken through
    its reminders and overdue notice, each accepted when due, to one end of grace."""
    began = time.monotonic()
    settings = load_settings(dict(environ))
    plan = plan_for(switches, reminders)
    scheduler_db = open_store("scheduler", SCHEDULER_INDEXES, data_dir=settings.data_dir)
    vault_db = open_store("vault", VAULT_INDEXES, data_dir=settings.data_dir)
    try:
        scheduler_repo = SchedulerRepository(scheduler_db)
        vault_repo = VaultRepository(vault_db)

        def scheduler_at(now: datetime) -> Scheduler:
            return Scheduler(scheduler_repo, now, min_interval=settings.min_interval,
                             link_key=link_key(settings.secret_key_bytes))

        now = datetime.now(UTC)
        accounts = scheduler_at(now)
        keys = DataKeys(vault_repo.data_keys, keyring_from_settings(settings), DataKeyCache())
        messages = Messages(vault_repo, keys, _SeededSwitches(accounts),
                            lambda user_id: limits_for(user_id, vault_repo.entitlements), now)
        for n in range(plan.switches):
            accounts.on_user_registered(owner_id(n), owner_email(n))
            accounts.on_email_verified(owner_id(n), owner_email(n))
            messages.create(owner_id(n), owner_email(n), NewMessage.model_validate({
                "subject": f"For you, from {n}", "body": f"The last word of owner {n}.",
                "recipients": [{"name": f"Recipient {n}", "email": recipient_email(n)}]}))
        seeded.end_of_grace = _seed_cycles(scheduler_repo, scheduler_at, settings, plan)
        seeded.plan = plan
    finally:
        scheduler_db.close()
        vault_db.close()
    seeded.seconds = time.monotonic() - began


def _seed_cycles(repo: SchedulerRepository, scheduler_at: Callable[[datetime], Scheduler],
                 settings: Settings, plan: Plan) -> datetime:
    """Move every switch through its reminders (each accepted the moment it was due) to
    overdue, its deadline a grace ago; then record every overdue notice as accepted one
    grace before the end of grace wanted, which starts grace again from there for all
    (the notice left late). Returns that end of grace."""
    deadline = datetime.now(UTC) - timedelta(seconds=plan.grace)
    schedule = SwitchSettings.model_validate({
        "interval_seconds": plan.interval, "grace_seconds": plan.grace,
        "reminders_seconds": plan.reminders_seconds})
    scheduler = scheduler_at(deadline - timedelta(seconds=plan.interval))
    for n in range(plan.switches):
        scheduler.update(owner_id(n), scheduler.default_switch_id(owner_id(n)), schedule)
    loop = LoopSettings(instance="bench-seed", batch=settings.scheduler_batch,
                        lease=timedelta(seconds=settings.scheduler_lease),
                        recheck=timedelta(seconds=settings.scheduler_recheck),
                        link_key=link_key(settings.secret_key_bytes),
                        public_url=settings.public_url)
    cycles = {n: repo.switch(scheduler.default_switch_id(owner_id(n)))["cycle"]
              for n in range(plan.switches)}
    moments = [deadline - timedelta(seconds=offset) for offset in plan.reminders_seconds]
    for step, moment in enumerate(moments):
        _tick_all(repo, moment, loop, plan.switches)
        _settle_all(scheduler_at(moment), cycles, step, moment)
    _tick_all(repo, deadline, loop, plan.switches)
    # Decided last, so that however long the seeding took, the parts have `startup`
    # seconds. Whole seconds: the store keeps times to the millisecond.
    end_of_grace = (datetime.now(UTC) + timedelta(seconds=plan.startup)).replace(microsecond=0)
    accepted_at = end_of_grace - timedelta(seconds=plan.grace)
    with _quiet():  # the scheduler says, switch by switch, that grace starts again
        _settle_all(scheduler_at(accepted_at), cycles, len(moments), accepted_at)
    # What those writes announced (the check-ins that set the schedules, the reminders and
    # notices) was published before the outage: nothing of it is part of this case.
    published = _PublishedBefore()
    while relay_due(repo.switches, published, end_of_grace):
        pass
    return end_of_grace


def _settle_all(scheduler: Scheduler, cycles: dict[int, int], step: int,
                at: datetime) -> None:
    """Every switch's reminder `step` accepted by the mail server `at`, as delivery's
    `ReminderSettled` says it."""
    for n, cycle in cycles.items():
        scheduler.on_reminder_settled(ReminderSettled(
            user_id=owner_id(n), switch_id=scheduler.default_switch_id(owner_id(n)),
            cycle=cycle, step=step, outcome="sent", settled_at=at))


@contextmanager
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _tick_all(repo: SchedulerRepository, moment: datetime, loop: LoopSettings,
              switches: int) -> None:
    """Ticks of the loop at `moment` until every switch was handled once (each reminder
    and notice before it is settled, so delivery is never asked)."""
    def never_asked(references: list[str]) -> dict[str, dict[str, Any]]:
        raise AssertionError(f"delivery asked about {len(references)} seeded notice(s)")

    handled = 0
    while handled < switches:
        report = DueSwitches(repo, moment, loop, never_asked).tick()
        if report.errors or report.lost or not report.claimed:
            raise RuntimeError(f"seeding at {moment.isoformat()}: {report.figures()}")
        handled += report.claimed


class _PublishedBefore:
    """An outbox relay's publisher for events that left before the measured run."""

    def publish_all(self, envelopes: list[dict[str, Any]]) -> list[bool]:
        """Nothing to do: every event counts as published."""
        return [True] * len(envelopes)


class Mailbox:
    """The sink's maildir, read as it fills: who each mail went to, and when it arrived."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.seen: set[str] = set()
        self.arrivals: list[tuple[str, datetime]] = []

    def poll(self) -> None:
        """Read the mail that arrived since the last poll (only its envelope's first lines:
        the bench shares the machine with what it measures)."""
        if not self.maildir.is_dir():
            return
        with os.scandir(self.maildir) as entries:
            names = [entry.name for entry in entries
                     if entry.name.endswith(MAIL_SUFFIX) and entry.name not in self.seen]
        for name in names:
            self.seen.add(name)
            for address in _envelope_recipients(self.maildir / name):
                self.arrivals.append((address, _arrival(name)))

    def counts(self, prefix: str) -> Counter[str]:
        return Counter(address for address, _ in self.arrivals if address.startswith(prefix))

    def times(self, prefix: str) -> list[datetime]:
        return [at for address, at in self.arrivals if address.startswith(prefix)]


def _envelope_recipients(path: Path) -> list[str]:
    # The sink writes its own headers first: the envelope is in the first lines.
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            if name == HEADER_TO:
                return [address.strip() for address in value.split(",") if address.strip()]
    return []


def _arrival(name: str) -> datetime:
    """The sink's arrival stamp, from the file name (`<utc yyyymmddThhmmss.ffffff>-...`)."""
    stamp = name.split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)


def run(result: BenchResult) -> None:
    """Run each variant on a fresh system and measure its release."""
    sizes = {name: QUICK_SWITCHES if result.quick else variant.full_switches
             for name, variant in VARIANTS.items()}
    result.parameters = {
        "switches": sizes,
        "messages_per_switch": 1,
        "recipients_per_message": 1,
        "variants": {name: {"reminders": variant.reminders, "switches": sizes[name]}
                     for name, variant in VARIANTS.items()},
        "target": {"switches": TARGET_SWITCHES, "within_seconds": TARGET_SECONDS},
    }
    result.notes += [
        "Seconds and mails per second count from the end of grace (the same instant for "
        "every switch) to the SMTP sink's arrival stamp of the last release mail.",
        "The scheduler, vault and delivery run with their production loop settings. Every "
        "switch is seeded overdue, its overdue notice (and, in the variant, its five "
        "reminders) accepted when due, its grace ending at the same instant: the state after "
        "our own outage. The owners get no mail during the run.",
        f"The target ({TARGET_SWITCHES:,} switches, every mail within "
        f"{TARGET_SECONDS:g} s) is judged only at full size.",
    ]
    for name, variant in VARIANTS.items():
        print(f"release: {name} ({sizes[name]} switches)", file=sys.stderr, flush=True)
        result.add(_run_variant(name, sizes[name], variant.reminders))


def _run_variant(name: str, switches: int, reminders: int) -> Case:
    seeded = Seeded()

    def before_start(environ: Mapping[str, str]) -> None:
        seed(environ, switches, reminders, seeded)

    with running_system(PARTS, ENVIRONMENT, before_start=before_start) as system:
        assert seeded.plan is not None and seeded.end_of_grace is not None, "seeded first"
        if datetime.now(UTC) > seeded.end_of_grace:
            raise RuntimeError("grace ended before every part was ready: the figures would "
                               "include their start; raise STARTUP_SECONDS")
        mailbox = Mailbox(Path(system.environ["JICM_MAILDIR"]))
        print(f"  seeded in {seeded.seconds:.1f} s; grace ends at "
              f"{seeded.end_of_grace.isoformat(timespec='seconds')}", file=sys.stderr, flush=True)
        patience = PATIENCE_SECONDS + PATIENCE_SECONDS_PER_SWITCH * switches
        _watch(mailbox, switches, until=seeded.end_of_grace + timedelta(seconds=patience))
    return _case(name, seeded.plan, seeded, mailbox, seeded.end_of_grace)


def _watch(mailbox: Mailbox, switches: int, until: datetime) -> None:
    """Read the sink until every recipient has a mail (then a little longer) or `until`."""
    complete_at: float | None = None
    while datetime.now(UTC) < until:
        mailbox.poll()
        if complete_at is None and len(mailbox.counts("recipient")) >= switches:
            complete_at = time.monotonic()
        if complete_at is not None and time.monotonic() - complete_at >= WATCH_FOR_DOUBLES_SECONDS:
            return
        time.sleep(POLL_SECONDS)
    mailbox.poll()


def _case(name: str, plan: Plan, seeded: Seeded, mailbox: Mailbox,
          end_of_grace: datetime) -> Case:
    counts = mailbox.counts("recipient")
    expected = {recipient_email(n) for n in range(plan.switches)}
    lost = len(expected - set(counts))
    doubled = sum(1 for address in expected if counts[address] > 1)
    strangers = sum(1 for address in counts if address not in expected)
    arrivals = sorted(mailbox.times("recipient"))
    lags_ms = [(at - end_of_grace).total_seconds() * 1000 for at in arrivals]
    last_after = lags_ms[-1] / 1000 if lags_ms else None
    first_after = lags_ms[0] / 1000 if lags_ms else None
    # Every owner's mail left before the outage: one now would be a notice asked for
    # again, which means a switch was held back.
    owner_mails = sum(mailbox.counts("owner").values())
    errors = {kind: n for kind, n in (("lost", lost), ("doubled", doubled),
                                      ("unexpected recipient", strangers),
                                      ("owner mail during the run", owner_mails)) if n}
    complete = not errors and len(arrivals) == plan.switches
    spread = (arrivals[-1] - arrivals[0]).total_seconds() if len(arrivals) > 1 else None
    return Case(
        name=name,
        operations=plan.switches,
        # ops/s is release mails per second counted from the end of grace.
        seconds=last_after or 0.0,
        latencies_ms=lags_ms,
        errors=errors,
        notes="latencies: each release mail's arrival at the sink after the end of grace",
        extra={
            "end_of_grace": end_of_grace.isoformat(),
            "last_mail_after_end_of_grace_s": _round(last_after),
            "first_mail_after_end_of_grace_s": _round(first_after),
            "mails_per_s_first_to_last": (_round(len(arrivals) / spread) if spread else None),
            # The target next to the figure it is judged by.
            "target": {
                "switches": TARGET_SWITCHES,
                "within_seconds": TARGET_SECONDS,
                "measured_seconds": _round(last_after),
                # Judged only at the target's size: a smaller run says nothing of it.
                "met": (None if plan.switches < TARGET_SWITCHES
                        else complete and last_after is not None
                        and last_after <= TARGET_SECONDS),
            },
            "mails_per_recipient": {
                "exactly_one": sum(1 for address in expected if counts[address] == 1),
                "lost": lost,
                "doubled": doubled,
            },
            "owner_mails_during_run": owner_mails,
            "schedule_seconds": {"interval": plan.interval, "grace": plan.grace,
                                 "reminders": plan.reminders_seconds},
            "seed_seconds": round(seeded.seconds, 2),
        },
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

