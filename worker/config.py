"""Worker configuration: environment variables (prefix ``WORKER_``, sections joined by ``__``) and ``.env``.

Validated once at start-up; an invalid value fails with a message that names the variable.
Every setting is listed in the README's configuration table.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from redis_infer_protocol import keys
from redis_infer_protocol.codec import Limits
from worker.errors import ConfigError

ENV_PREFIX = "WORKER_"
ENV_DELIMITER = "__"

log = logging.getLogger(__name__)


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="Redis URL (redis://, rediss:// for TLS, unix://). Required unless `run --embedded-redis`.",
    )
    username: str | None = Field(default=None, description="ACL user (overrides the URL's).")
    password: SecretStr | None = Field(default=None, description="Password (overrides the URL's); never logged.")
    tls_ca_file: Path | None = Field(default=None, description="CA bundle to verify the server (rediss://).")
    tls_cert_file: Path | None = Field(default=None, description="Client certificate, for mutual TLS.")
    tls_key_file: Path | None = Field(default=None, description="Client private key, for mutual TLS.")
    socket_timeout_s: float = Field(default=10.0, gt=0, description="Socket timeout for Redis commands.")
    health_check_interval_s: int = Field(default=15, ge=0, description="Ping idle connections this often.")


class BatchSettings(BaseModel):
    max_size: int = Field(default=16, ge=1, le=4096, description="Largest batch (capped by the engine's max).")
    max_delay_ms: float = Field(
        default=2.0, ge=0, le=60_000, description="Longest a request waits for its batch to fill."
    )
    preferred_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Batch sizes dispatched at once when reached (e.g. 4,8 or [4,8])."
    )
    max_queued: int | None = Field(
        default=None,
        ge=1,
        description="Requests held in the worker before reading pauses. Default: 2 x max_size x slots, so a "
        "busy worker does not hoard what idle ones could serve.",
    )

    @field_validator("preferred_sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: Any) -> Any:
        """Accept ``4,8`` and ``4 8`` as well as the JSON ``[4,8]`` (environment variables are plain text)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of integers: {text!r}") from exc
        return [part for part in text.replace(",", " ").split()]

    @field_validator("preferred_sizes")
    @classmethod
    def _positive_sorted(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("preferred sizes must be >= 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _within_max(self) -> BatchSettings:
        if any(size > self.max_size for size in self.preferred_sizes):
            raise ValueError(f"preferred sizes {self.preferred_sizes} must not exceed max_size {self.max_size}")
        return self


def _json_text(value: Any) -> Any:
    """A JSON document given as text (a flag) decoded; what the environment source decoded passes as is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {value!r}") from exc
    return value


class ModelSettings(BaseModel):
    path: Path | None = Field(default=None, description="Model file (.onnx, or a TensorRT .engine/.plan).")
    name: str | None = Field(default=None, description="Model name requests must carry. Default: file stem.")
    version: str | None = Field(default=None, description="Served version; requests naming another are refused.")
    warmup: Annotated[list[dict[str, list[int]]] | None, BeforeValidator(_json_text)] = Field(
        default=None,
        description='Warm-up runs on every slot before ready: JSON list of {input: shape}, e.g. [{"x": [8, 3, 224, '
        "224]}] ([]: none). Default: each preferred batch size and the max batch size, dynamic dims 1.",
    )


class OnnxSettings(BaseModel):
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime intra-op threads (0: its default).")
    sessions: int = Field(default=1, ge=1, le=64, description="Concurrent ONNX Runtime runs (execution slots).")
    allow_spinning: bool = Field(
        default=False, description="Let ONNX Runtime threads spin between runs (faster only on idle cores)."
    )
    inline_max_us: float = Field(
        default=200.0, ge=0, le=10_000,
        description="Run a batch on the event loop, without a thread hop, when that many rows last ran in at "
        "most this many microseconds (0: always in a thread).",
    )  # fmt: skip


class TensorRTSettings(BaseModel):
    device: int = Field(default=0, ge=0, description="CUDA device ordinal; run one worker process per GPU.")
    contexts: int = Field(default=2, ge=1, le=32, description="Execution contexts, each on its own CUDA stream.")
    cuda_graphs: bool = Field(default=False, description="Capture a CUDA graph per batch size (not run here).")


class StreamSettings(BaseModel):
    block_ms: int = Field(default=1000, ge=1, description="XREADGROUP BLOCK timeout.")
    read_count: int = Field(default=64, ge=1, description="XREADGROUP COUNT: entries fetched per read.")
    reply_maxlen: int = Field(default=10_000, ge=1, description="Approximate MAXLEN of each reply stream.")
    reply_ttl_s: int = Field(default=300, ge=1, description="Reply streams expire this long after the last reply.")
    reply_prefix: str = Field(
        default=keys.DEFAULT_REPLY_PREFIX,
        description="Replies go only to keys with this prefix (the SDK's default); others are dead-lettered.",
    )
    reply_prefixes: Annotated[list[str] | None, BeforeValidator(_json_text)] = Field(
        default=None,
        description='Tenants\' reply prefixes (JSON list, e.g. ["infer:reply:alpha:"]): replies go only to keys '
        "under one of them (and more than the bare prefix). Default: [reply_prefix].",
    )

    @field_validator("reply_prefixes")
    @classmethod
    def _prefixes_given(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(value)):
            raise ValueError("reply_prefixes must list at least one prefix, none empty")
        return value

    @property
    def allowed_reply_prefixes(self) -> tuple[str, ...]:
        """The reply prefixes in force: ``reply_prefixes`` if set, else ``reply_prefix`` alone."""
        return tuple(self.reply_prefixes) if self.reply_prefixes is not None else (self.reply_prefix,)

    dead_letter_stream: str | None = Field(
        default=None, description="Where undeliverable entries go. Default: '<stream>:dead'."
    )
    dead_letter_maxlen: int = Field(
        default=100_000, ge=0, description="Approximate MAXLEN of the dead-letter stream (0: unbounded)."
    )
    dead_letter_max_field_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        description="Dead-letter records keep at most this many bytes of each request field (the body is cut).",
    )
    default_timeout_ms: int | None = Field(
        default=None, ge=1, description="Deadline for requests that set none; a request may only shorten it."
    )
    max_backlog: int = Field(
        default=0, ge=0, description="Producers get BUSY past this many unacknowledged entries (0: unbounded)."
    )


class LimitsSettings(BaseModel):
    """Decode limits (see ``redis_infer_protocol.limits.Limits``); an entry over a limit gets a TOO_LARGE reply."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Largest request body.")
    max_tensors: int = Field(default=64, ge=1, description="Most input tensors in one request.")
    max_rank: int = Field(default=8, ge=1, description="Highest tensor rank.")
    max_elements: int = Field(default=64 * 1024 * 1024, ge=1, description="Most elements in one request.")

    def to_codec(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_tensors=self.max_tensors,
            max_rank=self.max_rank,
            max_elements=self.max_elements,
        )


class HttpSettings(BaseModel):
    host: str = Field(default="0.0.0.0", description="Address of the health and metrics server.")
    port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve /livez, /readyz, /metrics here (unset: off; 0: any port)."
    )


