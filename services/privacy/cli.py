"""Operator commands for privacy requests.

    python -m services.privacy.cli requests [--overdue] [--limit N]
        Open requests (pending, in progress, in error), the oldest due first, with each
        service's part. `--overdue` shows only those past their 30-day due date and exits 1
        when there is any (so a cron job or a monitor can alert on it).

    python -m services.privacy.cli mark-child <email-or-user-id>
        The account belongs to someone under 16: erase it through the erasure saga (reason
        `child`). The ledger records "operator" as who asked. Needs the running system.

`requests` reads privacy's own store (the same MONGO_URI or JICM_DATA_DIR as the service),
so it works while the service is down; `mark-child` asks the privacy service over RPC,
which asks accounts who the account is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.rpc import RemoteError, RpcClientPool, RpcError
from services.privacy.storage import INDEXES, PrivacyRepository
from shared.clock import SystemClock
from shared.config import ConfigError, load_settings
from shared.errors import rebuild
from shared.storage import Database
from shared.storage.provider import open_service_database

DEFAULT_LIMIT = 100
RPC_TIMEOUT = 15.0


def open_store() -> Database:
    return open_service_database("privacy", INDEXES, load_settings())


def describe(doc: dict[str, Any], now: datetime) -> list[str]:
    overdue = doc["due_at"] < now
    parts = " ".join(f"{name}:{part['status']}" for name, part in sorted(doc["services"].items()))
    return [
        f"{doc['_id']}  {doc['type']:8}  {doc['status']:11}  due {doc['due_at']:%Y-%m-%d %H:%M}"
        f"{'  OVERDUE' if overdue else ''}",
        f"{'':36}  asked {doc['created_at']:%Y-%m-%d %H:%M} by {doc['requested_by']} "
        f"({doc['reason']})",
        f"{'':36}  {parts}",
    ]


def list_requests(repo: PrivacyRepository, overdue_only: bool, limit: int) -> int:
    now = SystemClock().now()
    found = [doc for doc in repo.open_requests(limit)
             if not overdue_only or doc["due_at"] < now]
    if not found:
        print("no overdue requests" if overdue_only else "no open requests")
        return 0
    for doc in found:
        print("\n".join(describe(doc, now)))
    print(f"{len(found)} {'overdue' if overdue_only else 'open'} request(s)")
    return 1 if overdue_only else 0


def mark_child(email_or_user_id: str) -> int:
    settings = load_settings()
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
        return 2
    finally:
        pool.close()
    print(f"erasure {answer['id']} started (status {answer['status']}, due {answer['due_at']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.privacy.cli",
                                     description="Privacy requests, for operators.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("requests", help="open privacy requests, oldest due first")
    listing.add_argument("--overdue", action="store_true", help="only those past due")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    child = commands.add_parser("mark-child",
                                help="erase an account that belongs to someone under 16")
    child.add_argument("account", metavar="EMAIL-OR-USER-ID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "mark-child":
            return mark_child(args.account)
        db = open_store()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return list_requests(PrivacyRepository(db), args.overdue, args.limit)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
