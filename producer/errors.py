"""The producer SDK's exception hierarchy.

Everything the SDK raises on purpose is an :class:`InferError`. Failures reported by a worker are
:class:`ServerError` subclasses chosen by the reply's :class:`~redis_infer_protocol.codec.Status` (see
:func:`error_for`); failures found before anything is sent are :class:`InvalidInput`. Errors of the
Redis connection itself (``redis.exceptions.RedisError``) are not wrapped.
"""

from __future__ import annotations

from typing import Final

from redis_infer_protocol.codec import Reply, Status


class InferError(Exception):
    """Base of every error the SDK raises on purpose."""


class ClientClosed(InferError):
    """The client was closed: raised by calls after ``close()`` and set on requests still pending then."""


class InferTimeout(InferError, TimeoutError):
    """No reply arrived before the request's deadline.

    Attributes:
        request_id: The id of the request that timed out.
        timeout_s: The deadline it was given, in seconds from submission.
    """

    def __init__(self, message: str, *, request_id: str | None = None, timeout_s: float | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.timeout_s = timeout_s


class InvalidInput(InferError, ValueError):
    """The request cannot be encoded (bad dtype, no inputs, bad parameter...). Nothing was sent."""


class ServerError(InferError):
    """A worker answered with a status other than OK.

    Attributes:
        status: The reply's status.
        request_id: The id of the failed request.
        reply: The whole decoded reply (its ``error`` holds the worker's message).
    """

    def __init__(self, message: str, *, status: Status, request_id: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.reply = reply


class InvalidRequest(ServerError):
    """The worker rejected the request itself: wrong input name/dtype/shape, undecodable, too large, bad version."""


class ModelNotFound(ServerError):
    """The worker does not serve the requested model (or model version)."""


class Expired(ServerError):
    """The request's deadline passed before the worker started computing it."""


class Busy(ServerError):
    """The worker shed the request under backpressure; retrying later may succeed."""


_ERROR_BY_STATUS: Final[dict[Status, type[ServerError]]] = {
    Status.INVALID_ARGUMENT: InvalidRequest,
    Status.MALFORMED: InvalidRequest,
    Status.TOO_LARGE: InvalidRequest,
    Status.UNSUPPORTED_VERSION: InvalidRequest,
    Status.MODEL_NOT_FOUND: ModelNotFound,
    Status.EXPIRED: Expired,
    Status.BUSY: Busy,
    Status.INTERNAL: ServerError,
    Status.UNAVAILABLE: ServerError,
}


def error_for(reply: Reply) -> ServerError:
    """The exception that stands for a non-OK reply.

    Args:
        reply: A decoded reply whose status is not ``Status.OK``.

    Returns:
        An instance of the :class:`ServerError` subclass for the reply's status, carrying the reply.

    Raises:
        ValueError: If the reply's status is OK.
    """
    if reply.status is Status.OK:
        raise ValueError(f"reply {reply.id!r} is OK: it is not an error")
    cls = _ERROR_BY_STATUS.get(reply.status, ServerError)
    message = f"{reply.status.value}: {reply.error or 'no message'} (request {reply.id})"
    return cls(message, status=reply.status, request_id=reply.id, reply=reply)
