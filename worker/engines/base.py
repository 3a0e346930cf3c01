"""The engine interface: what the worker needs from a model runtime, and nothing more.

An engine owns one model on one device. It describes its inputs and outputs (``ModelInfo``) and offers
a fixed set of *execution slots*. A slot is one independent lane of execution: for ONNX Runtime a
session call, for TensorRT an execution context with its own CUDA stream and pinned staging buffers.
The worker takes a free slot, writes the batch straight into the slot's host buffers (``stage``),
awaits ``run`` and copies the outputs into replies before handing the slot back. Several slots run
at once, so copies of one batch overlap the compute of another.

Engines never import redis: numpy arrays in, numpy arrays out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output. ``shape`` uses -1 for a dynamic dimension; dim 0 is the batch."""

    name: str
    datatype: str  # wire datatype name (FP32, INT64, ...)
    shape: tuple[int, ...]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one request's tensor: the model shape without its batch dimension."""
        return self.shape[1:]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What an engine serves."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int  # the largest batch one ``run`` accepts
    metadata: Mapping[str, str] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)


@runtime_checkable
class ExecutionSlot(Protocol):
    """One lane of execution. Used by one batch at a time; the worker serialises access."""

    def stage(self, shapes: Shapes) -> dict[str, np.ndarray[Any, Any]]:
        """Writable host arrays with exactly these batch shapes (dim 0 = batch) for every model input.

        The caller fills them, then calls ``run``. For TensorRT these are views of pinned memory, so
        requests are decoded straight into the buffer the GPU copies from.
        """
        ...

    async def run(self) -> dict[str, np.ndarray[Any, Any]]:
        """Run the staged batch without blocking the event loop. The outputs (dim 0 = batch) are
        valid until the next ``stage`` on this slot; copy what must outlive that."""
        ...


@runtime_checkable
class Engine(Protocol):
    """A model runtime with a fixed pool of execution slots."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def slots(self) -> Sequence[ExecutionSlot]: ...

    def close(self) -> None:
        """Free every resource. Idempotent."""
        ...


async def infer_once(engine: Engine, inputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """Run one batch on the first slot and return copies of the outputs (benchmarks and tests)."""
    slot = engine.slots[0]
    staged = slot.stage({name: arr.shape for name, arr in inputs.items()})
    for name, arr in inputs.items():
        staged[name][...] = arr
    return {name: arr.copy() for name, arr in (await slot.run()).items()}
