"""Reduced precision on any machine: FP16 and INT8 (Q/DQ) ONNX models, and how far they drift from FP32.

- ``calibration``: representative inputs from ``.npy``/``.npz`` files or a folder of images.
- ``quantize``: FP16 (onnxconverter-common, float32 IO kept) and INT8 with explicit QuantizeLinear /
  DequantizeLinear nodes (ONNX Runtime static quantization); NVIDIA ModelOpt where it is installed.
- ``report``: top-1 agreement with FP32, largest and mean absolute output difference, accuracy per
  class when labels are known; JSON and Markdown.
- ``cli``: ``python -m worker quantize`` and ``python -m worker precision-report``.

Nothing here imports pydantic or Redis: the benchmark script runs it on machines without either.
"""
