"""Worker hooks for the orientation model: producers send what they have, get a label and a score back.

- :class:`Labels`: the model's own float32 input ``x`` ``[N,3,224,224]``; returns ``label`` and ``score``.
- :class:`UInt8Pixels`: ``image`` uint8 ``[N,224,224,3]`` (resized and cropped, not normalised): 4x fewer
  bytes through Redis than float32; the worker normalises.
- :class:`PngImages`: ``png`` BYTES ``[N,1]``, an encoded image of any size (PNG, or anything Pillow
  reads); the worker decodes, resizes, crops and normalises. An undecodable image is answered
  INVALID_ARGUMENT.

Every hook turns the model's softmax ``[N,4]`` into ``label`` (BYTES ``[N,1]``, clockwise degrees) and
``score`` (FP32 ``[N,1]``), labels read from the model's ONNX metadata (``character``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from demo import images
from worker.engines.base import ModelInfo
from worker.hooks import Arrays, Hook, HookInputError, TensorSpec

__all__ = ["Labels", "PngImages", "UInt8Pixels"]

MODEL_INPUT = "x"
MODEL_OUTPUT = "fetch_name_0"


class Labels(Hook):
    """Postprocess only: the model's probabilities -> label and score."""

    outputs = (TensorSpec("label", "BYTES", (-1, 1)), TensorSpec("score", "FP32", (-1, 1)))

    def setup(self, model: ModelInfo, options: Mapping[str, Any]) -> None:
        raw = model.metadata.get("character", "0\n90\n180\n270")
        self.labels = np.array([line.strip().encode() for line in raw.splitlines() if line.strip()], dtype=object)

    def postprocess(self, outputs: Arrays) -> Arrays:
        probs = outputs[MODEL_OUTPUT]
        best = probs.argmax(axis=1)
        return {
            "label": self.labels[best].reshape(-1, 1),
            "score": probs[np.arange(len(best)), best].astype(np.float32).reshape(-1, 1),
        }


class UInt8Pixels(Labels):
    """uint8 HWC pixels in; normalised float32 CHW to the model."""

    inputs = (TensorSpec("image", "UINT8", (-1, images.CROP, images.CROP, 3)),)

    def preprocess(self, batch: Arrays) -> Arrays:
        return {MODEL_INPUT: images.normalize(batch["image"])}


class PngImages(Labels):
    """Encoded images in (BYTES); decoded, resized, cropped and normalised here."""

    inputs = (TensorSpec("png", "BYTES", (-1, 1)),)

    def preprocess(self, batch: Arrays) -> Arrays:
        from PIL import Image, UnidentifiedImageError

        crops = []
        for row, encoded in enumerate(batch["png"].reshape(-1)):
            try:
                with Image.open(io.BytesIO(bytes(encoded))) as image:
                    crops.append(images.crop(image))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise HookInputError(f"row {row}: not a readable image ({exc})") from exc
        return {MODEL_INPUT: images.normalize(np.stack(crops))}
