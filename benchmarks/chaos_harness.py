"""Chaos harness: a real redis-server and the real worker processes of one scenario.

``Cluster`` owns one redis-server (optionally with an fsync-always AOF, so that it can be killed and
restarted from it) and the worker processes; it knows which exits it caused and reports every other one
as a crash. Processes are started, awaited and signalled through the one harness of tests, benchmarks and
the demo (``worker.testing``); what is left here is the chaos bookkeeping (expected exits, crashes,
freezing) and the inspection of the group. The producer side is ``benchmarks.chaos_load``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from worker.testing import EmbeddedRedis, HarnessError, WorkerProcess, start_worker, wait_for_redis, wait_ready

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
STREAM = "infer:requests"
GROUP = "workers"
DEAD = f"{STREAM}:dead"
MODEL = "affine"
WIDTH = 4  # columns of each request's x

# Recovery tuned for a test: a dead worker's entries are claimed ~2-3 s after its death.
WORKER_ENV: Mapping[str, str] = {
    "WORKER_RECOVERY__MIN_IDLE_MS": "2000",
    "WORKER_RECOVERY__INTERVAL_S": "0.5",
    "WORKER_HEALTH_TTL_S": "2",
    "WORKER_STREAMS__BLOCK_MS": "200",
    "WORKER_BATCH__MAX_SIZE": "32",
    "WORKER_BATCH__MAX_DELAY_MS": "2",
    "WORKER_SHUTDOWN_GRACE_S": "15",
    "WORKER_ONNX__INTRA_OP_THREADS": "1",
    "WORKER_LOG_LEVEL": "INFO",
    "PYTHONFAULTHANDLER": "1",  # a worker that hangs is sent SIGABRT: its threads' stacks go to its log
}


class Cluster:
    """One redis-server and the worker processes of one scenario.

    Args:
        workdir: where worker logs go.
        model: the ONNX model every worker serves.
        durable: run Redis with ``appendonly yes`` and ``appendfsync always`` (needed to restart it).
        env: worker environment on top of ``WORKER_ENV``.
    """

    def __init__(self, workdir: Path, model: Path, *, durable: bool = False, env: Mapping[str, str] = {}) -> None:
        self.workdir = workdir
        self.model = model
        self.env = {**WORKER_ENV, **env}
        extra = ["--appendfsync", "always"] if durable else []
        extra += ["--enable-protected-configs", "yes"]  # the refusal scenarios move ``dir`` to fail a save
        self.server = EmbeddedRedis(appendonly=durable, extra_args=extra)
        self.procs: dict[str, WorkerProcess] = {}
        self.expected_exit: set[str] = set()  # processes this harness killed or stopped on purpose
        self.exit_codes: dict[str, int] = {}
        self.crashes: list[str] = []
        self._admin: redis.Redis | None = None

    # ------------------------------------------------------------------------------------ redis

    def __enter__(self) -> Cluster:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> redis.Redis:
        """A plain client for inspection (reconnects by itself after a Redis restart)."""
        if self._admin is None:
            self._admin = redis.Redis.from_url(self.url, socket_timeout=5)
        return self._admin

    def kill_redis(self) -> None:
        """SIGKILL the redis-server, keeping its AOF for ``restart_redis``."""
        self.server.stop(kill=True, cleanup=False)

    def restart_redis(self, timeout_s: float = 30) -> None:
        """Start the killed redis-server again on its port; return once it has loaded its AOF."""
        self.server.start(timeout_s=timeout_s)
        wait_for_redis(self.url, timeout_s)  # PING answers only once loaded (LOADING is retried)
        with contextlib.suppress(RedisError):  # the admin connection broken by the restart is dropped here
            self.admin.ping()

    # ---------------------------------------------------------------------------------- workers

    def start_worker(self, name: str, **env: str) -> WorkerProcess:
        worker = start_worker(self.model, self.url, consumer=name, stream=STREAM, log_path=self.workdir / f"{name}.log",
                              env={**self.env, **env}, cwd=ROOT)  # fmt: skip
        self.procs[name] = worker
        self.expected_exit.discard(name)
        return worker

    def wait_ready(self, names: list[str], timeout_s: float = 60) -> None:
        """Wait until every named worker's health key says ready (each process started since)."""
        self.check_alive()
        try:
            wait_ready(self.url, [self.procs[name] for name in names], stream=STREAM, timeout_s=timeout_s)
        except HarnessError:
            self.check_alive()
            raise

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to a worker; its exit is then expected (any code for SIGKILL, 0 otherwise)."""
        self.expected_exit.add(name)
        self.procs[name].send_signal(sig)

    def freeze(self, name: str) -> float:
        """SIGSTOP a worker and wait until it is stopped. Returns when (monotonic)."""
        proc = self.procs[name].proc
        proc.send_signal(signal.SIGSTOP)
        at = time.monotonic()
        while time.monotonic() < at + 2 and _state(proc.pid) not in ("T", ""):
            time.sleep(0.0002)
        return at

    def thaw(self, name: str) -> float:
        """SIGCONT a stopped worker. Returns when (monotonic)."""
        self.procs[name].proc.send_signal(signal.SIGCONT)
        return time.monotonic()

    def wait_exit(self, name: str, timeout_s: float = 30) -> int:
        proc = self.procs[name].proc
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
            code = proc.wait()
            self.crashes.append(f"{name} (pid {proc.pid}) did not exit within {timeout_s:g}s; killed")
        self.exit_codes[f"{name}:{proc.pid}"] = code
        return code

    def check_alive(self) -> None:
        """Record every worker that exited without being asked to as a crash."""
        for name, worker in self.procs.items():
            proc = worker.proc
            code = proc.poll()
            if code is not None and name not in self.expected_exit:
                self.expected_exit.add(name)
                self.exit_codes[f"{name}:{proc.pid}"] = code
                self.crashes.append(f"{name} (pid {proc.pid}) exited on its own with code {code}")

    def alive(self) -> list[str]:
        return [name for name, worker in self.procs.items() if worker.running]

    def stop_workers(self) -> None:
        """SIGTERM every live worker; anything but a clean exit 0 counts as a crash."""
        self.check_alive()
        live = self.alive()
        for name in live:
            self.signal(name, signal.SIGTERM)
        for name in live:
            code = self.wait_exit(name)
            if code != 0:
                self.crashes.append(f"{name} exited with code {code} after SIGTERM")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_workers()
        for worker in self.procs.values():
            if worker.running:
                worker.proc.kill()
                worker.proc.wait()
        if self._admin is not None:
            self._admin.close()
        self.server.stop()

    # ------------------------------------------------------------------------------- inspection

    def pending_of(self, consumer: str) -> list[str]:
        """Entry ids pending on one consumer."""
        rows = self.admin.xpending_range(STREAM, GROUP, min="-", max="+", count=100_000, consumername=consumer)
        return [_text(r["message_id"]) for r in rows]

    def pending_count(self, consumer: str) -> int:
        """How many entries one consumer holds unacknowledged."""
        for row in self.admin.xpending(STREAM, GROUP).get("consumers") or []:
            if row["name"] in (consumer, consumer.encode()):
                return int(row["pending"])
        return 0

    def request_ids(self, entry_ids: list[str]) -> set[str]:
        """The request ids (``id`` field) of stream entries still in the request stream."""
        pipe = self.admin.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xrange(STREAM, entry_id, entry_id)
        out: set[str] = set()
        for rows in pipe.execute():
            for _eid, fields in rows:
                if b"id" in fields:
                    out.add(fields[b"id"].decode(errors="replace"))
        return out

    def group_backlog(self) -> tuple[int, int]:
        """(pending, lag) of the consumer group; a missing group has every entry of the stream as lag."""
        if not self.admin.exists(STREAM):
            return 0, 0
        for group in self.admin.xinfo_groups(STREAM):
            if _text(group["name"]) == GROUP:
                return int(group["pending"]), int(group.get("lag") or 0)
        return 0, int(self.admin.xlen(STREAM))

    def entries_added(self) -> int:
        """How many entries were ever added to the request stream (XINFO STREAM entries-added)."""
        return int(self.admin.xinfo_stream(STREAM)["entries-added"])

    def dead_len(self) -> int:
        return int(self.admin.xlen(DEAD))

    def health_total(self, field_name: str) -> int:
        """Sum of one counter over every live worker's health hash."""
        total = 0
        for key in self.admin.scan_iter(match=f"{STREAM}:worker:*", count=1000):
            value = self.admin.hget(key, field_name)
            total += int(value or 0)
        return total


def _state(pid: int) -> str:
    """A process's state letter from /proc ("T": stopped), or "" if it is gone or there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def workdir(keep: Path | None = None) -> Iterator[Path]:
    """A scratch directory for models and logs (kept if ``keep`` is given)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="redis-infer-chaos-") as tmp:
        yield Path(tmp)
