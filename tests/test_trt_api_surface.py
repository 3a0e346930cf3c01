"""Every TensorRT name the backend uses exists on the real TensorRT 11 runtime classes.

Checked against the lean runtime (`tensorrt-lean-cu13-bindings==11.4.0.106` with its libs), whose
``Runtime``/``ICudaEngine``/``IExecutionContext`` are the real TensorRT 11 runtime API and which
imports on a machine without a GPU. Not skipped when it is missing: the dev extra installs it, and
a missing module must fail CI loudly rather than pass silently.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorrt_lean_bindings as trt  # no importorskip on purpose

from worker.engines.tensorrt import RUNTIME_MODULES, TRT_API_USED
from worker.engines.trt_layout import WIRE_TYPES

ROOT = Path(__file__).resolve().parent.parent
NAMES = [(owner, name) for owner, names in TRT_API_USED.items() for name in names]

# Methods the backend calls, with the parameter names it passes positionally, as the binding declares.
SIGNATURES = {
    ("ICudaEngine", "get_tensor_name"): ["index"],
    ("ICudaEngine", "get_tensor_mode"): ["name"],
    ("ICudaEngine", "get_tensor_dtype"): ["name"],
    ("ICudaEngine", "get_tensor_shape"): ["name"],
    ("ICudaEngine", "get_tensor_profile_shape"): ["name", "profile_index"],
    ("IExecutionContext", "set_optimization_profile_async"): ["profile_index", "stream_handle"],
    ("IExecutionContext", "set_input_shape"): ["name", "shape"],
    ("IExecutionContext", "get_tensor_shape"): ["name"],
    ("IExecutionContext", "set_tensor_address"): ["name", "memory"],
    ("IExecutionContext", "execute_async_v3"): ["stream_handle"],
    ("Runtime", "deserialize_cuda_engine"): ["serialized_engine"],
    ("ILogger", "log"): ["severity", "msg"],
}


def test_this_is_the_pinned_tensorrt_11_lean_runtime() -> None:
    assert trt.__version__ == "11.4.0.106"
    assert "tensorrt_lean_bindings" in RUNTIME_MODULES


@pytest.mark.parametrize(("owner", "name"), NAMES, ids=[f"{o}.{n}" for o, n in NAMES])
def test_every_used_name_exists(owner: str, name: str) -> None:
    target = trt if owner == "module" else getattr(trt, owner)
    assert hasattr(target, name), f"TensorRT 11 lean has no {owner}.{name}"


@pytest.mark.parametrize(("owner", "method"), list(SIGNATURES), ids=[f"{o}.{m}" for o, m in SIGNATURES])
def test_called_methods_take_the_arguments_we_pass(owner: str, method: str) -> None:
    assert method in TRT_API_USED[owner]
    doc = getattr(getattr(trt, owner), method).__doc__ or ""
    overloads = re.findall(rf"{method}\(self: [^,)]+(?:, ([^)]*))?\)", doc)
    params = [[p.split(":")[0].strip() for p in args.split(",") if p.strip()] if args else [] for args in overloads]
    assert SIGNATURES[(owner, method)] in [p[: len(SIGNATURES[(owner, method)])] for p in params], (doc, params)


def test_wire_types_are_tensorrt_data_types() -> None:
    for member in WIRE_TYPES:
        assert member in TRT_API_USED["DataType"]
        assert hasattr(trt.DataType, member)


def test_create_execution_context_needs_no_arguments() -> None:
    doc = trt.ICudaEngine.create_execution_context.__doc__ or ""
    assert re.search(r"create_execution_context\(self: [^,)]+, \w+: [^=]+ = ", doc), doc  # defaulted argument


def test_our_logger_plugs_into_the_real_runtime() -> None:
    """The backend's ILogger subclass is accepted by the real ``Runtime`` and receives its messages.

    Without a GPU the runtime logs a CUDA initialisation error through our logger; the process exits
    with ``os._exit`` because the half-initialised runtime must not be destroyed.
    """
    code = (
        "import os, logging, tensorrt_lean_bindings as trt\n"
        "from worker.engines.tensorrt import _make_logger\n"
        "logging.disable(logging.CRITICAL)\n"
        "logger = _make_logger(trt)\n"
        "runtime = trt.Runtime(logger)\n"
        "print('ERRORS', len(logger.errors), '|'.join(logger.errors), flush=True)\n"
        "os._exit(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("ERRORS"))
    count = int(line.split()[1])
    has_gpu = count == 0
    assert has_gpu or "CUDA" in line, line
