"""What the operator commands under `jicm` share: the service store a command reads, the
settings it reads it with, and how it says that the configuration is wrong.

Each service keeps its own commands next to its code (`services/<name>/cli.py`, with an
`add_commands(commands)` that registers them); `jicm/cli.py` gathers them into one
program. A command returns its exit status: 0 done, 1 done but something needs an
operator (a failed resend, an overdue request), 2 it could not run (configuration).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

from shared.config import ConfigError, load_settings
from shared.storage import Database, Index
from shared.storage.provider import open_service_database

# What `add_subparsers()` returns: where each area adds its commands.
Commands = argparse._SubParsersAction

CONFIGURATION_ERROR = 2


def on_store(service: str, indexes: Mapping[str, list[Index]],
             work: Callable[[Database], int]) -> int:
    """Run `work` on `service`'s own store (the same MONGO_URI or JICM_DATA_DIR as the
    service, so it works while the service is down); 2 if the settings are wrong."""
    try:
        db = open_service_database(service, indexes, load_settings())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return CONFIGURATION_ERROR
    try:
        return work(db)
    finally:
        db.close()
