"""One client test suite, run against both clients (parametrized: the sync Client and the AsyncClient).

Each test drives a client through ``tests.client_drivers.Driver``, the blocking API of ``producer.Client``
over either client, against a real redis-server and a fake worker thread. Tests of what only one client
has (a reply callback on the listener thread; cancelling an awaiting task) are at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from producer import (
    AsyncClient,
    Busy,
    Client,
    ClientClosed,
    Expired,
    InferError,
    InferTimeout,
    InvalidInput,
    InvalidRequest,
    ModelNotFound,
    ServerError,
    Status,
    error_for,
)
from redis_infer_protocol import keys
from redis_infer_protocol.codec import Reply, Request, encode_reply
from redis_infer_protocol.limits import Limits
from tests.client_drivers import KINDS, STREAM, WAIT_S, Driver, FakeWorker, Kind, doubler

pytestmark = pytest.mark.integration

MakeClient = Callable[..., Driver]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    k: Kind = request.param
    return k


@pytest.fixture
def make_client(kind: Kind, redis_url: str) -> Iterator[MakeClient]:
    """Open clients of this test's kind; every one is closed at the end."""
    opened: list[Driver] = []

    def make(**options: Any) -> Driver:
        options.setdefault("url", redis_url)
        driver = Driver(kind, **options)
        opened.append(driver)
        return driver

    yield make
    for driver in opened:
        driver.shutdown()


@pytest.fixture
def worker(redis_url: str) -> Iterator[FakeWorker]:
    with FakeWorker(redis_url) as fake:
        yield fake


@pytest.fixture
def client(make_client: MakeClient) -> Driver:
    return make_client()


def send_reply(redis_client: redis.Redis, client: Driver, request_id: str, status: Status = Status.OK) -> None:
    """Play the worker by hand: put a reply on the client's reply stream."""
    redis_client.xadd(client.reply_stream, encode_reply(request_id, status, outputs={"y": np.ones(1)}))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ round trips


def test_infer_round_trip(worker: FakeWorker, client: Driver) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    outputs = client.infer({"x": x})
    assert outputs["y"].dtype == np.float32
    np.testing.assert_array_equal(outputs["y"], x * 2)
    request = worker.received[0]
    assert request.model == "double"
    assert request.reply_to == client.reply_stream
    assert request.timeout_ms == WAIT_S * 1000


def test_submit_sends_options_and_returns_full_reply(worker: FakeWorker, client: Driver) -> None:
    future = client.submit(
        {"x": np.ones((2, 2), np.int64)},
        timeout=2.5,
        priority=3,
        parameters={"temperature": 0.5, "greedy": True},
        outputs=["y"],
        request_id="req-1",
    )
    reply = future.result(WAIT_S)
    assert isinstance(reply, Reply)
    assert (reply.id, reply.status, reply.model, reply.worker, reply.batch_size) == (
        "req-1",
        Status.OK,
        "double",
        "fake",
        1,
    )
    assert 0 < reply.timing.enqueued_ns <= reply.timing.published_ns
    request = worker.received[0]
    assert (request.id, request.timeout_ms, request.priority, request.outputs) == ("req-1", 2500, 3, ("y",))
    assert request.parameters == {"temperature": 0.5, "greedy": True}
    assert client.pending == 0
    assert client.stats.submitted == client.stats.replies == 1


def test_no_default_deadline_sends_no_timeout(worker: FakeWorker, make_client: MakeClient) -> None:
    c = make_client(default_timeout_s=None)
    future = c.submit({"x": np.ones(3, np.uint8)})
    np.testing.assert_array_equal(future.result(WAIT_S).outputs["y"], np.full(3, 2, np.uint8))
    assert worker.received[0].timeout_ms is None


