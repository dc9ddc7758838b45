"""Messages: write, list, read, change and delete, for their author only."""

from __future__ import annotations

import re

from flask import Blueprint, g

from gateway.api import operation
from gateway.auth import current_user_id
from gateway.errors import ApiError
from gateway.remote import call
from services.vault.schemas import (
    Message,
    MessageChanges,
    MessageCreated,
    MessageList,
    NewMessage,
)

bp = Blueprint("messages", __name__)

# Message ids are uuids; anything else cannot be one, and is answered without asking.
MESSAGE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def _checked(message_id: str) -> str:
    if not MESSAGE_ID.fullmatch(message_id):
        raise ApiError(404, "message_not_found", f"you have no message {message_id[:64]}")
    return message_id


def _author() -> tuple[str, str]:
    """The signed-in user's id, and the address their recipients will see them by."""
    return current_user_id(), g.user["email"]


@operation(bp, "POST", "/api/v1/messages", summary="Write a message", tag="messages",
           body=NewMessage, response=MessageCreated, status=201, errors=(402, 409),
           description="Seals a message for its recipients. It is released to them if the "
                       "switch (your default one unless `switch_id` says otherwise) fires. "
                       "402 names the plan limit a message would exceed; 409 "
                       "`switch_fired`: that switch has fired and takes no new message.")
def create_message(body: NewMessage) -> dict:
    return call("vault", "create_message", *_author(), body.model_dump(mode="json"))


@operation(bp, "GET", "/api/v1/messages", summary="Your messages", tag="messages",
           response=MessageList,
           description="Every message you wrote, with its subject; bodies only one by one.")
def list_messages() -> dict:
    return call("vault", "list_messages", current_user_id())


@operation(bp, "GET", "/api/v1/messages/<message_id>", summary="Read one of your messages",
           tag="messages", response=Message)
def get_message(message_id: str) -> dict:
    return call("vault", "get_message", current_user_id(), _checked(message_id))


@operation(bp, "PUT", "/api/v1/messages/<message_id>", summary="Change a message",
           tag="messages", body=MessageChanges, response=Message, errors=(402, 409),
           description="Changes the fields given; the others keep their value. Once its "
                       "switch has fired, a message is frozen: it can no longer be changed, "
                       "given other recipients or moved to another switch (409 "
                       "`switch_fired`, or `message_released` once it was released).")
def update_message(body: MessageChanges, message_id: str) -> dict:
    changes = body.model_dump(mode="json", exclude_unset=True)
    return call("vault", "update_message", *_author(), _checked(message_id), changes)


@operation(bp, "DELETE", "/api/v1/messages/<message_id>", summary="Delete a message",
           tag="messages", status=204, errors=(409,),
           description="Deletes a message for good. A message whose switch has fired cannot be "
                       "deleted (409 `switch_fired`, or `message_released`).")
def delete_message(message_id: str) -> None:
    call("vault", "delete_message", current_user_id(), _checked(message_id))
