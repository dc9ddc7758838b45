"""The password policy and argon2id hashing.

Policy as NIST SP 800-63B asks: a minimum length, a generous maximum, no composition
rules, and a refusal of passwords that are common or easy to guess (zxcvbn's list of
the 30,000 most common passwords, then its guessability estimate, which also catches
the user's own email address in the password).

Hashing is argon2id through PyNaCl (libsodium). It runs in eventlet's thread pool:
the hash takes tens of milliseconds of CPU on purpose and must not freeze every other
worker of the process meanwhile. PyNaCl releases the GIL while libsodium works.
"""

from __future__ import annotations

from functools import cache, cached_property

import nacl.exceptions
import nacl.pwhash
from eventlet import tpool
from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from services.accounts.schemas import PASSWORD_LENGTHS
from shared.config import PasswordHashStrength
from shared.errors import InvalidInput

MIN_LENGTH, MAX_LENGTH = PASSWORD_LENGTHS
MIN_SCORE = 3  # zxcvbn: "safely unguessable: moderate protection from offline attacks"
# zxcvbn's cost grows with length; its authors advise truncating long inputs.
SCORED_PREFIX = 100

COMMON_PASSWORDS = frozenset(FREQUENCY_LISTS["passwords"])

_argon2 = nacl.pwhash.argon2id
COSTS = {
    PasswordHashStrength.MIN: (_argon2.OPSLIMIT_MIN, _argon2.MEMLIMIT_MIN),
    PasswordHashStrength.INTERACTIVE: (_argon2.OPSLIMIT_INTERACTIVE, _argon2.MEMLIMIT_INTERACTIVE),
    PasswordHashStrength.MODERATE: (_argon2.OPSLIMIT_MODERATE, _argon2.MEMLIMIT_MODERATE),
    PasswordHashStrength.SENSITIVE: (_argon2.OPSLIMIT_SENSITIVE, _argon2.MEMLIMIT_SENSITIVE),
}


def check_password_policy(password: str, email: str = "", field: str = "password") -> None:
    """Raise InvalidInput (code `weak_password`, naming `field`) unless `password` is
    acceptable."""
    if len(password) < MIN_LENGTH:
        raise _weak(f"the password must be at least {MIN_LENGTH} characters long", field)
    if len(password) > MAX_LENGTH:
        raise _weak(f"the password must be at most {MAX_LENGTH} characters long", field)
    if password.lower() in COMMON_PASSWORDS:
        raise _weak("this password is one of the most common passwords", field)
    inputs = [email, email.split("@")[0]] if email else []
    result = zxcvbn(password[:SCORED_PREFIX], user_inputs=inputs)
    if result["score"] < MIN_SCORE:
        hint = result["feedback"].get("warning") or "it is too easy to guess"
        raise _weak(f"this password is too easy to guess: {hint.rstrip('.')}", field)


def _weak(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, code="weak_password", details={"field": field})


class PasswordHasher:
    """argon2id hashing and verification at a configured cost."""

    def __init__(self, strength: PasswordHashStrength) -> None:
        self.opslimit, self.memlimit = COSTS[strength]

    def hash(self, password: str) -> str:
        digest = tpool.execute(_argon2.str, password.encode(), self.opslimit, self.memlimit)
        return digest.decode()

    def verify(self, password_hash: str, password: str) -> bool:
        """Constant-time check of `password` against a stored hash."""
        try:
            return tpool.execute(_argon2.verify, password_hash.encode(), password.encode())
        except nacl.exceptions.InvalidkeyError:
            return False

    @cached_property
    def decoy_hash(self) -> str:
        """A hash to verify against for unknown addresses, so they take as long as known ones."""
        return self.hash("decoy password for unknown addresses")


@cache
def password_hasher(strength: PasswordHashStrength) -> PasswordHasher:
    """One hasher per cost setting and process, so the decoy hash is computed once."""
    return PasswordHasher(strength)
