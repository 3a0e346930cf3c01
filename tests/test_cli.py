"""``python -m producer``: infer and stats, run as a subprocess against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from producer.__main__ import _safe_file_name, format_stats, timing_ms
from redis_infer_protocol.codec import Request, Status, Timing, decode_request, encode_reply

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
STREAM = "cli:requests"
GROUP = "fake-workers"
WAIT_S = 10.0

Handler = Callable[[Request], dict[str, bytes]]


def doubler(request: Request) -> dict[str, bytes]:
    now = time.time_ns()
    timing = Timing(now - 3_000_000, now - 2_000_000, now - 1_500_000, now - 1_000_000, now - 500_000, now)
    outputs = {"y": request.inputs["x"] * 2, "label": np.array([b"cat", b"\xff"], dtype=object)}
    return encode_reply(request.id, Status.OK, outputs=outputs, model=request.model, worker="w1", timing=timing)


@pytest.fixture
def serve(redis_url: str) -> Iterator[Callable[[Handler], None]]:
    """Start a fake worker thread answering each request with ``handler(request)``."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    r = redis.Redis.from_url(redis_url)

    def loop(handler: Handler) -> None:
        while not stop.is_set():
            for _, entries in r.xreadgroup(GROUP, "c", {STREAM: ">"}, count=16, block=50) or []:
                for entry_id, fields in entries:
                    request = decode_request(fields)
                    r.xadd(request.reply_to, handler(request))  # type: ignore[arg-type]
                    r.xack(STREAM, GROUP, entry_id)

    def start(handler: Handler) -> None:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        threads.append(threading.Thread(target=loop, args=(handler,), daemon=True))
        threads[-1].start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(WAIT_S)
    r.close()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_INFER_")}
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def save(path: Path, array: np.ndarray) -> str:
    np.save(path, array)
    return str(path)


# -------------------------------------------------------------------------------------------- infer


