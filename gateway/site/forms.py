"""Between HTML forms and the API's models: what was typed, read back into the request
models the API validates with, and every refusal turned into a sentence beside the field
it concerns. The rules stay in the models and the services; this only translates."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.errors import ApiError
from gateway.pages import sentence
from shared.errors import ServiceError

FORM_ERROR = "_form"  # a problem that belongs to no one field


class FormErrors(dict[str, str]):
    """Field name -> the sentence shown beside it (`_form` for the whole form)."""


def validated(model: type[BaseModel], data: dict[str, Any],
              names: dict[str, str] | None = None) -> tuple[Any, FormErrors]:
    """`model` built from `data`, or None and the problems per form field.

    `names` maps a model location (`recipients.0.email`) prefix to the form's own field
    name when they differ.
    """
    try:
        return model.model_validate(data), FormErrors()
    except ValidationError as exc:
        errors = FormErrors()
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or FORM_ERROR
            field = (names or {}).get(field, field)
            errors.setdefault(field, _words(error))
        return None, errors


def _words(error: dict) -> str:
    kind = error["type"]
    if kind == "missing":
        return "Please fill this in."
    if kind == "string_too_short":
        return "Please fill this in." if error["ctx"].get("min_length") == 1 else sentence(
            f"at least {error['ctx']['min_length']} characters, please")
    if kind == "string_too_long":
        return sentence(f"at most {error['ctx']['max_length']} characters, please")
    message = error["msg"].removeprefix("Value error, ")
    return sentence(message)


def refusal(exc: ServiceError | ApiError, default_field: str = FORM_ERROR) -> FormErrors:
    """A service's refusal as a sentence beside the field it names (in `details.field`)."""
    details = getattr(exc, "details", None) or {}
    field = details.get("field") or default_field
    message = exc.message
    if isinstance(field, str) and message.startswith(f"{field}: "):
        message = message[len(field) + 2:]
    return FormErrors({field: sentence(message)})
