"""`jicm`: every operator command of Just in Case under one name.

Each area's commands live with the code they serve and register themselves here:

    jicm releases                              where each release stands (the vault)
    jicm keys rotate | check                   the vault's key-encryption key
    jicm mail pending | failed | resend        mail not delivered yet, or for good
    jicm switches held                         switches whose firing is held back
    jicm dead-letters list | show | replay | discard
    jicm privacy requests | mark-child
    jicm store export | import                 move a service's store to another backend

Commands read the same configuration as the services (environment variables, see
docs/configuration.md); most read a service's own store directly, so they work while it
is down.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jicm import store
from services.delivery import cli as mail
from services.privacy import cli as privacy
from services.scheduler import cli as switches
from services.vault import cli as vault
from shared.events import deadletters

AREAS = (vault, mail, switches, deadletters, privacy, store)


def parser() -> argparse.ArgumentParser:
    """The whole command line, every area's commands included."""
    top = argparse.ArgumentParser(
        prog="jicm", description="Operator commands of Just in Case.",
        epilog="`jicm COMMAND --help` tells more about each.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    args = parser().parse_args(argv)
    return args.run(args)
