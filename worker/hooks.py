"""Python pre/post-processing around a model: the hook interface, its errors and how a hook is found.

A hook is a class with an optional ``preprocess`` and an optional ``postprocess``, both vectorised over the
batch (dim 0 of every array is the batch), and the inputs and outputs it serves, declared as
:class:`TensorSpec` (KServe v2 datatypes, ``BYTES`` included; -1 for a dynamic dimension, dim 0 is the
batch). Undeclared, they are the model's own. The worker wraps the engine in
:class:`worker.engines.hooked.HookedEngine`, so producers see the hook's inputs and outputs::

    from worker.hooks import Hook, HookInputError, TensorSpec

    class Orientation(Hook):
        inputs = (TensorSpec("image", "UINT8", (-1, 224, 224, 3)),)
        outputs = (TensorSpec("label", "BYTES", (-1, 1)), TensorSpec("score", "FP32", (-1, 1)))

        def preprocess(self, batch):   # {"image": uint8 [N,224,224,3]} -> the model's {"x": float32 [N,3,224,224]}
            ...

        def postprocess(self, outputs):  # the model's {"fetch_name_0": [N,4]} -> {"label": ..., "score": ...}
            ...

One hook instance serves all of a model's execution slots: with ``instances`` > 1 its methods run in
several threads at once, so keep per-call state in locals. They run in a thread pool, never on the event
loop: numpy, Pillow and ONNX Runtime release the GIL for the heavy parts.

Errors: raise :class:`HookInputError` for a request the hook cannot take: that request (isolated by the
worker's bisection of the batch) is answered INVALID_ARGUMENT. Any other exception answers INTERNAL. The
worker keeps serving either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from worker.engines.base import ModelInfo, TensorSpec
from worker.errors import ConfigError

__all__ = ["Arrays", "Hook", "HookInputError", "TensorSpec", "load_hook"]

Arrays = dict[str, np.ndarray[Any, Any]]


class HookInputError(ValueError):
    """Raised by a hook for input it cannot take: the request is answered INVALID_ARGUMENT with this message."""


class Hook:
    """Base class of a model hook (subclassing it is optional: any class with these members will do).

    Attributes:
        inputs: the inputs producers send; None: the model's inputs.
        outputs: the outputs producers receive; None: the model's outputs.
    """

    inputs: ClassVar[Sequence[TensorSpec] | None] = None
    outputs: ClassVar[Sequence[TensorSpec] | None] = None

    def setup(self, model: ModelInfo, options: Mapping[str, Any]) -> None:
        """Called once, before serving, with the wrapped model and the ``[hook.options]`` of its config."""

    def preprocess(self, batch: Arrays) -> Arrays:
        """The hook's inputs (one batch) -> the model's inputs. Default: unchanged."""
        return batch

    def postprocess(self, outputs: Arrays) -> Arrays:
        """The model's outputs (one batch) -> the hook's outputs. Default: unchanged."""
        return outputs


def load_hook(ref: str, folder: Path | None = None) -> Any:
    """Instantiate a hook class from ``module:Class``, ``file.py:Class`` (a file relative to ``folder``), or a
    bare ``Class`` of the ``hook.py`` in ``folder``.

    Raises:
        ConfigError: the reference is malformed, or the module or class cannot be loaded.
    """
    if ":" not in ref and folder is not None and (folder / "hook.py").is_file():
        ref = f"hook.py:{ref}"
    target, sep, class_name = ref.partition(":")
    if not sep or not target or not class_name:
        raise ConfigError(f"hook {ref!r} must be 'module:Class', 'hook.py:Class' or 'Class' (with a hook.py)")
    try:
        if target.endswith(".py"):
            module = _load_file(Path(target) if folder is None else folder / target)
        else:
            module = importlib.import_module(target)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"hook {ref!r}: cannot import {target}: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"hook {ref!r}: {target} has no class {class_name!r}")
    try:
        return cls()
    except Exception as exc:
        raise ConfigError(f"hook {ref!r}: {class_name}() failed: {type(exc).__name__}: {exc}") from exc


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"hook file {path} does not exist")
    name = f"redis_infer_hook_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"hook file {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
