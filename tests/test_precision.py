"""``python -m worker quantize`` and the accuracy report on a small classifier built in the test.

Stated tolerances (softmax probabilities of the test classifier, 64 held-out random inputs):
FP16 within 2e-3 of FP32; INT8 (per-channel, MinMax, U8 or S8 activations) within 0.15 per probability
(0.09 was the worst seen over 2,000 random inputs), on average within 0.01 (U8) or 0.03 (S8: symmetric,
so the non-negative probabilities get only half of the 256 levels), and the same top-1 class wherever
FP32's two most likely classes are more than 0.1 apart (near-ties may flip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.precision_models import inputs, make_classifier
from worker.__main__ import main
from worker.errors import ConfigError
from worker.precision.calibration import Samples, load_samples, model_inputs
from worker.precision.quantize import QuantizeOptions, quantize_model
from worker.precision.report import compare, precision_report, to_markdown

FP16_ATOL = 2e-3
INT8_ATOL = 0.15
INT8_MEAN_ATOL = 0.01
INT8_S8_MEAN_ATOL = 0.03
INT8_CLEAR_MARGIN = 0.1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "calib.npy"
    np.save(path, inputs(64, seed=1))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def quantize(tiny: Path, out: Path, calib: Path | None = None, **options: Any) -> Path:
    samples = load_samples(calib, model_inputs(tiny)) if calib else None
    return quantize_model(tiny, out, QuantizeOptions(**options), samples).path


def assert_same_clear_top1(got: np.ndarray, want: np.ndarray) -> None:
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > INT8_CLEAR_MARGIN
    assert clear.sum() >= len(want) // 4  # the check is not vacuous
    np.testing.assert_array_equal(got.argmax(1)[clear], want.argmax(1)[clear])


def io_types(path: Path) -> list[int]:
    model = onnx.load(str(path))
    return [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]


def producers(path: Path) -> dict[str, onnx.NodeProto]:
    return {out: node for node in onnx.load(str(path)).graph.node for out in node.output}


def test_fp16_keeps_float32_io_and_agrees(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.fp16.onnx"
    assert main(["quantize", str(tiny), "-o", str(out), "--fp16"]) == 0
    assert io_types(out) == [onnx.TensorProto.FLOAT] * 2
    weights = {init.name: init.data_type for init in onnx.load(str(out)).graph.initializer}
    assert weights["w1"] == onnx.TensorProto.FLOAT16 and weights["w3"] == onnx.TensorProto.FLOAT16
    x = inputs(64, seed=2)
    np.testing.assert_allclose(run(out, x), run(tiny, x), atol=FP16_ATOL)


@pytest.mark.parametrize("activations", ["u8", "s8"])
def test_int8_has_qdq_nodes_and_agrees(tiny: Path, calib: Path, tmp_path: Path, activations: str) -> None:
    out = tmp_path / "tiny.int8.onnx"
    args = ["quantize", str(tiny), "-o", str(out), "--int8", "--calibration", str(calib), "--activations", activations]
    assert main(args) == 0
    model = onnx.load(str(out))
    assert io_types(out) == [onnx.TensorProto.FLOAT] * 2
    found = producers(out)
    assert found["x_QuantizeLinear_Output"].op_type == "QuantizeLinear"  # the input is quantized
    conv = next(node for node in model.graph.node if node.name == "conv1")
    assert found[conv.input[1]].op_type == "DequantizeLinear"  # so are the weights
    zero_points = {i.name: i.data_type for i in model.graph.initializer}
    q_input = found["x_QuantizeLinear_Output"]
    expected = onnx.TensorProto.UINT8 if activations == "u8" else onnx.TensorProto.INT8
    assert zero_points[q_input.input[2]] == expected
    if activations == "s8":  # symmetric, the form TensorRT takes: every zero point is 0
        qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        arrays = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        assert qdq and all(not np.any(arrays[n.input[2]]) for n in qdq)
    x = inputs(64, seed=2)
    got, want = run(out, x), run(tiny, x)
    np.testing.assert_allclose(got, want, atol=INT8_ATOL)
    assert np.abs(got - want).mean() <= (INT8_MEAN_ATOL if activations == "u8" else INT8_S8_MEAN_ATOL)
    assert_same_clear_top1(got, want)


def _weight_scale(path: Path, node_name: str) -> np.ndarray:
    model = onnx.load(str(path))
    found = producers(path)
    node = next(n for n in model.graph.node if n.name == node_name)
    dq = found[node.input[1]]
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return np.asarray(scales[dq.input[1]])


def test_per_channel_weights_have_one_scale_per_output_channel(tiny: Path, calib: Path, tmp_path: Path) -> None:
    per_channel = quantize(tiny, tmp_path / "a.onnx", calib, per_channel=True)
    per_tensor = quantize(tiny, tmp_path / "b.onnx", calib, per_channel=False)
    assert _weight_scale(per_channel, "conv2").shape == (8,)
    assert _weight_scale(per_tensor, "conv2").shape == ()


def test_calibration_method_changes_the_activation_ranges(tiny: Path, calib: Path, tmp_path: Path) -> None:
    def relu_scale(path: Path) -> float:
        model = onnx.load(str(path))
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1")
        return float(next(onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == q.input[1]))

    minmax = quantize(tiny, tmp_path / "minmax.onnx", calib, calibration_method="minmax")
    percentile = quantize(tiny, tmp_path / "percentile.onnx", calib, calibration_method="percentile")
    assert relu_scale(percentile) < relu_scale(minmax)  # percentile clips the largest activations


def test_kept_nodes_and_op_types_stay_float(tiny: Path, calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "kept.onnx"
    args = ["quantize", str(tiny), "-o", str(out), "--calibration", str(calib), "--keep-node", "conv2"]
    assert main([*args, "--keep-op", "Gemm"]) == 0
    model, found = onnx.load(str(out)), producers(out)
    nodes = {node.name: node for node in model.graph.node}
    assert nodes["conv2"].input[1] == "w2" and "w2" not in found  # float weights, no DequantizeLinear
    assert nodes["fc"].input[1] == "w3"
    assert found[nodes["conv1"].input[1]].op_type == "DequantizeLinear"  # the rest is still quantized


def test_fp16_kept_node_keeps_float32_weights(tiny: Path, tmp_path: Path) -> None:
    out = quantize(tiny, tmp_path / "keep.fp16.onnx", precision="fp16", keep_nodes=("fc",))
    weights = {init.name: init.data_type for init in onnx.load(str(out)).graph.initializer}
    assert weights["w3"] == onnx.TensorProto.FLOAT and weights["w1"] == onnx.TensorProto.FLOAT16


def test_modelopt_gets_the_documented_arguments(
    tiny: Path, calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ModelOpt is not installed here: a stand-in module records the call (names from its documentation)."""
    import shutil
    import sys
    import types

    calls: dict[str, Any] = {}
    quantization = types.ModuleType("modelopt.onnx.quantization")

    def fake_quantize(**kw: Any) -> None:
        calls.update(kw)
        shutil.copy(kw["onnx_path"], kw["output_path"])

    quantization.quantize = fake_quantize  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelopt.onnx.quantization", quantization)
    samples = load_samples(calib, model_inputs(tiny))
    options = QuantizeOptions(tool="modelopt", keep_nodes=("fc",), keep_ops=("Softmax",))
    quantize_model(tiny, tmp_path / "mo.onnx", options, samples)
    assert calls["quantize_mode"] == "int8" and calls["calibration_method"] == "max"
    assert calls["nodes_to_exclude"] == ["fc"] and calls["op_types_to_exclude"] == ["Softmax"]
    assert set(calls["calibration_data"]) == {"x"} and calls["output_path"].endswith(".mo.onnx.tmp")
    with pytest.raises(ConfigError, match="not percentile"):
        quantize_model(
            tiny, tmp_path / "mo.onnx", QuantizeOptions(tool="modelopt", calibration_method="percentile"), samples
        )


