"""Contract tests of the TensorRT backend and its context pool, on a CPU.

The TensorRT runtime and the CUDA layer are doubles (worker/doubles/trt_double.py) that enforce TensorRT's
rules and run the model with numpy; the backend under test is the real one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.doubles.trt_double import (
    CudaRuleViolation,
    FakeCuda,
    FakeTensorRT,
    HostCompute,
    TrtRuleViolation,
    aio,
    mlp_spec,
    reference,
    sum_spec,
)
from worker.engines.base import Engine, ExecutionSlot, infer_once
from worker.engines.tensorrt import TensorRTEngine
from worker.engines.trt_meta import EngineMetadata, sha256_file, write_metadata
from worker.errors import ConfigError, EngineError, ModelError

ROOT = Path(__file__).resolve().parent.parent


def write_engine(tmp_path: Path, spec: dict[str, Any], *, sidecar: bool = True, **meta: Any) -> Path:
    path = tmp_path / "model.engine"
    path.write_text(json.dumps(spec))
    if sidecar:
        fields: dict[str, Any] = {
            "tensorrt_version": "11.4.0.106",
            "gpu_name": "Fake H100",
            "compute_capability": "9.0",
            "engine_sha256": sha256_file(path),
        }
        fields.update(meta)
        write_metadata(path, EngineMetadata(**fields))
    return path


def make(
    tmp_path: Path,
    spec: dict[str, Any],
    *,
    contexts: int = 2,
    cuda_graphs: bool = False,
    seed: int = 0,
    trt_name: str = "tensorrt",
    trt_version: str = "11.4.0.106",
    **meta: Any,
) -> tuple[TensorRTEngine, FakeTensorRT, FakeCuda]:
    cuda = FakeCuda(seed=seed)
    trt = FakeTensorRT(HostCompute(cuda), name=trt_name, version=trt_version)
    path = write_engine(tmp_path, spec, **meta)
    engine = TensorRTEngine(path, name="m", contexts=contexts, cuda_graphs=cuda_graphs, runtime_module=trt, cuda=cuda)
    return engine, trt, cuda


def random_inputs(rng: np.random.Generator, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


async def run_slot(slot: ExecutionSlot, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    staged = slot.stage({name: arr.shape for name, arr in inputs.items()})
    for name, arr in inputs.items():
        staged[name][...] = arr
    outputs = await slot.run()
    copies = {name: arr.copy() for name, arr in outputs.items()}
    for arr in outputs.values():
        arr[...] = np.nan  # poison: the next run on this slot must overwrite every element
    return copies


def assert_close(spec: dict[str, Any], inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    expected = reference(spec, inputs)
    assert set(outputs) == set(expected)
    for name, want in expected.items():
        got = outputs[name]
        assert got.shape == want.shape, name
        assert np.isfinite(got).all(), f"{name}: unwritten (poisoned) elements"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# -- model info and slots ----------------------------------------------------------------------------


def test_model_info_and_protocol(tmp_path: Path) -> None:
    engine, _, _ = make(tmp_path, mlp_spec(profiles=[(1, 4, 8), (2, 8, 16)]), contexts=2)
    try:
        assert isinstance(engine, Engine)
        assert all(isinstance(slot, ExecutionSlot) for slot in engine.slots)
        info = engine.info
        assert [(s.name, s.datatype, s.shape) for s in info.inputs] == [("x", "FP32", (-1, 8))]
        assert [(s.name, s.datatype, s.shape) for s in info.outputs] == [("y", "FP32", (-1, 4))]
        assert info.max_batch_size == 8  # the smallest profile max: the batcher never exceeds any slot
        assert info.metadata["backend"] == "tensorrt" and info.metadata["profiles"] == "2"
        assert [slot.plan.profile for slot in engine.slots] == [0, 1]
        assert [slot.plan.min_batch for slot in engine.slots] == [1, 2]
    finally:
        engine.close()


def test_slots_map_round_robin_to_profiles_and_share_locks(tmp_path: Path) -> None:
    engine, _, _ = make(tmp_path, mlp_spec(profiles=[(1, 4, 8), (1, 4, 8)]), contexts=4)
    try:
        slots = engine.slots
        assert [slot.plan.profile for slot in slots] == [0, 1, 0, 1]
        assert slots[0].profile_lock is slots[2].profile_lock is not None
        assert slots[1].profile_lock is slots[3].profile_lock is not None
        assert slots[0].profile_lock is not slots[1].profile_lock
    finally:
        engine.close()
    engine, _, _ = make(tmp_path, mlp_spec(profiles=[(1, 4, 8), (1, 4, 8)]), contexts=2)
    try:
        assert all(slot.profile_lock is None for slot in engine.slots)
    finally:
        engine.close()


# -- correctness, padding, staging -------------------------------------------------------------------


@aio
async def test_every_batch_size_is_correct(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(1, 4, 8)])
    engine, _, _ = make(tmp_path, spec, contexts=1)
    rng = np.random.default_rng(1)
    try:
        for batch in [1, 2, 3, 5, 8, 1, 8, 4]:
            inputs = random_inputs(rng, {"x": (batch, 8)})
            assert_close(spec, inputs, await run_slot(engine.slots[0], inputs))
        assert (await infer_once(engine, inputs))["y"].shape == (4, 4)
    finally:
        engine.close()


@aio
async def test_pads_to_profile_min_batch_and_returns_real_rows(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(4, 8, 16)])
    engine, trt, _ = make(tmp_path, spec, contexts=1)
    rng = np.random.default_rng(2)
    try:
        context = trt._engines[0]._contexts[0]
        for batch in (1, 3, 4, 7):
            inputs = random_inputs(rng, {"x": (batch, 8)})
            outputs = await run_slot(engine.slots[0], inputs)
            assert_close(spec, inputs, outputs)
            assert context._shapes["x"] == (max(batch, 4), 8)  # what TensorRT actually ran
    finally:
        engine.close()


@aio
async def test_static_batch_engine_pads_every_batch(tmp_path: Path) -> None:
    spec = mlp_spec(static_batch=6)
    engine, _trt, _ = make(tmp_path, spec, contexts=2)
    rng = np.random.default_rng(3)
    try:
        assert engine.info.max_batch_size == 6 and engine.info.inputs[0].shape == (-1, 8)
        for batch in (1, 6, 2):
            inputs = random_inputs(rng, {"x": (batch, 8)})
            assert_close(spec, inputs, await run_slot(engine.slots[1], inputs))
    finally:
        engine.close()


@aio
async def test_stage_returns_pinned_views_and_outputs_are_views(tmp_path: Path) -> None:
    engine, _, _ = make(tmp_path, mlp_spec(), contexts=1)
    try:
        slot = engine.slots[0]
        staged = slot.stage({"x": (3, 8)})
        host = slot._host["x"]
        assert host.pinned and np.shares_memory(staged["x"], host.data)
        assert staged["x"].flags.c_contiguous and staged["x"].flags.writeable and staged["x"].shape == (3, 8)
        staged["x"][...] = 1.0
        outputs = await slot.run()
        assert np.shares_memory(outputs["y"], slot._host["y"].data) and outputs["y"].shape == (3, 4)
    finally:
        engine.close()


@aio
async def test_dynamic_inner_dims_and_several_outputs(tmp_path: Path) -> None:
    spec = sum_spec(profiles=[(1, 2, 4), (2, 3, 4)])
    engine, _, _ = make(tmp_path, spec, contexts=2)
    rng = np.random.default_rng(4)
    try:
        for slot in engine.slots:
            for shape in [(1, 2), (4, 6), (3, 5), (2, 2)]:
                inputs = random_inputs(rng, {"x": shape, "y": shape})
                assert_close(spec, inputs, await run_slot(slot, inputs))
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"x": (2, 4)}, "expected inputs"),
        ({"x": (5, 4), "y": (5, 4)}, "batch of 5"),
        ({"x": (0, 4), "y": (0, 4)}, "batch of 0"),
        ({"x": (2, 4), "y": (3, 4)}, "disagree"),
        ({"x": (2, 7), "y": (2, 7)}, "dim 1 is 7"),
        ({"x": (2, 4, 1), "y": (2, 4, 1)}, "rank"),
    ],
)
def test_stage_rejects_shapes_outside_the_profile(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], message: str
) -> None:
    engine, _, _ = make(tmp_path, sum_spec(), contexts=1)
    try:
        with pytest.raises(EngineError, match=message) as info:
            engine.slots[0].stage(shapes)
        assert not info.value.fatal
    finally:
        engine.close()


@aio
async def test_run_without_stage_is_an_error(tmp_path: Path) -> None:
    engine, _, _ = make(tmp_path, mlp_spec(), contexts=1)
    try:
        with pytest.raises(EngineError, match="without stage"):
            await engine.slots[0].run()
    finally:
        engine.close()


# -- pipelining: several slots in flight --------------------------------------------------------------


@aio
async def test_slots_in_flight_at_once_without_cross_talk(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(1, 4, 8)] * 3)
    rng = np.random.default_rng(5)
    for seed in range(4):  # different cross-stream interleavings
        engine, _, cuda = make(tmp_path, spec, contexts=3, seed=seed)
        try:
            for _ in range(3):
                cuda.hold()
                batches = [random_inputs(rng, {"x": (int(rng.integers(1, 9)), 8)}) for _ in engine.slots]
                tasks = [asyncio.create_task(run_slot(s, b)) for s, b in zip(engine.slots, batches, strict=True)]
                await cuda.wait_pending("execute", streams=3)
                assert len(cuda.pending("d2h")) == 3  # all three batches enqueued before any ran
                cuda.release()
                for batch, outputs in zip(batches, await asyncio.gather(*tasks), strict=True):
                    assert_close(spec, batch, outputs)
        finally:
            engine.close()


@aio
async def test_contexts_sharing_a_profile_take_turns_but_copies_overlap(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(1, 4, 8)])
    engine, _, cuda = make(tmp_path, spec, contexts=2)
    rng = np.random.default_rng(6)
    try:
        first, second = engine.slots
        assert first.profile_lock is second.profile_lock is not None
        for _ in range(3):
            cuda.hold()
            a, b = (random_inputs(rng, {"x": (int(rng.integers(1, 9)), 8)}) for _ in range(2))
            tasks = [asyncio.create_task(run_slot(first, a)), asyncio.create_task(run_slot(second, b))]
            await cuda.wait_pending("execute", streams=1)
            await cuda.wait_pending("h2d", streams=2)
            assert len(cuda.pending("execute")) == 1  # the second waits for the profile, its copy is queued
            cuda.release()
            out_a, out_b = await asyncio.gather(*tasks)
            assert_close(spec, a, out_a)
            assert_close(spec, b, out_b)
    finally:
        engine.close()


@aio
async def test_many_concurrent_batches_through_a_shared_pool(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(2, 4, 8), (1, 4, 8)])
    engine, _, _ = make(tmp_path, spec, contexts=4)
    rng = np.random.default_rng(7)
    free: asyncio.Queue[Any] = asyncio.Queue()
    for slot in engine.slots:
        free.put_nowait(slot)

    async def one(inputs: dict[str, np.ndarray]) -> None:
        slot = await free.get()
        try:
            assert_close(spec, inputs, await run_slot(slot, inputs))
        finally:
            free.put_nowait(slot)

    try:
        await asyncio.gather(*(one(random_inputs(rng, {"x": (int(rng.integers(1, 9)), 8)})) for _ in range(40)))
    finally:
        engine.close()


@aio
async def test_cancelled_run_keeps_the_slot_busy_until_the_gpu_is_done(tmp_path: Path) -> None:
    engine, _, cuda = make(tmp_path, mlp_spec(), contexts=1)
    try:
        slot = engine.slots[0]
        cuda.hold()
        staged = slot.stage({"x": (2, 8)})
        staged["x"][...] = 0.5
        task = asyncio.create_task(slot.run())
        await cuda.wait_pending("signal", streams=1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(EngineError, match="still busy"):
            slot.stage({"x": (2, 8)})
        cuda.release()
        assert slot._pending is not None
        await slot._pending
        slot.stage({"x": (2, 8)})
    finally:
        engine.close()


# -- CUDA graphs ---------------------------------------------------------------------------------------


@aio
async def test_cuda_graphs_capture_once_per_shape_then_replay(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(1, 4, 8)])
    engine, trt, cuda = make(tmp_path, spec, contexts=1, cuda_graphs=True)
    rng = np.random.default_rng(8)
    try:
        for batch in (3, 3, 5, 5, 3, 3):
            inputs = random_inputs(rng, {"x": (batch, 8)})
            assert_close(spec, inputs, await run_slot(engine.slots[0], inputs))
        assert cuda.graphs_captured == 2 and cuda.graph_launches == 3
        # A graph replays only after a plain run of the same shapes on that context: the first run of
        # each shape, and the first after a change of shape, run plainly.
        assert trt._engines[0]._contexts[0]._executions == 3
    finally:
        engine.close()


@aio
async def test_graph_capture_failure_falls_back_to_plain_execution(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.cuda import CudaError

    spec = mlp_spec()
    engine, _, cuda = make(tmp_path, spec, contexts=1, cuda_graphs=True)
    stream = engine.slots[0]._stream

    def broken_end_capture() -> Any:
        stream.capture = None
        raise CudaError("cudaStreamEndCapture", "cudaErrorStreamCaptureUnsupported", 900, "operation not permitted")

    stream.end_capture = broken_end_capture
    rng = np.random.default_rng(9)
    try:
        with caplog.at_level(logging.WARNING):
            for batch in (2, 2, 4):
                inputs = random_inputs(rng, {"x": (batch, 8)})
                assert_close(spec, inputs, await run_slot(engine.slots[0], inputs))
        assert "running without graphs" in caplog.text and cuda.graph_launches == 0
    finally:
        engine.close()


@aio
async def test_any_exception_under_capture_ends_the_capture_and_falls_back(tmp_path: Path) -> None:
    spec = mlp_spec()
    engine, trt, cuda = make(tmp_path, spec, contexts=1, cuda_graphs=True)
    compute = trt._compute
    launch = compute.launch

    def refuse_under_capture(stream: int, *args: Any) -> Any:
        if compute.capturing(stream):
            raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
        return launch(stream, *args)

    compute.launch = refuse_under_capture
    rng = np.random.default_rng(10)
    try:
        for batch in (2, 2, 5):
            inputs = random_inputs(rng, {"x": (batch, 8)})
            assert_close(spec, inputs, await run_slot(engine.slots[0], inputs))
        slot = engine.slots[0]
        assert slot._stream.capture is None and not slot._graphs and cuda.graphs_captured == 1
    finally:
        engine.close()


# -- the double enforces TensorRT's rules ----------------------------------------------------------------


def test_double_refuses_what_tensorrt_forbids(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = FakeTensorRT(HostCompute(cuda))
    engine = trt.Runtime(None).deserialize_cuda_engine(json.dumps(mlp_spec()).encode())
    device = cuda.open_device(0)
    stream = device.stream()
    ctx = engine.create_execution_context()
    with pytest.raises(TrtRuleViolation, match="before set_optimization_profile_async"):
        ctx.set_input_shape("x", (2, 8))
    assert ctx.set_optimization_profile_async(0, stream.handle_int)
    assert not ctx.set_input_shape("x", (9, 8))  # outside the profile: TensorRT says no
    with pytest.raises(TrtRuleViolation, match="input shapes not set"):
        ctx.execute_async_v3(stream.handle_int)
    assert ctx.set_input_shape("x", (2, 8))
    with pytest.raises(TrtRuleViolation, match="addresses not set"):
        ctx.execute_async_v3(stream.handle_int)
    for name, nbytes in (("x", 2 * 8 * 4), ("y", 4)):  # y too small for [2, 4]
        ctx.set_tensor_address(name, device.device_buffer(nbytes).ptr)
    with pytest.raises(CudaRuleViolation, match="overruns"):
        ctx.execute_async_v3(stream.handle_int)
    ctx.set_tensor_address("y", device.device_buffer(2 * 4 * 4).ptr)
    with pytest.raises(TrtRuleViolation, match="another stream"):
        ctx.execute_async_v3(device.stream().handle_int)
    assert ctx.execute_async_v3(stream.handle_int)
    other = engine.create_execution_context()
    other_stream = device.stream()
    other.set_optimization_profile_async(0, other_stream.handle_int)
    other.set_input_shape("x", (2, 8))
    for name in ("x", "y"):
        other.set_tensor_address(name, device.device_buffer(64).ptr)
    with pytest.raises(TrtRuleViolation, match="two contexts running at once"):
        other.execute_async_v3(other_stream.handle_int)
    cuda.drain()
    assert other.execute_async_v3(other_stream.handle_int)  # the first finished: now allowed
    with pytest.raises(TrtRuleViolation, match="not in TRT_API_USED"):
        _ = ctx.execute_v2
    stream.begin_capture()
    fresh = engine.create_execution_context()
    with pytest.raises(TrtRuleViolation, match="not in TRT_API_USED"):
        _ = fresh.all_binding_shapes_specified


# -- loading: metadata, errors, missing dependencies -------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "trt_name", "message"),
    [
        ({"compute_capability": "8.0", "gpu_name": "A100"}, "tensorrt", "built for A100"),
        ({"tensorrt_version": "10.3.0"}, "tensorrt", "built by TensorRT 10.3.0"),
        ({}, "tensorrt_lean_bindings", "not built version-compatible"),
        ({"version_compatible": True, "tensorrt_version": "11.9.0"}, "tensorrt_lean_bindings", "older"),
        ({"engine_sha256": "0" * 64}, "tensorrt", "another engine file"),
        ({"hardware_compatibility": "ampere_plus", "compute_capability": "8.0"}, None, None),
        ({"version_compatible": True, "tensorrt_version": "10.8.0"}, "tensorrt_lean_bindings", None),
        ({"version_compatible": True, "tensorrt_version": "10.8.0"}, "tensorrt", None),  # host code allowed
        ({"gpu_name": "H100 PCIe"}, "tensorrt", None),  # same compute capability: a warning only
    ],
)
def test_engine_metadata_is_checked(
    tmp_path: Path, meta: dict[str, Any], trt_name: str | None, message: str | None
) -> None:
    if message is None:
        engine, _, _ = make(tmp_path, mlp_spec(), trt_name=trt_name or "tensorrt", **meta)
        engine.close()
        return
    with pytest.raises(ModelError, match=message):
        make(tmp_path, mlp_spec(), trt_name=trt_name or "tensorrt", **meta)


def test_engine_without_sidecar_loads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cuda = FakeCuda()
    path = write_engine(tmp_path, mlp_spec(), sidecar=False)
    with caplog.at_level(logging.WARNING):
        engine = TensorRTEngine(path, name="m", runtime_module=FakeTensorRT(HostCompute(cuda)), cuda=cuda)
    engine.close()
    assert "no metadata sidecar" in caplog.text


def test_undeserializable_engine_is_a_model_error_and_frees_the_device(tmp_path: Path) -> None:
    cuda = FakeCuda()
    path = tmp_path / "bad.engine"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="could not deserialize"):
        TensorRTEngine(path, name="m", runtime_module=FakeTensorRT(HostCompute(cuda)), cuda=cuda)
    assert cuda.devices[0].closed == 1


def test_unsupported_io_type_is_a_model_error(tmp_path: Path) -> None:
    spec = mlp_spec()
    spec["inputs"][0]["dtype"] = "BF16"
    with pytest.raises(ModelError, match="wire format cannot carry"):
        make(tmp_path, spec)


def test_close_frees_everything_and_is_idempotent(tmp_path: Path) -> None:
    engine, _, cuda = make(tmp_path, mlp_spec(profiles=[(1, 4, 8)] * 2), contexts=3, cuda_graphs=True)
    device = cuda.devices[0]
    assert cuda.memory and device.owned
    engine.close()
    engine.close()
    assert device.closed == 1 and not cuda.memory and not device.owned
    assert all(stream.closed for stream in cuda.streams.values())


def test_missing_engine_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TensorRTEngine(tmp_path / "none.engine", name="m", runtime_module=object(), cuda=object())


def test_without_tensorrt_and_cuda_one_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.cuda

    for name in ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings", "cuda", "cuda.bindings"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    monkeypatch.setattr(worker.cuda, "_rt", None)
    path = write_engine(tmp_path, mlp_spec())
    with pytest.raises(ConfigError) as info:
        TensorRTEngine(path, name="m")
    text = str(info.value)
    assert "needs TensorRT" in text and "cuda-python" in text
    with pytest.raises(ConfigError, match="cuda-python"):
        worker.cuda.open_device(0)


def test_cuda_error_fatality() -> None:
    from worker.cuda import CudaError

    assert CudaError("cudaStreamQuery", "cudaErrorIllegalAddress", 700, "illegal address").fatal
    assert not CudaError("cudaMalloc", "cudaErrorMemoryAllocation", 2, "out of memory").fatal
    assert isinstance(CudaError("x", "cudaErrorLaunchFailure", 719, "").__class__.__mro__[1](""), EngineError)


def test_cpu_path_imports_no_gpu_module() -> None:
    code = (
        "import sys, worker.cuda, worker.engines.tensorrt, worker.engines.trt_build, worker.engines.trt_meta\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('cuda', 'tensorrt', 'tensorrt_lean_bindings', 'cupy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@aio
async def test_closed_engine_refuses_instead_of_handing_out_freed_buffers(tmp_path: Path) -> None:
    spec = mlp_spec(profiles=[(1, 4, 8)])
    engine, _trt, _cuda = make(tmp_path, spec, contexts=1)
    slot = engine.slots[0]
    engine.close()
    with pytest.raises(EngineError, match="closed") as info:
        slot.stage({"x": (2, 8)})
    assert info.value.fatal


@aio
async def test_static_engines_run_their_contexts_without_a_profile_lock(tmp_path: Path) -> None:
    spec = mlp_spec(static_batch=4)
    engine, _trt, _cuda = make(tmp_path, spec, contexts=2)
    try:
        assert [slot.profile_lock for slot in engine.slots] == [None, None]
    finally:
        engine.close()


@aio
async def test_static_engine_contexts_run_concurrently_and_correctly(tmp_path: Path) -> None:
    spec = mlp_spec(static_batch=4)
    engine, _trt, _cuda = make(tmp_path, spec, contexts=2)
    rng = np.random.default_rng(3)
    try:
        batches = [random_inputs(rng, {"x": (4, 8)}) for _ in range(2)]
        results = await asyncio.gather(*(run_slot(slot, b) for slot, b in zip(engine.slots, batches, strict=True)))
        for inputs, outputs in zip(batches, results, strict=True):
            assert_close(spec, inputs, outputs)
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("tweak", "message"),
    [
        ({"location": "HOST"}, "host memory"),
        ({"shape_tensor": True}, "shape tensor"),
        ({"vectorized_dim": 1}, "vectorized"),
    ],
)
def test_io_tensors_the_backend_cannot_serve_are_refused_at_load(
    tmp_path: Path, tweak: dict[str, Any], message: str
) -> None:
    spec = mlp_spec()
    spec["inputs"][0].update(tweak)
    with pytest.raises(ModelError, match=message):
        make(tmp_path, spec)
