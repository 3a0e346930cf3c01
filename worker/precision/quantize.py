"""FP16 and INT8 (explicit Q/DQ) ONNX models from an FP32 one, with tools that need no GPU.

- FP16: ``onnxconverter_common.float16`` with ``keep_io_types=True``: the model keeps float32 inputs and
  outputs (Cast nodes at the edges), so clients and the wire format do not change.
- INT8: ONNX Runtime static quantization in QDQ format: QuantizeLinear/DequantizeLinear pairs around
  every quantized tensor, scales calibrated on representative inputs. This is the *explicit*
  quantization TensorRT 10/11 builds as is (``build-engine --int8``), and what ONNX Runtime's CPU
  provider fuses into integer kernels. Activations U8 (asymmetric) are meant as the x86 fast path
  (``u8 x s8``); S8 activations are made symmetric (zero point 0), the only form TensorRT accepts.
- ModelOpt (``tool="modelopt"``, where ``nvidia-modelopt[onnx]`` is installed): its AutoCast
  (``convert_to_mixed_precision``, FP16) or ONNX PTQ (``modelopt.onnx.quantization.quantize``, INT8,
  symmetric). Written against their documented signatures; not run in this project (not installed here).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from worker.errors import ConfigError, ModelError
from worker.precision.calibration import Samples

log = logging.getLogger(__name__)

Precision = Literal["fp16", "int8"]
ActivationType = Literal["u8", "s8"]
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
Tool = Literal["onnxruntime", "modelopt"]

PRECISIONS: Final = ("fp16", "int8")
ACTIVATION_TYPES: Final = ("u8", "s8")
CALIBRATION_METHODS: Final = ("minmax", "entropy", "percentile")
TOOLS: Final = ("onnxruntime", "modelopt")
QDQ_OPS: Final = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    """What ``quantize_model`` makes.

    Attributes:
        precision: ``fp16`` or ``int8``.
        per_channel: INT8: one scale per output channel of each weight (better accuracy for convolutions).
        activations: INT8 activation type: ``u8`` (asymmetric, ONNX Runtime's CPU fast path) or ``s8``
            (symmetric, zero points 0: the form TensorRT builds).
        calibration_method: INT8: how activation ranges are chosen from the calibration data.
        keep_nodes: node names left in float32.
        keep_ops: op types (``Softmax``, ...) left in float32.
        calibration_batch: samples per calibration run.
        calibration_samples: use only the first N samples (``None``: all).
        tool: ``onnxruntime`` (ONNX Runtime + onnxconverter-common) or ``modelopt``.
    """

    precision: Precision = "int8"
    per_channel: bool = True
    activations: ActivationType = "u8"
    calibration_method: CalibrationMethod = "minmax"
    keep_nodes: tuple[str, ...] = ()
    keep_ops: tuple[str, ...] = ()
    calibration_batch: int = 8
    calibration_samples: int | None = None
    tool: Tool = "onnxruntime"

    def validate(self) -> None:
        """``ConfigError`` naming the first bad field."""
        for field, value, allowed in (
            ("precision", self.precision, PRECISIONS),
            ("activations", self.activations, ACTIVATION_TYPES),
            ("calibration_method", self.calibration_method, CALIBRATION_METHODS),
            ("tool", self.tool, TOOLS),
        ):
            if value not in allowed:
                raise ConfigError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")
        if self.calibration_batch < 1:
            raise ConfigError(f"calibration_batch must be at least 1, got {self.calibration_batch}")
        if self.calibration_samples is not None and self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be at least 1, got {self.calibration_samples}")


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    """What was written: the file, how it was made, and what is inside."""

    path: Path
    precision: Precision
    tool: Tool
    seconds: float
    size_bytes: int
    qdq_nodes: int
    float16_initializers: int
    calibration_samples: int


def quantize_model(
    source: Path, output: Path, options: QuantizeOptions | None = None, calibration: Samples | None = None
) -> QuantizeResult:
    """Write a reduced-precision copy of the ONNX model ``source`` to ``output``.

    Args:
        source: the FP32 model.
        output: where the new model goes (written whole or not at all).
        options: what to make; default INT8, per-channel, U8 activations, MinMax.
        calibration: representative inputs; required for INT8.

    Returns:
        What was written.

    Raises:
        ConfigError: bad options, missing calibration data, or a missing tool.
        ModelError: the model cannot be read, converted or checked.
    """
    options = options or QuantizeOptions()
    options.validate()
    source, output = Path(source), Path(output)
    if not source.is_file():
        raise ConfigError(f"ONNX model {source} does not exist")
    if options.precision == "int8" and calibration is None:
        raise ConfigError("int8 needs calibration data: a .npy/.npz of representative inputs or a folder of images")
    if calibration is not None:
        calibration = calibration.head(options.calibration_samples)
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        if options.tool == "modelopt":
            _modelopt(source, tmp, options, calibration)
        elif options.precision == "fp16":
            _fp16(source, tmp, options)
        else:
            assert calibration is not None  # checked above; narrows the type
            _int8(source, tmp, options, calibration)
        qdq, fp16 = _check(tmp, source)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    result = QuantizeResult(
        path=output,
        precision=options.precision,
        tool=options.tool,
        seconds=time.perf_counter() - started,
        size_bytes=output.stat().st_size,
        qdq_nodes=qdq,
        float16_initializers=fp16,
        calibration_samples=0 if calibration is None else calibration.count,
    )
    log.info(
        "wrote %s (%s, %s, %d bytes, %d Q/DQ nodes) in %.1fs",
        output, result.precision, result.tool, result.size_bytes, qdq, result.seconds,
    )  # fmt: skip
    return result


def _load(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc


def _fp16(source: Path, output: Path, options: QuantizeOptions) -> None:
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ConfigError("fp16 needs onnxconverter-common: `pip install 'redis-infer[quant]'`") from None
    model = _load(source)
    block_ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(options.keep_ops))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=block_ops, node_block_list=list(options.keep_nodes)
            )
        except Exception as exc:
            raise ModelError(f"FP16 conversion of {source} failed: {exc}") from exc
    if caught:  # one warning per weight value clipped to the FP16 range: a count, not a flood
        log.info("fp16: %d weight values clipped to the float16 range (e.g. %s)", len(caught), caught[0].message)
    onnx.save(converted, str(output))


class _Feeds:
    """ONNX Runtime's calibration reader protocol (``get_next``/``rewind``) over ``Samples``."""

    def __init__(self, samples: Samples, batch_size: int) -> None:
        self._samples = samples
        self._batch_size = batch_size
        self._feeds: Iterator[dict[str, np.ndarray[Any, Any]]] = samples.batches(batch_size)

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:
        self._feeds = self._samples.batches(self._batch_size)


def _int8(source: Path, output: Path, options: QuantizeOptions, calibration: Samples) -> None:
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    activation = q.QuantType.QUInt8 if options.activations == "u8" else q.QuantType.QInt8
    model = _load(source)
    exclude = sorted({*options.keep_nodes, *(n.name for n in model.graph.node if n.op_type in options.keep_ops)})
    unknown = sorted(set(options.keep_nodes) - {n.name for n in model.graph.node})
    if unknown:
        raise ConfigError(f"--keep-node: no node named {unknown} in {source}")
    reader = _Feeds(calibration, options.calibration_batch)
    with tempfile.TemporaryDirectory(prefix="quantize-") as workdir:
        prepared = Path(workdir) / "prepared.onnx"
        try:
            # Shape inference and graph cleanup first, as ONNX Runtime advises; sympy-based symbolic
            # inference is skipped (an extra dependency; ONNX's own inference covers static graphs).
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            q.quantize_static(
                str(prepared), str(output), reader,  # type: ignore[arg-type]  # duck-typed reader
                quant_format=q.QuantFormat.QDQ,
                per_channel=options.per_channel,
                activation_type=activation,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=methods[options.calibration_method],
                # S8 is the TensorRT form: symmetric, every zero point 0 (TensorRT refuses others)
                extra_options={"ActivationSymmetric": options.activations == "s8", "WeightSymmetric": True},
            )  # fmt: skip
        except Exception as exc:
            raise ModelError(f"INT8 quantization of {source} failed: {exc}") from exc


def _modelopt(source: Path, output: Path, options: QuantizeOptions, calibration: Samples | None) -> None:
    import importlib

    if options.precision == "int8" and options.calibration_method == "percentile":
        raise ConfigError("ModelOpt calibrates INT8 with minmax ('max') or entropy, not percentile")
    module = "modelopt.onnx.autocast" if options.precision == "fp16" else "modelopt.onnx.quantization"
    try:
        modelopt = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"--tool modelopt needs NVIDIA ModelOpt (`pip install 'nvidia-modelopt[onnx]'`), not installed ({exc}); "
            "--tool onnxruntime needs no GPU"
        ) from None
    if options.precision == "fp16":
        import onnx

        converted = modelopt.convert_to_mixed_precision(
            onnx_path=str(source),
            low_precision_type="fp16",
            keep_io_types=True,
            nodes_to_exclude=list(options.keep_nodes),
            op_types_to_exclude=list(options.keep_ops),
        )
        onnx.save(converted, str(output))
        return
    assert calibration is not None
    modelopt.quantize(
        onnx_path=str(source),
        quantize_mode="int8",
        calibration_data=calibration.inputs,
        calibration_method="max" if options.calibration_method == "minmax" else options.calibration_method,
        nodes_to_exclude=list(options.keep_nodes),
        op_types_to_exclude=list(options.keep_ops),
        output_path=str(output),
    )


def _check(path: Path, source: Path) -> tuple[int, int]:
    """Checker-valid, same IO names and types as the source; returns (Q/DQ nodes, float16 initializers)."""
    import onnx

    model = _load(path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"the converted model {path} is not valid ONNX: {exc}") from exc
    original = _load(source)
    for kind in ("input", "output"):
        before = {v.name: v.type.tensor_type.elem_type for v in getattr(original.graph, kind)}
        after = {v.name: v.type.tensor_type.elem_type for v in getattr(model.graph, kind)}
        if before != after:
            raise ModelError(f"the converted model changed its {kind}s: {before} -> {after}")
    qdq = sum(node.op_type in QDQ_OPS for node in model.graph.node)
    fp16 = sum(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    return qdq, fp16


def has_qdq(path: Path) -> bool:
    """True if the ONNX model at ``path`` has QuantizeLinear/DequantizeLinear nodes (explicit quantization)."""
    model = _load(path)
    return any(node.op_type in QDQ_OPS for node in model.graph.node)
