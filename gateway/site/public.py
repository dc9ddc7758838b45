"""The pages anyone may read: the landing page and the published privacy notice."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, current_app

from gateway.site.pages import problem_page, render
from gateway.site.session import load_user
from services.privacy.notices import NOTICES_DIR, notice
from services.scheduler.switches import DEFAULT_GRACE_SECONDS, DEFAULT_INTERVAL_SECONDS
from shared.config import SETTINGS_CONFIG_KEY
from shared.plans import PLANS

# This blueprint carries the whole site's templates and static files.
bp = Blueprint("site_public", __name__, static_folder="static", static_url_path="/static",
               template_folder="templates")

BULLET = "•"
HEADING_MAX = 90


@bp.get("/")
def landing() -> Response:
    load_user()  # the signed-in see their dashboard's link instead of "sign up"
    return render("landing.html", plans=list(PLANS.values()),
                  interval_days=DEFAULT_INTERVAL_SECONDS // 86_400,
                  grace_days=DEFAULT_GRACE_SECONDS // 86_400)


@bp.get("/privacy")
def privacy() -> Response:
    load_user()
    version = current_app.config[SETTINGS_CONFIG_KEY].policy_version
    published = notice(version)
    if published is None:
        return problem_page(503, "Privacy policy", "The privacy policy is not available.")
    return render("privacy.html", notice=published, blocks=notice_blocks(version))


@dataclass(frozen=True)
class Block:
    """A piece of the notice: a heading, a paragraph, or a list of items."""

    kind: str
    lines: tuple[str, ...]


@cache
def notice_blocks(version: str) -> tuple[Block, ...]:
    """The notice's text, exactly as published (the file the receipts hash), in blocks."""
    text = Path(NOTICES_DIR / f"{version}.txt").read_text(encoding="utf-8")
    blocks: list[Block] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line:
            continue
        if line.startswith(BULLET):
            item = line.removeprefix(BULLET).strip()
            if blocks and blocks[-1].kind == "list":
                blocks[-1] = Block("list", (*blocks[-1].lines, item))
            else:
                blocks.append(Block("list", (item,)))
        elif len(line) <= HEADING_MAX and not line.endswith((".", ":", ",", ";")):
            blocks.append(Block("heading", (line,)))
        else:
            blocks.append(Block("paragraph", (line,)))
    return tuple(blocks)
