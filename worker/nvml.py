"""GPU memory and utilization through NVML, as Triton names them, when ``pynvml`` (nvidia-ml-py) is importable.

Absent otherwise: a CPU host exports no ``nv_gpu_*`` series at all (never zeros). Every GPU that NVML sees
is reported, labelled by ``gpu_uuid`` as Triton does; a read that fails at scrape time drops the GPU
series for that scrape only (logged at debug), it never fails the scrape.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

__all__ = ["gpu_families", "load_nvml"]


def load_nvml() -> Any | None:
    """The initialized ``pynvml`` module, or None when it is not installed or finds no driver."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError (no driver, no device): the GPU series are simply absent
        log.info("NVML present but not usable (%s): no GPU metrics", exc)
        return None
    return nvml


def gpu_families(nvml: Any) -> list[Metric]:
    """``nv_gpu_utilization`` (0..1), ``nv_gpu_memory_used_bytes``, ``nv_gpu_memory_total_bytes``, per GPU."""
    labels = ["gpu_uuid"]
    util = GaugeMetricFamily("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", labels=labels)
    used = GaugeMetricFamily("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", labels=labels)
    total = GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=labels)
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util.add_metric([uuid], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
            used.add_metric([uuid], float(memory.used))
            total.add_metric([uuid], float(memory.total))
    except Exception as exc:  # NVMLError (GPU lost, driver reloaded...): no GPU series this scrape
        log.debug("NVML read failed: %s", exc)
        return []
    return [util, used, total]
