"""build-engine against a double of the full TensorRT builder API (the real one cannot be installed here).

The double records what the build asked for (flags, profiles, memory pool, timing cache), so these
tests pin the logic: precision handling for TensorRT 10 (weak-typing flags) and 11 (strongly typed),
explicit quantization, profiles, version compatibility, the sidecar, and the CLI's error path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from worker.doubles.cuda_double import FakeCuda
from worker.engines import trt_build
from worker.engines.trt_build import BuildOptions, add_build_parser, build_engine, main_build
from worker.engines.trt_meta import read_metadata, sha256_file
from worker.errors import ConfigError, ModelError


def onnx_model(path: Path, *, inner: int | str = 8, qdq: bool = False) -> Path:
    """x [N, inner] @ W [8, 4] -> y [N, 4], optionally behind a QuantizeLinear/DequantizeLinear pair."""
    weight = numpy_helper.from_array(np.ones((8, 4), np.float32), "W")
    nodes, source = [], "x"
    initializers = [weight]
    if qdq:
        initializers += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                         numpy_helper.from_array(np.array(0, np.int8), "z")]  # fmt: skip
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]  # fmt: skip
        source = "xd"
    nodes.append(helper.make_node("MatMul", [source, "W"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inner])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class _Logger:
    WARNING = 2

    def __init__(self, severity: int) -> None:
        pass


class _Config:
    def __init__(self, calls: dict[str, Any]) -> None:
        object.__setattr__(self, "calls", calls)

    def set_memory_pool_limit(self, pool: str, nbytes: int) -> None:
        self.calls["pool"] = (pool, nbytes)

    def set_flag(self, flag: str) -> None:
        self.calls["flags"].append(flag)

    def add_optimization_profile(self, profile: Any) -> int:
        return 0

    def create_timing_cache(self, data: bytes) -> Any:
        self.calls["timing_cache_in"] = data
        return SimpleNamespace(serialize=lambda: b"CACHE")

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        return True

    def __setattr__(self, name: str, value: Any) -> None:  # hardware_compatibility_level, builder_optimization_level
        self.calls[name] = value


class _Builder:
    def __init__(self, calls: dict[str, Any], fail_build: bool) -> None:
        self.calls = calls
        self.fail_build = fail_build

    def create_network(self, flags: int) -> Any:
        self.calls["network_flags"] = flags
        return SimpleNamespace(inputs=[])

    def create_builder_config(self) -> _Config:
        return _Config(self.calls)

    def create_optimization_profile(self) -> Any:
        profile: dict[str, Any] = {}
        self.calls["profiles"].append(profile)
        return SimpleNamespace(set_shape=lambda name, lo, opt, hi: profile.__setitem__(name, (lo, opt, hi)))

    def build_serialized_network(self, network: Any, config: Any) -> bytes | None:
        return None if self.fail_build else b"PLAN:" + json.dumps(self.calls["flags"]).encode()


class _OnnxParser:
    def __init__(self, network: Any, logger: Any) -> None:
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        try:
            model = onnx.load(path)
        except Exception:
            self.num_errors = 1
            return False
        for value in model.graph.input:
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
            self.network.inputs.append(SimpleNamespace(name=value.name, shape=dims))
        self.network.num_inputs = len(self.network.inputs)
        self.network.get_input = self.network.inputs.__getitem__
        return True

    def get_error(self, index: int) -> str:
        return "ModelImporter: not an ONNX model"


class BuilderDouble:
    """Module-like stand-in for ``tensorrt`` with the builder API ``trt_build`` uses; ``calls`` records it."""

    def __init__(self, *, version: str = "10.9.0.34", weak_typing: bool = True, fail_build: bool = False) -> None:
        self.__version__ = version
        self.calls: dict[str, Any] = {"flags": [], "profiles": []}
        flags = ["VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "TF32"] + (["FP16", "BF16"] if weak_typing else [])
        self.BuilderFlag = SimpleNamespace(**{name: name for name in flags})
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.HardwareCompatibilityLevel = SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
        self.Logger = _Logger
        self.OnnxParser = _OnnxParser
        self.Builder = lambda logger: _Builder(self.calls, fail_build)


def build(tmp_path: Path, model: Path, trt: Any, cuda: Any = None, **options: Any) -> Any:
    return build_engine(model, tmp_path / "out" / "m.engine", trt_module=trt, cuda=cuda or FakeCuda(), **options)


def test_fp16_on_tensorrt_10_uses_the_builder_flag_and_writes_the_sidecar(tmp_path: Path) -> None:
    model = onnx_model(tmp_path / "m.onnx")
    trt = BuilderDouble()
    cache = tmp_path / "timing.cache"
    meta = build(tmp_path, model, trt, precision="fp16", min_batch=2, opt_batch=8, max_batch=16, profiles=2,
                 timing_cache=cache, workspace_mib=512, version_compatible=True)  # fmt: skip
    engine = tmp_path / "out" / "m.engine"
    assert engine.read_bytes().startswith(b"PLAN:")
    assert trt.calls["flags"] == ["FP16", "VERSION_COMPATIBLE"] and trt.calls["network_flags"] == 0
    assert trt.calls["pool"] == ("WORKSPACE", 512 << 20)
    assert trt.calls["profiles"] == [{"x": ([2, 8], [8, 8], [16, 8])}] * 2
    assert cache.read_bytes() == b"CACHE" and trt.calls["timing_cache_in"] == b""
    assert read_metadata(engine) == meta
    assert (meta.tensorrt_version, meta.gpu_name, meta.compute_capability) == ("10.9.0.34", "Fake H100", "9.0")
    assert meta.engine_sha256 == sha256_file(engine) and meta.onnx_sha256 == sha256_file(model)
    assert meta.version_compatible and meta.precision == "fp16" and len(meta.profiles) == 2


def test_fp16_on_tensorrt_11_needs_modelopt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelopt", None)
    with pytest.raises(ConfigError, match="ModelOpt"):
        build(tmp_path, onnx_model(tmp_path / "m.onnx"), BuilderDouble(version="11.4.0", weak_typing=False),
              precision="fp16")  # fmt: skip


def test_quantized_model_builds_strongly_typed(tmp_path: Path) -> None:
    trt = BuilderDouble()
    build(tmp_path, onnx_model(tmp_path / "q.onnx", qdq=True), trt, precision="int8")
    assert trt.calls["network_flags"] == 1 << 5 and trt.calls["flags"] == []


def test_int8_without_qdq_or_calibration_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="explicit quantization"):
        build(tmp_path, onnx_model(tmp_path / "m.onnx"), BuilderDouble(), precision="int8")


def test_fp8_needs_ada_or_hopper(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fp8 needs compute capability 8\.9"):
        build(tmp_path, onnx_model(tmp_path / "m.onnx"), BuilderDouble(), FakeCuda(compute_capability=(8, 0)),
              precision="fp8")  # fmt: skip


def test_dynamic_inner_dims_need_a_shape(tmp_path: Path) -> None:
    model = onnx_model(tmp_path / "m.onnx", inner="L")
    with pytest.raises(ConfigError, match="--shape x:"):
        build(tmp_path, model, BuilderDouble())
    trt = BuilderDouble()
    build(tmp_path, model, trt, sample_shapes={"x": (8,)}, max_batch=4, hardware_compatible=True, optimization_level=5)
    assert trt.calls["profiles"] == [{"x": ([1, 8], [4, 8], [4, 8])}]
    assert trt.calls["hardware_compatibility_level"] == "AMPERE_PLUS" and trt.calls["builder_optimization_level"] == 5


def test_parse_and_build_failures_are_model_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="could not parse"):
        build(tmp_path, bad, BuilderDouble())
    with pytest.raises(ModelError, match="failed to build"):
        build(tmp_path, onnx_model(tmp_path / "m.onnx"), BuilderDouble(fail_build=True))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_batch": 8, "max_batch": 4}, "min_batch"),
        ({"precision": "int4"}, "precision"),
        ({"exclude_lean_runtime": True}, "--version-compatible"),
        ({"profiles": 0}, "profiles"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, onnx_model(tmp_path / "m.onnx"), BuilderDouble(), **options)


def test_without_tensorrt_the_cli_fails_with_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code = main_build([str(onnx_model(tmp_path / "m.onnx")), "-o", str(tmp_path / "m.engine"), "--fp16"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("build-engine: build-engine needs the full TensorRT") and err.count("\n") == 1
    assert not (tmp_path / "m.engine").exists()


def test_cli_maps_every_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_build(onnx_path: Path, output: Path, options: BuildOptions) -> Any:
        seen.update(onnx=onnx_path, output=output, options=options)
        return SimpleNamespace(
            tensorrt_version="10", gpu_name="g", compute_capability="9.0", precision=options.precision
        )

    monkeypatch.setattr(trt_build, "build_engine", fake_build)
    import argparse

    parser = argparse.ArgumentParser(prog="worker")
    add_build_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["build-engine", "m.onnx", "-o", "m.engine", "--bf16", "--min-batch", "2", "--opt-batch", "8", "--max-batch",
         "64", "--profiles", "4", "--shape", "x:3x224x224", "--version-compatible", "--exclude-lean-runtime",
         "--timing-cache", "t.cache", "--workspace-mib", "1024", "--optimization-level", "3", "--device", "1"]
    )  # fmt: skip
    assert args.handler(args) == 0
    opts = seen["options"]
    assert (opts.precision, opts.min_batch, opts.opt_batch, opts.max_batch, opts.profiles) == ("bf16", 2, 8, 64, 4)
    assert opts.sample_shapes == {"x": (3, 224, 224)} and opts.version_compatible and opts.exclude_lean_runtime
    assert (opts.timing_cache, opts.workspace_mib, opts.optimization_level, opts.device) == (
        Path("t.cache"),
        1024,
        3,
        1,
    )
