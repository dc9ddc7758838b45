"""The vault's operator commands: `jicm releases` and `jicm keys`.

    jicm releases          # releases under way (or refused), oldest first
    jicm releases --all    # finished ones too
    jicm keys rotate       # re-wrap every data key with the current KEK (a progress bar)
    jicm keys check        # count keys still wrapped by an older KEK; change nothing

For each fired switch: when it fired, how many of its messages are still sealed, released
but not yet handed to delivery (a farewell letter waits for its time), or handed over,
and whether the scheduler has been told the switch is `released` (with the number of
failed attempts and the last error while it cannot be). It reads the vault's own store
(the same MONGO_URI or JICM_DATA_DIR as the service), so it works while the vault is
down, and shows ids and counts only: nothing it prints is sealed.

`keys rotate` runs while the vault keeps running (`key_rotation.py` says how). Exit
status: 0 when every data key is wrapped by the current KEK, 1 when some could not be
re-wrapped (their KEK is not configured: the message says which), 2 for a configuration
problem; `keys check` exits 1 while any key still needs an older KEK.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from services.vault.key_rotation import BATCH, describe_rotation, keys_to_rotate, rotate
from services.vault.keys import Keyring, keyring_from_settings
from services.vault.records import SwitchRelease
from services.vault.storage import (
    DATA_KEYS,
    INDEXES,
    NOTIFIED,
    REFUSED,
    RELEASING,
    VaultRepository,
)
from shared.commands import CONFIGURATION_ERROR, Commands, on_store
from shared.config import ConfigError, load_settings
from shared.storage import Collection, Database

DEFAULT_LIMIT = 100
REASON_WIDTH = 100


def describe(repo: VaultRepository, release: SwitchRelease) -> list[str]:
    """The lines that tell one release."""
    counts = repo.switch_counts(release.switch_id)
    handed_over = counts["released"] - counts["waiting"]
    lines = [
        f"switch {release.switch_id} (user {release.user_id}, cycle {release.cycle}): "
        f"fired {release.fired_at:%Y-%m-%d %H:%M:%S} UTC, {release.state}",
        f"  messages: {handed_over} handed to delivery, {counts['waiting']} waiting, "
        f"{counts['sealed']} sealed",
    ]
    next_one = repo.next_dispatch_in_switch(release.switch_id)
    if next_one is not None:
        lines.append(f"  next hand-over: {next_one:%Y-%m-%d %H:%M:%S} UTC")
    if release.state == NOTIFIED and release.notified_at is not None:
        lines.append(f"  scheduler told: {release.notified_at:%Y-%m-%d %H:%M:%S} UTC")
    elif release.last_error:
        lines.append(f"  scheduler not told yet ({release.attempts} failed "
                     f"attempt(s)): {release.last_error[:REASON_WIDTH]}")
    return lines


def list_releases(repo: VaultRepository, every: bool, limit: int) -> int:
    states = (RELEASING, REFUSED, NOTIFIED) if every else (RELEASING, REFUSED)
    releases = [release for state in states for release in repo.releases_in(state, limit)]
    if not releases:
        print("no release is under way" if not every else "no switch has fired")
        return 0
    for release in sorted(releases, key=lambda r: r.fired_at)[:limit]:
        print("\n".join(describe(repo, release)))
    return 0


def add_commands(commands: Commands) -> None:
    """`jicm releases` and `jicm keys rotate|check`."""
    releases = commands.add_parser(
        "releases", help="where each release stands",
        description="Where each release stands: messages handed to delivery, the scheduler "
                    "told.")
    releases.add_argument("--all", action="store_true", help="finished releases too")
    releases.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    releases.set_defaults(run=run_releases)
    keys = commands.add_parser(
        "keys", help="rotate the vault's key-encryption key",
        description="Re-wrap the data keys with the current KEK, or count those still "
                    "wrapped by an older one.")
    verbs = keys.add_subparsers(dest="verb", required=True, metavar="VERB")
    rotating = verbs.add_parser("rotate", help="re-wrap every data key with the current KEK")
    rotating.add_argument("--batch", type=int, default=BATCH, help="keys read per query")
    rotating.add_argument("--quiet", action="store_true", help="no progress bar")
    verbs.add_parser("check", help="count keys still wrapped by an older KEK; change nothing")
    keys.set_defaults(run=run_keys)


def run_releases(args: argparse.Namespace) -> int:
    return on_store("vault", INDEXES,
                    lambda db: list_releases(VaultRepository(db), args.all, args.limit))


def run_keys(args: argparse.Namespace) -> int:
    try:
        keyring = keyring_from_settings(
            load_settings(require=("JICM_VAULT_KEK|JICM_VAULT_KEK_FILE",)))
    except ConfigError as exc:
        print(f"jicm keys: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    return on_store("vault", INDEXES, lambda db: _keys(db, keyring, args))


def _keys(db: Database, keyring: Keyring, args: argparse.Namespace) -> int:
    collection = db.collection(DATA_KEYS)
    pending = keys_to_rotate(collection, keyring)
    print(f"{collection.count({})} data keys; {pending} not yet wrapped by the current KEK "
          f"{keyring.current_id!r}", file=sys.stderr)
    if args.verb == "check":
        return 0 if pending == 0 else 1
    return _rotate(collection, keyring, pending, args)


def _rotate(collection: Collection, keyring: Keyring, pending: int,
            args: argparse.Namespace) -> int:
    bar = tqdm(total=pending, unit="key", desc="re-wrapping", disable=args.quiet,
               file=sys.stderr)
    try:
        report = rotate(collection, keyring, batch=args.batch, on_key=lambda: bar.update(1))
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: nothing is lost; run the command again to finish", file=sys.stderr)
        return 130
    bar.close()
    for line in describe_rotation(report, keyring):
        print(line, file=sys.stderr)
    return 0 if report.complete else 1
