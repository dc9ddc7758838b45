"""Configuration from the environment, validated once at start-up.

Every process (service, gateway, operator command) calls `load_settings()` before it
does anything else. A missing or malformed value stops the process with one line per
problem, naming the variable. `JICM_ENV=local` (what `make run` and the tests use)
generates throw-away secrets on first use, keeps them in `var/secrets.env` so that a
restart can still read what it wrote, and says so in the log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_SECRETS_FILE = "secrets.env"
SECRET_MIN_BYTES = 32

# Secrets that local mode may invent; production must be given them.
GENERATED_LOCAL_SECRETS = ("JICM_SECRET_KEY", "JICM_VAULT_KEK", "STRIPE_WEBHOOK_SECRET")


class ConfigError(Exception):
    """The environment does not describe a runnable process. `str()` lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class Mode(StrEnum):
    PRODUCTION = "production"
    LOCAL = "local"
    TEST = "test"


class SmtpTls(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class QueueType(StrEnum):
    """How the durable queues are declared: `classic` on one broker, `quorum` (replicated
    by Raft) on a cluster. A queue keeps the type it was declared with."""

    CLASSIC = "classic"
    QUORUM = "quorum"


class PasswordHashStrength(StrEnum):
    """argon2id cost presets of libsodium. `min` is for tests only."""

    MIN = "min"
    INTERACTIVE = "interactive"
    MODERATE = "moderate"
    SENSITIVE = "sensitive"


def _env(*names: str) -> Any:
    return AliasChoices(*names)


def decode_key(value: str, name: str) -> bytes:
    """Decode a base64 (standard or url-safe) secret of at least 32 bytes."""
    text = value.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} must be base64") from exc
    if len(raw) < SECRET_MIN_BYTES:
        raise ValueError(f"{name} must decode to at least {SECRET_MIN_BYTES} bytes")
    return raw


KEK_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,32}")
KEK_BYTES = 32


def decode_kek(value: str, name: str) -> bytes:
    """A key-encryption key: base64 of exactly 32 bytes (XChaCha20-Poly1305's key size)."""
    raw = decode_key(value, name)
    if len(raw) != KEK_BYTES:
        raise ValueError(f"{name} must decode to exactly {KEK_BYTES} bytes")
    return raw


