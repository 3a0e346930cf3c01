"""Live conformance of the Node.js client (clients/node): a real redis-server, a real worker serving the
affine model, and clients/node/conformance/run.js driving ``InferClient`` through every scenario (OK,
batching, each error status the worker sends, deadlines, busy, hostile inputs, reply stream cleanup).

Skipped only when ``node`` is not installed (``.ci/run`` installs it, so CI never skips).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.helpers import WorkerThread, make_affine_model
from worker.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "clients" / "node" / "conformance" / "run.js"
NODE = shutil.which("node")
STREAM = "conformance:requests"
SCENARIOS = [
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
]

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the Node.js client cannot be run")


@pytest.fixture(scope="module")
def results(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, object]]]:
    """Runs every scenario once against one worker; maps scenario name to its result line."""
    model = make_affine_model(tmp_path_factory.mktemp("conformance") / "affine.onnx")
    url = urlparse(redis_server.url)
    with WorkerThread(redis_server.url, model, stream=STREAM, streams={"block_ms": 100}, batch={"max_delay_ms": 20}):
        proc = subprocess.run(
            [str(NODE), str(SCRIPT), url.hostname or "127.0.0.1", str(url.port), STREAM],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the conformance script printed no results (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    yield {str(line["name"]): line for line in lines}


def test_every_scenario_ran(results: dict[str, dict[str, object]]) -> None:
    assert sorted(results) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(results: dict[str, dict[str, object]], scenario: str) -> None:
    result = results.get(scenario)
    assert result is not None, f"scenario {scenario} did not run"
    assert result["ok"], result.get("detail")
