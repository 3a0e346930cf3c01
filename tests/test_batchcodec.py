"""The batch-at-a-time codec gives what the per-request codec gives: replies byte for byte, requests field
for field; and the worker's per-batch metrics export what the counters hold."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from redis_infer_protocol.batchcodec import RequestDecoder, encode_ok_replies
from redis_infer_protocol.codec import DEFAULT_LIMITS, CodecError, Status, Timing, decode_request, encode_reply
from redis_infer_protocol.codec import encode_request as encode
from worker.observability import BulkHistogram, Metrics


def _timing(i: int) -> Timing:
    return Timing(enqueued_ns=10 + i, read_ns=20 + i, batched_ns=30, compute_start_ns=40, compute_end_ns=50,
                  published_ns=60 + i)  # fmt: skip


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<i8", "<u1", "?", ">f8"])
@pytest.mark.parametrize("rows", [[1], [1, 2, 3], [4, 1]])
def test_ok_replies_are_encode_reply_byte_for_byte(dtype: str, rows: list[int]) -> None:
    total = sum(rows)
    outputs = {
        "y": (np.arange(total * 6).reshape(total, 2, 3) % 7).astype(dtype),
        "s": np.arange(total, dtype="<f4")[::1],
        "t": np.asfortranarray(np.arange(total * 2, dtype="<i4").reshape(total, 2)),  # not C-contiguous
    }
    wanted: list[tuple[str, ...] | None] = [None, ("s",), ("t", "y")][: len(rows)]
    ids = [f"r{i}" for i in range(len(rows))]
    timings = [_timing(i) for i in range(len(rows))]
    got = encode_ok_replies(ids, rows, outputs, wanted, timings, model="m", worker="w1")
    offset = 0
    for rid, count, names, timing, fields in zip(ids, rows, wanted, timings, got, strict=True):
        mine = {name: outputs[name][offset : offset + count] for name in names or tuple(outputs)}
        offset += count
        assert fields == encode_reply(rid, Status.OK, outputs=mine, model="m", timing=timing, worker="w1",
                                      batch_size=total)  # fmt: skip


@pytest.mark.parametrize("width", [63, 64, 600, 16_384, 20_000])  # data of bin 8, 16 and 32 sizes
def test_large_rows_too(width: int) -> None:
    outputs = {"y": np.arange(3 * width, dtype="<f4").reshape(3, width)}
    got = encode_ok_replies(["a", "b"], [1, 2], outputs, [None, None], [_timing(0), _timing(1)], model="m", worker="w")
    assert got[1] == encode_reply("b", Status.OK, outputs={"y": outputs["y"][1:]}, model="m", timing=_timing(1),
                                  worker="w", batch_size=3)  # fmt: skip


def test_bytes_outputs_too() -> None:
    outputs = {"label": np.array([b"cat", b"", "dog"], dtype=object)}
    got = encode_ok_replies(["a", "b"], [2, 1], outputs, [None, None], [_timing(0), _timing(1)], model="m", worker="w")
    assert got[1] == encode_reply("b", Status.OK, outputs={"label": outputs["label"][2:]}, model="m",
                                  timing=_timing(1), worker="w", batch_size=3)  # fmt: skip


def test_an_output_asked_twice_is_sent_once() -> None:
    outputs = {"y": np.arange(3, dtype="<f4"), "s": np.arange(3, dtype="<i4")}
    got = encode_ok_replies(["a"], [3], outputs, [("s", "y", "s")], [_timing(0)], model="m", worker="w")
    assert got[0] == encode_reply("a", Status.OK, outputs={"s": outputs["s"], "y": outputs["y"]}, model="m",
                                  timing=_timing(0), worker="w", batch_size=3)  # fmt: skip


@pytest.mark.parametrize("stages", [(45, 0), (0, 47), (44, 46)])
def test_a_hooks_timing_stages_too(stages: tuple[int, int]) -> None:
    """A model with a Python hook adds its stages to the trace (only those set), as encode_reply does."""
    outputs = {"y": np.arange(3, dtype="<f4")}
    timings = [_timing(0), _timing(1)]
    for timing in timings:
        timing.preprocess_end_ns, timing.postprocess_start_ns = stages
    got = encode_ok_replies(["a", "b"], [1, 2], outputs, [None, None], timings, model="m", worker="w")
    assert got[1] == encode_reply("b", Status.OK, outputs={"y": outputs["y"][1:]}, model="m", timing=timings[1],
                                  worker="w", batch_size=3)  # fmt: skip


def _wire(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """Fields as Redis hands them to the worker: bytes names."""
    return {name.encode(): value for name, value in fields.items()}


def _body(**body: Any) -> dict[bytes, bytes]:
    return {b"v": b"1", b"id": b"r1", b"reply_to": b"infer:reply:x", b"body": msgpack.packb(body)}


def _tensor(shape: list[Any], data: bytes | None = None, datatype: str = "FP32") -> dict[str, Any]:
    count = int(np.prod([int(d) for d in shape]))
    return {"name": "x", "datatype": datatype, "shape": shape, "data": bytes(4 * count) if data is None else data}


def test_a_known_header_decodes_as_the_full_decoder_does() -> None:
    decoder: RequestDecoder[str] = RequestDecoder(DEFAULT_LIMITS)
    first = _wire(encode("r0", "infer:reply:x", "m", {"x": np.ones((2, 3), np.float32)}, outputs=["y"]))
    request, extra, key = decoder.lookup(first)
    assert request is None and extra is None and key is not None
    decoder.remember(key, decode_request(first), "checked")
    again = _wire(encode("r1", "infer:reply:x", "m", {"x": np.full((2, 3), 5, np.float32)}, outputs=["y"],
                         timeout_ms=9, priority=2))  # fmt: skip
    request, extra, key = decoder.lookup(again)
    assert extra == "checked" and key is None and request is not None
    full = decode_request(again)
    assert (request.id, request.reply_to, request.model, request.model_version, request.outputs) == (
        full.id, full.reply_to, full.model, full.model_version, full.outputs)  # fmt: skip
    assert (request.timeout_ms, request.priority, request.parameters) == (9, 2, {})
    np.testing.assert_array_equal(request.inputs["x"], full.inputs["x"])
    assert request.inputs["x"].dtype == full.inputs["x"].dtype and not request.inputs["x"].flags.owndata


def test_a_body_repeating_a_known_one_outside_its_data_is_not_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis_infer_protocol.batchcodec as batchcodec

    decoder: RequestDecoder[str] = RequestDecoder(DEFAULT_LIMITS)
    x = np.zeros((2, 3), np.float32)
    first = _wire(encode("r0", "infer:reply:x", "m", {"x": x, "z": x[:, :1].astype(np.int64)}, timeout_ms=70))
    _, _, key = decoder.lookup(first)
    assert key is not None
    decoder.remember(key, decode_request(first), "checked")
    decoder.lookup(first)  # a known header: the decoder learns the bytes around the data
    x2 = np.arange(6, dtype=np.float32).reshape(2, 3)
    later = _wire(encode("r2", "infer:reply:y", "m", {"x": x2, "z": np.array([[7], [8]], np.int64)}, timeout_ms=70))
    monkeypatch.setattr(batchcodec, "_unpack", lambda *_a: pytest.fail("parsed"))
    request, extra, _ = decoder.lookup(later)
    assert request is not None and extra == "checked"
    full = decode_request(later)
    assert (request.id, request.reply_to, request.timeout_ms, request.priority) == ("r2", "infer:reply:y", 70, 0)
    for name in ("x", "z"):
        np.testing.assert_array_equal(request.inputs[name], full.inputs[name])
        assert request.inputs[name].dtype == full.inputs[name].dtype
    other = _wire(encode("r3", "infer:reply:y", "m", {"x": x2, "z": np.array([[7], [8]], np.int64)}, timeout_ms=71))
    with pytest.raises(pytest.fail.Exception):  # another timeout: other bytes, parsed again
        decoder.lookup(other)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "inputs": [_tensor([True, 3])]},  # True == 1 hashes alike: must not reuse [1, 3]
        {"model": "m", "inputs": [_tensor([1.0, 3])]},
        {"model": "m", "inputs": [_tensor([1, 3], data=bytes(8))]},  # data too short
        {"model": "m", "inputs": [_tensor([1, 3])], "parameters": {"a": 1}},
        {"model": "m", "inputs": [_tensor([1, 3], datatype="BYTES")]},
    ],
)
def test_anything_unusual_goes_to_the_full_decoder(body: dict[str, Any]) -> None:
    decoder: RequestDecoder[str] = RequestDecoder(DEFAULT_LIMITS)
    known = _body(model="m", inputs=[_tensor([1, 3])])
    _, _, key = decoder.lookup(known)
    assert key is not None
    decoder.remember(key, decode_request(known), "checked")
    request, extra, _ = decoder.lookup(_body(**body))
    assert request is None and extra is None


@pytest.mark.parametrize(("extra", "message"), [({"timeout_ms": 0}, "timeout_ms must be positive"),
                                                ({"priority": "high"}, "priority must be an integer")])  # fmt: skip
def test_a_known_header_still_checks_timeout_and_priority(extra: dict[str, Any], message: str) -> None:
    decoder: RequestDecoder[str] = RequestDecoder(DEFAULT_LIMITS)
    known = _body(model="m", inputs=[_tensor([1, 3])])
    _, _, key = decoder.lookup(known)
    assert key is not None
    decoder.remember(key, decode_request(known), "checked")
    with pytest.raises(CodecError, match=message):
        decoder.lookup(_body(model="m", inputs=[_tensor([1, 3])], **extra))
    with pytest.raises(CodecError, match=message):
        decode_request(_body(model="m", inputs=[_tensor([1, 3])], **extra))


def test_the_bulk_histogram_matches_prometheus_histogram() -> None:
    values = [0.0, 0.0005, 0.0007, 0.001, 0.3, 31.0, 0.02]
    buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
    registry = CollectorRegistry()
    reference = Histogram("h", "doc", buckets=buckets, registry=registry)
    for value in values:
        reference.observe(value)
    bulk = BulkHistogram("h", "doc", buckets)
    bulk.observe(values[:3])
    bulk.observe(values[3:])
    want = {
        (s.name, s.labels.get("le")): s.value for s in next(iter(registry.collect())).samples if "created" not in s.name
    }
    got = {(s.name, s.labels.get("le")): s.value for s in bulk.family().samples}
    assert got == want


def test_metrics_read_the_same_counters_as_the_health_key() -> None:
    metrics = Metrics()
    metrics.observe_replies(Status.OK, [_timing(i) for i in range(5)])
    metrics.observe_reply(Status.EXPIRED, _timing(0))
    metrics.observe_batch(5, _timing(0))
    metrics.stats.dead_lettered += 2
    text = metrics.render().decode()
    assert 'redis_infer_replies_total{model="",status="OK",version=""} 5.0' in text
    assert 'redis_infer_replies_total{model="",status="EXPIRED",version=""} 1.0' in text
    assert 'nv_inference_count{model="",version=""} 5.0' in text
    assert 'nv_inference_exec_count{model="",version=""} 1.0' in text
    assert 'redis_infer_dead_lettered_total{model="",version=""} 2.0' in text
    assert (metrics.stats.rows, metrics.stats.batches) == (5, 1)
    assert 'redis_infer_request_duration_seconds_count{model="",version=""} 6.0' in text
