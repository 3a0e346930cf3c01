"""Test helpers: tiny ONNX models, in-process and subprocess workers, raw stream I/O."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from redis_infer_protocol.codec import Reply, decode_reply, encode_request
from worker.config import Settings, load_settings
from worker.engines.base import Engine
from worker.runner import serve
from worker.service import Worker

ROOT = Path(__file__).resolve().parent.parent


def make_affine_model(path: Path) -> Path:
    """x: FP32 [N, D] (D dynamic) -> y = 2x + 1 [N, D], s = sum(x, axis=1) [N]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["x2"]),
            helper.make_node("Add", ["x2", "one"], ["y"]),
            helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "D"]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"]),
        ],
        initializer=[
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class WorkerThread:
    """A real ``Worker`` serving in a background thread with its own event loop."""

    def __init__(
        self, url: str, model_path: Path | None = None, engine: Engine | None = None, **overrides: Any
    ) -> None:
        overrides.setdefault("redis", {"url": url})
        if model_path is not None:
            overrides.setdefault("model", {"path": model_path})
        overrides.setdefault("streams", {"block_ms": 100})
        self.settings: Settings = load_settings(**overrides)
        self.url = url
        self.engine = engine
        self.worker: Worker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        def ready(worker: Worker) -> None:
            self.worker = worker
            self.loop = asyncio.get_running_loop()
            self._ready.set()

        try:
            asyncio.run(serve(self.settings, self.url, self.engine, install_signals=False, on_ready=ready))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._ready.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        assert self._ready.wait(30), "worker did not start"
        if self.error:
            raise self.error
        return self

    def stop(self, timeout_s: float = 30) -> None:
        if self.loop is not None and self.worker is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.worker.stop)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_worker_process(url: str, model: Path, *, consumer: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ, WORKER_REDIS__URL=url, WORKER_CONSUMER=consumer, WORKER_STREAMS__BLOCK_MS="200", **env)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--model", str(model)],
            env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip


def wait_ready(
    client: redis.Redis,
    stream: str,
    consumers: list[str],
    procs: Sequence[subprocess.Popen[bytes]] = (),
    timeout_s: float = 60,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exited = [p.args for p in procs if p.poll() is not None]
        if exited:
            raise AssertionError(f"worker exited before it was ready: {exited}")
        if all(client.hget(f"{stream}:worker:{c}", "status") == b"ready" for c in consumers):
            return
        time.sleep(0.05)
    raise AssertionError(f"workers {consumers} not ready in {timeout_s}s")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def send(
    client: redis.Redis, model: str, inputs: Mapping[str, Any], *, request_id: str, reply_to: str = "infer:reply:test",
    stream: str = "infer:requests", **kw: Any,
) -> str:  # fmt: skip
    return client.xadd(stream, encode_request(request_id, reply_to, model, inputs, **kw)).decode()  # type: ignore[union-attr]


def collect(
    client: redis.Redis, count: int, *, reply_to: str = "infer:reply:test", timeout_s: float = 30,
    until: Callable[[dict[str, Reply]], bool] | None = None,
) -> dict[str, Reply]:  # fmt: skip
    """Read replies from ``reply_to`` until ``count`` distinct ids arrived (or ``until`` holds)."""
    replies: dict[str, Reply] = {}
    last = "0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = client.xread({reply_to: last}, block=100, count=1000) or []
        for _key, items in got:
            for entry_id, fields in items:
                last = entry_id
                reply = decode_reply(fields)
                replies[reply.id] = reply
        if (until and until(replies)) or (until is None and len(replies) >= count):
            return replies
    raise AssertionError(f"only {len(replies)} of {count} replies within {timeout_s}s")


def rand(*shape: int, seed: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
