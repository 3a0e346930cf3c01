"""Builds the configured engine. The only place that knows every backend."""

from __future__ import annotations

from worker.config import Settings
from worker.engines.base import Engine
from worker.errors import ConfigError


def load_engine(settings: Settings) -> Engine:
    """Load the model with the configured backend. Heavy imports happen here, never at module import."""
    path = settings.model.path
    if path is None:
        raise ConfigError("no model: set WORKER_MODEL__PATH or pass --model")
    if settings.backend == "onnxruntime":
        from worker.engines.onnx import OnnxEngine

        return OnnxEngine(
            path,
            name=settings.model_name,
            max_batch_size=settings.batch.max_size,
            sessions=settings.onnx.sessions,
            intra_op_threads=settings.onnx.intra_op_threads,
            allow_spinning=settings.onnx.allow_spinning,
            inline_max_us=settings.onnx.inline_max_us,
        )
    from worker.engines.tensorrt import TensorRTEngine

    engine: Engine = TensorRTEngine(
        path,
        name=settings.model_name,
        contexts=settings.tensorrt.contexts,
        device=settings.tensorrt.device,
        cuda_graphs=settings.tensorrt.cuda_graphs,
    )
    return engine
