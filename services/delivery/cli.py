"""`jicm mail`: mail that is not delivered (yet, or for good).

    jicm mail pending [--kind KIND]  # mail still waiting, with why
    jicm mail failed [--limit N]     # failed mail, oldest first, with why
    jicm mail resend ID [ID ...]     # send these again
    jicm mail resend --all           # send every failed mail again

It works on the delivery service's own store (the same MONGO_URI or JICM_DATA_DIR as the
service), so it works while the service is down too. A resent mail starts afresh (new
attempts, new maximum age) with the same Message-ID; a running delivery service picks it
up within a second. Resending is a compare-and-set on `state: failed`, so running it twice,
or while another operator does, sends each mail once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.delivery.storage import INDEXES, DeliveryRepository
from shared.clock import SystemClock
from shared.commands import CONFIGURATION_ERROR, Commands, on_store

DEFAULT_LIMIT = 100
REASON_WIDTH = 100


def list_failed(repo: DeliveryRepository, limit: int) -> int:
    failed = repo.failed(limit)
    if not failed:
        print("no failed mail")
        return 0
    print(f"{'id':32}  {'failed at (UTC)':19}  {'kind':26}  attempts  recipient / reason")
    for record in failed:
        when = record.get("failed_at") or record["created_at"]
        print(f"{record['_id']:32}  {when:%Y-%m-%d %H:%M:%S}  {record['kind']:26}  "
              f"{record['attempts']:>8}  {record['recipient']}")
        print(f"{'':32}  reference {record['reference']}")
        print(f"{'':32}  {str(record.get('last_error', ''))[:REASON_WIDTH]}")
    if len(failed) == limit:
        print(f"(showing the first {limit}; use --limit to see more)")
    return 0


def list_pending(repo: DeliveryRepository, kind: str | None, limit: int) -> int:
    """Mail not sent yet (queued, being sent, or waiting to retry), oldest first."""
    waiting = repo.waiting(kind, limit)
    if not waiting:
        print("no mail is waiting")
        return 0
    print(f"{'id':32}  {'queued at (UTC)':19}  {'kind':26}  attempts  recipient / next try / "
          "reason")
    for record in waiting:
        due = record.get("next_attempt_at")
        next_try = f"{due:%Y-%m-%d %H:%M:%S} UTC" if due else "-"
        print(f"{record['_id']:32}  {record['queued_at']:%Y-%m-%d %H:%M:%S}  "
              f"{record['kind']:26}  {record['attempts']:>8}  {record['recipient']}")
        print(f"{'':32}  reference {record['reference']}, {record['state']}, "
              f"next try {next_try}")
        if record.get("last_error"):
            print(f"{'':32}  {str(record['last_error'])[:REASON_WIDTH]}")
    if len(waiting) == limit:
        print(f"(showing the first {limit}; use --limit to see more)")
    return 0


def resend(repo: DeliveryRepository, ids: Sequence[str], every: bool) -> int:
    now = SystemClock().now()
    if every:
        ids = [record["_id"] for record in repo.failed(limit=1_000_000)]
    problems = 0
    for record_id in ids:
        if repo.requeue_failed(record_id, now) is None:
            print(f"{record_id}: not resent (no such mail, or it has not failed)",
                  file=sys.stderr)
            problems += 1
        else:
            print(f"{record_id}: queued again")
    if every and not ids:
        print("no failed mail")
    return 1 if problems else 0


def add_commands(commands: Commands) -> None:
    """`jicm mail pending|failed|resend`."""
    mail = commands.add_parser(
        "mail", help="mail still waiting, and mail that failed for good",
        description="List mail still waiting; list and resend mail that failed for good.")
    verbs = mail.add_subparsers(dest="verb", required=True, metavar="VERB")
    pending = verbs.add_parser("pending", help="list mail still waiting to leave")
    pending.add_argument("--kind", help="only this kind, such as released_message")
    pending.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    failed = verbs.add_parser("failed", help="list failed mail, oldest first")
    failed.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    again = verbs.add_parser("resend", help="queue failed mail again")
    again.add_argument("ids", nargs="*", metavar="ID")
    again.add_argument("--all", action="store_true", help="every failed mail")
    mail.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "resend" and bool(args.ids) == args.all:
        # A usage error, told as argparse tells its own.
        print("jicm mail resend: give either IDs or --all", file=sys.stderr)
        raise SystemExit(CONFIGURATION_ERROR)
    return on_store("delivery", INDEXES, lambda db: _on(DeliveryRepository(db), args))


def _on(repo: DeliveryRepository, args: argparse.Namespace) -> int:
    if args.verb == "pending":
        return list_pending(repo, args.kind, args.limit)
    if args.verb == "failed":
        return list_failed(repo, args.limit)
    return resend(repo, args.ids, args.all)
