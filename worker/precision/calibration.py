"""Representative inputs for calibration and accuracy reports: ``.npy``, ``.npz`` or a folder of images.

- ``.npy``: one array, for a model with exactly one input; dim 0 is the sample.
- ``.npz``: one array per model input, keyed by input name; an extra ``labels`` array (integers, one per
  sample) is read as the ground truth of a classifier.
- a folder: every image in it (sorted by name) through a preprocessing function, by default the demo
  model's (resize, centre-crop 224, ImageNet normalisation; needs Pillow). Sub-folders named after a
  class (``0``, ``90``, ...) give labels when ``class_names`` is passed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from worker.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
LABELS_KEY: Final = "labels"

Preprocess = Callable[[Any], "np.ndarray[Any, Any]"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input as the data must match it: name, numpy dtype and dims (``-1``/``None`` for dynamic)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]


@dataclass(slots=True)
class Samples:
    """Inputs of ``count`` samples (dim 0 of every array) and, where known, one integer label per sample."""

    inputs: dict[str, np.ndarray[Any, Any]]
    labels: np.ndarray[Any, Any] | None = None

    @property
    def count(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray[Any, Any]]]:
        """Consecutive feeds of at most ``batch_size`` samples."""
        for start in range(0, self.count, batch_size):
            yield {name: array[start : start + batch_size] for name, array in self.inputs.items()}

    def head(self, limit: int | None) -> Samples:
        """The first ``limit`` samples (all of them for ``None``)."""
        if limit is None or limit >= self.count:
            return self
        labels = None if self.labels is None else self.labels[:limit]
        return Samples({name: array[:limit] for name, array in self.inputs.items()}, labels)


def model_inputs(model_path: Path) -> list[InputSpec]:
    """The inputs of an ONNX model, read with ``onnx`` (no session needed)."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"cannot read ONNX model {model_path}: {exc}") from exc
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    return specs


def load_samples(
    path: Path,
    inputs: Sequence[InputSpec],
    *,
    preprocess: Preprocess | None = None,
    class_names: Sequence[str] | None = None,
) -> Samples:
    """Read samples for ``inputs`` from ``path`` and check them against the model.

    Args:
        path: a ``.npy`` or ``.npz`` file, or a folder of images.
        inputs: the model's inputs (``model_inputs``).
        preprocess: image -> array for one sample (folders only); default: the demo model's.
        class_names: for folders, sub-folder names that are classes; their images get those labels.

    Raises:
        ConfigError: the file is missing or unreadable, or its arrays do not fit the model's inputs.
    """
    path = Path(path)
    if path.is_dir():
        samples = _load_images(path, inputs, preprocess, class_names)
    elif not path.is_file():
        raise ConfigError(f"calibration/report data {path} does not exist")
    elif path.suffix == ".npy":
        samples = _load_npy(path, inputs)
    elif path.suffix == ".npz":
        samples = _load_npz(path, inputs)
    else:
        raise ConfigError(f"{path}: data must be a .npy or .npz file or a folder of images")
    check_samples(samples, inputs, str(path))
    return samples


def check_samples(samples: Samples, inputs: Sequence[InputSpec], source: str) -> None:
    """``ConfigError`` unless every input is present with the model's dtype, rank and fixed dims."""
    for spec in inputs:
        array = samples.inputs.get(spec.name)
        if array is None:
            raise ConfigError(f"{source}: no array for model input {spec.name!r} (has {sorted(samples.inputs)})")
        if array.dtype != spec.dtype:
            raise ConfigError(f"{source}: input {spec.name!r} is {array.dtype}, the model wants {spec.dtype}")
        fixed = [(got, want) for got, want in zip(array.shape[1:], spec.shape[1:], strict=False) if want]
        if array.ndim != len(spec.shape) or any(want > 0 and got != want for got, want in fixed):
            raise ConfigError(f"{source}: input {spec.name!r} has shape {array.shape}, the model wants {spec.shape}")
    counts = {int(array.shape[0]) for array in samples.inputs.values()}
    if len(counts) != 1 or counts == {0}:
        raise ConfigError(f"{source}: every input needs the same, non-zero number of samples (dim 0), got {counts}")
    if samples.labels is not None and samples.labels.shape != (samples.count,):
        raise ConfigError(f"{source}: {LABELS_KEY} must be one integer per sample, got shape {samples.labels.shape}")


def _load_npy(path: Path, inputs: Sequence[InputSpec]) -> Samples:
    if len(inputs) != 1:
        names = [spec.name for spec in inputs]
        raise ConfigError(f"{path}: a .npy holds one array but the model has inputs {names}; use a .npz")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return Samples({inputs[0].name: np.ascontiguousarray(array)})


def _load_npz(path: Path, inputs: Sequence[InputSpec]) -> Samples:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.ascontiguousarray(archive[key]) for key in archive.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    labels = arrays.pop(LABELS_KEY, None)
    if labels is not None and not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{path}: {LABELS_KEY} must be integers, got {labels.dtype}")
    names = {spec.name for spec in inputs}
    extra = sorted(set(arrays) - names)
    if extra:
        raise ConfigError(f"{path}: arrays {extra} are not model inputs ({sorted(names)})")
    return Samples(arrays, labels)


def default_preprocess() -> Preprocess:
    """The demo model's preprocessing (``demo.images.preprocess``); ``ConfigError`` where it is not available."""
    try:
        module = importlib.import_module("demo.images")
    except ImportError as exc:
        raise ConfigError(
            f"a folder of images needs a preprocessing function; the demo's needs Pillow and the repository's demo/ "
            f"package ({exc}); or pass .npy/.npz data already preprocessed"
        ) from None
    function: Preprocess = module.preprocess
    return function


def _load_images(
    folder: Path, inputs: Sequence[InputSpec], preprocess: Preprocess | None, class_names: Sequence[str] | None
) -> Samples:
    if len(inputs) != 1:
        raise ConfigError(f"{folder}: images feed a model with one input, this one has {len(inputs)}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    preprocess = preprocess or default_preprocess()
    from PIL import Image

    arrays, labels = [], []
    for file in files:
        try:
            with Image.open(file) as image:
                arrays.append(np.asarray(preprocess(image), dtype=inputs[0].dtype))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read image {file}: {exc}") from exc
        if class_names is not None:
            labels.append(_label_of(file.relative_to(folder), class_names))
    log.info("read %d images from %s", len(files), folder)
    return Samples({inputs[0].name: np.stack(arrays)}, np.array(labels, dtype=np.int64) if labels else None)


def _label_of(relative: Path, class_names: Sequence[str]) -> int:
    top = relative.parts[0] if len(relative.parts) > 1 else ""
    if top not in class_names:
        raise ConfigError(f"image {relative} is not in a class folder ({', '.join(class_names)})")
    return list(class_names).index(top)
