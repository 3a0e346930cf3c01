"""``python -m producer bench`` against a real redis-server and a real worker: accounting, not speed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producer.__main__ import main
from producer.bench import LoadSpec, split
from tests.helpers import WorkerThread, make_affine_model

pytestmark = pytest.mark.integration

REQUIRED = ("throughput_rps", "p50_ms", "p99_ms", "sent", "ok", "errors", "lost")


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("bench") / "affine.onnx")


@pytest.fixture
def worker(redis_url: str, affine: Path) -> Iterator[WorkerThread]:
    with WorkerThread(redis_url, affine) as running:
        yield running


def bench(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["bench", "--url", url, "--json", "--no-progress", "--warmup", "5", *args])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def accounted(result: dict[str, Any]) -> None:
    for key in REQUIRED:
        assert key in result, key
    assert result["ok"] + result["errors"] + result["lost"] == result["sent"]


def test_closed_loop_answers_every_request(worker: WorkerThread, redis_url: str, capsys: Any) -> None:
    code, result = bench(capsys, redis_url, "--model", "affine", "--count", "40", "--concurrency", "4")
    accounted(result)
    assert (code, result["mode"], result["sent"], result["ok"]) == (0, "closed", 40, 40)
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["throughput_rps"] > 0


def test_open_loop_over_two_processes_merges_results(worker: WorkerThread, redis_url: str, capsys: Any) -> None:
    code, result = bench(capsys, redis_url, "--model", "affine", "--rate", "200", "--count", "30", "--procs", "2")
    accounted(result)
    assert (code, result["mode"], result["procs"], result["sent"], result["ok"]) == (0, "open", 2, 30, 30)
    assert result["rate_rps"] == 200


def test_npy_input_and_duration(worker: WorkerThread, redis_url: str, capsys: Any, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((2, 3), np.float32))
    code, result = bench(capsys, redis_url, "--model", "affine", "--input", f"x={path}", "--duration", "0.3")
    accounted(result)
    assert code == 0 and result["sent"] > 0 and result["ok"] == result["sent"]


def test_errors_are_counted_by_status(worker: WorkerThread, redis_url: str, capsys: Any) -> None:
    code, result = bench(capsys, redis_url, "--model", "no-such-model", "--count", "12", "--warmup", "0")
    accounted(result)
    assert (code, result["ok"], result["errors"], result["lost"]) == (1, 0, 12, 0)
    assert result["error_kinds"] == {"MODEL_NOT_FOUND": 12}
    assert result["p50_ms"] is None


def test_unanswered_requests_are_lost_not_dropped(redis_url: str, capsys: Any) -> None:
    code, result = bench(
        capsys, redis_url, "--model", "affine", "--count", "6", "--warmup", "0", "--timeout", "0.3",
        "--stream", "nobody:reads:this",
    )  # fmt: skip
    accounted(result)
    assert (code, result["ok"], result["errors"], result["lost"]) == (1, 0, 0, 6)


def test_plot_writes_png(worker: WorkerThread, redis_url: str, capsys: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the optional 'bench' extra
    png = tmp_path / "lat.png"
    code, result = bench(capsys, redis_url, "--model", "affine", "--count", "20", "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sweep = tmp_path / "sweep.png"
    code, result = bench(
        capsys, redis_url, "--model", "affine", "--sweep", "100,200", "--count", "10", "--plot", str(sweep)
    )
    accounted(result)
    assert (code, result["mode"], len(result["runs"]), result["sent"]) == (0, "sweep", 2, 20)
    assert sweep.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_fails_clearly(redis_url: str, capsys: Any, monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["bench", "--url", redis_url, "--model", "m", "--count", "1", "--plot", str(tmp_path / "p.png")])
    assert code == 2
    assert "redis-infer[bench]" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--shape", "1,x"], ["--dtype", "complex64"], ["--input", "x=/nonexistent.npy"]])
def test_bad_inputs_are_usage_errors(redis_url: str, capsys: Any, bad: list[str]) -> None:
    assert main(["bench", "--url", redis_url, "--model", "m", "--count", "1", *bad]) == 2
    assert "error:" in capsys.readouterr().err


def test_split_shares_totals() -> None:
    spec = LoadSpec("redis://x", "s", "m", {"x": np.zeros(1)}, concurrency=5, rate_rps=90.0, count=10, warmup=3)
    shares = split(spec, 3)
    assert [s.count for s in shares] == [4, 3, 3]
    assert sum(s.concurrency for s in shares) == 5
    assert sum(s.rate_rps or 0 for s in shares) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="concurrency"):
        split(LoadSpec("redis://x", "s", "m", {"x": np.zeros(1)}, concurrency=2, count=10), 3)
