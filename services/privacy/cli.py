"""`jicm privacy`: privacy requests, for operators.

    jicm privacy requests [--overdue] [--limit N]
        Open requests (pending, in progress, in error), the oldest due first, with each
        service's part. `--overdue` shows only those past their 30-day due date and exits 1
        when there is any (so a cron job or a monitor can alert on it).

    jicm privacy mark-child <email-or-user-id>
        The account belongs to someone under 16: erase it through the erasure saga (reason
        `child`). The ledger records "operator" as who asked. Needs the running system.

`requests` reads privacy's own store (the same MONGO_URI or JICM_DATA_DIR as the service),
so it works while the service is down; `mark-child` asks the privacy service over RPC,
which asks accounts who the account is.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from services.privacy.records import PrivacyRequest
from services.privacy.storage import INDEXES, PrivacyRepository
from shared.clock import SystemClock
from shared.commands import CONFIGURATION_ERROR, Commands, on_store
from shared.config import ConfigError, load_settings
from shared.errors import rebuild
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError, RpcError

DEFAULT_LIMIT = 100
RPC_TIMEOUT = 15.0


def describe(request: PrivacyRequest, now: datetime) -> list[str]:
    """An open request in three lines, for an operator's terminal."""
    parts = " ".join(f"{name}:{part.status}" for name, part in sorted(request.services.items()))
    return [
        f"{request.id}  {request.type:8}  {request.status:11}  "
        f"due {request.due_at:%Y-%m-%d %H:%M}{'  OVERDUE' if request.overdue(now) else ''}",
        f"{'':36}  asked {request.created_at:%Y-%m-%d %H:%M} by {request.requested_by} "
        f"({request.reason})",
        f"{'':36}  {parts}",
    ]


def list_requests(repo: PrivacyRepository, overdue_only: bool, limit: int) -> int:
    now = SystemClock().now()
    found = [request for request in repo.open_requests(limit)
             if not overdue_only or request.overdue(now)]
    if not found:
        print("no overdue requests" if overdue_only else "no open requests")
        return 0
    for request in found:
        print("\n".join(describe(request, now)))
    print(f"{len(found)} {'overdue' if overdue_only else 'open'} request(s)")
    return 1 if overdue_only else 0


def mark_child(email_or_user_id: str) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return CONFIGURATION_ERROR
    pool = RpcClientPool(settings.amqp_uri, size=1, timeout=RPC_TIMEOUT)
    try:
        answer = pool.call("privacy", "erase_child", email_or_user_id)
    except RemoteError as exc:
        known = rebuild(exc.exc_type, exc.exc_args)
        print(f"not erased: {known.message if known else exc}", file=sys.stderr)
        return 1
    except RpcError as exc:
        print(f"not erased: the privacy service did not answer ({type(exc).__name__})",
              file=sys.stderr)
        return CONFIGURATION_ERROR
    finally:
        pool.close()
    print(f"erasure {answer['id']} started (status {answer['status']}, due {answer['due_at']})")
    return 0


def add_commands(commands: Commands) -> None:
    """`jicm privacy requests|mark-child`."""
    privacy = commands.add_parser("privacy", help="privacy requests, for operators",
                                  description="Privacy requests, for operators.")
    verbs = privacy.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("requests", help="open privacy requests, oldest due first")
    listing.add_argument("--overdue", action="store_true", help="only those past due")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    child = verbs.add_parser("mark-child",
                             help="erase an account that belongs to someone under 16")
    child.add_argument("account", metavar="EMAIL-OR-USER-ID")
    privacy.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.verb == "mark-child":
        return mark_child(args.account)
    return on_store("privacy", INDEXES,
                    lambda db: list_requests(PrivacyRepository(db), args.overdue, args.limit))
