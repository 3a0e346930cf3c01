"""The live conformance suite shared by the client tests (tests/test_conformance_<language>.py).

Each client ships a driver that takes ``<host> <port> <stream>``, runs the scenarios below against a
worker serving the affine model on that stream, and prints one JSON line ``{"name", "ok", "detail"}`` per
scenario. ``run_driver`` starts that worker (on a real redis-server) and collects the lines.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import redis

from redis_infer_protocol import acl
from tests.helpers import ROOT, WorkerThread, make_affine_model
from worker.embedded import EmbeddedRedis

SCENARIOS = (
    "ok",
    "timing_subtracts",
    "outputs_subset",
    "batching",
    "invalid_argument",
    "model_not_found",
    "malformed",
    "unsupported_version",
    "too_large",
    "expired",
    "client_timeout",
    "busy",
    "hostile_then_serves",
    "close_deletes_reply_stream",
)

# Rules of the protocol that issue 12 asked the spec to state, checked through a client against the reference
# worker (the Go driver runs them; a client may add them): outputs [] and duplicate names, nil as absent or
# MALFORMED, the parameters bound (64 / 65-256 TOO_LARGE / 257 MALFORMED), an unreadable id answered under the
# entry id (and dead-lettered), requests without a usable reply_to dead-lettered with the documented record and
# never answered.
SPEC_SCENARIOS = (
    "outputs_edge_cases",
    "nil_handling",
    "parameters_bound",
    "unreadable_id_answered_under_entry_id",
    "unanswerable_dead_lettered",
)

# What a producer under the shipped ACL role may do (deploy/acl: XADD to infer:requests and the backlog script,
# HGET of its limits, XLEN, its own infer:reply:* stream): the scenarios that need nothing else. The worker
# publishes a max_backlog, so every request goes through the backlog script (docs/protocol.md §2.1).
ACL_SCENARIOS = ("ok", "batching", "invalid_argument", "malformed", "expired", "hostile_then_serves")
# Then, with the worker stopped and the limit set just above the backlog, a send round whose tail does not fit:
# the first requests added, the rest BUSY (a driver runs it only when CONFORMANCE_ONLY names it).
BUSY_TAIL = "busy_refuses_the_tail"
BUSY_TAIL_ROOM = 129  # one more than a script call's chunk: the refusal falls in the second call
ACL_STREAM = "infer:requests"  # the stream the shipped roles name

Results = dict[str, dict[str, object]]


def run_driver(
    command: Sequence[str], redis_server: EmbeddedRedis, workdir: Path, *, stream: str,
    env: Mapping[str, str] | None = None, timeout_s: float = 300, worker_url: str | None = None,
    streams: Mapping[str, object] | None = None,
) -> Results:  # fmt: skip
    """Run ``command + [host, port, stream]`` while a worker serves the affine model on ``stream``.

    Each language uses its own stream, so that drivers sharing one redis-server do not see each other's
    entries. ``worker_url`` connects the worker otherwise (another ACL user); ``streams`` adds worker
    settings of that section (``max_backlog``...). Returns the result lines by scenario name; fails if the
    driver printed none.
    """
    model = make_affine_model(workdir / "affine.onnx")
    settings = {"block_ms": 100, **(streams or {})}
    with WorkerThread(worker_url or redis_server.url, model, stream=stream, streams=settings,
                      batch={"max_delay_ms": 20}):  # fmt: skip
        return run_driver_alone(command, redis_server, stream=stream, env=env, timeout_s=timeout_s)


def run_driver_alone(
    command: Sequence[str], redis_server: EmbeddedRedis, *, stream: str, env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
) -> Results:  # fmt: skip
    """Run ``command + [host, port, stream]`` with no worker: the result lines by scenario name."""
    url = urlparse(redis_server.url)
    proc = subprocess.run(
        [*command, url.hostname or "127.0.0.1", str(url.port), stream],
        capture_output=True, text=True, timeout=timeout_s, check=False, env=None if env is None else dict(env),
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the conformance driver printed no results (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return {str(line["name"]): line for line in lines}


@contextmanager
def acl_server(workdir: Path) -> Iterator[tuple[EmbeddedRedis, dict[str, str], redis.Redis]]:
    """A redis-server with the shipped users.acl (plus an ``admin`` for the test's own set-up): the server, a
    URL per shipped user (``producer``, ``worker``...) and an admin connection."""
    aclfile = workdir / "users.acl"
    aclfile.write_text((ROOT / "deploy" / "acl" / "users.acl").read_text() + "user admin on >admin ~* &* +@all\n")
    with EmbeddedRedis(extra_args=["--aclfile", str(aclfile)]) as server:
        as_user = {u: f"redis://{u}:{acl.PASSWORD_PLACEHOLDER.format(name=u)}@127.0.0.1:{server.port}/0"
                   for u in ("producer", "worker")}  # fmt: skip
        admin = redis.Redis(port=server.port, username="admin", password="admin")
        try:
            yield server, as_user, admin
        finally:
            admin.close()


def run_under_the_producer_acl(command: Sequence[str], workdir: Path, env: Mapping[str, str]) -> Results:
    """The driver as the shipped ``producer`` user (``CONFORMANCE_URL``), the worker as ``worker``: first
    ACL_SCENARIOS against a worker publishing a max_backlog, then BUSY_TAIL with the worker stopped and the
    limit BUSY_TAIL_ROOM above the backlog. Returns the result lines of both runs."""
    with acl_server(workdir) as (server, as_user, admin):
        producer_env = {**env, "CONFORMANCE_URL": as_user["producer"]}
        limits = f"{ACL_STREAM}:limits"
        served = run_driver(command, server, workdir, stream=ACL_STREAM,
                            env={**producer_env, "CONFORMANCE_ONLY": ",".join(ACL_SCENARIOS)},
                            worker_url=as_user["worker"], streams={"max_backlog": 100000})  # fmt: skip
        assert admin.hget(limits, "max_backlog") == b"100000"  # the script path was taken
        admin.hset(limits, "max_backlog", admin.xlen(ACL_STREAM) + BUSY_TAIL_ROOM)
        busy = run_driver_alone(command, server, stream=ACL_STREAM, env={**producer_env, "CONFORMANCE_ONLY": BUSY_TAIL})
    return {**served, **busy}


def check_scenario(results: Results, scenario: str) -> None:
    result = results.get(scenario)
    assert result is not None, f"scenario {scenario} did not run"
    assert result["ok"], result.get("detail")
