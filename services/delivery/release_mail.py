"""Released messages: one mail per (message, recipient), and the text fetched only to send it.

`MessageReleased` (from the vault) names a message, its sender and its recipients with
their addresses and read tokens, never the text. Each recipient gets one delivery record
of kind `released_message`, reference = the message id, so a redelivered event, or the
vault publishing the same release again after a crash, finds the records already there
and sends nothing new.

- The *link* variant carries `{JICM_PUBLIC_URL}/r/<read token>`; the recipient reads the
  message on the site.
- The *inline* variant carries the text itself. Delivery stores only the message and
  recipient ids; when the mail is built, it asks `vault.released_content(message_id,
  recipient_id)` over RPC (bounded in time) and puts the answer straight into the mail.
  A vault that is down or slow is a temporary failure, retried with the usual back-off;
  a message that no longer exists (its sender was erased) fails the mail for good.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services.delivery.pipeline import ValuesGone, ValuesUnavailable
from services.delivery.schemas import MailRequest
from shared.events.schemas import MessageReleased
from shared.rpc.bounded import BoundedClient, BoundedRpcProxy
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

KIND = "released_message"
# A released message is a few KiB to decrypt and hand over; this is the most a batch of
# mail waits for one answer before it moves on and retries the mail later.
VAULT_TIMEOUT_SECONDS = 5.0


def released_requests(event: MessageReleased, public_url: str) -> list[MailRequest]:
    """The mail each recipient of a released message gets."""
    return [
        MailRequest(
            kind=KIND,
            reference=event.message_id,
            to=recipient.email,
            to_name=recipient.name,
            user_id=event.user_id,
            context=_context(event, recipient.recipient_id, recipient.read_token, public_url),
        )
        for recipient in event.recipients
    ]


def _context(event: MessageReleased, recipient_id: str, read_token: str,
             public_url: str) -> dict[str, str]:
    if event.inline:
        return {"variant": "inline", "sender_name": event.sender_name,
                "message_id": event.message_id, "recipient_id": recipient_id}
    return {"variant": "link", "sender_name": event.sender_name,
            "link": f"{public_url}/r/{read_token}"}


def vault_rpc() -> BoundedRpcProxy:
    """The dependency delivery asks the vault through."""
    return BoundedRpcProxy("vault", timeout=VAULT_TIMEOUT_SECONDS)


class ReleasedContent:
    """Fetches an inline release's subject and body from the vault, at send time."""

    def __init__(self, vault: BoundedClient) -> None:
        self.vault = vault

    def __call__(self, kind: str, context: Mapping[str, str]) -> dict[str, str]:
        if kind != KIND:
            raise ValuesGone(f"{kind} mail has no values to fetch")
        message_id, recipient_id = context["message_id"], context["recipient_id"]
        try:
            content = self.vault.call("released_content", message_id, recipient_id)
        except (RpcTimeout, ServiceUnavailable) as exc:
            raise ValuesUnavailable(f"the vault cannot be asked for the message now ({exc})") \
                from None
        except RemoteError as exc:
            if exc.exc_type == "NotFound":
                raise ValuesGone(f"the vault no longer has message {message_id} for this "
                                 "recipient (erased?)") from None
            raise ValuesUnavailable(f"the vault did not give the message: {exc.exc_type}") \
                from None
        return {"message_subject": content["subject"], "message_body": content["body"]}
