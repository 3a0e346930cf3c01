"""FP16 and INT8 models made by ``quantize`` are served by the ONNX Runtime backend through a real worker.

Same tolerances as tests/test_precision.py, now on the replies a real worker publishes to a real
redis-server: FP16 within 2e-3 of FP32, INT8 within 0.15 with the same clear top-1 class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import redis

from redis_infer_protocol.codec import Status
from tests.helpers import WorkerThread, collect, send
from tests.precision_models import inputs, make_classifier
from tests.test_precision import FP16_ATOL, INT8_ATOL, INT8_MEAN_ATOL, assert_same_clear_top1
from worker.__main__ import main

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("precision", "atol"), [("fp16", FP16_ATOL), ("int8", INT8_ATOL)])
def test_quantized_model_serves_and_agrees_with_fp32(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, precision: str, atol: float
) -> None:
    fp32 = make_classifier(tmp_path / "tiny.onnx")
    np.save(tmp_path / "calib.npy", inputs(64, seed=1))
    served = tmp_path / f"tiny_{precision}.onnx"
    assert (
        main(["quantize", str(fp32), "-o", str(served), f"--{precision}", "--calibration", str(tmp_path / "calib.npy")])
        == 0
    )
    model = onnx.load(str(served))
    if precision == "int8":  # really the quantized model that is served
        assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    else:
        assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    requests = {f"r{i}": inputs(1 + i % 4, seed=100 + i) for i in range(16)}
    with WorkerThread(redis_url, served, batch={"max_size": 8, "max_delay_ms": 20}) as worker:
        assert worker.worker is not None
        info = worker.worker.engine.info
        assert [(s.name, s.datatype) for s in (*info.inputs, *info.outputs)] == [("x", "FP32"), ("probs", "FP32")]
        for rid, x in requests.items():
            send(redis_client, served.stem, {"x": x}, request_id=rid)
        replies = collect(redis_client, len(requests))
    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got, want = [], []
    for rid, x in requests.items():
        reply = replies[rid]
        assert reply.status is Status.OK, reply.error
        got.append(reply.outputs["probs"])
        want.append(reference.run(None, {"x": x})[0])
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=atol)
    assert np.abs(np.concatenate(got) - np.concatenate(want)).mean() <= INT8_MEAN_ATOL
    assert_same_clear_top1(np.concatenate(got), np.concatenate(want))