def test_resp3_connection(worker: FakeWorker, make_client: MakeClient, kind: Kind, redis_url: str) -> None:
    c = make_client(url=None, redis=own_redis(kind, redis_url, protocol=3))
    for _ in range(3):  # the second read is pipelined with the XDEL of the first
        np.testing.assert_array_equal(c.infer({"x": np.arange(3)})["y"], [0, 2, 4])


def test_many_concurrent_submits_all_answered(worker: FakeWorker, client: Driver) -> None:
    # Sync: 16 threads share the client. Async: the 16 threads' calls interleave on the client's loop.
    def one(i: int) -> None:
        x = np.full((2, 3), i, dtype=np.int32)
        outputs = client.infer({"x": x})
        np.testing.assert_array_equal(outputs["y"], x * 2)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(200)))
    stats = client.stats
    assert (stats.submitted, stats.replies, stats.timeouts, client.pending) == (200, 200, 0, 0)


def _commands(payload: Any, name: bytes) -> int:
    """How many commands called ``name`` a packed write carries (a command's first bulk string)."""
    data = b"".join(payload) if isinstance(payload, list | tuple) else bytes(payload)
    return data.count(b"\r\n$%d\r\n%b\r\n" % (len(name), name))


class SpyConnection(redis.Connection):
    """Records the XADDs of every write that carries some (``writes``: one count per write), and fails the first
    ``fail_sends`` of those writes and the first ``fail_reads`` writes of an XREAD as if the connection dropped.

    The state is on the class: :func:`spy_redis` makes a fresh subclass per client.
    """

    writes: list[int] = []
    attempts = 0
    fail_sends = 0
    fail_reads = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _spy(type(self), command)
        super().send_packed_command(command, check_health)


class AsyncSpyConnection(aioredis.Connection):
    """SpyConnection for the async client."""

    writes: list[int] = []
    attempts = 0
    fail_sends = 0
    fail_reads = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _spy(type(self), command)
        await super().send_packed_command(command, check_health)


def _spy(cls: Any, command: Any) -> None:
    if cls.fail_reads and _commands(command, b"XREAD"):
        cls.fail_reads -= 1
        raise redis.ConnectionError("connection reset by test")
    xadds = _commands(command, b"XADD")
    if not xadds:
        return
    cls.attempts += 1
    if cls.fail_sends:
        cls.fail_sends -= 1
        raise redis.ConnectionError("connection reset by test")
    cls.writes.append(xadds)


def spy_redis(kind: Kind, url: str, *, fail_sends: int = 0, fail_reads: int = 0) -> Any:
    """A Redis client for a client of ``kind`` whose connections are a fresh spy class (see ``SpyConnection``)."""
    base = SpyConnection if kind == "sync" else AsyncSpyConnection
    cls = type("Spy", (base,), {"writes": [], "fail_sends": fail_sends, "fail_reads": fail_reads})
    return own_redis(kind, url, connection_class=cls)


def own_redis(kind: Kind, url: str, cls: type[Any] | None = None, **kwargs: Any) -> Any:
    """A Redis client to hand to a client of ``kind``: an instance (sync) or a factory run on its loop (async).

    ``cls`` is a subclass of ``redis.Redis`` (sync) or ``redis.asyncio.Redis`` (async); default the plain one.
    """
    if kind == "sync":
        return (cls or redis.Redis).from_url(url, **kwargs)
    return lambda: (cls or aioredis.Redis).from_url(url, **kwargs)


def spy_of(client: Driver) -> Any:
    """The spy connection class of a driver's client (made by :func:`spy_redis`)."""
    return client.client._redis.connection_pool.connection_class


def test_submit_many_sends_one_pipeline(
    worker: FakeWorker, make_client: MakeClient, kind: Kind, redis_url: str
) -> None:
    c = make_client(url=None, redis=spy_redis(kind, redis_url))
    xs = [np.full(4, i, np.float64) for i in range(50)]
    futures = c.submit_many([{"x": x} for x in xs], request_ids=[f"r{i}" for i in range(50)])
    replies = [f.result(WAIT_S) for f in futures]
    assert spy_of(c).writes == [50]  # one write carries all 50
    assert [r.id for r in replies] == [f"r{i}" for i in range(50)]
    for x, reply in zip(xs, replies, strict=True):
        np.testing.assert_array_equal(reply.outputs["y"], x * 2)


