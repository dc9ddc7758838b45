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
import logging
import os
import secrets
import tempfile
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


class Settings(BaseSettings):
    """Every setting of every process. Names are the environment variables'."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=True, frozen=True, populate_by_name=True
    )

    env: Mode = Field(Mode.PRODUCTION, validation_alias=_env("JICM_ENV"))
    amqp_uri: str = Field("amqp://guest:guest@localhost:5672/", validation_alias=_env("AMQP_URI"))
    mongo_uri: str | None = Field(None, validation_alias=_env("MONGO_URI"))
    data_dir: Path = Field(REPO_ROOT / "var" / "data", validation_alias=_env("JICM_DATA_DIR"))
    public_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("JICM_PUBLIC_URL"))

    secret_key: str | None = Field(None, validation_alias=_env("JICM_SECRET_KEY"), repr=False)
    vault_kek: str | None = Field(None, validation_alias=_env("JICM_VAULT_KEK"), repr=False)
    vault_kek_file: Path | None = Field(None, validation_alias=_env("JICM_VAULT_KEK_FILE"))

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
    rpc_timeout: Annotated[float, Field(gt=0, le=120)] = Field(
        10.0, validation_alias=_env("JICM_RPC_TIMEOUT")
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        1_048_576, validation_alias=_env("JICM_MAX_BODY_BYTES")
    )
    trusted_proxies: Annotated[int, Field(ge=0, le=5)] = Field(
        0, validation_alias=_env("JICM_TRUSTED_PROXIES")
    )
    services: str = Field("accounts,scheduler", validation_alias=_env("JICM_SERVICES"))

    smtp_host: str = Field("127.0.0.1", validation_alias=_env("SMTP_HOST"))
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        1025, validation_alias=_env("SMTP_PORT")
    )
    smtp_tls: SmtpTls = Field(SmtpTls.NONE, validation_alias=_env("SMTP_TLS"))
    smtp_user: str | None = Field(None, validation_alias=_env("SMTP_USER"))
    smtp_password: str | None = Field(None, validation_alias=_env("SMTP_PASSWORD"), repr=False)
    mail_from: str = Field(
        "Just in Case <no-reply@justincase.example>", validation_alias=_env("JICM_MAIL_FROM")
    )

    stripe_api_key: str | None = Field(None, validation_alias=_env("STRIPE_API_KEY"), repr=False)
    stripe_api_base: str = Field("https://api.stripe.com", validation_alias=_env("STRIPE_API_BASE"))
    stripe_webhook_secret: str | None = Field(
        None, validation_alias=_env("STRIPE_WEBHOOK_SECRET"), repr=False
    )

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

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://example.org")
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

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.env is Mode.PRODUCTION and self.password_hash is PasswordHashStrength.MIN:
            raise ValueError("JICM_PASSWORD_HASH=min is for tests only, not production")
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
    def service_names(self) -> list[str]:
        return [name.strip() for name in self.services.split(",") if name.strip()]

    def require(self, *names: str) -> None:
        """Fail unless every named environment variable has a value."""
        missing = [name for name in names if not self._value_of(name)]
        if missing:
            raise ConfigError([f"{name}: missing (required by this process)" for name in missing])

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
