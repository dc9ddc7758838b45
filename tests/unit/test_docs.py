"""The documentation says what the code does, and leads where it says it leads.

Prose cannot be tested, but its tables and links can: the configuration tables list
exactly the environment variables the code reads, the events table lists exactly the
events there are and who consumes them, every relative link and `#anchor` in README.md
and docs/ points at something that exists, and the README stays a front page. Each of
these drifts silently otherwise, because nothing fails when the code moves on.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import AliasChoices

from shared.config import Settings
from shared.events.schemas import EVENT_SCHEMAS
from shared.events.topology import CONSUMERS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 260

# Where the code lives. Tests read variables of their own (JICM_TESTS_BROWSER...), which
# are not configuration, and the rest are not ours.
SKIPPED_DIRS = {".git", ".venv", "node_modules", "var", "tests", "__pycache__",
                ".pytest_cache", ".ruff_cache", ".hypothesis"}
# `os.environ.get("X")`, `environ["X"]`, `env.get("X")`, `os.getenv("X")`: a mapping of
# the environment (the supervisor passes it around as `env`) read by a literal name.
PYTHON_READ = re.compile(
    r"""\b(?:environ|env|getenv)(?:\.get)?\s*[\[(]\s*['"]([A-Z][A-Z0-9_]*)['"]""")
# The supervisor's `env_port(env, "X", default)` reads a port number by name.
PYTHON_PORT_READ = re.compile(r"""\benv_port\(\s*\w+\s*,\s*['"]([A-Z][A-Z0-9_]*)['"]""")
# `${X:-default}`, `${X:?message}` in shell scripts and docker-compose.yml. A bare `${X}`
# is a script's own variable, not something it expects from its caller.
SHELL_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?[-?=+]")

SERVICES = set(CONSUMERS)
NOBODY = {"—", "-", ""}


# --- reading markdown -------------------------------------------------------------------


def outside_code(text: str) -> list[str]:
    """The lines of `text` that are not inside a fenced code block (fences included)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def sections(path: Path) -> dict[str, list[str]]:
    """Each `## ` section's lines (its `###` subsections included), by heading text."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in outside_code(path.read_text()):
        if line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
        else:
            current.append(line)
    return found


def split_row(line: str) -> list[str]:
    # `\|` is a pipe inside a cell, not a border.
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def tables(lines: list[str]) -> list[list[dict[str, str]]]:
    """Every table in `lines`: its rows, each a dict from the header's words to cells."""
    found, block = [], []
    for line in [*lines, ""]:
        if line.lstrip().startswith("|"):
            block.append(split_row(line))
            continue
        if len(block) > 2:
            header = [cell.lower() for cell in block[0]]
            found.append([dict(zip(header, row, strict=False)) for row in block[2:]])
        block = []
    return found


def code_names(cell: str) -> set[str]:
    """The `NAMES` a cell quotes as code, such as `SMTP_HOST`, `SMTP_PORT`."""
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", cell))


def section_tables(path: Path, heading: str) -> list[list[dict[str, str]]]:
    found = sections(path)
    assert heading in found, f"{path.name} has no section '## {heading}'"
    return tables(found[heading])


# --- the configuration ------------------------------------------------------------------

CONFIGURATION = DOCS / "configuration.md"


def settings_variables() -> set[str]:
    """What `Settings` reads: the names of every field's `validation_alias` (`_env(...)`)."""
    names: set[str] = set()
    for info in Settings.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(choice) for choice in info.validation_alias.choices)
    return names


def code_files() -> list[Path]:
    files = []
    for directory, subdirs, names in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS]
        files += [Path(directory) / name for name in names]
    return files


def variables_read_in_code() -> set[str]:
    """Every environment variable some code reads by name, `Settings` or not."""
    names: set[str] = set()
    for path in code_files():
        if path.suffix == ".py":
            text = path.read_text()
            names.update(PYTHON_READ.findall(text), PYTHON_PORT_READ.findall(text))
        elif path.suffix == ".sh" or path.name == "docker-compose.yml":
            names.update(SHELL_READ.findall(path.read_text()))
    return names


def documented(heading: str) -> Counter:
    """The variables named in the first column of the tables of one section, counted."""
    rows = [row for table in section_tables(CONFIGURATION, heading) for row in table]
    return Counter(name for row in rows for name in code_names(row["variable"]))