def test_infer_prints_outputs_and_saves_them(tmp_path: Path, redis_url: str, serve: Callable[[Handler], None]) -> None:
    serve(doubler)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out_dir = tmp_path / "out"
    result = cli(
        "infer", "--url", redis_url, "--stream", STREAM, "--model", "m", "--input", f"x={save(tmp_path / 'x.npy', x)}",
        "--output-dir", str(out_dir), "--priority", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "worker=w1" in result.stdout
    assert "output y: dtype=float32 shape=(2, 3)" in result.stdout
    assert "[[ 0.  2.  4.]" in result.stdout
    assert "timing (ms after enqueue): read=1.000  batched=1.500" in result.stdout
    np.testing.assert_array_equal(np.load(out_dir / "y.npy"), x * 2)
    assert np.load(out_dir / "label.npy").tolist() == [b"cat", b"\xff"]


def test_infer_json_with_env_defaults(tmp_path: Path, redis_url: str, serve: Callable[[Handler], None]) -> None:
    serve(doubler)
    x = np.array([[1, 2], [3, 4]], dtype=np.int64)
    env = {"REDIS_INFER_URL": redis_url, "REDIS_INFER_STREAM": STREAM, "REDIS_INFER_MODEL": "m"}
    result = cli("infer", "--input", f"x={save(tmp_path / 'x.npy', x)}", "--json", env=env)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert (reply["status"], reply["model"], reply["worker"]) == ("OK", "m", "w1")
    assert reply["outputs"]["y"] == {"dtype": "int64", "shape": [2, 2], "data": [[2, 4], [6, 8]]}
    assert reply["outputs"]["label"]["data"] == ["cat", "\\xff"]
    assert reply["timing_ms"] == {
        "read": 1.0,
        "batched": 1.5,
        "compute_start": 2.0,
        "compute_end": 2.5,
        "published": 3.0,
    }


@pytest.mark.parametrize("as_json", [False, True])
def test_infer_server_error_exits_3(
    tmp_path: Path, redis_url: str, serve: Callable[[Handler], None], as_json: bool
) -> None:
    serve(lambda request: encode_reply(request.id, Status.MODEL_NOT_FOUND, error="no model 'm'"))
    args = ["infer", "--url", redis_url, "--stream", STREAM, "--model", "m"]
    result = cli(*args, "--input", f"x={save(tmp_path / 'x.npy', np.ones(2))}", *(["--json"] if as_json else []))
    assert result.returncode == 3
    assert "MODEL_NOT_FOUND" in result.stderr and "no model 'm'" in result.stderr
    if as_json:
        assert json.loads(result.stdout)["status"] == "MODEL_NOT_FOUND"


def test_infer_timeout_exits_4(tmp_path: Path, redis_url: str) -> None:
    x = save(tmp_path / "x.npy", np.ones(2))
    result = cli(
        "infer", "--url", redis_url, "--stream", STREAM, "--model", "m", "--input", f"x={x}", "--timeout", "0.3"
    )
    assert result.returncode == 4
    assert "no reply within 0.3 s" in result.stderr


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(["--input", "x={complex}"], id="complex-dtype"),
        pytest.param(["--input", "x={missing}"], id="missing-file"),
        pytest.param(["--input", "x={object}"], id="pickled-object-array"),
        pytest.param(["--input", "x={complex}", "--input", "x={complex}"], id="duplicate-name"),
        pytest.param(["--input", "no-equals-sign"], id="bad-input-syntax"),
        pytest.param(["--input", "x={complex}", "--timeout", "0"], id="zero-timeout"),
    ],
)
def test_infer_invalid_input_exits_2(tmp_path: Path, redis_url: str, redis_client: redis.Redis, bad: list[str]) -> None:
    np.save(tmp_path / "complex.npy", np.zeros(2, np.complex64))
    np.save(tmp_path / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    paths = {"complex": tmp_path / "complex.npy", "missing": tmp_path / "nope.npy", "object": tmp_path / "object.npy"}
    args = [arg.format(**paths) for arg in bad]
    result = cli("infer", "--url", redis_url, "--stream", STREAM, "--model", "m", *args)
    assert result.returncode == 2, result.stderr
    assert "error" in result.stderr
    assert redis_client.exists(STREAM) == 0


def test_infer_without_model_is_a_usage_error(tmp_path: Path, redis_url: str) -> None:
    result = cli("infer", "--url", redis_url, "--input", f"x={save(tmp_path / 'x.npy', np.ones(1))}")
    assert result.returncode == 2
    assert "--model" in result.stderr


# -------------------------------------------------------------------------------------------- stats


def test_stats_shows_groups_and_consumers(redis_url: str, redis_client: redis.Redis) -> None:
    for i in range(3):
        redis_client.xadd(STREAM, {"n": i})
    redis_client.xgroup_create(STREAM, "workers", id="0")
    redis_client.xreadgroup("workers", "gpu-0", {STREAM: ">"}, count=1)
    result = cli("stats", "--url", redis_url, "--stream", STREAM)
    assert result.returncode == 0, result.stderr
    assert f"stream '{STREAM}': length 3, 1 consumer group(s)" in result.stdout
    assert "group 'workers': consumers 1, pending 1, lag 2, last-delivered-id " in result.stdout
    assert "consumer 'gpu-0': pending 1" in result.stdout

    as_json = cli("stats", "--url", redis_url, "--stream", STREAM, "--json")
    info = json.loads(as_json.stdout)
    assert (info["exists"], info["length"]) == (True, 3)
    (group,) = info["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("workers", 1, 2)
    assert [c["name"] for c in group["consumers"]] == ["gpu-0"]


def test_stats_of_missing_stream(redis_url: str) -> None:
    result = cli("stats", "--url", redis_url, "--stream", "no:such:stream")
    assert result.returncode == 0, result.stderr
    assert "does not exist" in result.stdout


def test_unreachable_redis_exits_1(tmp_path: Path) -> None:
    result = cli("stats", "--url", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "error" in result.stderr


# --------------------------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("name", "expected"), [("y", "y"), ("../../etc/passwd", "_.._.._etc_passwd"), (".hidden", "_.hidden"), ("", "_")]
)
def test_output_file_names_stay_in_the_directory(name: str, expected: str) -> None:
    assert _safe_file_name(name) == expected


def test_timing_and_stats_formatting_edge_cases() -> None:
    assert timing_ms(Timing()) == {}
    info = {"stream": "s", "exists": True, "length": 0, "groups": [
        {"name": "g", "consumers": [], "pending": 0, "lag": None, "last_delivered_id": "0-0"}
    ]}  # fmt: skip
    assert "lag unknown" in format_stats(info)