class RecoverySettings(BaseModel):
    """Taking over entries that dead consumers left pending (see worker/recovery.py)."""

    enabled: bool = Field(default=True, description="Run the claimer, the trimmer and consumer clean-up.")
    interval_s: float = Field(default=1.0, gt=0, description="Seconds between recovery (and trimming) rounds.")
    min_idle_ms: int = Field(
        default=30_000, ge=1, description="Claim entries pending this long whose consumer is gone."
    )
    stuck_ms: int = Field(
        default=600_000, ge=1, description="Claim entries pending this long even from a live consumer."
    )
    max_deliveries: int = Field(default=3, ge=1, description="Past this many deliveries an entry is dead-lettered.")
    count: int = Field(default=100, ge=1, description="Most entries examined per round.")
    trim: bool = Field(default=True, description="XTRIM MINID below the oldest unacknowledged entry each round.")


class Settings(BaseSettings):
    """All worker settings. Environment: ``WORKER_<FIELD>`` and ``WORKER_<SECTION>__<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    stream: str = Field(default=keys.DEFAULT_STREAM, min_length=1, description="Request stream key.")
    group: str = Field(default=keys.DEFAULT_GROUP, min_length=1, description="Consumer group name.")
    consumer: str = Field(default_factory=_default_consumer, min_length=1, description="This worker's name.")
    backend: Literal["onnxruntime", "tensorrt"] = Field(default="onnxruntime", description="Engine backend.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    health_ttl_s: int = Field(default=10, ge=2, description="TTL of the worker's health key.")
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="SIGTERM: time allowed to finish in-flight work.")

    redis: RedisSettings = Field(default_factory=RedisSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    onnx: OnnxSettings = Field(default_factory=OnnxSettings)
    tensorrt: TensorRTSettings = Field(default_factory=TensorRTSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    model_repository: Path | None = Field(
        default=None,
        description="Serve every model of this folder (one sub-folder with a config.toml each; docs/operations.md) "
        "instead of model.path. --models a,b serves some of them.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        rec = self.recovery
        if rec.min_idle_ms < 10 * self.batch.max_delay_ms:
            raise ValueError(
                f"recovery.min_idle_ms ({rec.min_idle_ms}) must be well above batch.max_delay_ms "
                f"({self.batch.max_delay_ms}): at least 10x, or live work gets claimed twice"
            )
        if rec.stuck_ms < rec.min_idle_ms:
            raise ValueError(f"recovery.stuck_ms ({rec.stuck_ms}) must not be below min_idle_ms ({rec.min_idle_ms})")
        if self.streams.max_backlog and not (rec.enabled and rec.trim):
            raise ValueError(
                "streams.max_backlog needs recovery.enabled and recovery.trim: only trimming takes acknowledged "
                "entries out of the backlog producers measure"
            )
        return self

    @property
    def dead_letter_stream(self) -> str:
        return self.streams.dead_letter_stream or keys.dead_letter_stream(self.stream)

    @property
    def model_name(self) -> str:
        if self.model.name:
            return self.model.name
        if self.model.path is None:
            raise ConfigError("no model: set WORKER_MODEL__PATH or pass --model")
        return self.model.path.stem


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable behind a pydantic error location, e.g. ('batch','max_size')."""
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in loc if isinstance(part, str))