# -- bad inputs: one clear error, nothing written ------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.zeros((4, 3, 8, 8), np.float32)}, "not model inputs"),
        ({"x": np.zeros((4, 3, 8, 8), np.float64)}, "float64"),
        ({"x": np.zeros((4, 3, 9, 8), np.float32)}, "shape"),
        ({"x": np.zeros((0, 3, 8, 8), np.float32)}, "non-zero"),
        ({"x": np.zeros((4, 3, 8, 8), np.float32), "labels": np.zeros(3, np.int64)}, "one integer per sample"),
        ({"x": np.zeros((4, 3, 8, 8), np.float32), "labels": np.zeros(4, np.float32)}, "integers"),
    ],
)
def test_bad_calibration_data_is_refused_clearly(
    tiny: Path, tmp_path: Path, arrays: dict[str, np.ndarray], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        load_samples(data, model_inputs(tiny))
    out = tmp_path / "never.onnx"
    assert main(["quantize", str(tiny), "-o", str(out), "--calibration", str(data)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "int8 needs calibration data"),
        (["--calibration", "missing.npz"], "does not exist"),
        (["--calibration", "calib.txt"], ".npy or .npz"),
        (["--calibration", "calib.npy", "--keep-node", "nope"], "no node named"),
        (["--calibration", "calib.npy", "--tool", "modelopt"], "nvidia-modelopt"),
        (["--calibration", "calib.npy", "--calibration-batch", "0"], "calibration_batch"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(
    tiny: Path, calib: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(calib.parent)
    (calib.parent / "calib.txt").write_text("not data")
    out = tmp_path / "never.onnx"
    assert main(["quantize", str(tiny), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_npy_needs_a_single_input_model(tmp_path: Path) -> None:
    from tests.helpers import make_affine_model

    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(ConfigError, match=r"inputs \['x'\]|use a .npz"):
        load_samples(tmp_path / "a.npy", [*model_inputs(make_affine_model(tmp_path / "m.onnx"))] * 2)


def test_folder_of_images_goes_through_the_preprocessing_with_class_labels(tmp_path: Path) -> None:
    from PIL import Image

    from tests.precision_models import CLASSES

    names = [str(i) for i in range(CLASSES)]
    for label in names:
        (tmp_path / "img" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), (int(label) * 60, 0, 0)).save(tmp_path / "img" / label / "a.png")
    model = make_classifier(tmp_path / "m.onnx")

    def red(image: Any) -> np.ndarray:
        value = np.asarray(image, np.float32)[0, 0, 0] / 255
        return np.full((3, 8, 8), value, np.float32)

    samples = load_samples(tmp_path / "img", model_inputs(model), preprocess=red, class_names=names)
    assert samples.inputs["x"].shape == (4, 3, 8, 8) and samples.labels is not None
    assert samples.labels.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(samples.inputs["x"][:, 0, 0, 0], [0, 60 / 255, 120 / 255, 180 / 255], rtol=1e-6)
    (tmp_path / "img" / "a.png").write_bytes((tmp_path / "img" / "0" / "a.png").read_bytes())
    with pytest.raises(ConfigError, match="not in a class folder"):
        load_samples(tmp_path / "img", model_inputs(model), preprocess=red, class_names=names)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        load_samples(tmp_path / "empty", model_inputs(model), preprocess=red)


def test_folder_of_images_uses_the_demo_preprocessing_by_default(tmp_path: Path) -> None:
    from demo.images import preprocess, render_page

    page = render_page(3)
    page.save(tmp_path / "page.png")
    model = tmp_path / "m.onnx"
    import onnx.helper as h

    graph = h.make_graph(
        [h.make_node("Identity", ["x"], ["y"])], "id",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 224, 224])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, 224, 224])],
    )  # fmt: skip
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(model))
    samples = load_samples(tmp_path, model_inputs(model))
    np.testing.assert_array_equal(samples.inputs["x"][0], preprocess(page))


