"""``build-engine``: ONNX -> serialized TensorRT engine, plus the metadata sidecar the worker checks.

Written against the documented TensorRT 10/11 Python builder API (``Builder``, ``OnnxParser``,
``IBuilderConfig``, optimization profiles, timing cache). It needs the *full* TensorRT package and
a GPU; neither the lean runtime nor a CPU can build. NOT RUN in this project's environment: the full
TensorRT is not installable here (see docs/tensorrt.md).

Precision. TensorRT 10 enables reduced precision with builder flags (weak typing); TensorRT 11
removed those flags and builds strongly typed networks only, taking precisions from the ONNX graph.
So ``fp16``/``bf16`` set the flag on TensorRT 10 and, on 11, first convert the model with NVIDIA
ModelOpt AutoCast (inputs/outputs stay FP32). ``int8``/``fp8`` use explicit quantization on both:
an ONNX model that already has Q/DQ nodes is built as is; otherwise ModelOpt quantizes it with the
given calibration data first. A model that already carries Q/DQ nodes (``python -m worker quantize
--int8``) is built as is even without ``--int8``, and a model already converted to FP16 (``quantize
--fp16``) is built as is with ``--fp16``: strongly typed, no ModelOpt, no implicit INT8 calibrator
(TensorRT 10 deprecated ``IInt8Calibrator``; 11 removed it and the ``INT8``/``FP16`` builder flags).

Wiring (one line in ``worker/__main__.py``): ``trt_build.add_build_parser(subparsers)``; the parser
sets ``handler`` to a function taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from worker.engines.trt_meta import EngineMetadata, sha256_file, write_metadata
from worker.errors import ConfigError, ModelError, WorkerError

log = logging.getLogger(__name__)

PRECISIONS: Final = ("fp32", "fp16", "bf16", "int8", "fp8")
MIN_COMPUTE_CAPABILITY: Final = {"bf16": (8, 0), "fp8": (8, 9)}
QDQ_OPS: Final = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What ``build_engine`` builds. Batch bounds apply to dim 0 of every input."""

    min_batch: int = 1
    opt_batch: int | None = None  # default: max_batch
    max_batch: int = 32
    profiles: int = 1
    precision: str = "fp32"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatible: bool = False
    timing_cache: Path | None = None
    workspace_mib: int = 4096
    calibration_data: Path | None = None
    optimization_level: int | None = None
    sample_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # input -> dims after the batch
    device: int = 0

    def validate(self) -> None:
        opt = self.opt_batch if self.opt_batch is not None else self.max_batch
        if not 1 <= self.min_batch <= opt <= self.max_batch:
            raise ConfigError(
                f"need 1 <= min_batch <= opt_batch <= max_batch, got {self.min_batch}/{opt}/{self.max_batch}"
            )
        if self.profiles < 1:
            raise ConfigError("profiles must be at least 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workspace_mib < 1:
            raise ConfigError("workspace_mib must be positive")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise ConfigError("optimization_level must be 0..5")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ConfigError("--exclude-lean-runtime only applies with --version-compatible")


def import_builder() -> Any:
    """The full ``tensorrt`` module. ``ConfigError`` with one clear message when it is missing."""
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:
        raise ConfigError(
            "build-engine needs the full TensorRT (builder and ONNX parser) on a machine with an NVIDIA GPU: "
            "`pip install tensorrt` (pulls NVIDIA's libraries); the lean runtime cannot build engines. "
            f"Import failed: {exc}"
        ) from None


def build_engine(
    onnx_path: Path,
    output_path: Path,
    options: BuildOptions | None = None,
    *,
    trt_module: Any | None = None,
    cuda: Any | None = None,
    **overrides: Any,
) -> EngineMetadata:
    """Build ``onnx_path`` into a serialized engine at ``output_path`` and write its sidecar.

    Args:
        onnx_path: the model; dim 0 of every input must be the (dynamic) batch.
        output_path: where the engine goes; ``<output_path>.json`` gets the metadata.
        options: what to build; keyword ``overrides`` (``min_batch=``, ``precision=``, ...) replace fields.
        trt_module / cuda: injected for tests; default the real ``tensorrt`` and ``worker.cuda``.

    Raises:
        ConfigError: bad options, or TensorRT/CUDA/ModelOpt missing.
        ModelError: the ONNX model does not parse or the build fails.
    """
    opts = BuildOptions(**{**_as_dict(options or BuildOptions()), **overrides})
    opts.validate()
    onnx_path, output_path = Path(onnx_path), Path(output_path)
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX model {onnx_path} does not exist")
    explicit = _qdq_precision(onnx_path)
    if explicit is not None and opts.precision == "fp32":
        log.info("%s has Q/DQ nodes: building it as an explicitly quantized %s network", onnx_path, explicit)
        opts = BuildOptions(**{**_as_dict(opts), "precision": explicit})
    trt = trt_module if trt_module is not None else import_builder()
    gpu_name, capability = _gpu(opts, cuda)
    needed = MIN_COMPUTE_CAPABILITY.get(opts.precision)
    if needed and capability < needed:
        raise ConfigError(
            f"{opts.precision} needs compute capability {needed[0]}.{needed[1]}+; {gpu_name} has {capability}"
        )
    with tempfile.TemporaryDirectory(prefix="build-engine-") as workdir:
        model_path, strongly_typed, weak_flag = _prepare_onnx(trt, onnx_path, opts, Path(workdir))
        plan, profiles = _build(trt, model_path, opts, strongly_typed=strongly_typed, weak_flag=weak_flag)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp")
    tmp.write_bytes(plan)
    tmp.replace(output_path)
    meta = EngineMetadata(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name,
        compute_capability=f"{capability[0]}.{capability[1]}",
        engine_sha256=sha256_file(output_path),
        precision=opts.precision,
        version_compatible=opts.version_compatible,
        exclude_lean_runtime=opts.exclude_lean_runtime,
        hardware_compatibility="ampere_plus" if opts.hardware_compatible else "none",
        profiles=profiles,
        onnx_sha256=sha256_file(onnx_path),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_metadata(output_path, meta)
    log.info(
        "built %s (%d bytes, %s, %d profile(s)) for %s", output_path, len(plan), opts.precision, opts.profiles, gpu_name
    )
    return meta


def _as_dict(options: BuildOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in BuildOptions.__dataclass_fields__}


def _gpu(opts: BuildOptions, cuda: Any | None) -> tuple[str, tuple[int, int]]:
    if cuda is None:
        from worker import cuda as cuda_layer

        cuda = cuda_layer
    device = cuda.open_device(opts.device)
    try:
        props = device.properties
        return str(props.name), tuple(props.compute_capability)  # type: ignore[return-value]
    finally:
        device.close()


def _load_onnx(onnx_path: Path) -> Any:
    """The model without its weights' external data; ``None`` if it does not parse (TensorRT's parser says why)."""
    import onnx

    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return None


def _has_qdq(onnx_path: Path) -> bool:
    return _qdq_precision(onnx_path) is not None


def _qdq_precision(onnx_path: Path) -> str | None:
    """``int8``/``fp8`` for a model with Q/DQ nodes (from the zero points' type), ``None`` without."""
    import onnx

    model = _load_onnx(onnx_path)
    if model is None:
        return None
    quantize = [node for node in model.graph.node if node.op_type in QDQ_OPS]
    if not quantize:
        return None
    types = {init.name: init.data_type for init in model.graph.initializer}
    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}
    zero_points = [types.get(node.input[2]) for node in quantize if len(node.input) > 2]
    return "fp8" if any(t in fp8 for t in zero_points) else "int8"


def _check_symmetric(onnx_path: Path) -> None:
    """TensorRT takes only symmetric signed Q/DQ: every zero point 0, no UINT8. ``ConfigError`` otherwise."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = _load_onnx(onnx_path)
    if model is None:
        return
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        zero = initializers.get(node.input[2]) if node.op_type in QDQ_OPS and len(node.input) > 2 else None
        if zero is None:
            continue
        if zero.data_type == onnx.TensorProto.UINT8 or np.any(numpy_helper.to_array(zero).astype(np.float32) != 0):
            raise ConfigError(
                f"{onnx_path}: {node.op_type} {node.name!r} has an unsigned or non-zero zero point; TensorRT needs "
                "symmetric INT8 Q/DQ (zero points 0): make the model with `python -m worker quantize --activations s8`"
            )


def _is_fp16(onnx_path: Path) -> bool:
    """True for a model already converted to FP16 (float16 weights or casts to float16 inside)."""
    import onnx

    model = _load_onnx(onnx_path)
    if model is None:
        return False
    half = onnx.TensorProto.FLOAT16
    return any(init.data_type == half for init in model.graph.initializer) or any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute)
        for node in model.graph.node
    )


def _modelopt(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            "this precision needs NVIDIA ModelOpt to rewrite the ONNX model "
            f"(`pip install 'nvidia-modelopt[onnx]'`): {exc}"
        ) from None


def _prepare_onnx(trt: Any, onnx_path: Path, opts: BuildOptions, workdir: Path) -> tuple[Path, bool, Any]:
    """The ONNX file to parse, whether to build strongly typed, and a weak-typing flag (TensorRT 10)."""
    precision = opts.precision
    if precision == "fp32":
        return onnx_path, False, None
    if precision == "fp16" and _is_fp16(onnx_path):  # already converted (quantize --fp16): types are in the graph
        return onnx_path, True, None
    if precision in ("fp16", "bf16"):
        flag = getattr(trt.BuilderFlag, precision.upper(), None)
        if flag is not None:  # TensorRT 10: weak typing
            return onnx_path, False, flag
        autocast = _modelopt("modelopt.onnx.autocast")
        converted = autocast.convert_to_mixed_precision(
            onnx_path=str(onnx_path), low_precision_type=precision, keep_io_types=True
        )
        out = workdir / f"model.{precision}.onnx"
        importlib.import_module("onnx").save(converted, str(out))
        return out, True, None
    if _has_qdq(onnx_path):
        _check_symmetric(onnx_path)
        return onnx_path, True, None
    if opts.calibration_data is None:
        raise ConfigError(
            f"{precision} needs explicit quantization: an ONNX model with Q/DQ nodes, or --calibration-data "
            "(a .npy/.npz of representative inputs) for ModelOpt to calibrate and insert them"
        )
    import numpy as np

    quantization = _modelopt("modelopt.onnx.quantization")
    loaded = np.load(opts.calibration_data)
    data = dict(loaded) if hasattr(loaded, "files") else loaded
    out = workdir / f"model.{precision}.onnx"
    quantization.quantize(
        onnx_path=str(onnx_path), quantize_mode=precision, calibration_data=data, output_path=str(out)
    )
    return out, True, None


def _build(
    trt: Any, model_path: Path, opts: BuildOptions, *, strongly_typed: bool, weak_flag: Any
) -> tuple[bytes, list[dict[str, dict[str, list[int]]]]]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and typed_flag is not None:
        flags |= 1 << int(typed_flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT could not parse {model_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    if weak_flag is not None:
        config.set_flag(weak_flag)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if opts.exclude_lean_runtime:
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if opts.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if opts.optimization_level is not None:
        config.builder_optimization_level = opts.optimization_level
    profiles = _add_profiles(builder, network, config, opts)
    cache = _load_timing_cache(config, opts.timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT failed to build {model_path} (see the TensorRT log above)")
    if opts.timing_cache is not None and cache is not None:
        opts.timing_cache.write_bytes(bytes(cache.serialize()))
    return bytes(plan), profiles


def _add_profiles(builder: Any, network: Any, config: Any, opts: BuildOptions) -> list[dict[str, dict[str, list[int]]]]:
    opt_batch = opts.opt_batch if opts.opt_batch is not None else opts.max_batch
    shapes: dict[str, dict[str, list[int]]] = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        dims = tuple(int(d) for d in tensor.shape)
        sample = opts.sample_shapes.get(tensor.name, dims[1:])
        if not dims or len(sample) != len(dims) - 1 or any(d < 0 for d in sample):
            raise ConfigError(
                f"input {tensor.name!r} has shape {dims}: every dim after the batch must be fixed; "
                f"give it with --shape {tensor.name}:DxD..."
            )
        shapes[tensor.name] = {
            "min": [opts.min_batch, *sample],
            "opt": [opt_batch, *sample],
            "max": [opts.max_batch, *sample],
        }
    for _ in range(opts.profiles):  # identical profiles: one per concurrently running context
        profile = builder.create_optimization_profile()
        for name, bounds in shapes.items():
            profile.set_shape(name, bounds["min"], bounds["opt"], bounds["max"])
        config.add_optimization_profile(profile)
    return [shapes] * opts.profiles


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


# -- command line ------------------------------------------------------------------------------------


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    try:
        return name, tuple(int(d) for d in dims.lower().split("x") if d)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape wants NAME:DxDxD, got {text!r}") from None


def add_build_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``build-engine`` subcommand to an ``argparse`` subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "build-engine",
        help="build a TensorRT engine from an ONNX model (needs the full TensorRT and a GPU)",
        description="Build a serialized TensorRT engine and its <engine>.json metadata sidecar from an ONNX model.",
    )
    p.add_argument("onnx", type=Path, help="the ONNX model (dim 0 of every input is the batch)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the engine file to write")
    p.add_argument("--min-batch", type=int, default=1, help="smallest batch (smaller ones are padded)")
    p.add_argument("--opt-batch", type=int, default=None, help="batch size TensorRT tunes for (default: max)")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch")
    p.add_argument("--profiles", type=int, default=1, help="identical optimization profiles; use the worker's contexts")
    group = p.add_mutually_exclusive_group()
    for precision in PRECISIONS[1:]:
        group.add_argument(f"--{precision}", dest="precision", action="store_const", const=precision)
    p.set_defaults(precision="fp32")
    p.add_argument("--calibration-data", type=Path, help="int8/fp8: .npy/.npz of representative inputs (ModelOpt)")
    p.add_argument("--shape", type=_shape_arg, action="append", default=[], help="NAME:DxD.. dims after the batch")
    p.add_argument("--version-compatible", action="store_true", help="runs on later TensorRT and the lean runtime")
    p.add_argument("--exclude-lean-runtime", action="store_true", help="with --version-compatible: smaller plan")
    p.add_argument("--hardware-compatible", action="store_true", help="one engine for Ampere and newer GPUs")
    p.add_argument("--timing-cache", type=Path, help="read and update this timing cache file (faster rebuilds)")
    p.add_argument("--workspace-mib", type=int, default=4096, help="builder workspace limit")
    p.add_argument("--optimization-level", type=int, choices=range(6), help="builder optimization level 0..5")
    p.add_argument("--device", type=int, default=0, help="CUDA device to build on (engines are per GPU model)")
    p.set_defaults(handler=run_build, func=run_build)  # `func`: the worker CLI dispatches on it
    return p


def run_build(args: argparse.Namespace) -> int:
    """Handle parsed ``build-engine`` arguments; 0 on success, 2 with one message on error."""
    options = BuildOptions(
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        profiles=args.profiles,
        precision=args.precision,
        version_compatible=args.version_compatible,
        exclude_lean_runtime=args.exclude_lean_runtime,
        hardware_compatible=args.hardware_compatible,
        timing_cache=args.timing_cache,
        workspace_mib=args.workspace_mib,
        calibration_data=args.calibration_data,
        optimization_level=args.optimization_level,
        sample_shapes=dict(args.shape),
        device=args.device,
    )
    try:
        meta = build_engine(args.onnx, args.output, options)
    except (WorkerError, OSError) as exc:  # config, model, CUDA errors, files that cannot be read or written
        sys.stderr.write(f"build-engine: {exc}\n")
        return 2
    sys.stdout.write(
        f"wrote {args.output} (TensorRT {meta.tensorrt_version}, {meta.gpu_name}, sm {meta.compute_capability}, "
        f"{meta.precision}, {args.profiles} profile(s), batch {args.min_batch}..{args.max_batch})\n"
    )
    return 0


def main_build(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.engines.trt_build MODEL.onnx -o MODEL.engine [...]`` without the worker CLI."""
    parser = argparse.ArgumentParser(prog="build-engine")
    add_build_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["build-engine", *(sys.argv[1:] if argv is None else argv)])
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    raise SystemExit(main_build())
