"""``build-engine`` takes the models ``quantize`` makes to TensorRT unchanged (explicit quantization).

Against the builder double of tests/test_trt_build.py (the full TensorRT cannot be installed here),
plus the real TensorRT 11.4 lean classes for the names of the builder flags, pools and levels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tests.precision_models import inputs, make_classifier
from tests.test_trt_build import BuilderDouble, build
from worker.engines import trt_build
from worker.precision.calibration import load_samples, model_inputs
from worker.precision.quantize import QuantizeOptions, quantize_model


class RecordingBuilder(BuilderDouble):
    """The builder double, also recording which file the ONNX parser was given."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        parser_class = self.OnnxParser
        parsed = self.calls.setdefault("parsed", [])

        def parser(network: Any, logger: Any) -> Any:
            instance = parser_class(network, logger)
            original = instance.parse_from_file

            def parse_from_file(path: str) -> bool:
                parsed.append(Path(path).read_bytes())
                return bool(original(path))

            instance.parse_from_file = parse_from_file
            return instance

        self.OnnxParser = parser


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trt")
    fp32 = make_classifier(root / "tiny.onnx")
    np.save(root / "calib.npy", inputs(32, seed=1))
    samples = load_samples(root / "calib.npy", model_inputs(fp32))
    int8 = quantize_model(fp32, root / "tiny.int8.onnx", QuantizeOptions(activations="s8"), samples).path
    fp16 = quantize_model(fp32, root / "tiny.fp16.onnx", QuantizeOptions(precision="fp16")).path
    return {"fp32": fp32, "int8": int8, "fp16": fp16}


@pytest.mark.parametrize("version", ["10.9.0.34", "11.4.0.106"])
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_qdq_model_is_parsed_unchanged_strongly_typed_without_calibrator(
    tmp_path: Path, models: dict[str, Path], version: str, precision: str
) -> None:
    trt = RecordingBuilder(version=version, weak_typing=version.startswith("10"))
    meta = build(tmp_path, models["int8"], trt, precision=precision, max_batch=8)
    assert trt.calls["parsed"] == [models["int8"].read_bytes()]  # the very file quantize wrote
    assert trt.calls["network_flags"] == 1 << 5  # STRONGLY_TYPED
    assert trt.calls["flags"] == []  # no INT8/FP16 builder flag (TensorRT 11 has none)
    assert "int8_calibrator" not in trt.calls  # no implicit calibration
    assert meta.precision == "int8"  # detected from the Q/DQ nodes even without --int8


def test_asymmetric_u8_model_is_refused_with_the_fix(tmp_path: Path, models: dict[str, Path]) -> None:
    from worker.errors import ConfigError

    u8 = quantize_model(
        models["fp32"], tmp_path / "u8.onnx", QuantizeOptions(activations="u8"),
        load_samples(models["fp32"].parent / "calib.npy", model_inputs(models["fp32"])),
    ).path  # fmt: skip
    with pytest.raises(ConfigError, match="--activations s8"):
        build(tmp_path, u8, RecordingBuilder(), precision="int8")


def test_fp16_model_is_built_as_is_without_modelopt(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "modelopt", None)  # would raise if AutoCast were called
    trt = RecordingBuilder(version="11.4.0.106", weak_typing=False)
    meta = build(tmp_path, models["fp16"], trt, precision="fp16", max_batch=8)
    assert trt.calls["parsed"] == [models["fp16"].read_bytes()]
    assert trt.calls["network_flags"] == 1 << 5 and trt.calls["flags"] == []
    assert meta.precision == "fp16"


def test_fp32_model_still_needs_modelopt_for_fp16_on_tensorrt_11(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from worker.errors import ConfigError

    monkeypatch.setitem(sys.modules, "modelopt", None)
    with pytest.raises(ConfigError, match="ModelOpt"):
        build(tmp_path, models["fp32"], RecordingBuilder(version="11.4.0.106", weak_typing=False), precision="fp16")
    assert trt_build._qdq_precision(models["fp32"]) is None and not trt_build._is_fp16(models["fp32"])


def test_fp8_qdq_is_detected(tmp_path: Path, models: dict[str, Path]) -> None:
    model = onnx.load(str(models["int8"]))
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and not init.dims:
            init.data_type = onnx.TensorProto.FLOAT8E4M3FN
    onnx.save(model, str(tmp_path / "fp8.onnx"))
    assert trt_build._qdq_precision(tmp_path / "fp8.onnx") == "fp8"
    assert trt_build._qdq_precision(models["int8"]) == "int8"


def test_builder_names_used_exist_in_real_tensorrt_11() -> None:
    """Every enum member build-engine touches, checked against the real TensorRT 11.4 classes.

    The lean bindings carry the builder-side enums (not ``Builder``/``NetworkDefinitionCreationFlag``
    themselves). TensorRT 11 has no ``INT8``/``FP16``/``BF16`` builder flags: that is why quantized and
    FP16 models are built strongly typed, and why ``--fp16`` from an FP32 model goes through ModelOpt.
    """
    import tensorrt_lean_bindings as trt  # a dev dependency: fail, never skip, without it

    flags = set(trt.BuilderFlag.__members__)
    assert {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"} <= flags
    assert not {"INT8", "FP16", "BF16", "FP8"} & flags
    assert "WORKSPACE" in trt.MemoryPoolType.__members__
    assert "AMPERE_PLUS" in trt.HardwareCompatibilityLevel.__members__
    assert not hasattr(trt, "IInt8Calibrator")
