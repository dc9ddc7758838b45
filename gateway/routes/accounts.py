"""Sign-up, email verification, log-in (with its two-factor second step), log-out,
password reset, the profile and two-factor sign-in's set-up."""

from __future__ import annotations

from flask import Blueprint, g

from gateway.api import operation
from gateway.auth import current_user_id, forget_signed_in_user
from gateway.clients import client_context
from gateway.remote import call
from services.accounts.schemas import (
    MINIMUM_AGE,
    VERIFICATION_RESENDS,
    Account,
    LogIn,
    LogInAnswer,
    MailQueued,
    PasswordChange,
    PasswordChanged,
    PasswordReset,
    PasswordResetRequest,
    Profile,
    ProfileChanges,
    RecoveryCodes,
    SecondStep,
    Session,
    SessionList,
    SessionsEnded,
    SignUp,
    TotpConfirm,
    TotpDisable,
    TotpSetup,
    TotpStatus,
    VerifyEmail,
)

bp = Blueprint("accounts", __name__)


@operation(bp, "POST", "/api/v1/accounts", summary="Sign up", tag="accounts",
           body=SignUp, response=Account, status=201, auth=False,
           description=f"Creates an account ({MINIMUM_AGE} or older). The answer is the same "
                       "whether or not the address already has an account.")
def sign_up(body: SignUp) -> dict:
    return call("accounts", "sign_up", body.model_dump(mode="json"), client_context())


@operation(bp, "POST", "/api/v1/sessions", summary="Log in", tag="accounts",
           body=LogIn, response=LogInAnswer, status=201, auth=False, errors=(401,),
           description="The answer is a session `token`; for an account with two-factor "
                       "sign-in it is instead `second_step: \"totp\"` and a `challenge` "
                       "(single-use, 5 minutes) for POST /api/v1/sessions/totp.")
def log_in(body: LogIn) -> dict:
    return call("accounts", "log_in", body.model_dump(mode="json"), client_context())


@operation(bp, "POST", "/api/v1/sessions/totp", summary="Log in: the two-factor code",
           tag="accounts", body=SecondStep, response=Session, status=201, auth=False,
           errors=(401,),
           description="Takes the log-in's `challenge` and either `code` (6 digits from "
                       "the authenticator app, each accepted once) or `recovery_code` (each "
                       "works once). 401 `wrong_code` for a wrong or used one, 401 "
                       "`challenge_invalid` once the challenge is used or expired; 429 after "
                       "5 wrong codes for one challenge or 6 for one account in 15 minutes.")
def log_in_second_step(body: SecondStep) -> dict:
    return call("accounts", "log_in_second_step", body.model_dump(mode="json"),
                client_context())


@operation(bp, "DELETE", "/api/v1/sessions/current", summary="Log out", tag="accounts",
           status=204)
def log_out() -> None:
    call("accounts", "log_out", g.token)
    forget_signed_in_user()


@operation(bp, "GET", "/api/v1/sessions", summary="Your open sessions", tag="accounts",
           response=SessionList,
           description="Every device signed in to your account, oldest first; `current` "
                       "marks the one asking. Tokens are never shown.")
def list_sessions() -> dict:
    return call("accounts", "list_sessions", g.token)


@operation(bp, "DELETE", "/api/v1/sessions", summary="Sign out everywhere", tag="accounts",
           response=SessionsEnded,
           description="Ends every session of your account, the one asking included.")
def end_sessions() -> dict:
    ended = call("accounts", "end_sessions", current_user_id())
    forget_signed_in_user()
    return ended


@operation(bp, "GET", "/api/v1/me", summary="Your profile", tag="accounts", response=Profile)
def me() -> dict:
    return g.user


@operation(bp, "PATCH", "/api/v1/me", summary="Change your profile", tag="accounts",
           body=ProfileChanges, response=Profile,
           description="`time_zone`: the IANA name (Europe/Paris) the web site shows your "
                       "times in. Times in the API stay UTC.")
def update_profile(body: ProfileChanges) -> dict:
    profile = call("accounts", "update_profile", current_user_id(),
                   body.model_dump(mode="json"))
    forget_signed_in_user()
    return profile


