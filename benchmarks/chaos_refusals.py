"""Ways to make a live redis-server refuse writes with an error reply, for the chaos run.

Each ``induce`` function breaks the cluster's Redis and returns the function that repairs it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import redis

from benchmarks.chaos_harness import Cluster
from worker.embedded import free_port


def _wait(predicate: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("redis did not reach the state asked for")
        time.sleep(0.02)


def misconf(cluster: Cluster) -> Callable[[], None]:
    """A failed background save with stop-writes-on-bgsave-error: writes answer MISCONF."""
    admin = cluster.admin
    old_dir = admin.config_get("dir")["dir"]
    admin.config_set("save", "3600 1")
    admin.config_set("dir", "/proc")  # nothing can be created there
    admin.bgsave()
    _wait(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "err")

    def restore() -> None:
        admin.config_set("dir", old_dir)
        admin.bgsave()
        _wait(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "ok")
        admin.config_set("save", "")

    return restore


def noreplicas(cluster: Cluster) -> Callable[[], None]:
    """min-replicas-to-write with no replica: writes answer NOREPLICAS."""
    cluster.admin.config_set("min-replicas-to-write", "1")
    return lambda: cluster.admin.config_set("min-replicas-to-write", "0") and None


def readonly(cluster: Cluster) -> Callable[[], None]:
    """The server turns replica (of nothing that answers), as in a failover: writes answer READONLY."""
    cluster.admin.replicaof("127.0.0.1", str(free_port()))
    return lambda: cluster.admin.replicaof("NO", "ONE") and None


def oom(cluster: Cluster) -> Callable[[], None]:
    """maxmemory below what is used, noeviction: writes that may grow memory answer OOM."""
    admin = cluster.admin
    old = admin.config_get("maxmemory")["maxmemory"]
    admin.config_set("maxmemory", "1")
    return lambda: admin.config_set("maxmemory", old) and None


def busy(cluster: Cluster) -> Callable[[], None]:
    """A script that runs until killed: every other command answers BUSY."""
    admin = cluster.admin
    admin.config_set("busy-reply-threshold", "50")
    runner = redis.Redis.from_url(cluster.url)

    def run() -> None:
        with contextlib.suppress(redis.ResponseError):
            runner.eval("while true do end", 0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def answers_busy() -> bool:
        try:
            admin.ping()
        except redis.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False

    _wait(answers_busy)

    def restore() -> None:
        admin.script_kill()
        thread.join(10)
        runner.close()

    return restore


INDUCE: dict[str, Callable[[Cluster], Callable[[], None]]] = {
    "misconf": misconf,
    "noreplicas": noreplicas,
    "readonly": readonly,
    "oom": oom,
    "busy": busy,
}
