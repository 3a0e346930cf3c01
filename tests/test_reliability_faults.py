"""Redis refusals never kill a worker (issue 7: H2, H3, H5), each against its own real redis-server."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from redis_infer_protocol.codec import Status
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.embedded import EmbeddedRedis, free_port
from worker.service import Worker
from worker.testing import wait_until

pytestmark = pytest.mark.integration

STREAM = "infer:requests"
DEAD = f"{STREAM}:dead"
GROUP = "workers"
HTTP = {"host": "127.0.0.1", "port": 0}


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, free to be broken (protected configs such as ``dir`` allowed)."""
    with EmbeddedRedis(extra_args=["--enable-protected-configs", "yes"]) as srv:
        yield srv


def wait_for(predicate: Callable[[], object], timeout_s: float = 30) -> None:
    wait_until(predicate, timeout_s=timeout_s)


def readyz(worker: Worker) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        json.loads(err.read())
        return err.code


def pending(client: redis.Redis) -> int:
    return int(client.xpending(STREAM, GROUP)["pending"])


# ---------------------------------------------------------------- H3: refusals are outages, not exits


def _misconf(client: redis.Redis) -> Callable[[], None]:
    """A failed background save with stop-writes-on-bgsave-error: every write answers MISCONF."""
    old_dir = client.config_get("dir")["dir"]
    client.config_set("save", "3600 1")
    client.config_set("dir", "/proc")  # no file can be created there, even by root
    client.bgsave()
    wait_for(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err")

    def restore() -> None:
        client.config_set("dir", old_dir)
        client.bgsave()
        wait_for(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "ok")

    return restore


def _noreplicas(client: redis.Redis) -> Callable[[], None]:
    client.config_set("min-replicas-to-write", "1")
    return lambda: client.config_set("min-replicas-to-write", "0") and None


def _readonly(client: redis.Redis) -> Callable[[], None]:
    """A failover in reverse: the worker's Redis becomes a replica (of nothing that answers)."""
    client.replicaof("127.0.0.1", str(free_port()))
    return lambda: client.replicaof("NO", "ONE") and None


def _busy(client: redis.Redis) -> Callable[[], None]:
    """A script that will not end: everyone else gets BUSY until SCRIPT KILL."""
    client.config_set("busy-reply-threshold", "50")
    url = client.connection_pool.connection_kwargs
    runner = redis.Redis(host=url["host"], port=url["port"])
    thread = threading.Thread(target=lambda: _run_forever(runner), daemon=True)
    thread.start()
    wait_for(lambda: _answers_busy(client))

    def restore() -> None:
        client.script_kill()
        thread.join(10)
        runner.close()

    return restore


def _run_forever(client: redis.Redis) -> None:
    with contextlib.suppress(redis.ResponseError):  # killed
        client.eval("while true do end", 0)


def _answers_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.BusyLoadingError:
        return False
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


@pytest.mark.parametrize("induce", [_misconf, _noreplicas, _readonly, _busy], ids=lambda f: f.__name__[1:])
def test_a_refusing_redis_is_an_outage_not_an_exit(
    server: EmbeddedRedis, affine: Path, induce: Callable[[redis.Redis], Callable[[], None]]
) -> None:
    client = redis.Redis.from_url(server.url)
    with WorkerThread(server.url, affine, http=HTTP, health_ttl_s=2) as wt:
        worker = wt.worker
        assert worker is not None
        send(client, "affine", {"x": rand(1, 4)}, request_id="before")
        assert collect(client, 1)["before"].status is Status.OK
        wait_for(lambda: worker.http_port is not None)
        restore = induce(client)
        wait_for(lambda: worker.redis_down_since is not None)
        wait_for(lambda: readyz(worker) == 503)  # and stays so: nothing that merely reads marks Redis back
        assert worker._claim_room() == 0  # no claims while Redis refuses
        errors = worker.stats.redis_errors
        wait_for(lambda: worker.stats.redis_errors > errors + 2)  # still trying, with backoff
        assert wt.error is None and not worker.stopping
        restore()
        send(client, "affine", {"x": rand(1, 4)}, request_id="after")
        assert collect(client, 2)["after"].status is Status.OK
        wait_for(lambda: worker.redis_down_since is None)
        assert readyz(worker) == 200
    assert wt.error is None
    client.close()


def test_out_of_memory_at_start_is_retried(server: EmbeddedRedis, affine: Path) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory", "1")  # noeviction: every write that may grow memory is refused
    with WorkerThread(server.url, affine) as wt:
        worker = wt.worker
        assert worker is not None
        wait_for(lambda: worker.stats.redis_errors >= 3)  # creating the group is refused, again and again
        assert wt.error is None and not worker.stopping
        client.config_set("maxmemory", "0")
        send(client, "affine", {"x": rand(1, 4)}, request_id="late")
        assert collect(client, 1)["late"].status is Status.OK
    client.close()


# ------------------------------------------------------------ H5: dead-letter writes refused for good


def test_a_dead_letter_key_of_the_wrong_type_does_not_stop_the_worker(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    redis_client.set(DEAD, "not a stream")
    with WorkerThread(redis_url, affine) as wt:
        for i in range(5):
            redis_client.xadd(STREAM, {"junk": f"{i}"})  # nobody to answer: dead-letter only
        send(redis_client, "affine", {"x": rand(1, 4)}, request_id="good")
        assert collect(redis_client, 1)["good"].status is Status.OK
        worker = wt.worker
        assert worker is not None
        wait_for(lambda: pending(redis_client) == 0)
        assert worker.stats.dead_letters_lost == 5 and not worker.stopping
    assert redis_client.get(DEAD) == b"not a stream"


def test_a_field_name_near_proto_max_bulk_len_does_not_stop_the_worker(server: EmbeddedRedis, affine: Path) -> None:
    client = redis.Redis.from_url(server.url)
    client.config_set("proto-max-bulk-len", str(1024 * 1024))
    with WorkerThread(server.url, affine) as wt:
        client.xadd(STREAM, {b"n" * (1024 * 1024 - 1): b"x"})  # "f:" + this name would be over the limit
        for i in range(20):
            send(client, "affine", {"x": rand(1, 4)}, request_id=f"after{i}")
        assert all(r.status is Status.OK for r in collect(client, 20).values())
        wait_for(lambda: pending(client) == 0)
        assert wt.worker is not None and wt.worker.stats.dead_lettered == 1
    (dead,) = client.xrange(DEAD)
    assert dead[1][b"dropped_fields"].startswith(b"b'nnnn")
    client.close()


# ------------------------------------------------------------------------- H2: out of memory, backlog


def test_out_of_memory_with_a_backlog_holds_at_most_max_queued_and_recovers(
    server: EmbeddedRedis, affine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(server.url)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    client.hset(f"{STREAM}:limits", mapping={"max_backlog": "0"})
    for i in range(40):
        send(client, "affine", {"x": rand(1, 4, seed=i)}, request_id=f"r{i}")
    client.config_set("maxmemory", "1")  # replies refused OOM; reads (XREADGROUP) still served
    with WorkerThread(server.url, affine, batch={"max_size": 2, "max_queued": 4}) as wt:
        worker = wt.worker
        assert worker is not None
        wait_for(lambda: worker.stats.refused_writes >= 20)
        assert pending(client) <= 4  # unsettled batches count against max_queued
        assert wt.error is None and not worker.stopping
        client.config_set("maxmemory", "0")
        replies = collect(client, 40)
        wait_for(lambda: pending(client) == 0)
    assert all(r.status is Status.OK for r in replies.values())
    warnings = [r for r in caplog.records if "redis refused writes" in r.getMessage()]
    assert 1 <= len(warnings) <= 3  # rate-limited: not one per retry
    client.close()


def test_a_redis_near_maxmemory_with_noeviction_is_reported_at_start(
    server: EmbeddedRedis, affine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(server.url)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    client.hset(f"{STREAM}:limits", mapping={"max_backlog": "0"})
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(int(used * 1.1)))  # 10 % to spare
    with WorkerThread(server.url, affine):
        wait_for(lambda: any("maxmemory-policy noeviction" in r.getMessage() for r in caplog.records))
    client.close()
