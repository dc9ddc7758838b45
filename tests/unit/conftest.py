"""Fixtures several unit test modules share."""

from tests.unit.delivery_fixtures import clock, db, mailer, repo, sinks  # noqa: F401
