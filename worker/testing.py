"""Start a private Redis and real workers, wait until they serve, stop them: one harness for tests,
benchmarks and the demo.

Everything here waits on something observable, never on a fixed sleep: a redis-server that accepts
connections, a worker's health hash (``<stream>:worker:<consumer>``) saying ``status: ready``, a
process that exited. Everything started is stopped by the context managers, also on errors:
worker processes get SIGTERM (they drain and exit 0), then SIGKILL once ``stop_timeout_s`` is over.

Example::

    with redis_server() as url, WorkerPool(model, url, count=2) as pool:
        pool.wait_ready()
        ...  # send requests to "infer:requests"
    # workers stopped (their exit codes are in pool.exit_codes), redis-server stopped

``WorkerThread`` runs a ``Worker`` in a thread of this process instead, for tests that look at its
state (``.worker.stats``) or hand it an engine object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from worker.config import Settings, load_settings
from worker.embedded import EmbeddedRedis
from worker.engines.base import Engine
from worker.runner import serve
from worker.service import Worker

__all__ = [
    "DEFAULT_STREAM",
    "EmbeddedRedis",
    "HarnessError",
    "WorkerPool",
    "WorkerProcess",
    "WorkerThread",
    "health_key",
    "make_affine_model",
    "redis_server",
    "start_worker",
    "wait_for_redis",
    "wait_ready",
    "wait_until",
]

DEFAULT_STREAM = "infer:requests"
LOG_TAIL_LINES = 40
_POLL_S = 0.05


class HarnessError(RuntimeError):
    """A worker or Redis did not start, or did not become ready in time; the message holds the logs."""


def wait_until(condition: Callable[[], object], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true.

    Raises:
        HarnessError: still false after ``timeout_s``; the message names ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise HarnessError(f"{what}: not true within {timeout_s:g} s")
        time.sleep(_POLL_S / 5)


def health_key(stream: str, consumer: str) -> str:
    """The hash a worker keeps fresh while it runs (``status`` is ``ready`` once it serves)."""
    return f"{stream}:worker:{consumer}"


# ------------------------------------------------------------------------------------------------ redis


@contextlib.contextmanager
def redis_server(url: str | None = None, *, timeout_s: float = 10.0) -> Iterator[str]:
    """Yield ``url`` once it answers PING, or, without ``url``, a private redis-server's URL.

    The private server listens on a free loopback port and is stopped (its files removed) on exit.
    """
    if url:
        wait_for_redis(url, timeout_s)
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    """Ping until Redis answers (a URL given by a user may point at a server still starting).

    Raises:
        HarnessError: no answer within ``timeout_s``.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError as exc:
                if time.monotonic() >= deadline:
                    raise HarnessError(f"cannot reach Redis at {url}: {exc}") from None
                time.sleep(_POLL_S)
    finally:
        client.close()


# ------------------------------------------------------------------------------------- worker processes


