"""What the two client shells share besides the core: construction, the Redis commands they queue, facts.

:class:`~producer.client.Client` and :class:`~producer.aio.AsyncClient` subclass :class:`ClientShell`. The
commands of a send round and of a reply read are queued here on a pipeline of either redis-py flavour
(queuing does not block or await in either); the shells only execute them and sleep where told.
"""

from __future__ import annotations

from typing import Any, Generic

from producer.backpressure import Backpressure, OnBusy
from producer.core import READ_COUNT, ClientConfig, ClientCore, ClientStats, F, PreparedRequest, ReplyCursor
from producer.submission import AddEntry, SendRound, Submission


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

    def _submission(
        self, prepared: list[PreparedRequest], futures: list[F], *, raise_errors: bool = False
    ) -> Submission[F]:
        self._core.register(prepared, futures)
        return Submission(self._core, self._backpressure, prepared, futures, raise_errors=raise_errors)

    def _result_timeout_s(self, timeout: float | None) -> float | None:
        return self._core.config.default_timeout_s if timeout is None else timeout

    @staticmethod
    def _add(target: Any, action: SendRound, add: AddEntry) -> Any:
        """Call one add on ``target``: queue it on a pipeline, or send it (the coroutine, for asyncio)."""
        if add.script_args is None:
            return target.xadd(action.stream, add.fields)
        return target.evalsha(action.sha, 1, action.stream, *add.script_args)

    def _queue_round(self, pipe: Any, action: SendRound) -> None:
        """Queue a send round's commands on a pipeline (sync or asyncio: queuing neither blocks nor awaits)."""
        for add in action.adds:
            self._add(pipe, action, add)

    def _read_args(self, cursor: ReplyCursor) -> dict[str, Any]:
        """Keyword arguments of the next XREAD of the reply stream."""
        return {"streams": {self._core.reply_key: cursor.last_id}, "count": READ_COUNT, "block": self._core.block_ms()}

    def _queue_read(self, pipe: Any, cursor: ReplyCursor) -> None:
        """Queue the XDEL of what the last read consumed and the next XREAD, for one round trip."""
        pipe.xdel(self._core.reply_key, *cursor.to_delete)
        pipe.xread(**self._read_args(cursor))

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
