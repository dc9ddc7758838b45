"""One-click check-in tokens: signed, bound to one switch and cycle, expiring."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from services.scheduler import tokens

KEY = tokens.link_key(b"k" * 32)
SWITCH = str(uuid.uuid4())
EXPIRES = datetime(2030, 1, 10, 12, 0, 0, tzinfo=UTC)


def test_a_token_says_which_switch_and_cycle_it_checks_in_and_until_when():
    token = tokens.issue(KEY, SWITCH, 7, EXPIRES)
    claim = tokens.verify(KEY, token)
    assert claim == tokens.LinkClaim(switch_id=SWITCH, cycle=7, expires_at=EXPIRES)
    assert tokens.TOKEN_PATTERN.fullmatch(token)  # URL-safe, no padding


def test_a_token_expires():
    claim = tokens.verify(KEY, tokens.issue(KEY, SWITCH, 1, EXPIRES))
    assert not claim.expired(datetime(2030, 1, 10, 11, 59, 59, tzinfo=UTC))
    assert claim.expired(EXPIRES)


def test_changing_any_byte_of_a_token_makes_it_worthless():
    raw = bytearray(base64.urlsafe_b64decode(tokens.issue(KEY, SWITCH, 1, EXPIRES) + "=="))
    for position in (1, 17, 20, 25, 30, len(raw) - 1):  # switch, cycle, expiry, MAC
        forged = bytearray(raw)
        forged[position] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()
        with pytest.raises(tokens.BadToken):
            tokens.verify(KEY, text)


def test_a_token_cannot_be_moved_to_a_later_cycle_or_another_switch():
    token = tokens.issue(KEY, SWITCH, 1, EXPIRES)
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[17:21] = (2).to_bytes(4, "big")  # claim cycle 2 with cycle 1's MAC
    with pytest.raises(tokens.BadToken):
        tokens.verify(KEY, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())


def test_a_token_signed_with_another_secret_is_refused():
    other = tokens.link_key(b"o" * 32)
    with pytest.raises(tokens.BadToken):
        tokens.verify(KEY, tokens.issue(other, SWITCH, 1, EXPIRES))


def test_the_link_key_is_derived_for_this_purpose_only():
    assert tokens.link_key(b"k" * 32) != b"k" * 32
    assert len(tokens.link_key(b"k" * 32)) == 32


@pytest.mark.parametrize("text", ["", "abc", "A" * tokens.TOKEN_LENGTH, "é" * 82,
                                  "A" * (tokens.TOKEN_LENGTH - 1) + "=", None, 42])
def test_garbage_is_refused_without_an_exception_of_another_kind(text):
    with pytest.raises(tokens.BadToken):
        tokens.verify(KEY, text)