# -- the accuracy report -------------------------------------------------------------------------------


def test_compare_computes_agreement_and_differences() -> None:
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    cand = np.array([[0.7, 0.3], [0.6, 0.4], [0.6, 0.4], [0.3, 0.7]])
    result = compare("p", ref, cand, labels=np.array([0, 1, 1, 1]), class_names=["up", "down"])
    assert result.top1_agreement == 0.75
    assert result.max_abs_diff == pytest.approx(0.4)
    assert result.mean_abs_diff == pytest.approx((0.2 + 0.2 + 0.4 + 0.4) / 8)
    assert result.reference_accuracy == 0.75 and result.accuracy == 0.5
    assert result.per_class_accuracy == {"up": 1.0, "down": pytest.approx(1 / 3)}


def test_report_on_variants_writes_json_and_markdown(tiny: Path, calib: Path, tmp_path: Path) -> None:
    fp16 = quantize(tiny, tmp_path / "fp16.onnx", precision="fp16")
    int8 = quantize(tiny, tmp_path / "int8.onnx", calib)
    x = inputs(32, seed=5)
    labels = run(tiny, x).argmax(1)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, labels=labels)
    args = ["precision-report", str(tiny), f"half={fp16}", str(int8), "--data", str(data), "--out"]
    assert main([*args, str(tmp_path / "r" / "report")]) == 0
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [v["name"] for v in saved["variants"]] == ["half", "int8"] and saved["samples"] == 32
    half = saved["variants"][0]["outputs"][0]
    assert half["output"] == "probs" and half["reference_accuracy"] == 1.0
    assert half["max_abs_diff"] == pytest.approx(float(np.abs(run(fp16, x) - run(tiny, x)).max()))
    assert half["max_abs_diff"] <= FP16_ATOL and half["top1_agreement"] == half["accuracy"]
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "| half | probs |" in markdown and "| int8 | probs |" in markdown


def test_report_refuses_other_outputs_and_data_that_does_not_fit(tiny: Path, tmp_path: Path) -> None:
    from worker.errors import ModelError

    samples = Samples({"x": inputs(2, seed=0)})
    same = make_classifier(tmp_path / "same.onnx", seed=3)
    report = precision_report(tiny, {"same": same}, samples)
    assert to_markdown(report).count("| same |") == 1
    renamed = onnx.load(str(same))
    renamed.graph.node[-1].output[0] = renamed.graph.output[0].name = "scores"
    onnx.save(renamed, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ModelError, match="has outputs"):
        precision_report(tiny, {"renamed": tmp_path / "renamed.onnx"}, samples)
    with pytest.raises(ModelError, match="cannot run"):
        precision_report(tiny, {"same": same}, Samples({"x": np.zeros((2, 4), np.float32)}))
