"""What the two client shells share besides the core: construction, the Redis commands they queue, facts.

:class:`~producer.client.Client` and :class:`~producer.aio.AsyncClient` subclass :class:`ClientShell`. The
commands of a send round and of a reply read are packed here as RESP bytes (:mod:`producer.wire`); the shells
only write them on a connection of either redis-py flavour, read the replies, and sleep where told.
"""

from __future__ import annotations

from typing import Any, Generic

from producer.backpressure import ADD_SCRIPT_SHA, Backpressure, OnBusy
from producer.core import READ_COUNT, ClientConfig, ClientCore, ClientStats, F, PreparedRequest, ReplyCursor
from producer.submission import SendRound, Submission
from producer.wire import Wire, read_command


class ClientShell(Generic[F]):
    """The state both clients hold, and the read-only facts they expose.

    Args:
        config: The validated options.
        on_busy: The busy policy (see :class:`~producer.backpressure.Backpressure`).
        redis: The Redis client (sync or asyncio) the shell talks through.
        owns_redis: Whether closing the shell closes ``redis``.

    Raises:
        ValueError: If ``on_busy`` is unknown or ``redis`` decodes responses.
    """

    def __init__(self, config: ClientConfig, on_busy: OnBusy, redis: Any, *, owns_redis: bool) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must be created with decode_responses=False")
        self._backpressure = Backpressure(config.stream, on_busy)
        self._core: ClientCore[F] = ClientCore(config)
        self._owns_redis = owns_redis
        self._wire = Wire(config.stream, ADD_SCRIPT_SHA)
        self._reply_key_bytes = self._core.reply_key.encode()

    def _submission(
        self, prepared: list[PreparedRequest], futures: list[F], *, raise_errors: bool = False
    ) -> Submission[F]:
        self._core.register(prepared, futures)
        return Submission(self._core, self._backpressure, prepared, futures, raise_errors=raise_errors)

    def _result_timeout_s(self, timeout: float | None) -> float | None:
        return self._core.config.default_timeout_s if timeout is None else timeout

    def _round_bytes(self, action: SendRound) -> bytes:
        """A send round as one RESP byte string (see :mod:`producer.wire`); it gets ``action.commands`` replies."""
        heads = [p.head for p in action.requests]
        bodies = [p.body for p in action.requests]
        if action.scripted:
            return self._wire.scripts(heads, bodies, action.max_backlog)[0]
        return self._wire.xadds(heads, bodies)

    def _read_bytes(self, cursor: ReplyCursor) -> tuple[bytes, int]:
        """The XDEL of what the last read consumed (if anything) and the next XREAD, and how many replies they get."""
        key = self._reply_key_bytes
        payload = read_command(key, cursor.last_id, READ_COUNT, self._core.block_ms(), cursor.to_delete)
        return payload, 2 if cursor.to_delete else 1

    @property
    def model(self) -> str:
        """The model requests ask for."""
        return self._core.config.model

    @property
    def stream(self) -> str:
        """The request stream."""
        return self._core.config.stream

    @property
    def reply_stream(self) -> str:
        """This client's private reply stream key."""
        return self._core.reply_key

    @property
    def stats(self) -> ClientStats:
        """A snapshot of this client's counters."""
        return self._core.stats

    @property
    def pending(self) -> int:
        """How many requests are waiting for a reply."""
        return self._core.pending_count
