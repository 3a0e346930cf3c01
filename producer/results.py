"""Results fetched later by request id (issue 13, item 5), in the spirit of Celery's ``AsyncResult``.

A request sent with :func:`submit_detached` names its own reply stream, ``infer:reply:result:<id>``
(``keys.result_stream``); the worker answers it like any reply stream: it writes the reply, caps the stream
and sets its TTL (``WORKER_STREAMS__REPLY_TTL_S``, default 300 s). Any process that knows the id reads the
result with :func:`fetch_result` until the TTL passes. No worker change is needed.

Cost (docs/protocol.md §10): one Redis key per request instead of one per client, holding one reply
(the outputs' bytes plus about 200 bytes) for the TTL; the reply is written once and read any number of
times. A result nobody fetches stays until the TTL: at R requests/s that is R x TTL keys and
R x TTL x reply size of memory (1,000/s x 300 s x 1 KB = 300 MB), so lower the TTL or
``delete=True`` on fetch for high rates. Backpressure (``:limits``) is not checked here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from redis_infer_protocol import keys
from redis_infer_protocol.codec import Reply, decode_reply, encode_request

__all__ = ["fetch_result", "submit_detached"]


def submit_detached(
    redis: Any,
    model: str,
    inputs: Mapping[str, Any],
    *,
    stream: str | None = None,
    model_version: str | None = None,
    timeout_s: float | None = None,
    request_id: str | None = None,
    reply_prefix: str = keys.DEFAULT_REPLY_PREFIX,
) -> str:
    """Add one request whose result is kept under its id; returns the id (give it to whoever fetches).

    Args:
        redis: a sync redis-py client (``decode_responses=False``).
        model: the model name; ``stream`` None routes to ``keys.model_stream(model, model_version)``.
        inputs: input name -> array.
        stream: the request stream; None: the model's own.
        model_version: the version to ask for.
        timeout_s: the request's deadline (the worker answers EXPIRED after it).
        request_id: the id (1-128 of ``[A-Za-z0-9._-]``); default a random hex id.
        reply_prefix: a reply prefix the workers allow.
    """
    request_id = request_id or uuid.uuid4().hex
    reply_to = keys.result_stream(request_id, reply_prefix)
    timeout_ms = None if timeout_s is None else max(1, round(timeout_s * 1000))
    fields = encode_request(request_id, reply_to, model, inputs, model_version=model_version, timeout_ms=timeout_ms)
    target = stream if stream is not None else keys.model_stream(model, model_version)
    redis.xadd(target, fields)
    return request_id


def fetch_result(
    redis: Any,
    request_id: str,
    *,
    wait_s: float = 0.0,
    delete: bool = False,
    reply_prefix: str = keys.DEFAULT_REPLY_PREFIX,
) -> Reply | None:
    """The reply of a request sent with :func:`submit_detached`, or None if it is not there (yet, or any
    more: past the TTL).

    Args:
        redis: a sync redis-py client.
        request_id: the id :func:`submit_detached` returned.
        wait_s: wait this long for the reply to arrive (0: look once).
        delete: delete the result once read (it is otherwise kept until its TTL).
        reply_prefix: the prefix it was sent with.
    """
    key = keys.result_stream(request_id, reply_prefix)
    deadline = time.monotonic() + wait_s
    while True:
        entries = redis.xrange(key, count=1)
        if entries:
            reply = decode_reply(entries[0][1])
            if delete:
                redis.delete(key)
            return reply
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return None
        redis.xread({key: "0-0"}, count=1, block=min(left_ms, 1000))  # short blocks: under any socket timeout
