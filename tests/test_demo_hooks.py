"""The demo's hooks (issue 13): uint8 and PNG paths predict what the float32 path predicts, on the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo import hooks_demo, images
from demo.hook import UInt8Pixels
from producer import Client, InvalidRequest
from tests.fleet_helpers import FleetThread

pytestmark = pytest.mark.integration


def test_uint8_preprocessing_is_the_float32_preprocessing() -> None:
    page = images.rotate(images.render_page(3), 90)
    batch = np.stack([images.crop(page), images.crop(images.rotate(page, 180))])
    x = UInt8Pixels().preprocess({"image": batch})["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3, 224, 224)
    np.testing.assert_array_equal(x[0], images.preprocess(page))


def test_uint8_and_png_give_the_float32_predictions(real_model: Path, redis_url: str, tmp_path: Path) -> None:
    repo = hooks_demo.write_repository(tmp_path / "repo", real_model)
    seeds = (0, 1)
    found: dict[str, list[tuple[str, float]]] = {name: [] for name in hooks_demo.WAYS}
    with FleetThread(redis_url, repo, onnx={"intra_op_threads": 1}):
        for name in hooks_demo.WAYS:
            with Client(redis_url, model=name, stream=None, model_version="1") as client:
                for seed in seeds:
                    inputs = hooks_demo.page_inputs(seed)[name]
                    futures = [client.submit(inputs[d], timeout=60) for d in images.ROTATIONS]  # batched together
                    for future in futures:
                        out = future.result(65).outputs
                        assert out["label"].shape == (1, 1) and out["score"].shape == (1, 1)
                        found[name].append((out["label"][0, 0].decode(), float(out["score"][0, 0])))
                if name == "orientation-png":
                    with pytest.raises(InvalidRequest, match="row 0: not a readable image"):
                        client.infer({"png": np.array([[b"not a png"]], dtype=object)}, timeout=60)
    expected = [str(d) for _ in seeds for d in images.ROTATIONS]
    f32, u8, png = (found[name] for name in hooks_demo.WAYS)
    assert [label for label, _ in f32] == expected
    assert [label for label, _ in u8] == expected
    assert [label for label, _ in png] == expected
    np.testing.assert_allclose([s for _, s in u8], [s for _, s in f32], rtol=1e-5)  # same tensor, same model
    assert hooks_demo.entry_bytes("orientation-u8", hooks_demo.page_inputs(0)["orientation-u8"][0]) < (
        hooks_demo.entry_bytes("orientation-f32", hooks_demo.page_inputs(0)["orientation-f32"][0]) / 3.9
    )


def test_python_m_demo_hooks_prints_bytes_and_throughput(
    real_model: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from demo.__main__ import main

    out = tmp_path / "hooks.json"
    argv = ["hooks", "--url", redis_url, "--model", str(real_model), "--requests", "8", "--rounds", "1"]
    assert main([*argv, "--json-out", str(out)]) == 0
    assert "bytes/request" in capsys.readouterr().out
    import json

    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert set(rows) == set(hooks_demo.WAYS)
    assert all(r["failed"] == r["wrong"] == 0 and r["throughput_rps"] > 0 for r in rows.values())
    assert rows["orientation-u8"]["bytes_per_request"] * 3.9 < rows["orientation-f32"]["bytes_per_request"]