@dataclass(slots=True)
class WorkerProcess:
    """One worker subprocess, its consumer name and the file its output goes to."""

    consumer: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the worker's output, under a header naming it and its state."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            text = ["<no log>"]
        state = "running" if self.running else f"exit code {self.proc.returncode}"
        return "\n".join([f"----- {self.consumer} ({state}), last {lines} lines of output -----", *text[-lines:]])

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` unless the process already exited."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig``, wait up to ``timeout_s``, then SIGKILL. Returns the exit code (negative: killed)."""
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_worker(
    model: Path,
    redis_url: str,
    *,
    consumer: str,
    log_path: Path,
    stream: str = DEFAULT_STREAM,
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    cwd: Path | None = None,
) -> WorkerProcess:
    """Start ``python -m worker run --model MODEL`` (or ``argv``) as consumer ``consumer`` of ``stream``.

    The process runs in its own session, so a Ctrl-C in a terminal reaches only the caller, which stops
    it in order. Its stdout and stderr are appended to ``log_path``.

    Args:
        model: the ONNX model file.
        redis_url: where the worker connects (``WORKER_REDIS__URL``).
        consumer: the consumer name (``WORKER_CONSUMER``).
        log_path: file for the process's output.
        stream: request stream key (``WORKER_STREAM``).
        env: extra ``WORKER_*`` settings; they override the inherited environment.
        argv: another command that serves as a worker (it reads the same ``WORKER_*`` variables).
        cwd: working directory; it goes first on ``PYTHONPATH``, so a checkout of another revision runs its
            own code.
    """
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WORKER_REDIS__URL": redis_url,
        "WORKER_STREAM": stream,
        "WORKER_CONSUMER": consumer,
        **(env or {}),
    }
    if cwd is not None:
        # cwd first, so a checkout of another revision runs its own code; what was on the path stays after it
        # (wheels installed with --target, as on the GPU host)
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), full_env.get("PYTHONPATH", "")) if p)
    command = list(argv) if argv is not None else [sys.executable, "-m", "worker", "run", "--model", str(model)]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            command, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return WorkerProcess(consumer, proc, log_path)


def wait_ready(redis_url: str, workers: Sequence[WorkerProcess], *, stream: str = DEFAULT_STREAM,
               timeout_s: float = 60.0) -> None:  # fmt: skip
    """Block until every worker's health hash says ``status: ready`` with the worker's own ``pid``.

    Raises:
        HarnessError: a worker exited first, or not all were ready in ``timeout_s``; the message holds
            the tail of each worker's output.
    """
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            dead = [w for w in workers if not w.running]
            if dead:
                codes = ", ".join(f"{w.consumer} exited with {w.proc.returncode}" for w in dead)
                raise HarnessError(f"worker failed to start ({codes})\n{_tails(workers)}")
            waiting = [w.consumer for w in workers if not _is_ready(client, stream, w)]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"workers not ready after {timeout_s:g} s (no '{health_key(stream, '<consumer>')}' hash with"
                    f" status=ready for {waiting})\n{_tails(workers)}"
                )
            time.sleep(_POLL_S)
    finally:
        client.close()


def _is_ready(client: redis.Redis, stream: str, worker: WorkerProcess) -> bool:
    """The health hash says ready, and was written by this process (not by an earlier one of that name)."""
    status, pid = client.hmget(health_key(stream, worker.consumer), "status", "pid")
    return status == b"ready" and pid in (None, str(worker.proc.pid).encode())


def _tails(workers: Sequence[WorkerProcess], lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(w.tail(lines) for w in workers)


class WorkerPool:
    """``count`` worker processes on one Redis and stream, stopped in order on exit.

    Args:
        model: the ONNX model file.
        redis_url: where the workers connect.
        count: number of worker processes; their consumer names are ``<name>-<pid>-w<i>``.
        consumers: explicit consumer names instead of ``count``.
        stream: request stream key.
        env: extra ``WORKER_*`` settings (they override the inherited environment).
        name: prefix of the generated consumer names.
        stop_timeout_s: how long ``stop`` waits for all of them after SIGTERM before SIGKILL.
        log_dir: where the logs go (``<consumer>.log``); default a temporary directory removed on exit.
        argv: another worker command (see ``start_worker``).
        cwd: working directory and ``PYTHONPATH`` of the workers (see ``start_worker``).
    """

    def __init__(
        self,
        model: Path,
        redis_url: str,
        *,
        count: int = 1,
        consumers: Sequence[str] | None = None,
        stream: str = DEFAULT_STREAM,
        env: Mapping[str, str] | None = None,
        name: str = "worker",
        stop_timeout_s: float = 20.0,
        log_dir: Path | None = None,
        argv: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.model = Path(model)
        self.redis_url = redis_url
        self.names = list(consumers) if consumers else [f"{name}-{os.getpid()}-w{i}" for i in range(1, count + 1)]
        self.stream = stream
        self.env = dict(env or {})
        self.stop_timeout_s = stop_timeout_s
        self.argv = argv
        self.cwd = cwd
        self.workers: list[WorkerProcess] = []
        self.exit_codes: dict[str, int] = {}
        self._log_dir = log_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def consumers(self) -> list[str]:
        return [w.consumer for w in self.workers]

    def start(self) -> WorkerPool:
        """Start the processes (not waiting for them: see ``wait_ready``)."""
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="redis-infer-workers-")
            self._log_dir = Path(self._tmp.name)
        try:
            for consumer in self.names:
                log_path = self._log_dir / f"{consumer}.log"
                worker = start_worker(self.model, self.redis_url, consumer=consumer, stream=self.stream,
                                      env=self.env, log_path=log_path, argv=self.argv, cwd=self.cwd)  # fmt: skip
                self.workers.append(worker)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until every worker serves; see :func:`wait_ready`."""
        wait_ready(self.redis_url, self.workers, stream=self.stream, timeout_s=timeout_s)

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of each worker's output."""
        return _tails(self.workers, lines)

    def stop(self) -> dict[str, int]:
        """SIGTERM every worker, wait up to ``stop_timeout_s`` in all, SIGKILL the rest. Returns exit codes.

        Interrupted while waiting (a second Ctrl-C), it kills them at once.
        """
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        try:
            for w in self.workers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            for w in self.workers:
                if w.running:
                    w.proc.kill()
                self.exit_codes[w.consumer] = w.proc.wait()
        return dict(self.exit_codes)

    def cleanup(self) -> None:
        """Remove the temporary log directory (if the pool made one)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


# ------------------------------------------------------------------------------------ in-process worker


class WorkerThread:
    """A real ``Worker`` serving in a background thread with its own event loop.

    Args:
        url: Redis URL.
        model_path: the model file (unless ``engine`` is given or ``model`` is in ``overrides``).
        engine: an engine object to serve instead of loading one.
        **overrides: settings, as for ``worker.config.load_settings`` (default ``streams.block_ms`` 100).
    """

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
        except BaseException as exc:  # surfaced by start() or stop()
            self.error = exc
            self._ready.set()

    def start(self, timeout_s: float = 30.0) -> WorkerThread:
        """Start serving; returns once the worker is ready.

        Raises:
            HarnessError: not ready within ``timeout_s``.
        """
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise HarnessError(f"in-process worker not ready within {timeout_s:g} s")
        if self.error:
            raise self.error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the worker to stop (drain, then exit) and wait for its thread; re-raises what it failed with.

        Raises:
            HarnessError: the thread still runs after ``timeout_s``.
        """
        if self.loop is not None and self.worker is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.worker.stop)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise HarnessError(f"in-process worker did not stop within {timeout_s:g} s")
        if self.error:
            raise self.error

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -------------------------------------------------------------------------------------------- a model


def make_affine_model(path: Path) -> Path:
    """Write a tiny ONNX model (needs the ``onnx`` package) and return ``path``.

    x: FP32 [N, D] (D dynamic) -> y = 2x + 1 [N, D], s = sum(x, axis=1) [N]. The engine is nearly free,
    so what a benchmark measures with it is the worker's own path.
    """
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
