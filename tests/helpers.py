"""Test helpers: raw stream I/O and random inputs. Workers, Redis and the tiny model come from ``worker.testing``."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client.parser import text_string_to_metric_families

from redis_infer_protocol.codec import Reply, decode_reply, encode_request
from worker.testing import WorkerThread, health_key, make_affine_model, wait_until

__all__ = [
    "ROOT", "Samples", "WorkerThread", "collect", "make_affine_model", "metric_samples", "metric_value", "rand", "send",
    "stop_process", "wait_processes_ready",
]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent


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


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    """Send ``sig`` to a process started outside ``worker.testing``; SIGKILL after ``timeout_s``. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_processes_ready(
    client: redis.Redis, stream: str, consumers: list[str], procs: list[subprocess.Popen[Any]], timeout_s: float = 60
) -> None:
    """Wait until each consumer's health hash says ready, failing at once if one of ``procs`` exited."""

    def ready() -> bool:
        exited = [p.returncode for p in procs if p.poll() is not None]
        assert not exited, f"a worker exited with {exited} before it was ready"
        return all(client.hget(health_key(stream, c), "status") == b"ready" for c in consumers)

    wait_until(ready, timeout_s=timeout_s, what=f"{consumers} ready")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, parsed by prometheus_client's own parser (which names a
    counter's samples ``<name>_total`` even when exposed as ``<name>``)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels`` (asserts there is exactly one)."""
    matches = [v for (n, lbl), v in samples.items() if n == name and labels.items() <= dict(lbl).items()]
    assert len(matches) == 1, (name, labels, sorted(k for k in samples if k[0] == name))
    return matches[0]