@pytest.mark.parametrize("retries", [0, 2])
def test_connection_errors_are_retried_with_the_same_request(
    worker: FakeWorker, make_client: MakeClient, kind: Kind, redis_url: str, retries: int
) -> None:
    c = make_client(url=None, retries=retries, redis=spy_redis(kind, redis_url, fail_sends=2))
    if retries == 0:
        with pytest.raises(redis.ConnectionError):
            c.submit({"x": np.ones(1)}, request_id="r")
        assert c.pending == 0
        return
    assert c.submit({"x": np.ones(1)}, request_id="r").result(WAIT_S).id == "r"
    assert (spy_of(c).attempts, spy_of(c).writes) == (3, [1])  # two failed sends, then the one that reached Redis
    assert [r.id for r in worker.received] == ["r"]
    spy_of(c).fail_sends = 1  # and a pipeline of them
    futures = c.submit_many([{"x": np.ones(1)}] * 2, request_ids=["m1", "m2"])
    assert [f.result(WAIT_S).id for f in futures] == ["m1", "m2"]
    assert spy_of(c).writes == [1, 2]


def test_backlog_limit_raises_busy_and_adds_nothing(make_client: MakeClient, redis_client: redis.Redis) -> None:
    redis_client.hset(keys.limits_key(STREAM), "max_backlog", 2)
    c = make_client()
    c.submit({"x": np.ones(1)}, request_id="a")
    with pytest.raises(Busy, match="BACKLOG"):
        c.submit_many([{"x": np.ones(1)}] * 3, request_ids=["b", "c", "d"])[2].result(WAIT_S)
    with pytest.raises(Busy) as caught:
        c.submit({"x": np.ones(1)}, request_id="e")
    assert (caught.value.status, caught.value.request_id) == (Status.BUSY, "e")
    assert redis_client.xlen(STREAM) == 2
    assert c.pending == 2  # "a" and "b" were added; "c", "d" and "e" are forgotten


