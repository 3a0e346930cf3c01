"""The demo model (PP-LCNet orientation) through ``quantize``, the report and a real worker.

Stated tolerances (softmax probabilities over 4 classes): FP16 within 1e-3 of FP32, INT8 within 0.1;
every rotated page classified right by every variant. Seen on 200 pages (16 calibration pages): at most
1e-4 (FP16) and 0.061 (INT8, U8 activations), 0.004 on average.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import redis

from redis_infer_protocol.codec import Status
from tests.helpers import WorkerThread, collect, send
from worker.__main__ import main

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROTATIONS = ["0", "90", "180", "270"]
TOLERANCE = {"fp16": 1e-3, "int8": 0.1}


def write_pages(folder: Path, seeds: range) -> None:
    from demo.images import ROTATIONS as DEGREES
    from demo.images import render_page, rotate

    for seed in seeds:
        page = render_page(seed)
        for degrees in DEGREES:
            (folder / str(degrees)).mkdir(parents=True, exist_ok=True)
            rotate(page, degrees).save(folder / str(degrees) / f"page{seed}.png")


@pytest.fixture(scope="module")
def variants(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo_precision")
    write_pages(root / "calib", range(1000, 1004))
    write_pages(root / "eval", range(8))
    out = {"fp16": root / "orientation_fp16.onnx", "int8": root / "orientation_int8.onnx"}
    classes = ["--class-names", ",".join(ROTATIONS)]
    assert main(["quantize", str(real_model), "-o", str(out["fp16"]), "--fp16"]) == 0
    calib = [
        "--calibration",
        str(root / "calib"),
        "--report",
        str(root / "report"),
        "--report-data",
        str(root / "eval"),
    ]
    assert main(["quantize", str(real_model), "-o", str(out["int8"]), "--int8", *calib, *classes]) == 0
    args = ["precision-report", str(real_model), *(f"{k}={v}" for k, v in out.items()), "--data", str(root / "eval")]
    assert main([*args, "--out", str(root / "all"), *classes]) == 0
    out["report"] = root / "all.json"
    return out


def test_every_rotation_stays_right_and_outputs_stay_close(variants: dict[str, Path]) -> None:
    report = json.loads(variants["report"].read_text())
    assert report["samples"] == 32
    for variant in report["variants"]:
        (out,) = variant["outputs"]
        assert out["reference_accuracy"] == 1.0 and out["accuracy"] == 1.0 and out["top1_agreement"] == 1.0
        assert out["per_class_accuracy"] == dict.fromkeys(ROTATIONS, 1.0)
        assert out["max_abs_diff"] <= TOLERANCE[variant["name"]]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_worker_serves_the_quantized_demo_model(
    redis_url: str, redis_client: redis.Redis, real_model: Path, variants: dict[str, Path], precision: str
) -> None:
    from demo.images import rotated_inputs

    batch = np.stack(list(rotated_inputs(seed=42).values()))
    expected = ort.InferenceSession(str(real_model), providers=["CPUExecutionProvider"]).run(None, {"x": batch})[0]
    served = variants[precision]
    with WorkerThread(redis_url, served):
        send(redis_client, served.stem, {"x": batch}, request_id="pages")
        reply = collect(redis_client, 1)["pages"]
    assert reply.status is Status.OK, reply.error
    got = reply.outputs["fetch_name_0"]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE[precision])
    assert got.argmax(axis=1).tolist() == [0, 1, 2, 3]