def parse_keks(text: str, name: str) -> list[tuple[str | None, bytes]]:
    """Key-encryption keys written one per line as `id:base64` (or bare `base64`: id unknown).

    Blank lines and `#` comments are skipped. Raises ValueError naming the bad line.
    """
    keys: list[tuple[str | None, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kek_id, sep, encoded = line.rpartition(":")
        if sep and not KEK_ID_PATTERN.fullmatch(kek_id):
            raise ValueError(f"{name}, entry {number}: the key id {kek_id!r} is not valid")
        keys.append((kek_id if sep else None, decode_kek(encoded, f"{name}, entry {number}")))
    return keys


class Settings(BaseSettings):
    """Every setting of every process. Names are the environment variables'."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=True, frozen=True, populate_by_name=True
    )

    env: Mode = Field(Mode.PRODUCTION, validation_alias=_env("JICM_ENV"))
    amqp_uri: str = Field("amqp://guest:guest@localhost:5672/", validation_alias=_env("AMQP_URI"))
    mongo_uri: str | None = Field(None, validation_alias=_env("MONGO_URI"))
    queue_type: QueueType = Field(QueueType.CLASSIC, validation_alias=_env("JICM_QUEUE_TYPE"))
    # Unset: the management API on the AMQP host (port 15672), with the AMQP credentials.
    broker_management_url: str | None = Field(
        None, validation_alias=_env("JICM_BROKER_MANAGEMENT_URL"), repr=False
    )
    dead_letter_max_length: Annotated[int, Field(ge=1)] = Field(
        100_000, validation_alias=_env("JICM_DEAD_LETTER_MAX_LENGTH")
    )
    # host:port where a service process serves its Prometheus metrics; unset: none.
    metrics_bind: str | None = Field(None, validation_alias=_env("JICM_METRICS_BIND"))
    data_dir: Path = Field(REPO_ROOT / "var" / "data", validation_alias=_env("JICM_DATA_DIR"))
    public_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("JICM_PUBLIC_URL"))

    secret_key: str | None = Field(None, validation_alias=_env("JICM_SECRET_KEY"), repr=False)
    vault_kek: str | None = Field(None, validation_alias=_env("JICM_VAULT_KEK"), repr=False)
    vault_kek_file: Path | None = Field(None, validation_alias=_env("JICM_VAULT_KEK_FILE"))
    vault_kek_id: str = Field("1", validation_alias=_env("JICM_VAULT_KEK_ID"))
    vault_old_keks: str | None = Field(
        None, validation_alias=_env("JICM_VAULT_OLD_KEKS"), repr=False
    )

    min_interval: Annotated[int, Field(ge=1)] = Field(
        86_400, validation_alias=_env("JICM_MIN_INTERVAL")
    )
    scheduler_tick: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, validation_alias=_env("JICM_SCHEDULER_TICK")
    )
    scheduler_batch: Annotated[int, Field(ge=1, le=1000)] = Field(
        100, validation_alias=_env("JICM_SCHEDULER_BATCH")
    )
    scheduler_lease: Annotated[int, Field(ge=2, le=3600)] = Field(
        30, validation_alias=_env("JICM_SCHEDULER_LEASE")
    )
    scheduler_recheck: Annotated[int, Field(ge=1, le=3600)] = Field(
        15, validation_alias=_env("JICM_SCHEDULER_RECHECK")
    )
    scheduler_stale_after: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, validation_alias=_env("JICM_SCHEDULER_STALE_AFTER")
    )
    policy_version: str = Field("2024-04-29", validation_alias=_env("JICM_POLICY_VERSION"))
    password_hash: PasswordHashStrength = Field(
        PasswordHashStrength.INTERACTIVE, validation_alias=_env("JICM_PASSWORD_HASH")
    )
    session_ttl: Annotated[int, Field(ge=60)] = Field(
        14 * 86_400, validation_alias=_env("JICM_SESSION_TTL")
    )
    # How long a gateway worker may answer from its cache of resolved sessions (0: never);
    # revocations reach every worker at once through the AccountChanged broadcast.
    session_cache_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        10.0, validation_alias=_env("JICM_SESSION_CACHE_SECONDS")
    )
    session_cache_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        10_000, validation_alias=_env("JICM_SESSION_CACHE_SIZE")
    )
    rpc_timeout: Annotated[float, Field(gt=0, le=120)] = Field(
        10.0, validation_alias=_env("JICM_RPC_TIMEOUT")
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        1_048_576, validation_alias=_env("JICM_MAX_BODY_BYTES")
    )
    trusted_proxies: Annotated[int, Field(ge=0, le=5)] = Field(
        0, validation_alias=_env("JICM_TRUSTED_PROXIES")
    )
    services: str = Field(
        "accounts,billing,delivery,privacy,scheduler,vault", validation_alias=_env("JICM_SERVICES")
    )
    verify_token_ttl: Annotated[int, Field(ge=60)] = Field(
        48 * 3600, validation_alias=_env("JICM_VERIFY_TOKEN_TTL")
    )
    reset_token_ttl: Annotated[int, Field(ge=60, le=86_400)] = Field(
        3600, validation_alias=_env("JICM_RESET_TOKEN_TTL")
    )

    # Privacy: exports, and how long each kind of data is kept (docs/privacy.md, "Retention").
    export_ttl: Annotated[int, Field(ge=60)] = Field(
        7 * 86_400, validation_alias=_env("JICM_EXPORT_TTL")
    )
    export_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, validation_alias=_env("JICM_EXPORT_TIMEOUT")
    )
    retention_interval: Annotated[float, Field(gt=0)] = Field(
        3600.0, validation_alias=_env("JICM_RETENTION_INTERVAL")
    )
    retention_unverified_days: Annotated[int, Field(ge=1)] = Field(
        30, validation_alias=_env("JICM_RETENTION_UNVERIFIED_DAYS")
    )
    retention_mail_log_days: Annotated[int, Field(ge=1)] = Field(
        90, validation_alias=_env("JICM_RETENTION_MAIL_LOG_DAYS")
    )
    retention_checkin_days: Annotated[int, Field(ge=1)] = Field(
        365, validation_alias=_env("JICM_RETENTION_CHECKIN_DAYS")
    )
    retention_closed_days: Annotated[int, Field(ge=1)] = Field(
        30, validation_alias=_env("JICM_RETENTION_CLOSED_DAYS")
    )
    retention_ledger_days: Annotated[int, Field(ge=1)] = Field(
        730, validation_alias=_env("JICM_RETENTION_LEDGER_DAYS")
    )
    retention_invoice_days: Annotated[int, Field(ge=1)] = Field(
        3650, validation_alias=_env("JICM_RETENTION_INVOICE_DAYS")
    )

    smtp_host: str = Field("127.0.0.1", validation_alias=_env("SMTP_HOST"))
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        1025, validation_alias=_env("SMTP_PORT")
    )
    smtp_tls: SmtpTls = Field(SmtpTls.NONE, validation_alias=_env("SMTP_TLS"))
    smtp_user: str | None = Field(None, validation_alias=_env("SMTP_USER"))
    smtp_password: str | None = Field(None, validation_alias=_env("SMTP_PASSWORD"), repr=False)
    smtp_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, validation_alias=_env("SMTP_TIMEOUT")
    )
    smtp_ca_file: Path | None = Field(None, validation_alias=_env("SMTP_CA_FILE"))
    mail_from: str = Field(
        "Just in Case <no-reply@justincase.example>", validation_alias=_env("JICM_MAIL_FROM")
    )
    delivery_tick: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, validation_alias=_env("JICM_DELIVERY_TICK")
    )
    delivery_lease: Annotated[float, Field(gt=0)] = Field(
        150.0, validation_alias=_env("JICM_DELIVERY_LEASE")
    )
    delivery_lanes: Annotated[int, Field(ge=1, le=64)] = Field(
        8, validation_alias=_env("JICM_DELIVERY_LANES")
    )
    delivery_retry_base: Annotated[float, Field(gt=0)] = Field(
        60.0, validation_alias=_env("JICM_DELIVERY_RETRY_BASE")
    )
    delivery_retry_cap: Annotated[float, Field(gt=0)] = Field(
        3600.0, validation_alias=_env("JICM_DELIVERY_RETRY_CAP")
    )
    delivery_max_attempts: Annotated[int, Field(ge=1)] = Field(
        30, validation_alias=_env("JICM_DELIVERY_MAX_ATTEMPTS")
    )
    delivery_max_age: Annotated[int, Field(ge=1)] = Field(
        4 * 86_400, validation_alias=_env("JICM_DELIVERY_MAX_AGE")
    )

    stripe_api_key: str | None = Field(None, validation_alias=_env("STRIPE_API_KEY"), repr=False)
    stripe_api_base: str = Field("https://api.stripe.com", validation_alias=_env("STRIPE_API_BASE"))
    stripe_webhook_secret: str | None = Field(
        None, validation_alias=_env("STRIPE_WEBHOOK_SECRET"), repr=False
    )
    stripe_price_monthly: str | None = Field(None, validation_alias=_env("STRIPE_PRICE_MONTHLY"))
    stripe_price_yearly: str | None = Field(None, validation_alias=_env("STRIPE_PRICE_YEARLY"))

    log_level: str = Field("INFO", validation_alias=_env("JICM_LOG_LEVEL"))
    log_format: str = Field("json", validation_alias=_env("JICM_LOG_FORMAT"))

    @field_validator("amqp_uri")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("amqp", "amqps", "pyamqp"):
            raise ValueError("must be an amqp:// or amqps:// URI")
        return value

    @field_validator("mongo_uri")
    @classmethod
    def _mongo_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme != "mongodb":
            # mongodb+srv needs DNS lookups that break under eventlet.
            raise ValueError("must be a plain mongodb:// URI (mongodb+srv:// is not supported)")
        return value

    @field_validator("broker_management_url")
    @classmethod
    def _management_url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL such as http://rabbitmq:15672")
        return value or None

    @field_validator("metrics_bind")
    @classmethod
    def _metrics_bind(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, such as 0.0.0.0:9100")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://example.org")
        return value.rstrip("/")

    @field_validator("stripe_api_base")
    @classmethod
    def _stripe_api_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://api.stripe.com")
        return value.rstrip("/")

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("must be json or text")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None:
            decode_key(value, "JICM_SECRET_KEY")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or not address.rpartition("@")[2]:
            raise ValueError("must be an address such as Just in Case <no-reply@example.org>")
        return value


    @field_validator("vault_kek")
    @classmethod
    def _vault_kek(cls, value: str | None) -> str | None:
        if value is not None:
            decode_kek(value, "JICM_VAULT_KEK")
        return value

    @field_validator("vault_kek_id")
    @classmethod
    def _vault_kek_id(cls, value: str) -> str:
        if not KEK_ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1 to 32 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("vault_old_keks")
    @classmethod
    def _vault_old_keks(cls, value: str | None) -> str | None:
        if value:
            keys = parse_keks(value.replace(",", "\n"), "JICM_VAULT_OLD_KEKS")
            if any(kek_id is None for kek_id, _ in keys):
                raise ValueError("each entry must be id:base64")
        return value or None

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.env is Mode.PRODUCTION and self.password_hash is PasswordHashStrength.MIN:
            raise ValueError("JICM_PASSWORD_HASH=min is for tests only, not production")
        if self.env is Mode.PRODUCTION and not self.stripe_api_base.startswith("https://"):
            # The API key travels in every request's Authorization header.
            raise ValueError("STRIPE_API_BASE must be https:// in production")
        return self

    @model_validator(mode="after")
    def _delivery_rules(self) -> Settings:
        # A claim must outlive the SMTP conversation it covers, or a slow server would see a
        # second sender take over the same mail: the conversation is cut off a margin before
        # the claim ends (delivery/pipeline.py), and this leaves room for several of its
        # steps (connect, greeting, STARTTLS, AUTH, MAIL, RCPT, DATA), each bounded by
        # SMTP_TIMEOUT.
        if self.delivery_lease < 4 * self.smtp_timeout:
            raise ValueError("JICM_DELIVERY_LEASE must be at least 4 x SMTP_TIMEOUT")
        if self.delivery_retry_cap < self.delivery_retry_base:
            raise ValueError("JICM_DELIVERY_RETRY_CAP must not be below JICM_DELIVERY_RETRY_BASE")
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USER and SMTP_PASSWORD go together")
        return self

    # Derived values -----------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.env is not Mode.PRODUCTION

    @property
    def secret_key_bytes(self) -> bytes:
        if self.secret_key is None:
            raise ConfigError(["JICM_SECRET_KEY: missing"])
        return decode_key(self.secret_key, "JICM_SECRET_KEY")

    @property
    def mail_from_address(self) -> str:
        """The bare address of `JICM_MAIL_FROM`: the envelope sender and Message-ID domain."""
        return parseaddr(self.mail_from)[1]

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose, derived from `JICM_SECRET_KEY` (HMAC-SHA256).

        Each use of the secret (token lookups, unsubscribe links, sealed mail context) gets
        its own key, so a value made for one purpose is worthless for any other.
        """
        return hmac.new(self.secret_key_bytes, f"jicm/{purpose}".encode(), hashlib.sha256).digest()

    @property
    def service_names(self) -> list[str]:
        return [name.strip() for name in self.services.split(",") if name.strip()]

    def require(self, *names: str) -> None:
        """Fail unless every named environment variable has a value.

        `"A|B"` asks for either of two variables (a key given inline or as a file).
        """
        missing = [
            name for name in names if not any(self._value_of(one) for one in name.split("|"))
        ]
        if missing:
            raise ConfigError([
                f"{name.replace('|', ' or ')}: missing (required by this process)"
                for name in missing
            ])

    def _value_of(self, env_name: str) -> Any:
        for field_name, info in type(self).model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices) and env_name in alias.choices:
                return getattr(self, field_name)
        raise KeyError(env_name)


def load_settings(
    environ: dict[str, str] | None = None, *, require: tuple[str, ...] = ()
) -> Settings:
    """Read and validate settings from `environ` (default: the process environment).

    In local and test mode missing secrets come from `var/secrets.env`, generated on
    first use. Raises ConfigError naming every problem.
    """
    env = dict(os.environ if environ is None else environ)
    if env.get("JICM_ENV", "production") in (Mode.LOCAL, Mode.TEST):
        env = {**local_secrets(_var_dir(env)), **{k: v for k, v in env.items() if v}}
    try:
        settings = Settings(**_settings_kwargs(env))
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
    settings.require(*require)
    return settings


def _settings_kwargs(env: dict[str, str]) -> dict[str, str]:
    """Pass only our own variables, so the rest of the environment cannot leak in."""
    known = set()
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            known.update(str(choice) for choice in alias.choices)
    return {key: value for key, value in env.items() if key in known and value != ""}


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    return f"{location}: {message}"


def _var_dir(env: dict[str, str]) -> Path:
    data_dir = env.get("JICM_DATA_DIR")
    return Path(data_dir).parent if data_dir else REPO_ROOT / "var"


def local_secrets(var_dir: Path) -> dict[str, str]:
    """Throw-away secrets for local mode, created once and shared by every process.

    The file is created atomically (written aside, then hard-linked into place), so
    processes starting together all end up with the same values.
    """
    path = var_dir / LOCAL_SECRETS_FILE
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{name}={_new_secret(name)}" for name in GENERATED_LOCAL_SECRETS]
        fd, tmp = tempfile.mkstemp(dir=var_dir, prefix=".secrets-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write("# Throw-away secrets for JICM_ENV=local. Never use in production.\n")
                handle.write("\n".join(lines) + "\n")
            os.chmod(tmp, 0o600)
            os.link(tmp, path)
            log.warning("local mode: generated throw-away secrets in %s", path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return _read_env_file(path)


def _new_secret(name: str) -> str:
    if name == "STRIPE_WEBHOOK_SECRET":
        return "whsec_" + secrets.token_urlsafe(32)
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


SETTINGS_CONFIG_KEY = "JICM_SETTINGS"


def settings_of(container) -> Settings:
    """The validated settings a service container was started with."""
    settings = container.config.get(SETTINGS_CONFIG_KEY)
    if settings is None:
        raise ConfigError([f"{SETTINGS_CONFIG_KEY}: the container config has no settings"])
    return settings
