"""The SDK's bulk paths without Redis: request encoding, RESP packing of rounds, bulk reply decoding."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import hiredis
import msgpack
import numpy as np
import pytest
from redis.exceptions import NoScriptError

from producer.backpressure import ADD_SCRIPT, Backpressure
from producer.core import ClientConfig, ClientCore
from producer.submission import LoadScript, SendRound, Submission
from producer.wire import SCRIPT_CHUNK, RequestEncoder, RequestIds, Wire, chunks, read_command
from redis_infer_protocol import keys
from redis_infer_protocol.codec import CodecError, Reply, Status, Timing, decode_reply, encode_reply, encode_request
from redis_infer_protocol.limits import DEFAULT_LIMITS, Limits
from redis_infer_protocol.replies import decode_reply_fields, entries

REPLY_KEY = "infer:reply:" + "ab" * 16


# ------------------------------------------------------------------------------------------------ requests


@pytest.mark.parametrize(
    ("inputs", "options"),
    [
        pytest.param({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, {}, id="float32"),
        pytest.param({"x": np.arange(6, dtype=">i4")}, {}, id="big-endian"),
        pytest.param({"x": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]}, {}, id="non-contiguous"),
        pytest.param({"x": [[1, 2], [3, 4]]}, {}, id="nested-list"),
        pytest.param({"x": np.array([b"ab", b"c"], dtype=object)}, {}, id="bytes-elements"),
        pytest.param({"a": np.ones(1, np.bool_), "b": np.zeros((0, 2), np.uint8)}, {}, id="two-inputs"),
        pytest.param({"x": np.float16(1.5)}, {}, id="scalar"),
        pytest.param(
            {"x": np.ones(2)},
            {"model_version": "3", "timeout_ms": 1500, "priority": -2, "outputs": ["y"], "parameters": {"k": 1.5}},
            id="every-option",
        ),
    ],
)
def test_encoder_gives_the_codecs_bytes(inputs: dict[str, Any], options: dict[str, Any]) -> None:
    version = options.pop("model_version", None)
    encoder = RequestEncoder(REPLY_KEY, "m", version)
    tail = encoder.options(options.get("timeout_ms"), options.get("priority", 0), options.get("outputs"),
                           options.get("parameters"))  # fmt: skip
    fields, head = encoder.encode("rid", inputs, tail)
    assert fields == encode_request("rid", REPLY_KEY, "m", inputs, model_version=version, **options)
    # head + body is the RESP of the four field/value pairs, as a server parses them
    reader = hiredis.Reader()
    reader.feed(b"*8\r\n" + head + fields["body"] + b"\r\n")
    flat = reader.gets()
    assert flat == [b"v", b"1", b"id", b"rid", b"reply_to", REPLY_KEY.encode(), b"body", fields["body"]]


def test_request_ids_are_unique_32_hex_digits() -> None:
    ids = RequestIds()
    drawn = [ids() for _ in range(1000)] + [RequestIds()() for _ in range(100)]
    assert len(set(drawn)) == len(drawn)
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in drawn)


def test_prepare_many_checks_options_once_and_every_request() -> None:
    core: ClientCore[Future[Reply]] = ClientCore(ClientConfig("m", "s", None, 30.0, keys.DEFAULT_REPLY_PREFIX,
                                                              DEFAULT_LIMITS))  # fmt: skip
    options: dict[str, Any] = dict(timeout=2.0, priority=1, parameters={"a": "b"}, outputs=["y"], request_ids=None)
    prepared = core.prepare_many([{"x": np.ones(2)}, {"x": np.zeros(3, np.int8)}], **options)
    for p, x in zip(prepared, [np.ones(2), np.zeros(3, np.int8)], strict=True):
        expected = encode_request(p.request_id, core.reply_key, "m", {"x": x}, timeout_ms=2000, priority=1,
                                  outputs=["y"], parameters={"a": "b"})  # fmt: skip
        assert p.fields == expected and p.head and p.body == expected["body"]


# -------------------------------------------------------------------------------------------------- rounds


def parse(payload: bytes) -> list[list[bytes]]:
    """The commands of a packed write, as a server reads them."""
    reader = hiredis.Reader()
    reader.feed(payload)
    commands = []
    while (item := reader.gets()) is not False:
        commands.append(item)
    return commands


def prepared_requests(n: int) -> tuple[ClientCore[Future[Reply]], list[Any]]:
    core: ClientCore[Future[Reply]] = ClientCore(ClientConfig("m", "s", None, 30.0, keys.DEFAULT_REPLY_PREFIX,
                                                              DEFAULT_LIMITS))  # fmt: skip
    options: dict[str, Any] = dict(timeout=None, priority=0, parameters=None, outputs=None)
    return core, core.prepare_many([{"x": np.full(2, i)} for i in range(n)], request_ids=None, **options)


def test_xadd_round_is_one_xadd_per_request() -> None:
    _, prepared = prepared_requests(3)
    commands = parse(Wire("s", "f" * 40).xadds([p.head for p in prepared], [p.body for p in prepared]))
    assert [c[:3] for c in commands] == [[b"XADD", b"s", b"*"]] * 3
    assert [dict(zip(c[3::2], c[4::2], strict=True)) for c in commands] == [
        {k.encode(): v for k, v in p.fields.items()} for p in prepared
    ]


def test_script_round_is_one_call_per_chunk() -> None:
    n = SCRIPT_CHUNK + 5
    _, prepared = prepared_requests(n)
    payload, calls = Wire("s", "f" * 40).scripts([p.head for p in prepared], [p.body for p in prepared], 7)
    commands = parse(payload)
    assert calls == len(commands) == len(chunks(n)) == 2
    for command, chunk in zip(commands, chunks(n), strict=True):
        assert command[:6] == [b"EVALSHA", b"f" * 40, b"1", b"s", b"7", b"%d" % len(chunk)]
        args = command[6:]
        assert len(args) == 9 * len(chunk) and args[::9] == [b"8"] * len(chunk)
        sent = [dict(zip(args[9 * j + 1 : 9 * j + 9 : 2], args[9 * j + 2 : 9 * j + 9 : 2], strict=True)) for j in
                range(len(chunk))]  # fmt: skip
        assert sent == [{k.encode(): v for k, v in prepared[i].fields.items()} for i in chunk]


def test_read_command_deletes_then_reads() -> None:
    assert parse(read_command(b"k", b"1-0", 5, 100, [b"1-0"])) == [
        [b"XDEL", b"k", b"1-0"],
        [b"XREAD", b"COUNT", b"5", b"BLOCK", b"100", b"STREAMS", b"k", b"1-0"],
    ]
    assert len(parse(read_command(b"k", b"0-0", 5, 1, []))) == 1


def test_noscript_on_a_later_chunk_resends_only_that_chunk() -> None:
    """SCRIPT FLUSH between two calls of one round: the first chunk is in and must not be sent again."""
    n = SCRIPT_CHUNK + 3
    core, prepared = prepared_requests(n)
    futures: list[Future[Reply]] = [Future() for _ in prepared]
    core.register(prepared, futures)
    bp = Backpressure("s", "raise")
    bp.update(b"1000")
    sub = Submission(core, bp, prepared, futures)
    first = sub.next_action()
    assert isinstance(first, SendRound) and first.commands == 2
    added = [b"1-%d" % i for i in range(SCRIPT_CHUNK)]
    sub.done(first, [[SCRIPT_CHUNK, added], NoScriptError("NOSCRIPT No matching script")])
    load = sub.next_action()
    assert load == LoadScript(ADD_SCRIPT)
    sub.done(load, "sha")
    again = sub.next_action()
    assert isinstance(again, SendRound)
    assert [p.request_id for p in again.requests] == [p.request_id for p in prepared[SCRIPT_CHUNK:]]
    sub.done(again, [[n, [b"2-0", b"2-1", b"2-2"]]])
    assert sub.next_action() is None
    assert core.pending_count == n and not any(f.done() for f in futures)


# ------------------------------------------------------------------------------------------------- replies


def flat(fields: dict[str, bytes]) -> list[bytes]:
    return [x for k, v in fields.items() for x in (k.encode(), v)]


GOOD_REPLIES = [
    encode_reply(
        "a",
        Status.OK,
        outputs={"y": np.arange(6, dtype=np.float32).reshape(2, 3)},
        model="m",
        timing=Timing(1, 2, 3, 4, 5, 6),
        worker="w",
        batch_size=4,
    ),
    encode_reply("b", Status.OK, outputs={"y": np.ones(1, np.int64), "z": np.zeros((0, 3), np.float16)}),
    encode_reply("c", Status.EXPIRED, error="too late"),
    encode_reply("d", Status.OK, outputs={"s": np.array([b"x", b"yz"], dtype=object)}),  # BYTES: the codec's path
    encode_reply("é" * 10, Status.INTERNAL, error="ü" * 40),
]


@pytest.mark.parametrize("fields", GOOD_REPLIES, ids=lambda f: f["id"].decode()[:4])
def test_bulk_decode_gives_the_codecs_reply(fields: dict[str, bytes]) -> None:
    fast, codec = decode_reply_fields(flat(fields)), decode_reply(fields)
    assert (fast.id, fast.status, fast.error, fast.model, fast.timing, fast.worker, fast.batch_size) == (
        codec.id, codec.status, codec.error, codec.model, codec.timing, codec.worker, codec.batch_size,
    )  # fmt: skip
    assert fast.outputs.keys() == codec.outputs.keys()
    for name, array in codec.outputs.items():
        assert fast.outputs[name].dtype == array.dtype
        np.testing.assert_array_equal(fast.outputs[name], array)


def body(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


TENSOR = {"name": "y", "datatype": "FP32", "shape": [2], "data": b"\0" * 8}
BAD_REPLIES = [
    {"v": b"1", "id": b"x", "body": b"\xc1"},
    {"v": b"2", "id": b"x", "body": body({"status": "OK"})},
    {"v": b"1", "id": b"x", "body": body({"status": "NOPE"})},
    {"v": b"1", "id": b"x", "body": body({"status": ["OK"]})},
    {"v": b"1", "id": b"x", "body": body({"status": "OK", "outputs": [{**TENSOR, "shape": [3]}]})},
    {"v": b"1", "id": b"x", "body": body({"status": "OK", "outputs": [{**TENSOR, "datatype": ["FP32"]}]})},
    {"v": b"1", "id": b"x", "body": body({"status": "OK", "outputs": [TENSOR, TENSOR]})},
    {"v": b"1", "id": b"x", "body": body({"status": "OK", "timing": {"read_ns": -1}})},
    {"v": b"1", "id": b"x", "body": body({"status": "OK", "batch_size": True})},
    {"v": b"1", "id": b"x", "body": body({"status": "OK", "worker": "w" * 1000})},
    {"v": b"1", "id": b"\xff", "body": body({"status": "OK"})},
    {"v": b"1", "id": b"", "body": body({"status": "OK"})},
    {"v": b"1", "body": body({"status": "OK"})},
]


@pytest.mark.parametrize("fields", BAD_REPLIES)
def test_bulk_decode_refuses_what_the_codec_refuses(fields: dict[str, bytes]) -> None:
    with pytest.raises(CodecError) as codec:
        decode_reply(fields)
    with pytest.raises(CodecError) as fast:
        decode_reply_fields(flat(fields))
    assert (str(fast.value), fast.value.status) == (str(codec.value), codec.value.status)


def test_bulk_decode_applies_the_clients_limits() -> None:
    fields = encode_reply("a", Status.OK, outputs={"y": np.ones(10, np.float32)})
    with pytest.raises(CodecError, match="max elements"):
        decode_reply_fields(flat(fields), Limits(max_elements=5))


def test_entries_of_resp2_and_resp3_reads() -> None:
    batch = [[b"1-0", [b"v", b"1"]], [b"1-1", [b"wake", b""]]]
    assert entries([[b"k", batch]]) == entries({b"k": batch}) == [(b"1-0", [b"v", b"1"]), (b"1-1", [b"wake", b""])]
    assert entries(None) == entries([]) == []


def test_a_read_with_a_bad_reply_resolves_the_good_ones_and_counts_the_bad() -> None:
    core, prepared = prepared_requests(2)
    futures: list[Future[Reply]] = [Future() for _ in prepared]
    core.register(prepared, futures)
    good = [flat(encode_reply(p.request_id, Status.OK, outputs={"y": np.ones(1)})) for p in prepared]
    read = [(b"1-0", good[0]), (b"1-1", flat(BAD_REPLIES[0])), (b"1-2", [b"wake", b""]), (b"1-3", good[1])]
    assert core.handle_entries(read) == [b"1-0", b"1-1", b"1-2", b"1-3"]
    assert [f.result(0).id for f in futures] == [p.request_id for p in prepared]
    stats = core.stats
    assert (stats.replies, stats.undecodable_replies, core.pending_count) == (2, 1, 0)
