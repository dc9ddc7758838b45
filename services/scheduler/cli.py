"""`jicm switches held`: the switches whose firing is held back, and why.

    jicm switches held [--limit N]   # longest held first

A switch is held back when its grace is over but its overdue notice has not been seen to
leave (`loop.py` says why that holds the firing, and what each reason means). The command
reads the scheduler's own store (the same MONGO_URI or JICM_DATA_DIR as the service), so
it works while the scheduler is down; it shows ids, reasons and times, never an address.
Exit status 1 while any switch is held back, so that a cron job or a monitor can alert.
"""

from __future__ import annotations

import argparse

from services.scheduler.loop import HELD_REASONS, held_view
from services.scheduler.storage import INDEXES, SchedulerRepository
from shared.clock import SystemClock
from shared.commands import Commands, on_store

DEFAULT_LIMIT = 100


def add_commands(commands: Commands) -> None:
    """`jicm switches held`."""
    switches = commands.add_parser("switches", help="switches whose firing is held back",
                                   description="Switches past their grace whose firing "
                                               "waits for the overdue notice to leave.")
    verbs = switches.add_subparsers(dest="verb", required=True, metavar="VERB")
    held = verbs.add_parser("held", help="held-back switches, longest held first")
    held.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    switches.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return on_store("scheduler", INDEXES,
                    lambda db: list_held(SchedulerRepository(db), args.limit))


def list_held(repo: SchedulerRepository, limit: int) -> int:
    """Print the held-back switches; 1 if there is any."""
    total = repo.held_back_count()
    if not total:
        print("no switch is held back")
        return 0
    now = SystemClock().now()
    for doc in repo.held_back(limit):
        view = held_view(doc, now)
        print(f"switch {view['switch_id']} (cycle {view['cycle']}): {view['reason']} since "
              f"{view['since']} ({view['held_seconds'] / 3600:.1f} h), grace ended "
              f"{view['grace_ended_at']}, notice asked for again {view['nudges']} time(s)")
    by_reason = ", ".join(f"{reason} {repo.held_back_count(reason)}" for reason in HELD_REASONS)
    print(f"{total} held back: {by_reason}")
    return 1
