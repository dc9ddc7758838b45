"""`jicm store`: move a service's store from one backend to another (docs/scaling.md).

    jicm store export SERVICE [--out FILE]     every document of the service's collections
    jicm store import SERVICE FILE             into the store the settings name

Each reads the same settings as the service: with `MONGO_URI` unset, the embedded SQLite
file under `JICM_DATA_DIR`; with it set, MongoDB. To move an installation onto MongoDB,
export with the old settings and import with `MONGO_URI` set, one service at a time,
while that service is stopped (its events wait in the broker meanwhile). The format and
its guarantees are in shared/storage/transfer.py.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import IO

from shared.clock import SystemClock
from shared.commands import Commands, on_store
from shared.storage import Database, Index
from shared.storage.provider import PLATFORM_INDEXES
from shared.storage.transfer import TransferError, export_store, import_store

SERVICES = ("accounts", "billing", "delivery", "privacy", "scheduler", "vault")


def service_indexes(service: str) -> dict[str, list[Index]]:
    """Every collection `service` keeps (its own and the platform's), with its indexes."""
    module = importlib.import_module(f"services.{service}.service")
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "name", None) == service:
            return {**PLATFORM_INDEXES, **value.store.indexes}
    raise LookupError(f"services/{service}/service.py defines no service named {service!r}")


def _output(path: str | None) -> IO[str] | nullcontext:
    """The file to write, or standard output (left open) when there is none."""
    return Path(path).open("w", encoding="utf-8") if path else nullcontext(sys.stdout)


def export_command(args: argparse.Namespace) -> int:
    indexes = service_indexes(args.service)

    def work(db: Database) -> int:
        with _output(args.out) as out:
            counts = export_store(db, args.service, sorted(indexes), out, SystemClock().now())
        print(f"exported {sum(counts.values())} document(s) of {args.service}: "
              + ", ".join(f"{name} {n}" for name, n in counts.items()), file=sys.stderr)
        return 0

    return on_store(args.service, indexes, work)


def import_command(args: argparse.Namespace) -> int:
    indexes = service_indexes(args.service)

    def work(db: Database) -> int:
        try:
            with Path(args.file).open(encoding="utf-8") as lines:
                report = import_store(db, args.service, lines)
        except TransferError as exc:
            print(f"import refused: {exc}", file=sys.stderr)
            return 1
        print(f"imported {sum(report.inserted.values())} document(s) into {db.describe()}; "
              f"{sum(report.unchanged.values())} already there")
        for name, doc_id in report.conflicts:
            print(f"conflict: {name} {doc_id} exists with other contents; left as it is",
                  file=sys.stderr)
        return 1 if report.conflicts else 0

    return on_store(args.service, indexes, work)


def add_commands(commands: Commands) -> None:
    """`jicm store export|import`."""
    store = commands.add_parser("store", help="move a service's store between backends",
                                description=__doc__.split("\n\n")[0])
    verbs = store.add_subparsers(dest="verb", required=True, metavar="VERB")
    out = verbs.add_parser("export", help="write every document of a service to a file")
    out.add_argument("service", choices=SERVICES)
    out.add_argument("--out", help="file to write (default: standard output)")
    out.set_defaults(run=export_command)
    into = verbs.add_parser("import", help="insert an export into the configured store")
    into.add_argument("service", choices=SERVICES)
    into.add_argument("file")
    into.set_defaults(run=import_command)
