"""Email addresses as accounts knows them: the address to write to, and the identity key."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from shared.errors import InvalidInput


def normalize_email(raw: str) -> tuple[str, str]:
    """Return (address to write to, identity key). Raises InvalidInput for a bad address.

    The identity key is the case-folded address: Ada@Example.org and ada@example.org are
    one account.
    """
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"email: {exc}", code="invalid_email", details={"field": "email"}
        ) from None
    return checked.normalized, checked.normalized.casefold()