@operation(bp, "POST", "/api/v1/me/password", summary="Change your password", tag="accounts",
           body=PasswordChange, response=Session, errors=(403, 422, 429),
           description="Needs the current password (403 `wrong_password`; wrong guesses "
                       "count against the log-in limit). Every session ends, this one "
                       "included; the answer is a new session token for the caller.")
def change_password(body: PasswordChange) -> dict:
    session = call("accounts", "change_password", g.token, body.model_dump(mode="json"),
                   client_context())
    forget_signed_in_user()
    return session


@operation(bp, "POST", "/api/v1/accounts/verify", summary="Verify your email address",
           tag="accounts", body=VerifyEmail, response=Account, auth=False, errors=(400, 410),
           description="Takes the token of the mailed `/verify?token=` link. Works once: "
                       "a used link answers 410 `token_used`, an expired one 410 "
                       "`token_expired`, anything else 400 `token_invalid`.")
def verify_email(body: VerifyEmail) -> dict:
    return call("accounts", "verify_email", body.model_dump(mode="json"))


@operation(bp, "POST", "/api/v1/accounts/verify/resend", summary="Mail a new verification link",
           tag="accounts", response=MailQueued, status=202, errors=(409, 429),
           description="409 `already_verified` once the address is verified; "
                       f"{VERIFICATION_RESENDS.in_words()}.")
def resend_verification() -> dict:
    return call("accounts", "resend_verification", current_user_id())


@operation(bp, "POST", "/api/v1/password-resets", summary="Ask for a password reset link",
           tag="accounts", body=PasswordResetRequest, response=MailQueued, status=202,
           auth=False, errors=(429,),
           description="Answers the same whether or not the address has an account; the "
                       "link (valid one hour) goes to the address only if it has one.")
def request_password_reset(body: PasswordResetRequest) -> dict:
    return call("accounts", "request_password_reset", body.model_dump(mode="json"),
                client_context())


@operation(bp, "POST", "/api/v1/password-resets/confirm", summary="Set a new password",
           tag="accounts", body=PasswordReset, response=PasswordChanged, auth=False,
           errors=(400, 410),
           description="Takes the mailed token and the new password (the password policy "
                       "applies). Works once, and signs out every session opened before.")
def reset_password(body: PasswordReset) -> dict:
    return call("accounts", "reset_password", body.model_dump(mode="json"))


@operation(bp, "GET", "/api/v1/me/totp", summary="Your two-factor sign-in", tag="accounts",
           response=TotpStatus)
def totp_status() -> dict:
    return call("accounts", "totp_status", current_user_id())


@operation(bp, "POST", "/api/v1/me/totp", summary="Set up two-factor sign-in",
           tag="accounts", response=TotpSetup, status=201, errors=(409,),
           description="A new secret for your authenticator app, as text, as an "
                       "`otpauth://` URI and as a QR code (SVG). Nothing changes until "
                       "POST /api/v1/me/totp/confirm; starting again replaces the secret. "
                       "409 `totp_already_on` while it is on.")
def start_totp() -> dict:
    return call("accounts", "start_totp", current_user_id())


@operation(bp, "POST", "/api/v1/me/totp/confirm", summary="Turn two-factor sign-in on",
           tag="accounts", body=TotpConfirm, response=RecoveryCodes, errors=(400, 409),
           description="Takes a first code from the app. The answer holds ten recovery "
                       "codes, shown this once. 400 `wrong_code`; 409 `totp_not_started` "
                       "without a set-up under way.")
def confirm_totp(body: TotpConfirm) -> dict:
    return call("accounts", "confirm_totp", current_user_id(), body.model_dump(mode="json"))


@operation(bp, "POST", "/api/v1/me/totp/disable", summary="Turn two-factor sign-in off",
           tag="accounts", body=TotpDisable, response=TotpStatus, errors=(400, 403, 429),
           description="Needs your password (403 `wrong_password`, counted like a log-in) "
                       "and a `code` or a `recovery_code` (400 `wrong_code`). The secret and "
                       "every recovery code are deleted.")
def disable_totp(body: TotpDisable) -> dict:
    return call("accounts", "disable_totp", current_user_id(), body.model_dump(mode="json"))