def test_wait_mode_gives_up_at_the_deadline(make_client: MakeClient, redis_client: redis.Redis) -> None:
    redis_client.hset(keys.limits_key(STREAM), "max_backlog", 1)
    c = make_client(on_busy="wait")
    c.submit({"x": np.ones(1)})
    started = time.monotonic()
    with pytest.raises(Busy):
        c.submit({"x": np.ones(1)}, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert (redis_client.xlen(STREAM), c.pending) == (1, 1)


def test_failed_xadd_fails_only_that_request(client: Driver, redis_client: redis.Redis) -> None:
    redis_client.set(STREAM, "not a stream")
    with pytest.raises(redis.ResponseError):
        client.submit({"x": np.ones(1)})
    futures = client.submit_many([{"x": np.ones(1)}, {"x": np.ones(2)}])
    for future in futures:
        assert isinstance(future.exception(WAIT_S), redis.ResponseError)
    assert client.pending == 0


def test_bytes_tensors_round_trip(redis_url: str, client: Driver) -> None:
    def echo(request: Request, entry_id: bytes) -> list[dict[str, bytes]]:
        return [encode_reply(request.id, Status.OK, outputs=request.inputs)]

    with FakeWorker(redis_url, echo):
        outputs = client.infer({"text": np.array(["héllo", "", "world"]), "raw": np.array([b"\x00\xff"], dtype=object)})
    assert outputs["text"].tolist() == ["héllo".encode(), b"", b"world"]
    assert outputs["raw"].tolist() == [b"\x00\xff"]


# -------------------------------------------------------------------------------------------- failures


def test_client_side_timeout(client: Driver, redis_client: redis.Redis) -> None:
    started = time.monotonic()
    with pytest.raises(InferTimeout) as caught:
        client.infer({"x": np.ones(1)}, timeout=0.2, request_id="slow")
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.2 + 2.0
    assert isinstance(caught.value, TimeoutError)
    assert (caught.value.request_id, caught.value.timeout_s) == ("slow", 0.2)
    assert client.pending == 0
    assert client.stats.timeouts == 1
    # The reply comes after all: dropped and counted as late. A second request is the barrier: the
    # listener reads the stream in order, so once it is answered the late reply has been handled.
    send_reply(redis_client, client, "slow")
    barrier = client.submit({"x": np.ones(1)}, request_id="barrier")
    send_reply(redis_client, client, "barrier")
    assert barrier.result(WAIT_S).id == "barrier"
    assert client.stats.late_replies == 1


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (Status.INVALID_ARGUMENT, InvalidRequest),
        (Status.MALFORMED, InvalidRequest),
        (Status.TOO_LARGE, InvalidRequest),
        (Status.UNSUPPORTED_VERSION, InvalidRequest),
        (Status.MODEL_NOT_FOUND, ModelNotFound),
        (Status.EXPIRED, Expired),
        (Status.BUSY, Busy),
        (Status.INTERNAL, ServerError),
        (Status.UNAVAILABLE, ServerError),
    ],
)
def test_error_status_raises_its_exception(
    redis_url: str, client: Driver, status: Status, error_class: type[ServerError]
) -> None:
    def failing(request: Request, entry_id: bytes) -> list[dict[str, bytes]]:
        return [encode_reply(request.id, status, error="boom")]

    with FakeWorker(redis_url, failing), pytest.raises(ServerError) as caught:
        client.infer({"x": np.ones(1)}, request_id="bad-1")
    error = caught.value
    assert type(error) is error_class
    assert isinstance(error, InferError)
    assert (error.status, error.request_id) == (status, "bad-1")
    assert error.reply is not None and error.reply.error == "boom"
    assert "boom" in str(error) and status.value in str(error)


def test_error_for_refuses_ok() -> None:
    with pytest.raises(ValueError, match="OK"):
        error_for(Reply("r", Status.OK))


def test_duplicate_reply_resolves_once_and_is_counted(redis_url: str, client: Driver) -> None:
    def twice_for_dup(request: Request, entry_id: bytes) -> list[dict[str, bytes]]:
        replies = doubler(request, entry_id)
        return replies * 2 if request.id == "dup" else replies

    with FakeWorker(redis_url, twice_for_dup):
        np.testing.assert_array_equal(client.infer({"x": np.ones(2)}, request_id="dup")["y"], [2, 2])
        client.infer({"x": np.ones(2)}, request_id="barrier")  # both copies of "dup" come before it
    stats = client.stats
    assert (stats.replies, stats.duplicate_replies, stats.late_replies) == (2, 1, 0)


def test_reply_for_unknown_request_is_dropped(client: Driver, redis_client: redis.Redis) -> None:
    send_reply(redis_client, client, "never-sent")
    barrier = client.submit({"x": np.ones(1)}, request_id="barrier")
    send_reply(redis_client, client, "barrier")
    barrier.result(WAIT_S)
    assert client.stats.unknown_replies == 1


def test_listener_survives_garbage_replies(worker: FakeWorker, client: Driver, redis_client: redis.Redis) -> None:
    garbage: list[dict[str, Any]] = [
        {"v": "1", "id": "g1", "body": b"\xc1"},  # not msgpack
        {"v": "7", "id": "g2", "body": b"\x80"},  # unknown version
        {"foo": "bar"},  # no fields at all
        {"v": "1", "id": "g3", "body": b"\x81\xa6status\xa4NOPE"},  # unknown status
    ]
    garbage_ids = [redis_client.xadd(client.reply_stream, fields) for fields in garbage]
    np.testing.assert_array_equal(client.infer({"x": np.arange(3)})["y"], [0, 2, 4])
    assert client.stats.undecodable_replies == len(garbage)
    # Consumed entries are deleted with the next read, so after another round trip they are gone.
    client.infer({"x": np.arange(3)})
    assert redis_client.xrange(client.reply_stream, garbage_ids[0], garbage_ids[-1]) == []
    assert redis_client.xlen(client.reply_stream) <= 1


