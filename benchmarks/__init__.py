"""Benchmarks for redis-infer (run from the repository root: ``python -m benchmarks.e2e``)."""
