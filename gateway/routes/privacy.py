"""Privacy: consent (with Global Privacy Control and Do Not Track), data exports, erasure.

Every consent request carries the browser's privacy signals to the privacy service
(`Sec-GPC: 1`, `DNT: 1`), reads included: a signal is honoured wherever it is seen.
"""

from __future__ import annotations

import json
import re

from flask import Blueprint, Response, g

from gateway.api import operation
from gateway.auth import current_user_id
from gateway.clients import client_context, consent_context
from gateway.errors import ApiError
from gateway.remote import call
from services.privacy.schemas import (
    DUE_AFTER,
    CloseAccount,
    ConsentReceiptList,
    ConsentUpdate,
    ConsentView,
    ErasureProgressQuery,
    ExportDocument,
    NewPrivacyRequest,
    PrivacyRequestCreated,
    PrivacyRequestList,
    PrivacyRequestView,
)

bp = Blueprint("privacy", __name__)

# Request ids are uuids; anything else cannot be one, and is answered without asking.
REQUEST_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
# Reading an export can take a while for a large one (every chunk opened).
DOWNLOAD_TIMEOUT = 60.0


def _checked(request_id: str) -> str:
    if not REQUEST_ID.fullmatch(request_id):
        raise ApiError(404, "request_not_found", f"you have no privacy request {request_id[:64]}")
    return request_id


@operation(bp, "GET", "/api/v1/privacy/consent", summary="Your consent choices", tag="privacy",
           response=ConsentView, errors=(429,),
           description="Marketing by channel and non-essential cookies, all off until you "
                       "turn them on, and the policy version you accepted. A `Sec-GPC: 1` "
                       "or `DNT: 1` header is honoured here too: marketing and non-essential "
                       "cookies are turned off (with a receipt) and the answer says so.")
def get_consent() -> dict:
    return call("privacy", "get_consent", current_user_id(), consent_context())


@operation(bp, "PUT", "/api/v1/privacy/consent", summary="Change your consent choices",
           tag="privacy", body=ConsentUpdate, response=ConsentView, errors=(409, 429),
           description="Any of `marketing` (`email`, `postal`, `phone`, `sms`) and `cookies` "
                       "(`analytics`, `marketing`); those left out keep their value. Each "
                       "change is recorded as a consent receipt. With `Sec-GPC: 1` or "
                       "`DNT: 1`, marketing and non-essential cookies stay off, and "
                       "`kept_off` names what the signal refused.")
def put_consent(body: ConsentUpdate) -> dict:
    changes = body.model_dump(mode="json", exclude_unset=True)
    return call("privacy", "update_consent", current_user_id(), changes, consent_context())


@operation(bp, "GET", "/api/v1/privacy/consent/receipts", summary="The proof of your choices",
           tag="privacy", response=ConsentReceiptList,
           description="Every consent receipt we keep about you, oldest first: what changed, "
                       "when, how (signup, web, api, gpc, dnt, unsubscribe_link), the policy "
                       "version shown and the SHA-256 of its text, your network and browser.")
def list_receipts() -> dict:
    return call("privacy", "list_receipts", current_user_id())


@operation(bp, "POST", "/api/v1/privacy/requests", summary="Ask for an export or an erasure",
           tag="privacy", body=NewPrivacyRequest, response=PrivacyRequestCreated, status=202,
           errors=(403, 429),
           description="`export`: everything we hold about you, gathered from every "
                       "service, downloadable for a limited time (we mail you when it is "
                       "ready). `erasure`: erase your account and everything about you, "
                       "from every service (needs your `password`; 403 if it is wrong). "
                       f"Due within {DUE_AFTER.days} days. An open request of the same type "
                       "is answered again rather than duplicated. A new erasure answers a "
                       "`progress_token`, the one way to follow it once the account is "
                       "closed.")
def create_request(body: NewPrivacyRequest) -> dict:
    return call("privacy", "create_request", current_user_id(), g.user["email"],
                body.model_dump(mode="json"), consent_context())


@operation(bp, "DELETE", "/api/v1/me", summary="Close your account (erases it)",
           tag="accounts", body=CloseAccount, response=PrivacyRequestCreated, status=202,
           errors=(403, 429),
           description="Starts the erasure of your account and everything about it, like "
                       "`POST /api/v1/privacy/requests` with type `erasure`. Needs your "
                       "password; your sessions end at once.")
def close_account(body: CloseAccount) -> dict:
    request = {"type": "erasure", "password": body.password}
    return call("privacy", "create_request", current_user_id(), g.user["email"], request,
                consent_context())


@operation(bp, "POST", "/api/v1/privacy/erasures/<request_id>/progress",
           summary="Where an erasure stands, after the account closed", tag="privacy",
           auth=False, body=ErasureProgressQuery, response=PrivacyRequestView, errors=(429,),
           description="Your account closes as soon as you ask for its erasure, so no "
                       "session can follow it: send the `progress_token` the request was "
                       "created with (in the body, so it never sits in a URL). Answers the "
                       "request's status and each service's part. 404 for a wrong token.")
def erasure_progress(body: ErasureProgressQuery, request_id: str) -> dict:
    return call("privacy", "erasure_progress", _checked(request_id), body.token,
                client_context())


@operation(bp, "GET", "/api/v1/privacy/requests", summary="Your privacy requests",
           tag="privacy", response=PrivacyRequestList)
def list_requests() -> dict:
    return call("privacy", "list_requests", current_user_id())


@operation(bp, "GET", "/api/v1/privacy/requests/<request_id>",
           summary="One of your privacy requests", tag="privacy", response=PrivacyRequestView,
           description="Its status (pending, in_progress, complete, error), each service's "
                       "part, the due date, and for a finished export its download link.")
def get_request(request_id: str) -> dict:
    return call("privacy", "get_request", current_user_id(), _checked(request_id))


@operation(bp, "GET", "/api/v1/privacy/requests/<request_id>/download",
           summary="Download a finished export", tag="privacy", response=ExportDocument,
           errors=(409, 410),
           description="The export as one JSON file (docs/export-format.md). 409 while it "
                       "is being gathered; 410 once it expired (ask for a new one).")
def download_export(request_id: str) -> Response:
    document = call("privacy", "download_export", current_user_id(), _checked(request_id),
                    timeout=DOWNLOAD_TIMEOUT)
    return export_file(document, request_id)


def export_file(document: dict, request_id: str) -> Response:
    """A finished export as the JSON file a browser saves (the API's and the site's)."""
    response = Response(json.dumps(document, ensure_ascii=False, indent=1),
                        mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="just-in-case-export-{request_id}.json"')
    return response
