"""The yardstick: a featureless Redis Streams inference loop, for measuring only, never a product path.

Worker: XREADGROUP COUNT 256, msgpack-unpack each entry, one numpy op (y = 2x) for the whole read,
then a pipeline of one XADD per reply plus one XACK. No validation, no deadlines, no dedupe, no
metrics. Producer: XADDs pipelined 100 at a time, replies read from one reply stream with XREAD BLOCK.

Both speak the project's wire format v1 (request fields ``v``, ``id``, ``reply_to``, ``body`` with the
msgpack body; replies ``v``, ``id``, ``body``), so the same producer load can be pointed at either
this worker or the real one, and the SDK can read this worker's replies.

Usage::

    python -m benchmarks.ideal worker --url redis://127.0.0.1:6380/0 --stream bench:ideal
    python -m benchmarks.ideal burst --url redis://127.0.0.1:6380/0 --stream bench:ideal --count 50000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgpack
import numpy as np
import redis

READ_COUNT = 256
PIPELINE = 100
GROUP = "workers"
MODEL = "ideal"


def ready_key(stream: str, consumer: str) -> str:
    """Key the ideal worker sets once its consumer group exists (same as the real worker's health key)."""
    return f"{stream}:worker:{consumer}"


# ----------------------------------------------------------------------------------------------- worker


def _reply(request_id: bytes, status: str, outputs: list[dict[str, Any]] | None = None) -> dict[bytes, bytes]:
    body: dict[str, Any] = {"status": status}
    if outputs:
        body["outputs"] = outputs
    return {b"v": b"1", b"id": request_id, b"body": msgpack.packb(body)}


def handle(r: redis.Redis, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    """One read: unpack each entry, y = 2x over the whole read, XADD each reply and XACK all in one pipeline."""
    ids: list[bytes] = []
    good: list[tuple[bytes, bytes, list[int], np.ndarray]] = []
    pipe = r.pipeline(transaction=False)
    for entry_id, fields in entries:
        ids.append(entry_id)
        try:
            tensor = msgpack.unpackb(fields[b"body"])["inputs"][0]
            good.append((fields[b"id"], fields[b"reply_to"], tensor["shape"], np.frombuffer(tensor["data"], "<f4")))
        except Exception:  # a yardstick still answers what it cannot read, when it can
            if b"reply_to" in fields and b"id" in fields:
                pipe.xadd(fields[b"reply_to"], _reply(fields[b"id"], "MALFORMED"))
    if good:
        try:
            outs: Sequence[np.ndarray] = np.stack([g[3] for g in good]) * np.float32(2)
        except ValueError:  # shapes differ inside the read: one op each
            outs = [g[3] * np.float32(2) for g in good]
        for (request_id, reply_to, shape, _), out in zip(good, outs, strict=True):
            tensor = {"name": "y", "datatype": "FP32", "shape": shape, "data": out.tobytes()}
            pipe.xadd(reply_to, _reply(request_id, "OK", [tensor]))
    pipe.xack(stream, GROUP, *ids)
    pipe.execute()


def serve(url: str, stream: str, consumer: str) -> None:
    """Run the featureless worker until SIGTERM or SIGINT."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    r = redis.Redis.from_url(url)
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: it exists already
        r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    r.hset(ready_key(stream, consumer), "status", "ready")
    while not stopping:
        response = r.xreadgroup(GROUP, consumer, {stream: ">"}, count=READ_COUNT, block=200)
        for _key, entries in response or ():
            handle(r, stream, entries)
    r.delete(ready_key(stream, consumer))
    r.close()


# --------------------------------------------------------------------------------------------- producer


def request_fields(reply_to: str, dim: int = 512, model: str = MODEL) -> dict[bytes, bytes]:
    """Fields of one wire-v1 request for float32[1, dim]; the producer only swaps the ``id``."""
    x = np.random.default_rng(0).standard_normal((1, dim)).astype("<f4")
    body = {"model": model, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, dim], "data": x.tobytes()}]}
    return {b"v": b"1", b"id": b"", b"reply_to": reply_to.encode(), b"body": msgpack.packb(body)}


@dataclass(slots=True)
class Result:
    """One measurement of the yardstick's producer."""

    mode: str
    sent: int
    received: int
    elapsed_s: float
    throughput_rps: float
    p50_ms: float | None = None
    p99_ms: float | None = None


class Producer:
    """The featureless producer: pipelined XADDs, replies read from its own stream with XREAD BLOCK."""

    def __init__(self, url: str, stream: str, dim: int = 512, model: str = MODEL) -> None:
        self.r = redis.Redis.from_url(url)
        self.stream = stream
        self.reply_to = f"infer:reply:ideal-{uuid.uuid4().hex}"
        self.fields = request_fields(self.reply_to, dim, model)
        self._last_reply = "0"
        self._seq = 0

    def close(self) -> None:
        self.r.delete(self.reply_to)
        self.r.close()

    def enqueue(self, count: int) -> list[bytes]:
        """XADD ``count`` requests, pipelined 100 at a time; returns their ids."""
        ids = []
        for start in range(0, count, PIPELINE):
            pipe = self.r.pipeline(transaction=False)
            for _ in range(min(PIPELINE, count - start)):
                ids.append(self._add(pipe))
            pipe.execute()
        return ids

    def _add(self, pipe: Any) -> bytes:
        self._seq += 1
        request_id = b"%d" % self._seq
        pipe.xadd(self.stream, {**self.fields, b"id": request_id})
        return request_id

    def replies(self, block_ms: int = 1000) -> list[bytes]:
        """Ids of the replies that arrived since the last call (waits up to ``block_ms`` for one)."""
        got = self.r.xread({self.reply_to: self._last_reply}, count=1000, block=block_ms) or []
        ids = []
        for _key, entries in got:
            for entry_id, fields in entries:
                self._last_reply = entry_id
                ids.append(fields[b"id"])
        return ids

    def wait_for(self, count: int, timeout_s: float = 120.0) -> int:
        """Read replies until ``count`` arrived or ``timeout_s`` passed; returns how many arrived."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while seen < count and time.monotonic() < deadline:
            seen += len(self.replies())
        return seen

    def burst(self, count: int, timeout_s: float = 120.0) -> Result:
        """Send ``count`` requests and wait for every reply."""
        t0 = time.perf_counter()
        self.enqueue(count)
        got = self.wait_for(count, timeout_s)
        elapsed = time.perf_counter() - t0
        return Result("burst", count, got, elapsed, got / elapsed)

    def closed_loop(self, count: int, in_flight: int = 8, timeout_s: float = 120.0) -> Result:
        """Keep ``in_flight`` requests outstanding until ``count`` were answered; latency per request."""
        started: dict[bytes, float] = {}
        latencies: list[float] = []
        sent = 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while len(latencies) < count and time.monotonic() < deadline:
            want = min(in_flight - len(started), count - sent)
            if want > 0:
                pipe = self.r.pipeline(transaction=False)
                now = time.perf_counter()
                for _ in range(want):
                    started[self._add(pipe)] = now
                pipe.execute()
                sent += want
            for request_id in self.replies():
                begun = started.pop(request_id, None)
                if begun is not None:
                    latencies.append(time.perf_counter() - begun)
        elapsed = time.perf_counter() - t0
        lat_ms = np.asarray(latencies) * 1e3
        p50, p99 = (float(np.percentile(lat_ms, q)) for q in (50, 99)) if len(lat_ms) else (None, None)
        return Result("closed", sent, len(latencies), elapsed, len(latencies) / elapsed, p50, p99)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ideal", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["worker", "burst", "closed"])
    p.add_argument("--url", required=True)
    p.add_argument("--stream", default="bench:ideal")
    p.add_argument("--consumer", default="ideal-1")
    p.add_argument("--count", type=int, default=20_000)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args(argv)
    if args.mode == "worker":
        serve(args.url, args.stream, args.consumer)
        return 0
    producer = Producer(args.url, args.stream, args.dim)
    try:
        if args.mode == "burst":
            result = producer.burst(args.count)
        else:
            result = producer.closed_loop(args.count, args.in_flight)
    finally:
        producer.close()
    print(json.dumps(asdict(result)))
    return 0 if result.received == result.sent else 1


if __name__ == "__main__":
    sys.exit(main())
