"""``python -m worker quantize`` and ``python -m worker precision-report``.

Wiring (one call in ``worker/__main__.py``): ``add_precision_parsers(subparsers)``; each parser sets
``func`` to a handler that takes the parsed namespace and returns an exit code (2 with one message on
a bad input, a missing tool or a model that cannot be converted).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from worker.errors import WorkerError
from worker.precision.calibration import Samples, load_samples, model_inputs
from worker.precision.quantize import ACTIVATION_TYPES, CALIBRATION_METHODS, TOOLS, QuantizeOptions

log = logging.getLogger(__name__)


def _class_names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def add_precision_parsers(subparsers: Any) -> None:
    """Add ``quantize`` and ``precision-report`` to an ``argparse`` subparsers object."""
    q: argparse.ArgumentParser = subparsers.add_parser(
        "quantize",
        help="make an FP16 or INT8 (Q/DQ) copy of an ONNX model, on any machine",
        description="FP16 (float32 IO kept) or INT8 with explicit QuantizeLinear/DequantizeLinear nodes, "
        "calibrated on representative inputs. The INT8 model goes to TensorRT unchanged (build-engine --int8).",
    )
    q.add_argument("model", type=Path, help="the FP32 ONNX model")
    q.add_argument("-o", "--output", type=Path, required=True, help="the model to write")
    group = q.add_mutually_exclusive_group()
    group.add_argument("--fp16", dest="precision", action="store_const", const="fp16")
    group.add_argument("--int8", dest="precision", action="store_const", const="int8", help="(default)")
    q.set_defaults(precision="int8")
    q.add_argument("--calibration", type=Path, help="int8: .npy/.npz of inputs, or a folder of images")
    q.add_argument("--per-tensor", dest="per_channel", action="store_false", help="one scale per weight tensor")
    q.add_argument("--activations", choices=ACTIVATION_TYPES, default="u8", help="int8 activation type (u8: CPU)")
    q.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax")
    q.add_argument("--calibration-batch", type=int, default=8, help="samples per calibration run")
    q.add_argument("--calibration-samples", type=int, help="use only the first N samples")
    q.add_argument("--keep-node", action="append", default=[], help="node name left in float32 (repeatable)")
    q.add_argument("--keep-op", action="append", default=[], help="op type left in float32 (repeatable)")
    q.add_argument("--tool", choices=TOOLS, default="onnxruntime", help="modelopt: NVIDIA ModelOpt, if installed")
    q.add_argument("--report", type=Path, help="also write an accuracy report to REPORT.json and REPORT.md")
    q.add_argument("--report-data", type=Path, help="data for --report (default: the calibration data)")
    q.add_argument("--class-names", help="comma-separated class names; image sub-folders with these names are labels")
    q.set_defaults(func=run_quantize)

    r: argparse.ArgumentParser = subparsers.add_parser(
        "precision-report",
        help="compare reduced-precision models with their FP32 reference (JSON + Markdown)",
        description="Top-1 agreement with FP32, largest and mean absolute output difference, and accuracy "
        "per class when the data has labels (an .npz 'labels' array, or image sub-folders named by --class-names).",
    )
    r.add_argument("reference", type=Path, help="the FP32 model")
    r.add_argument("variants", nargs="+", help="models to compare: PATH or NAME=PATH")
    r.add_argument("--data", type=Path, required=True, help=".npy/.npz of inputs, or a folder of images")
    r.add_argument("--out", type=Path, required=True, help="write OUT.json and OUT.md")
    r.add_argument("--class-names", help="comma-separated class names")
    r.add_argument("--batch-size", type=int, default=32)
    r.set_defaults(func=run_report)


def _samples(model: Path, data: Path, class_names: list[str] | None) -> Samples:
    return load_samples(data, model_inputs(model), class_names=class_names)


def run_quantize(args: argparse.Namespace) -> int:
    """Handle parsed ``quantize`` arguments."""
    from worker.precision.quantize import quantize_model

    options = QuantizeOptions(
        precision=args.precision,
        per_channel=args.per_channel,
        activations=args.activations,
        calibration_method=args.calibration_method,
        keep_nodes=tuple(args.keep_node),
        keep_ops=tuple(args.keep_op),
        calibration_batch=args.calibration_batch,
        calibration_samples=args.calibration_samples,
        tool=args.tool,
    )
    names = _class_names(args.class_names)
    try:
        options.validate()
        calibration = _samples(args.model, args.calibration, names) if args.calibration else None
        result = quantize_model(args.model, args.output, options, calibration)
        sys.stdout.write(
            f"wrote {result.path} ({result.precision}, {result.tool}, {result.size_bytes} bytes, "
            f"{result.qdq_nodes} Q/DQ nodes, {result.calibration_samples} calibration samples)\n"
        )
        if args.report:
            data = args.report_data or args.calibration
            if data is None:
                raise WorkerError("--report needs --report-data (or --calibration) to compare on")
            _report(args.model, {args.output.stem: args.output}, data, args.report, names, 32)
    except (WorkerError, OSError) as exc:
        sys.stderr.write(f"quantize: {exc}\n")
        return 2
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Handle parsed ``precision-report`` arguments."""
    variants: dict[str, Path] = {}
    for text in args.variants:
        name, sep, path = text.partition("=")
        variants[name if sep else Path(text).stem] = Path(path if sep else text)
    try:
        _report(args.reference, variants, args.data, args.out, _class_names(args.class_names), args.batch_size)
    except (WorkerError, OSError) as exc:
        sys.stderr.write(f"precision-report: {exc}\n")
        return 2
    return 0


def _report(
    reference: Path, variants: dict[str, Path], data: Path, out: Path, names: list[str] | None, batch_size: int
) -> None:
    from worker.precision.report import precision_report, to_markdown, write_report

    samples = _samples(reference, data, names)
    report = precision_report(
        reference, variants, samples, data_name=str(data), class_names=names, batch_size=batch_size
    )
    json_path, md_path = write_report(report, out)
    sys.stdout.write(to_markdown(report))
    sys.stdout.write(f"wrote {json_path} and {md_path}\n")