def test_listener_survives_lost_connection(
    worker: FakeWorker, make_client: MakeClient, redis_client: redis.Redis
) -> None:
    # retries: a send on a pooled connection that Redis is closing fails, and with the default retries=0
    # reaches the caller (documented); the test is about the listener, which always retries its reads.
    client = make_client(retries=2)
    client.infer({"x": np.ones(1)})
    killed = redis_client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    np.testing.assert_array_equal(client.infer({"x": np.ones(1)})["y"], [2])
    assert client.stats.read_errors >= 1


def test_listener_backs_off_and_recovers_from_read_errors(
    worker: FakeWorker, make_client: MakeClient, kind: Kind, redis_url: str
) -> None:
    c = make_client(url=None, redis=spy_redis(kind, redis_url, fail_reads=2))
    np.testing.assert_array_equal(c.infer({"x": np.ones(1)}, timeout=WAIT_S)["y"], [2])
    assert c.stats.read_errors == 2


def test_cancel_forgets_request(client: Driver) -> None:
    future = client.submit({"x": np.ones(1)})
    assert client.pending == 1
    assert future.cancel()
    assert client.pending == 0


# ---------------------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("inputs", "options"),
    [
        pytest.param({"x": np.zeros(2, np.complex64)}, {}, id="complex-dtype"),
        pytest.param({}, {}, id="no-inputs"),
        pytest.param([np.zeros(2)], {}, id="not-a-mapping"),
        pytest.param({"x": [[1], [1, 2]]}, {}, id="ragged"),
        pytest.param({"x": np.array([1, 2], dtype=object)}, {}, id="object-ints"),
        pytest.param({"x": np.zeros(1)}, {"timeout": 0}, id="zero-timeout"),
        pytest.param({"x": np.zeros(1)}, {"timeout": float("nan")}, id="nan-timeout"),
        pytest.param({"x": np.zeros(1)}, {"priority": 2**40}, id="huge-priority"),
        pytest.param({"x": np.zeros(1)}, {"parameters": {"p": object()}}, id="bad-parameter"),
        pytest.param({"x": np.zeros(1)}, {"parameters": {"p": [1, 2]}}, id="list-parameter"),
        pytest.param({"x": np.zeros(1)}, {"parameters": {"p": float("inf")}}, id="infinite-parameter"),
        pytest.param({"x": np.zeros(1)}, {"outputs": "y"}, id="outputs-as-string"),
        pytest.param({1: np.zeros(1)}, {}, id="non-string-name"),
        pytest.param({"x": np.zeros(1)}, {"request_id": "r" * 129}, id="long-request-id"),
        pytest.param({"x": np.zeros(1)}, {"request_id": ""}, id="empty-request-id"),
    ],
)
def test_invalid_input_raises_before_sending(
    client: Driver, redis_client: redis.Redis, inputs: Any, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        client.submit(inputs, **options)
    assert isinstance(caught.value, ValueError)
    many_options = dict(options)
    if "request_id" in many_options:
        many_options["request_ids"] = ["good", many_options.pop("request_id")]
    with pytest.raises(InvalidInput):
        client.submit_many([{"x": np.ones(1)}, inputs], **many_options)  # the valid one is not sent either
    assert redis_client.exists(STREAM) == 0
    assert client.pending == 0
    assert client.stats.submitted == 0


def test_request_too_large_for_limits(make_client: MakeClient, redis_client: redis.Redis) -> None:
    c = make_client(model="m", limits=Limits(max_body_bytes=1024))
    with pytest.raises(InvalidInput, match="exceeds"):
        c.submit({"x": np.zeros(1024, np.float32)})
    with pytest.raises(InvalidInput, match="request_ids"):
        c.submit_many([{"x": np.zeros(1)}], request_ids=["a", "b"])
    with pytest.raises(InvalidInput, match="already pending"):
        c.submit_many([{"x": np.zeros(1)}] * 2, request_ids=["a", "a"])
    assert redis_client.exists(STREAM) == 0


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_constructor_validates(redis_url: str, cls: type[Client] | type[AsyncClient]) -> None:
    with pytest.raises(ValueError, match="default_timeout_s"):
        cls(redis_url, model="m", default_timeout_s=0)
    with pytest.raises(ValueError, match="model"):
        cls(redis_url, model="")
    with pytest.raises(ValueError, match="reply_prefix"):
        cls(redis_url, model="m", reply_prefix="p" * 250)
    with pytest.raises(ValueError, match="on_busy"):
        cls(redis_url, model="m", on_busy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        cls(redis_url, model="m", retries=-1)
    decoding = (redis.Redis if cls is Client else aioredis.Redis).from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        cls(model="m", redis=decoding)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- closing


def test_close_fails_pending_and_deletes_reply_stream(
    make_client: MakeClient, redis_url: str, redis_client: redis.Redis
) -> None:
    def ignore_some(request: Request, entry_id: bytes) -> list[dict[str, bytes]]:
        return [] if request.id == "ignored" else doubler(request, entry_id)

    with FakeWorker(redis_url, ignore_some):
        client = make_client()
        client.infer({"x": np.ones(1)})
        assert redis_client.exists(client.reply_stream) == 1
        future = client.submit({"x": np.ones(1)}, request_id="ignored")
        assert client.readers_alive()
        client.close()
    assert isinstance(future.exception(WAIT_S), ClientClosed)
    assert redis_client.exists(client.reply_stream) == 0
    assert not client.readers_alive()
    client.close()  # idempotent
    with pytest.raises(ClientClosed):
        client.submit({"x": np.ones(1)})


def test_close_leaves_a_given_redis_open(make_client: MakeClient, kind: Kind, redis_url: str) -> None:
    c = make_client(url=None, model="m", redis=own_redis(kind, redis_url))
    assert "reply_stream" in repr(c.client)
    given = c.client._redis
    c.close()
    assert (c.loop is None and given.ping()) or (c.loop is not None and c.loop.run(given.ping()))


# -------------------------------------------------------------------------------- one client's own behaviour


def test_sync_infer_from_a_reply_callback_is_refused(redis_url: str, redis_client: redis.Redis) -> None:
    client = Driver("sync", redis_url)
    errors: list[BaseException] = []
    done = threading.Event()

    def callback(_: Any) -> None:
        try:
            client.infer({"x": np.ones(1)})
        except InferError as exc:
            errors.append(exc)
        done.set()

    client.submit({"x": np.ones(1)}, request_id="first").add_done_callback(callback)
    send_reply(redis_client, client, "first")  # only now: the callback runs on the listener thread
    assert done.wait(WAIT_S)
    assert "reply callback" in str(errors[0])
    client.shutdown()


def test_async_cancelled_infer_forgets_request(redis_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(redis_url, model="double", stream=STREAM, default_timeout_s=WAIT_S) as client:
            task = asyncio.create_task(client.infer({"x": np.ones(1)}))
            while client.pending == 0:  # wait for the submit to land; bounded by wait_for below
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.pending == 0

    asyncio.run(asyncio.wait_for(main(), 3 * WAIT_S))


def test_async_construct_outside_a_loop_and_close_unused(redis_url: str) -> None:
    client = AsyncClient(redis_url, model="double", stream=STREAM)  # no running loop needed until the first request
    assert "reply_stream" in repr(client)
    asyncio.run(client.aclose())
