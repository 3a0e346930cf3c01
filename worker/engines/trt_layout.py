"""What a deserialized TensorRT engine looks like to the worker: IO tensors, profiles, slot plans.

Pure bookkeeping over the name-based tensor API of TensorRT 10/11 (no CUDA): which tensors are
inputs and outputs, their wire datatypes, each optimization profile's min/opt/max shapes, and for
each execution slot the batch range it accepts. Dim 0 of every IO tensor is the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from redis_infer_protocol.codec import DATATYPES
from worker.errors import EngineError, ModelError

# TensorRT DataType member -> wire datatype (redis_infer_protocol.codec.DATATYPES). BF16/FP8/INT4 have no wire type:
# such engines must be built with FP32/FP16 IO (ModelOpt's keep_io_types does that).
WIRE_TYPES: Final = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "UINT8": "UINT8",
}
# Wire datatype -> numpy dtype, from the protocol's one mapping.
NUMPY_TYPES: Final[dict[str, np.dtype[Any]]] = {wire: DATATYPES[wire] for wire in WIRE_TYPES.values()}

Dims = tuple[int, ...]
ProfileShapes = dict[str, tuple[Dims, Dims, Dims]]  # input name -> (min, opt, max)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    is_input: bool
    datatype: str
    dtype: np.dtype[Any]
    shape: Dims  # as the engine reports it; -1 for a dynamic dimension


@dataclass(slots=True)
class SlotPlan:
    """The profile one execution slot uses and the batches it accepts."""

    profile: int
    shapes: ProfileShapes
    min_batch: int
    max_batch: int

    def validate(self, shapes: Mapping[str, Dims], max_batch_size: int) -> int:
        """Check a batch's input shapes against this profile; return the batch size.

        Raises:
            EngineError: wrong names, ranks, batch sizes or dimensions outside the profile.
        """
        if set(shapes) != set(self.shapes):
            raise EngineError(f"expected inputs {sorted(self.shapes)}, got {sorted(shapes)}")
        batches = {int(shape[0]) if len(shape) else -1 for shape in shapes.values()}
        if len(batches) != 1:
            raise EngineError(f"inputs disagree on the batch size: {dict(shapes)}")
        batch = batches.pop()
        if not 1 <= batch <= max_batch_size:
            raise EngineError(f"batch of {batch} outside 1..{max_batch_size}")
        for name, shape in shapes.items():
            low, _, high = self.shapes[name]
            if len(shape) != len(high):
                raise EngineError(f"input {name!r} has rank {len(shape)}, the engine expects {len(high)}")
            for axis in range(1, len(shape)):
                if not low[axis] <= shape[axis] <= high[axis]:
                    raise EngineError(
                        f"input {name!r} dim {axis} is {shape[axis]}; profile {self.profile} allows "
                        f"{low[axis]}..{high[axis]}"
                    )
        return batch

    def buffer_shape(self, name: str, rows: int) -> Dims:
        """The largest shape of input ``name`` this slot stages: ``rows`` by the profile's max dims."""
        return (rows, *self.shapes[name][2][1:])


@dataclass(slots=True)
class EngineLayout:
    tensors: dict[str, TensorInfo]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    num_profiles: int
    profile_shapes: list[ProfileShapes] = field(default_factory=list)

    def spec_shape(self, name: str) -> Dims:
        """The model shape the worker sees: dim 0 is the (dynamic, padded) batch."""
        return (-1, *self.tensors[name].shape[1:])

    def plan_slots(self, contexts: int) -> list[SlotPlan]:
        """Slot ``i`` gets profile ``i % num_profiles``; its batch range is where all inputs agree."""
        plans = []
        for index in range(contexts):
            profile = index % self.num_profiles
            shapes = self.profile_shapes[profile]
            min_batch = max(low[0] for low, _, _ in shapes.values())
            max_batch = min(high[0] for _, _, high in shapes.values())
            if max_batch < 1 or min_batch > max_batch:
                raise ModelError(
                    f"optimization profile {profile} admits no batch size: inputs need {min_batch}..{max_batch}"
                )
            plans.append(SlotPlan(profile, shapes, max(min_batch, 1), max_batch))
        return plans


def _tensor(trt: Any, engine: Any, name: str, wire: dict[Any, str]) -> TensorInfo:
    mode = engine.get_tensor_mode(name)
    if mode == trt.TensorIOMode.INPUT:
        is_input = True
    elif mode == trt.TensorIOMode.OUTPUT:
        is_input = False
    else:
        raise ModelError(f"tensor {name!r} is neither input nor output")
    # The backend hands every IO tensor a device buffer in linear row-major layout: refuse what needs
    # anything else rather than read or write garbage.
    if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
        raise ModelError(f"tensor {name!r} lives in host memory: rebuild with all IO tensors on the device")
    if engine.is_shape_inference_io(name):
        raise ModelError(f"tensor {name!r} is a shape tensor, which this worker cannot feed")
    if engine.get_tensor_vectorized_dim(name) != -1:
        raise ModelError(
            f"tensor {name!r} has a vectorized format (not linear): rebuild with linear IO formats (the default)"
        )
    trt_dtype = engine.get_tensor_dtype(name)
    datatype = wire.get(trt_dtype)
    if datatype is None:
        raise ModelError(
            f"tensor {name!r} has TensorRT type {getattr(trt_dtype, 'name', trt_dtype)}, which the wire format cannot "
            "carry: build the engine with FP32/FP16 inputs and outputs"
        )
    shape = tuple(int(dim) for dim in engine.get_tensor_shape(name))
    if not shape:
        raise ModelError(f"tensor {name!r} is a scalar: every IO tensor needs a batch dimension (dim 0)")
    return TensorInfo(name, is_input, datatype, NUMPY_TYPES[datatype], shape)


def read_layout(trt: Any, engine: Any) -> EngineLayout:
    """Read IO tensors and optimization profiles from a deserialized ``ICudaEngine``.

    Raises:
        ModelError: an IO tensor the worker cannot serve.
    """
    wire = {getattr(trt.DataType, member): datatype for member, datatype in WIRE_TYPES.items()}
    tensors: dict[str, TensorInfo] = {}
    for index in range(int(engine.num_io_tensors)):
        name = str(engine.get_tensor_name(index))
        tensors[name] = _tensor(trt, engine, name, wire)
    inputs = tuple(name for name, info in tensors.items() if info.is_input)
    outputs = tuple(name for name, info in tensors.items() if not info.is_input)
    if not inputs or not outputs:
        raise ModelError(f"the engine has {len(inputs)} inputs and {len(outputs)} outputs; it needs both")
    num_profiles = max(1, int(engine.num_optimization_profiles))
    profiles: list[ProfileShapes] = []
    for profile in range(num_profiles):
        shapes: ProfileShapes = {}
        for name in inputs:
            static = tensors[name].shape
            if -1 in static:
                low, opt, high = (
                    tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, profile)
                )
                shapes[name] = (low, opt, high)
            else:
                shapes[name] = (static, static, static)
        profiles.append(shapes)
    return EngineLayout(tensors, inputs, outputs, num_profiles, profiles)


def output_bytes(layout: EngineLayout, out_shapes: Mapping[str, Dims]) -> dict[str, int]:
    """Bytes of each output at these shapes. ``ModelError`` for data-dependent (-1) output shapes."""
    sizes = {}
    for name, shape in out_shapes.items():
        if any(dim < 0 for dim in shape):
            raise ModelError(f"output {name!r} has a data-dependent shape {shape}: not supported")
        sizes[name] = int(np.prod(shape, dtype=np.int64)) * layout.tensors[name].dtype.itemsize
    return sizes
