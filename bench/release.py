"""`release`: many switches reach the end of grace in the same second; every recipient
must get exactly one mail, soon.

The system is `make run`'s release path: the SMTP sink, the scheduler, the vault and
delivery, with their production loop settings (only `JICM_MIN_INTERVAL=1`, so a cycle
can last seconds). Before any of them starts, N owners are seeded straight into the
scheduler's and the vault's stores through the services' own domain code (the handlers
of `UserRegistered` and `EmailVerified`, a message written with `Messages.create`, the
schedule set with `Scheduler.update`), which is what signing up and writing through the
gateway come down to, without N password hashes. Every schedule is set with one and the
same "now", so every deadline, and every end of grace, is the same instant.

Each owner has one switch with one message for one recipient. A switch fires only once
its overdue notice has left, so the grace is long enough for N notices; the variant with
reminders sends five before the deadline, spaced so each round can leave in full.

Measured from the end of grace, by the SMTP sink's own arrival stamps: the time to the
last release mail, release mails per second, each mail's lag, and the mails per
recipient (exactly one each; doubles and losses are counted, never hidden). After the
last expected mail the sink is watched a little longer, so a late double is seen.
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.measure import Case
from bench.report import BenchResult
from bench.system import running_system
from deploy.local.smtp_sink import HEADER_TO, MAIL_SUFFIX
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
from shared.config import load_settings
from shared.entitlements import limits_for
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
    """One release to measure: how many reminders each switch sends before its grace ends,
    and how many switches at full size. The variant with reminders is smaller: its owners'
    60,000 mails at 10,000 switches would take most of an hour to leave at the schedule's
    pace before the release even starts, and the release itself is the other variant's."""

    reminders: int
    full_switches: int


VARIANTS = {
    "release": Variant(reminders=0, full_switches=TARGET_SWITCHES),
    "release_with_reminders": Variant(reminders=5, full_switches=2_000),
}

# The schedule: time for the parts to start (and to relay what the seeding queued), then
# one "round" per reminder, then the grace, itself one round; a round is long enough for
# the scheduler to claim every switch once (at JICM_SCHEDULER_BATCH per
# JICM_SCHEDULER_TICK) and then for delivery to send a mail to each owner at a pace well
# below its own, so every owner's mail has left before the end of grace (the figures say
# whether it had: `owner_mails.before_end_of_grace`).
STARTUP_SECONDS = 30.0
STARTUP_SECONDS_PER_SWITCH = 0.005
OWNER_MAILS_PER_SECOND = 40.0
ROUND_SLACK = 1.3
ROUND_MIN_SECONDS = 8
# How long to wait for the last release mail after the end of grace, and then for doubles.
PATIENCE_SECONDS = 120.0
PATIENCE_SECONDS_PER_SWITCH = 0.05
WATCH_FOR_DOUBLES_SECONDS = 3.0
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Plan:
    """One run's population and schedule (seconds)."""

    switches: int
    reminders: int
    startup: int
    round: int

    @property
    def reminders_seconds(self) -> list[int]:
        """Offsets before the deadline, one round apart, the last one round before it."""
        return [self.round * (self.reminders - k) for k in range(self.reminders)]

    @property
    def interval(self) -> int:
        return self.startup + self.round * self.reminders

    @property
    def grace(self) -> int:
        return self.round


def plan_for(switches: int, reminders: int, claims_per_second: float) -> Plan:
    """The schedule that gives every phase before the end of grace time to finish."""
    round_seconds = max(ROUND_MIN_SECONDS, math.ceil(
        ROUND_SLACK * (switches / claims_per_second + switches / OWNER_MAILS_PER_SECOND)))
    startup = math.ceil(STARTUP_SECONDS + STARTUP_SECONDS_PER_SWITCH * switches)
    return Plan(switches, reminders, startup, round_seconds)


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
    """Owners, armed switches, one sealed message each, then every schedule at one instant."""
    began = time.monotonic()
    settings = load_settings(dict(environ))
    plan = plan_for(switches, reminders, settings.scheduler_batch / settings.scheduler_tick)
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
        # The schedules last, at one instant: every deadline is the same.
        schedule = SwitchSettings.model_validate({
            "interval_seconds": plan.interval, "grace_seconds": plan.grace,
            "reminders_seconds": plan.reminders_seconds})
        at = datetime.now(UTC)
        scheduler = scheduler_at(at)
        for n in range(plan.switches):
            scheduler.update(owner_id(n), scheduler.default_switch_id(owner_id(n)), schedule)
        seeded.plan = plan
        seeded.end_of_grace = at + timedelta(seconds=plan.interval + plan.grace)
    finally:
        scheduler_db.close()
        vault_db.close()
    seeded.seconds = time.monotonic() - began


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

    def count_before(self, prefix: str, moment: datetime) -> int:
        return sum(1 for at in self.times(prefix) if at < moment)


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
        "The scheduler, vault and delivery run with their production loop settings; each "
        "switch's overdue notice (and, in the variant, its reminders) left before the end "
        "of grace, as a switch fires only once its overdue notice has left.",
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
    owner_counts = mailbox.counts("owner")
    expected_owner_mails = plan.reminders + 1  # the reminders, then the overdue notice
    errors = {kind: n for kind, n in (("lost", lost), ("doubled", doubled),
                                      ("unexpected recipient", strangers)) if n}
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
            "owner_mails": {
                "expected_each": expected_owner_mails,
                "as_expected": sum(1 for n in range(plan.switches)
                                   if owner_counts[owner_email(n)] == expected_owner_mails),
                "total": sum(owner_counts.values()),
                # Every one of them should have: a notice late at the end of grace holds
                # its switch back, and the release figures would include that wait.
                "before_end_of_grace": mailbox.count_before("owner", end_of_grace),
            },
            "schedule_seconds": {"interval": plan.interval, "grace": plan.grace,
                                 "reminders": plan.reminders_seconds},
            "seed_seconds": round(seeded.seconds, 2),
        },
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

