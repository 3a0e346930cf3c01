"""Test doubles of the CUDA layer (``cuda_double``) and of the TensorRT runtime (``trt_double``).

They enforce the rules of the real libraries (stream ordering, shapes within the profile, one running
context per profile...) and compute with numpy (or cupy on a GPU), so that the real TensorRT backend runs
against them on any machine. The contract tests use them, and so do the GPU benchmarks
(benchmarks/gpu_e2e.py, gpu_bench.py) where no TensorRT can be installed. Not used by the worker itself.
"""