def test_the_settings_table_lists_exactly_what_shared_config_reads():
    listed = documented("The settings")
    read = settings_variables()
    assert set(listed) - read == set(), "documented, but shared/config.py does not read it"
    assert read - set(listed) == set(), "read by shared/config.py, but not documented"
    assert [name for name, count in listed.items() if count > 1] == []


def test_the_other_table_lists_exactly_the_variables_read_outside_the_settings():
    listed = documented("Variables read outside the settings")
    read = variables_read_in_code() - settings_variables()
    assert set(listed) - read == set(), "documented, but no code reads it"
    assert read - set(listed) == set(), "read by some code, but not documented"
    assert [name for name, count in listed.items() if count > 1] == []


def test_no_variable_is_in_both_configuration_tables():
    settings = set(documented("The settings"))
    others = set(documented("Variables read outside the settings"))
    assert settings & others == set()


def test_the_code_scan_finds_the_variables_we_know_are_read_outside_the_settings():
    # If the patterns stopped matching, the test above would pass on an empty table.
    assert {"JICM_GATEWAY_BIND", "JICM_SMTP_SINK_PORT", "JICM_STRIPE_STANDIN_PORT",
            "RABBITMQ_PASSWORD"} <= variables_read_in_code()


# --- the events -------------------------------------------------------------------------

ARCHITECTURE = DOCS / "architecture.md"


def event_rows() -> dict[str, dict[str, str]]:
    (table, *_) = section_tables(ARCHITECTURE, "Events")
    rows: dict[str, dict[str, str]] = {}
    for row in table:
        (name,) = re.findall(r"`(\w+)`", row["event"])
        assert name not in rows, f"{name} is in the events table twice"
        rows[name] = row
    return rows


def services_in(cell: str) -> set[str]:
    """`a, b` -> {a, b}; a dash means nobody. Only service names are allowed here."""
    if cell in NOBODY:
        return set()
    names = {name.strip() for name in cell.split(",")}
    assert names <= SERVICES, f"not services: {sorted(names - SERVICES)}"
    return names


def row_of(event: str) -> dict[str, str]:
    row = event_rows().get(event)
    assert row is not None, f"{event} is not in the events table"
    return row


def test_the_events_table_lists_exactly_the_events_that_have_a_schema():
    listed = set(event_rows())
    assert set(EVENT_SCHEMAS) - listed == set(), "events with a schema but no row"
    assert listed - set(EVENT_SCHEMAS) == set(), "rows for events that do not exist"


@pytest.mark.parametrize("event", sorted(EVENT_SCHEMAS))
def test_each_events_consumers_are_those_of_the_broker_topology(event):
    consumers = {service for service, events in CONSUMERS.items() if event in events}
    assert services_in(row_of(event)["consumers"]) == consumers


@pytest.mark.parametrize("event", sorted(EVENT_SCHEMAS))
def test_each_event_names_the_services_that_produce_it(event):
    # Who produces an event is not declared anywhere the test could read; at least the
    # column must name real services, none of them misspelt.
    assert services_in(row_of(event)["producer"])


# --- links --------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets `-1`, `-2`... as on GitHub."""
    seen: Counter = Counter()
    found = set()
    for line in outside_code(path.read_text()):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor = anchor_of(match.group(1))
            found.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
            seen[anchor] += 1
    return found


def links(path: Path) -> list[str]:
    text = "\n".join(INLINE_CODE.sub("", line) for line in outside_code(path.read_text()))
    return LINK.findall(text) + HTML_LINK.findall(text)


def relative(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("//")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in filter(relative, links(page)):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no such heading in {destination.name}")
    assert broken == []


def test_the_readme_links_to_every_page_of_the_documentation():
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for target in filter(relative, links(README))}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def test_the_link_checker_sees_links_and_headings():
    # A checker that found nothing would pass every page.
    assert "docs/configuration.md" in links(README)
    assert "the-jicm-command" in anchors(DOCS / "operations.md")
    assert anchor_of("The vault: messages, encryption and the release") == (
        "the-vault-messages-encryption-and-the-release")


# --- the front page -------------------------------------------------------------------------


def test_the_readme_is_a_front_page():
    # Everything else has its page in docs/: the README is read in ten minutes or not at all.
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to docs/"
