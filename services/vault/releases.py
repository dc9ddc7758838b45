"""Operator command: where each release stands.

    python -m services.vault.releases          # releases under way (or refused), oldest first
    python -m services.vault.releases --all    # finished ones too

For each fired switch: when it fired, how many of its messages are still sealed, released
but not yet handed to delivery (a farewell letter waits for its time), or handed over,
and whether the scheduler has been told the switch is `released` (with the number of
failed attempts and the last error while it cannot be). It reads the vault's own store
(the same MONGO_URI or JICM_DATA_DIR as the service), so it works while the vault is
down, and shows ids and counts only: nothing it prints is sealed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from services.vault.storage import INDEXES, NOTIFIED, REFUSED, RELEASING, VaultRepository
from shared.config import ConfigError, load_settings
from shared.storage import Database
from shared.storage.provider import open_service_database

DEFAULT_LIMIT = 100
REASON_WIDTH = 100


def open_store() -> Database:
    return open_service_database("vault", INDEXES, load_settings())


def describe(repo: VaultRepository, release: dict[str, Any]) -> list[str]:
    """The lines that tell one release."""
    counts = repo.switch_counts(release["_id"])
    handed_over = counts["released"] - counts["waiting"]
    lines = [
        f"switch {release['_id']} (user {release['user_id']}, cycle {release['cycle']}): "
        f"fired {release['fired_at']:%Y-%m-%d %H:%M:%S} UTC, {release['state']}",
        f"  messages: {handed_over} handed to delivery, {counts['waiting']} waiting, "
        f"{counts['sealed']} sealed",
    ]
    next_one = repo.next_dispatch_in_switch(release["_id"])
    if next_one is not None:
        lines.append(f"  next hand-over: {next_one:%Y-%m-%d %H:%M:%S} UTC")
    if release["state"] == NOTIFIED:
        lines.append(f"  scheduler told: {release['notified_at']:%Y-%m-%d %H:%M:%S} UTC")
    elif release.get("last_error"):
        lines.append(f"  scheduler not told yet ({release.get('attempts', 0)} failed "
                     f"attempt(s)): {str(release['last_error'])[:REASON_WIDTH]}")
    return lines


def list_releases(repo: VaultRepository, every: bool, limit: int) -> int:
    states = (RELEASING, REFUSED, NOTIFIED) if every else (RELEASING, REFUSED)
    releases = [release for state in states for release in repo.releases_in(state, limit)]
    if not releases:
        print("no release is under way" if not every else "no switch has fired")
        return 0
    for release in sorted(releases, key=lambda r: r["fired_at"])[:limit]:
        print("\n".join(describe(repo, release)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.vault.releases",
        description="Where each release stands: messages handed to delivery, the scheduler told.")
    parser.add_argument("--all", action="store_true", help="finished releases too")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        db = open_store()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return list_releases(VaultRepository(db), args.all, args.limit)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
