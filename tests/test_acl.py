"""The shipped ACL roles (deploy/acl) against a real redis-server started with ``--aclfile``.

Each role does its whole job under its own user; a table of what each must not do is refused with NOPERM.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from producer import Client
from producer.__main__ import stream_stats
from producer.monitor import snapshot
from redis_infer_protocol import acl, keys
from redis_infer_protocol.codec import Status, encode_request
from tests.conftest import ROOT
from tests.helpers import WorkerThread, collect, make_affine_model, rand, send
from worker.embedded import EmbeddedRedis
from worker.errors import ConfigError

pytestmark = pytest.mark.integration

ACL_DIR = ROOT / "deploy" / "acl"
STREAM = keys.DEFAULT_STREAM
DEAD = keys.dead_letter_stream(STREAM)
ADMIN = ("admin", "admin-test-only")


def password(user: str) -> str:
    return acl.PASSWORD_PLACEHOLDER.format(name=user)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """redis-server with the SHIPPED users.acl, plus an admin user for the tests' own set-up."""
    path = tmp_path_factory.mktemp("acl") / "users.acl"
    shipped = (ACL_DIR / "users.acl").read_text()
    path.write_text(shipped + f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n")
    with EmbeddedRedis(extra_args=["--aclfile", str(path)]) as server:
        yield server


def url_for(server: EmbeddedRedis, user: str) -> str:
    secret = ADMIN[1] if user == ADMIN[0] else password(user)
    return f"redis://{user}:{secret}@127.0.0.1:{server.port}/0"


@pytest.fixture
def connect(acl_server: EmbeddedRedis) -> Iterator[Callable[[str], redis.Redis]]:
    """Open a client as one user; the database is flushed (as admin) after the test."""
    opened: list[redis.Redis] = []

    def open_as(user: str) -> redis.Redis:
        opened.append(redis.Redis.from_url(url_for(acl_server, user)))
        return opened[-1]

    yield open_as
    admin = open_as(ADMIN[0])
    admin.flushall()
    for client in opened:
        client.close()


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


def test_shipped_files_are_generated_from_the_key_names(tmp_path: Path) -> None:
    written = acl.write_files(tmp_path, tenants=acl.SHIPPED_TENANTS)
    for path in written:
        assert path.read_text() == (ACL_DIR / path.name).read_text(), f"regenerate {path.name}: see its README"


def test_default_user_is_off(acl_server: EmbeddedRedis) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(acl_server.url).ping()


def test_tenant_names_that_would_widen_a_pattern_are_refused() -> None:
    for bad in ["", "a*", "a:b", "a?", "x" * 65, "a b"]:
        with pytest.raises(ValueError, match="tenant"):
            acl.tenant_reply_prefix(bad)
    assert acl.tenant_reply_prefix("alpha") == "infer:reply:alpha:"


def test_worker_serves_and_tenant_producer_gets_replies(
    connect: Callable[[str], redis.Redis], acl_server: EmbeddedRedis, affine: Path
) -> None:
    """The core path under the shipped users: a worker (group, read, reply, ack, health, limits, clean-up on
    stop) and a tenant's producer (backlog script, limits key, its reply stream, delete on close)."""
    admin = connect(ADMIN[0])
    worker_url = url_for(acl_server, "worker")
    prefixes = ["infer:reply:alpha:", "infer:reply:beta:"]
    with WorkerThread(worker_url, affine, streams={"block_ms": 100, "reply_prefixes": prefixes, "max_backlog": 100}):
        client = Client(url_for(acl_server, "producer-alpha"), model="affine", tenant="alpha")
        try:
            assert client.reply_stream.startswith("infer:reply:alpha:")
            x = rand(2, 4, seed=1)
            result = client.infer({"x": x}, timeout=30)
            np.testing.assert_allclose(result["y"], 2 * x + 1, rtol=1e-6)
        finally:
            client.close()
        assert admin.hget(keys.limits_key(STREAM), "max_backlog") == b"100"  # the backlog script path was used
        # A request whose reply_to is outside the tenants' prefixes is dead-lettered (the worker may write there).
        send(admin, "affine", {"x": rand(1, 4)}, request_id="stray", reply_to="infer:reply:test")
        send(admin, "affine", {"x": rand(1, 4)}, request_id="bare", reply_to="infer:reply:alpha:")
        _wait(lambda: admin.xlen(DEAD) >= 2)
    assert admin.xpending(STREAM, keys.DEFAULT_GROUP)["pending"] == 0
    assert not admin.exists(client.reply_stream)


def test_worker_rejection_reply_goes_to_the_tenant(connect: Callable[[str], redis.Redis], acl_server: EmbeddedRedis,
                                                   affine: Path) -> None:  # fmt: skip
    admin = connect(ADMIN[0])
    beta = connect("producer-beta")
    with WorkerThread(url_for(acl_server, "worker"), affine):
        beta.xadd(STREAM, encode_request("bad", "infer:reply:beta:r1", "affine", {"nope": rand(1, 4)}))
        reply = collect(beta, 1, reply_to="infer:reply:beta:r1")["bad"]
    assert reply.status is Status.INVALID_ARGUMENT
    assert admin.xpending(STREAM, keys.DEFAULT_GROUP)["pending"] == 0


def test_monitor_reads_status_and_keda_lag(connect: Callable[[str], redis.Redis], acl_server: EmbeddedRedis,
                                           affine: Path) -> None:  # fmt: skip
    admin = connect(ADMIN[0])
    admin.xgroup_create(STREAM, keys.DEFAULT_GROUP, id="0", mkstream=True)
    for i in range(3):
        send(admin, "affine", {"x": rand(1, 4)}, request_id=f"r{i}")
    admin.xreadgroup(keys.DEFAULT_GROUP, "c1", {STREAM: ">"}, count=1)
    monitor = connect("monitor")
    stats = stream_stats(monitor, STREAM)  # the status CLI's queries
    assert stats["length"] == 3 and stats["groups"][0]["pending"] == 1
    # KEDA's redis-streams scaler: XINFO GROUPS (lag), XPENDING, XLEN.
    group = monitor.xinfo_groups(STREAM)[0]
    assert group["lag"] == 2
    assert monitor.xpending(STREAM, keys.DEFAULT_GROUP)["pending"] == 1
    assert monitor.xlen(STREAM) == 3
    assert monitor.xinfo_stream(STREAM)["length"] == 3
    assert monitor.xlen(DEAD) == 0
    # The whole status view, not just what KEDA needs: nothing left out for want of a permission.
    status = snapshot(monitor, STREAM)
    assert status.notes == [] and status.length == 3 and status.groups[0].pending == 1


def test_operator_requeue_runs_in_one_transaction(connect: Callable[[str], redis.Redis]) -> None:
    admin = connect(ADMIN[0])
    admin.xadd(DEAD, {"f:v": b"1"})
    operator = connect("operator")
    ((entry_id, _fields),) = operator.xrange(DEAD)
    with operator.pipeline(transaction=True) as tx:  # what `dlq requeue` sends: MULTI, XADD, XDEL, EXEC
        tx.xadd(STREAM, {"v": b"1"})
        tx.xdel(DEAD, entry_id)
        tx.execute()
    assert admin.xlen(DEAD) == 0 and admin.xlen(STREAM) == 1


def test_operator_requeues_and_purges_dead_letters(connect: Callable[[str], redis.Redis]) -> None:
    admin = connect(ADMIN[0])
    fields = encode_request("again", "infer:reply:test", "affine", {"x": rand(1, 4)})
    admin.xadd(DEAD, fields)
    admin.xadd(DEAD, {"junk": b"1"})
    operator = connect("operator")
    (entry_id, dead_fields), _junk = operator.xrange(DEAD)
    operator.xadd(STREAM, dead_fields)
    operator.xdel(DEAD, entry_id)
    assert admin.xrange(STREAM)[0][1] == dead_fields
    operator.xtrim(DEAD, maxlen=0)
    assert admin.xlen(DEAD) == 0
    operator.delete(DEAD)


def _entry() -> dict[str, bytes]:
    return encode_request("x", "infer:reply:alpha:r", "affine", {"x": rand(1, 4)})


# (user, what it tries): each must be refused with NOPERM.
FORBIDDEN: list[tuple[str, str, Callable[[redis.Redis], Any]]] = [
    ("producer-alpha", "delete the request stream", lambda r: r.delete(STREAM)),
    ("producer-alpha", "trim the request stream", lambda r: r.xtrim(STREAM, maxlen=0)),
    ("producer-alpha", "delete a request entry", lambda r: r.xdel(STREAM, "1-1")),
    ("producer-alpha", "read the request stream", lambda r: r.xrange(STREAM)),
    ("producer-alpha", "read another tenant's replies", lambda r: r.xread({"infer:reply:beta:r": "0"})),
    ("producer-alpha", "delete another tenant's replies", lambda r: r.delete("infer:reply:beta:r")),
    ("producer-alpha", "read the shared reply prefix", lambda r: r.xread({"infer:reply:r": "0"})),
    ("producer-alpha", "write the dead-letter stream", lambda r: r.xadd(DEAD, {"a": b"1"})),
    ("producer-alpha", "trim the dead-letter stream", lambda r: r.xtrim(DEAD, maxlen=0)),
    ("producer-alpha", "write the limits key", lambda r: r.hset(keys.limits_key(STREAM), "max_backlog", 0)),
    ("producer-alpha", "script another key", lambda r: r.eval("return redis.call('DEL', KEYS[1])", 1, DEAD)),
    ("producer-alpha", "claim entries", lambda r: r.xreadgroup("workers", "me", {STREAM: ">"})),
    ("producer-alpha", "FLUSHALL", lambda r: r.flushall()),
    ("producer-alpha", "CONFIG", lambda r: r.config_get("*")),
    ("producer-alpha", "KEYS", lambda r: r.keys("*")),
    ("producer", "delete the request stream", lambda r: r.delete(STREAM)),
    ("producer", "read the dead letters", lambda r: r.xrange(DEAD)),
    ("worker", "FLUSHALL", lambda r: r.flushall()),
    ("worker", "CONFIG SET", lambda r: r.config_set("appendonly", "no")),
    ("worker", "read a reply stream", lambda r: r.xread({"infer:reply:alpha:r": "0"})),
    ("worker", "write an unrelated key", lambda r: r.set("other", 1)),
    ("worker", "ACL", lambda r: r.acl_list()),
    ("monitor", "add a request", lambda r: r.xadd(STREAM, _entry())),
    ("monitor", "trim the request stream", lambda r: r.xtrim(STREAM, maxlen=0)),
    ("monitor", "read request contents", lambda r: r.xrange(STREAM)),
    ("monitor", "read replies", lambda r: r.xlen("infer:reply:alpha:r")),
    ("monitor", "FLUSHALL", lambda r: r.flushall()),
    ("operator", "delete the request stream", lambda r: r.delete(STREAM)),
    ("operator", "trim the request stream", lambda r: r.xtrim(STREAM, maxlen=0)),
    ("operator", "read the request stream", lambda r: r.xrange(STREAM)),
    ("operator", "read replies", lambda r: r.xread({"infer:reply:alpha:r": "0"})),
    ("operator", "CONFIG", lambda r: r.config_get("*")),
]


@pytest.mark.parametrize(("user", "what", "attempt"), FORBIDDEN, ids=[f"{u}: {w}" for u, w, _ in FORBIDDEN])
def test_role_is_refused(connect: Callable[[str], redis.Redis], user: str, what: str,
                         attempt: Callable[[redis.Redis], Any]) -> None:  # fmt: skip
    admin = connect(ADMIN[0])
    admin.xadd(STREAM, {"a": b"1"})
    admin.xadd(DEAD, {"a": b"1"})
    admin.xadd("infer:reply:beta:r", {"a": b"1"})
    client = connect(user)
    client.ping()  # the user itself works
    with pytest.raises(redis.exceptions.NoPermissionError):
        attempt(client)
    assert admin.xlen(STREAM) == 1 and admin.xlen(DEAD) == 1  # nothing was lost


def test_explicit_ids_cannot_be_refused_by_acl(connect: Callable[[str], redis.Redis]) -> None:
    """What ACLs cannot express (docs/operations.md): a producer allowed XADD may choose the id. The
    backlog script always adds with ``*``; the worker clamps future ids at read."""
    producer = connect("producer-alpha")
    assert producer.xadd(STREAM, {"a": b"1"}, id="99999999999999-0") == b"99999999999999-0"


def _wait(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_reply_prefixes_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config import load_settings

    assert load_settings().streams.allowed_reply_prefixes == (keys.DEFAULT_REPLY_PREFIX,)
    monkeypatch.setenv("WORKER_STREAMS__REPLY_PREFIXES", '["infer:reply:alpha:", "infer:reply:beta:"]')
    assert load_settings().streams.allowed_reply_prefixes == ("infer:reply:alpha:", "infer:reply:beta:")
    for bad in ["[]", '[""]']:
        monkeypatch.setenv("WORKER_STREAMS__REPLY_PREFIXES", bad)
        with pytest.raises(ConfigError, match="reply_prefixes"):
            load_settings()


def test_may_reply_to_takes_any_tenant_prefix_but_never_a_bare_one() -> None:
    from tests.fakes import TimesTen
    from worker.intake import Intake

    intake = Intake(TimesTen().info, reply_prefix=("infer:reply:alpha:", "infer:reply:beta:"),
                    forbidden_reply_to=frozenset({STREAM}))  # fmt: skip
    assert intake.may_reply_to("infer:reply:alpha:0123") and intake.may_reply_to("infer:reply:beta:x")
    for key in ["infer:reply:alpha:", "infer:reply:beta:", "infer:reply:x", "infer:reply:", STREAM, "other"]:
        assert not intake.may_reply_to(key), key
    assert not Intake(TimesTen().info, reply_prefix="infer:reply:").may_reply_to("infer:reply:")


def test_client_tenant_reply_stream() -> None:
    from producer.core import ClientConfig
    from redis_infer_protocol.limits import Limits

    config = ClientConfig("m", STREAM, None, None, keys.DEFAULT_REPLY_PREFIX, Limits(), tenant="alpha")
    assert config.tenant_reply_prefix == "infer:reply:alpha:"
    with pytest.raises(ValueError, match="tenant"):
        ClientConfig("m", STREAM, None, None, keys.DEFAULT_REPLY_PREFIX, Limits(), tenant="a*")


SECRET = "s3cret-Pa55word"


def test_no_password_in_cli_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from producer.__main__ import main

    monkeypatch.setenv("REDIS_INFER_URL", f"redis://producer:{SECRET}@127.0.0.1:1/0")
    with pytest.raises(SystemExit):
        main(["stats", "--help"])
    out = capsys.readouterr()
    assert "REDIS_INFER_URL" in out.out and SECRET not in out.out + out.err


def test_no_password_in_worker_logs_or_errors(
    acl_server: EmbeddedRedis, affine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker refused by Redis (wrong password in its URL) stops with an error that says why, and neither
    the error nor the logs repeat the password."""
    caplog.set_level("DEBUG")
    url = f"redis://worker:{SECRET}@127.0.0.1:{acl_server.port}/0"
    worker = WorkerThread(url, affine).start()
    _wait(lambda: worker.error is not None)
    with pytest.raises(ConfigError, match="credentials") as refused:
        worker.stop()
    text = f"{refused.value!r} {refused.value} {refused.value.__cause__!r} {caplog.text}"
    assert SECRET not in text


def test_async_client_with_tenant_gets_replies(acl_server: EmbeddedRedis, affine: Path) -> None:
    import asyncio

    from producer import AsyncClient

    async def main() -> tuple[str, dict[str, np.ndarray]]:
        client = AsyncClient(url_for(acl_server, "producer-beta"), model="affine", tenant="beta")
        try:
            return client.reply_stream, await client.infer({"x": x}, timeout=30)
        finally:
            await client.aclose()

    x = rand(3, 4, seed=2)
    with WorkerThread(url_for(acl_server, "worker"), affine, streams={"block_ms": 100, "max_backlog": 10}):
        reply_stream, result = asyncio.run(main())
    assert reply_stream.startswith("infer:reply:beta:")
    np.testing.assert_allclose(result["y"], 2 * x + 1, rtol=1e-6)
    admin = redis.Redis.from_url(url_for(acl_server, ADMIN[0]))
    admin.flushall()
    admin.close()


def test_setuser_lines_give_the_same_users_as_the_aclfile(acl_server: EmbeddedRedis) -> None:
    """setuser.redis, as redis-cli would split it, sets up exactly the users of users.acl."""
    import shlex

    with EmbeddedRedis() as plain:
        client = redis.Redis.from_url(plain.url, decode_responses=True)
        for line in (ACL_DIR / "setuser.redis").read_text().splitlines():
            client.execute_command(*shlex.split(line))
        from_setuser = {_rules(u) for u in client.acl_list() if not u.startswith("user default ")}
        client.close()
    admin = redis.Redis.from_url(url_for(acl_server, ADMIN[0]), decode_responses=True)
    from_file = {_rules(u) for u in admin.acl_list() if not u.startswith(("user default ", "user admin "))}
    admin.close()
    assert from_setuser == from_file and len(from_file) == 6


def _rules(acl_list_line: str) -> tuple[tuple[str, ...], ...]:
    """An ``ACL LIST`` line as order-free rules: Redis lists a user's commands in hash order."""
    selectors = re.findall(r"\(([^)]*)\)", acl_list_line)
    root = re.sub(r"\([^)]*\)", "", acl_list_line)
    return tuple(sorted(tuple(sorted(part.split())) for part in [root, *selectors]))