@dataclass(slots=True, frozen=True)
class SettingField:
    """One leaf setting: its path in the model (``("batch", "max_size")``) and its pydantic field."""

    path: tuple[str, ...]
    info: FieldInfo

    @property
    def env(self) -> str:
        return env_name(self.path)

    @property
    def flag(self) -> str:
        return "--" + "-".join(self.path).replace("_", "-")


def setting_fields(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> Iterator[SettingField]:
    """Every leaf setting of ``model`` in declaration order, nested sections flattened."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_fields(annotation, (*prefix, name))
        else:
            yield SettingField((*prefix, name), info)


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``WORKER_*`` names in ``environ`` that are no setting, each with the closest setting's name (or None)."""
    known = {field.env for field in setting_fields()}
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)
            unknown.append((name, close[0] if close else None))
    return unknown


def _environment() -> dict[str, str]:
    """The process environment, plus ``.env`` (which pydantic-settings also reads)."""
    names = dict(os.environ)
    dotenv = Path(".env")
    if dotenv.is_file():
        from dotenv import dotenv_values

        names.update({k: v or "" for k, v in dotenv_values(dotenv).items()})
    return names


def check_variables(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a ``WORKER_*`` variable that looks like a misspelled setting; warn about other unknown ones.

    Raises:
        ConfigError: naming each misspelled variable and the setting it probably meant.
    """
    typos: list[str] = []
    others: list[str] = []
    for name, close in unknown_variables(_environment() if environ is None else environ):
        (typos if close else others).append(f"{name} (did you mean {close}?)" if close else name)
    if others:
        log.warning("ignoring unknown variables %s: no worker setting has these names", ", ".join(others))
    if typos:
        raise ConfigError(f"unknown configuration variables: {'; '.join(typos)}")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print and log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with no secret in it (SecretStr fields and URL passwords masked)."""
    data = settings.model_dump(mode="json")
    if settings.redis.url:
        data["redis"]["url"] = redact_url(settings.redis.url)
    return data


def load_settings(*, check_env: bool = True, **overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; ``overrides`` (from the CLI) win.

    Args:
        check_env: refuse misspelled ``WORKER_*`` variables first (see ``check_variables``).
        **overrides: nested dicts of values that win over the environment.

    Raises:
        ConfigError: naming each invalid (or misspelled) variable and why.
    """
    if check_env:
        check_variables()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from None
