"""How far a reduced-precision model drifts from its FP32 reference, on the same inputs.

For every output: top-1 agreement with FP32 (argmax over the last axis, for outputs of rank 2 and
more), the largest and the mean absolute difference; with labels, the accuracy of both models overall
and per class (for the demo model: per rotation). Written as JSON (numbers) and Markdown (a table).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from worker.errors import ModelError
from worker.precision.calibration import Samples

Outputs = dict[str, "np.ndarray[Any, Any]"]


@dataclass(frozen=True, slots=True)
class OutputComparison:
    """One output of a variant against the same output of the reference."""

    output: str
    samples: int
    top1_agreement: float | None  # fraction of samples with the same argmax; None for rank-1 outputs
    max_abs_diff: float
    mean_abs_diff: float
    accuracy: float | None = None  # with labels: fraction right (this variant)
    reference_accuracy: float | None = None
    per_class_accuracy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VariantReport:
    """One model compared with the reference."""

    name: str
    path: str
    size_bytes: int
    outputs: list[OutputComparison]


@dataclass(frozen=True, slots=True)
class PrecisionReport:
    """Every variant against one FP32 reference on one data set."""

    reference: str
    data: str
    samples: int
    variants: list[VariantReport]
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    onnxruntime: str = ""
    machine: str = field(default_factory=lambda: f"{platform.machine()}, {platform.python_version()}")


def compare(
    name: str,
    reference: np.ndarray[Any, Any],
    candidate: np.ndarray[Any, Any],
    labels: np.ndarray[Any, Any] | None = None,
    class_names: Sequence[str] | None = None,
) -> OutputComparison:
    """Compare one output of a variant with the reference's (same inputs, same order).

    Args:
        name: the output's name.
        reference / candidate: ``[N, ...]`` arrays; compared in float64.
        labels: optional ground truth, one class index per sample (for classifier outputs ``[N, C]``).
        class_names: names of the classes for the per-class accuracy (default: their indices).
    """
    if reference.shape != candidate.shape:
        raise ModelError(f"output {name!r}: shape {candidate.shape} differs from the reference's {reference.shape}")
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    diff = np.abs(ref - cand)
    top1 = accuracy = ref_accuracy = None
    per_class: dict[str, float] = {}
    if ref.ndim >= 2 and ref.shape[0]:
        ref_top, cand_top = ref.argmax(axis=-1), cand.argmax(axis=-1)
        top1 = float(np.mean(ref_top == cand_top))
        if labels is not None and ref.ndim == 2:
            accuracy = float(np.mean(cand_top == labels))
            ref_accuracy = float(np.mean(ref_top == labels))
            for index in np.unique(labels):
                label = str(class_names[int(index)]) if class_names else str(int(index))
                per_class[label] = float(np.mean(cand_top[labels == index] == index))
    return OutputComparison(
        output=name,
        samples=int(ref.shape[0]) if ref.ndim else 1,
        top1_agreement=top1,
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        accuracy=accuracy,
        reference_accuracy=ref_accuracy,
        per_class_accuracy=per_class,
    )


def run_model(path: Path, samples: Samples, *, batch_size: int = 32, threads: int = 0) -> Outputs:
    """Every output of the ONNX model at ``path`` over all ``samples``, in batches (CPU provider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    names = [out.name for out in session.get_outputs()]
    parts: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in names}
    for feed in samples.batches(batch_size):
        try:
            results = session.run(names, feed)
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot run {path} on this data: {exc}") from exc
        for name, value in zip(names, results, strict=True):
            parts[name].append(np.asarray(value))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def precision_report(
    reference: Path,
    variants: Mapping[str, Path],
    samples: Samples,
    *,
    data_name: str = "",
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> PrecisionReport:
    """Run the reference and every variant on ``samples`` and compare each output.

    Raises:
        ModelError: a model does not load, or its outputs differ in names or shapes from the reference's.
    """
    import onnxruntime as ort

    expected = run_model(reference, samples, batch_size=batch_size)
    reports = []
    for name, path in variants.items():
        got = run_model(path, samples, batch_size=batch_size)
        if set(got) != set(expected):
            raise ModelError(f"{name} ({path}) has outputs {sorted(got)}, the reference {sorted(expected)}")
        comparisons = [compare(out, expected[out], got[out], samples.labels, class_names) for out in expected]
        reports.append(VariantReport(name, str(path), Path(path).stat().st_size, comparisons))
    return PrecisionReport(
        reference=str(reference),
        data=data_name,
        samples=samples.count,
        variants=reports,
        onnxruntime=str(ort.__version__),
    )


def to_json(report: PrecisionReport) -> str:
    """The report as indented JSON."""
    return json.dumps(asdict(report), indent=2)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def to_markdown(report: PrecisionReport) -> str:
    """A Markdown table: one row per variant and output."""
    classes = sorted({c for v in report.variants for o in v.outputs for c in o.per_class_accuracy}, key=_class_key)
    head = ["variant", "output", "size (KiB)", "top-1 = FP32", "max abs diff", "mean abs diff", "accuracy", "FP32 acc."]
    head += [f"acc. {c}" for c in classes]
    lines = [
        f"Reference `{Path(report.reference).name}`, {report.samples} samples"
        + (f" ({report.data})" if report.data else "")
        + f", ONNX Runtime {report.onnxruntime}, {report.created_at}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    for variant in report.variants:
        for out in variant.outputs:
            row = [variant.name, out.output, f"{variant.size_bytes / 1024:.0f}", _pct(out.top1_agreement)]
            row += [_fmt(out.max_abs_diff), _fmt(out.mean_abs_diff), _pct(out.accuracy), _pct(out.reference_accuracy)]
            row += [_pct(out.per_class_accuracy.get(c)) for c in classes]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _class_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def write_report(report: PrecisionReport, prefix: Path) -> tuple[Path, Path]:
    """Write ``<prefix>.json`` and ``<prefix>.md``; returns both paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")
    json_path.write_text(to_json(report) + "\n")
    md_path.write_text(to_markdown(report))
    return json_path, md_path
