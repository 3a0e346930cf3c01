"""Two models served by two worker processes, routed by name, discovered from Redis (issue 13)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from demo import images
from producer import AsyncClient, Client, ModelNotFound
from producer.__main__ import main as producer_main
from producer.discovery import ModelMetadata, TensorMetadata
from redis_infer_protocol import keys
from redis_infer_protocol.codec import datatype_of
from tests.fleet_helpers import write_model
from worker.testing import WorkerProcess, start_worker, wait_ready, wait_until

pytestmark = pytest.mark.integration

U8_CONFIG = 'file = "{model}"\ninstances = 2\n[batching]\nmax_size = 4\n[hook]\nclass = "demo.hook:UInt8Pixels"\n'


def onnx_tensors(path: Path, which: str) -> tuple[TensorMetadata, ...]:
    """Names, datatypes and shapes straight from the ONNX file (-1 for a named dimension)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path)).graph
    found = []
    for value in getattr(graph, which):
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        found.append(TensorMetadata(value.name, datatype_of(tensor_dtype_to_np_dtype(tensor.elem_type)), shape))
    return tuple(found)


@pytest.fixture
def two_processes(real_model: Path, redis_url: str, tmp_path: Path) -> Iterator[dict[str, WorkerProcess]]:
    repo = tmp_path / "repo"
    write_model(repo, "orientation", f'file = "{real_model}"\n[batching]\nmax_size = 8\n')
    write_model(repo, "orientation-u8", U8_CONFIG.format(model=real_model))
    procs: dict[str, WorkerProcess] = {}
    try:
        for name, consumer in (("orientation", "proc-a"), ("orientation-u8", "proc-b")):
            argv = [sys.executable, "-m", "worker", "run", "--model-repository", str(repo), "--models", name]
            procs[name] = start_worker(real_model, redis_url, consumer=consumer, log_path=tmp_path / f"{name}.log",
                                       argv=argv, env={"WORKER_ONNX__INTRA_OP_THREADS": "1"})  # fmt: skip
        for name, proc in procs.items():
            wait_ready(redis_url, [proc], stream=keys.model_stream(name), timeout_s=90)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def test_two_processes_serve_two_models_routed_by_name_and_discovered(
    two_processes: dict[str, WorkerProcess], real_model: Path, redis_url: str
) -> None:
    page = images.render_page(0)
    with Client(redis_url, model="orientation", stream=None) as raw, Client(redis_url, model="orientation-u8",
                                                                            stream=None) as u8:  # fmt: skip
        for degrees in images.ROTATIONS:
            rotated = images.rotate(page, degrees)
            f32 = raw.submit({"x": images.preprocess(rotated)[None]}, timeout=60).result(65)
            pix = u8.submit({"image": images.crop(rotated)[None]}, timeout=60).result(65)
            assert (f32.worker, pix.worker) == ("proc-a", "proc-b")
            assert str(images.ROTATIONS[int(f32.outputs["fetch_name_0"].argmax())]) == str(degrees)
            assert pix.outputs["label"][0, 0].decode() == str(degrees)
        served = {m.name: m for m in raw.models()}
        assert set(served) == {"orientation", "orientation-u8"}
        check_raw(served["orientation"], real_model)
        check_u8(served["orientation-u8"])
        assert raw.metadata() == served["orientation"] and raw.metadata("orientation-u8") == served["orientation-u8"]

        async def read() -> list[ModelMetadata]:
            async with AsyncClient(redis_url, model="orientation-u8", stream=None) as client:
                return await client.models()

        assert asyncio.run(read()) == sorted(served.values(), key=lambda m: m.name)

        assert two_processes["orientation"].stop() == 0  # drains, deletes its health key: no longer listed
        wait_until(lambda: [m.name for m in raw.models()] == ["orientation-u8"], what="stopped model unlisted")
        with pytest.raises(ModelNotFound, match="'orientation' is not served by any live worker"):
            raw.metadata()
        everything = raw.models(live_only=False)
        assert [(m.name, m.workers) for m in everything] == [("orientation", ()), ("orientation-u8", ("proc-b",))]


def check_raw(meta: ModelMetadata, model_file: Path) -> None:
    assert meta.stream == "infer:requests:{orientation}" and meta.version is None and meta.hook is None
    assert meta.inputs == onnx_tensors(model_file, "input")  # x FP32 [-1, 3, 224, 224]
    assert meta.outputs == onnx_tensors(model_file, "output")  # fetch_name_0 FP32 [-1, 4]
    assert meta.inputs[0].shape[1:] == (3, 224, 224)
    assert (meta.max_batch_size, meta.workers, meta.platform) == (8, ("proc-a",), "onnxruntime")
    assert meta.parameters["character"].split() == ["0", "90", "180", "270"]


def check_u8(meta: ModelMetadata) -> None:
    assert meta.inputs == (TensorMetadata("image", "UINT8", (-1, 224, 224, 3)),)
    assert meta.outputs == (TensorMetadata("label", "BYTES", (-1, 1)), TensorMetadata("score", "FP32", (-1, 1)))
    assert (meta.max_batch_size, meta.workers, meta.hook) == (4, ("proc-b",), "demo.hook:UInt8Pixels")


def test_models_cli_prints_json(two_processes: dict[str, WorkerProcess], redis_url: str,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert producer_main(["models", "--url", redis_url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["workers"], m["inputs"][0]["datatype"]) for m in listed] == [
        ("orientation", ["proc-a"], "FP32"), ("orientation-u8", ["proc-b"], "UINT8"),
    ]  # fmt: skip
    assert producer_main(["models", "nope", "--url", redis_url]) == 1
    assert producer_main(["models", "orientation-u8", "--url", redis_url]) == 0
    assert "image: UINT8 [-1, 224, 224, 3]" in capsys.readouterr().out
    np.testing.assert_equal(len(listed), 2)


def test_a_single_model_worker_is_discovered_too(redis_url: str, tmp_path: Path) -> None:
    """A worker started with one model file (no repository) publishes that model for discovery, on its stream."""
    from worker.testing import WorkerThread, make_affine_model

    model = make_affine_model(tmp_path / "affine.onnx")
    stream = "single:requests"
    with WorkerThread(redis_url, model, stream=stream), Client(redis_url, model="affine", stream=stream) as client:
        wait_until(lambda: [m.name for m in client.models()] == ["affine"], what="the single model listed")
        meta = client.metadata("affine")
        assert meta.stream == stream
        assert [(t.name, t.datatype) for t in meta.inputs] == [("x", "FP32")]
        assert sorted(t.name for t in meta.outputs) == ["s", "y"]
        assert client.infer({"x": np.ones((1, 4), np.float32)})["y"].tolist() == [[3.0] * 4]
