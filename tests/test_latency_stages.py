"""The closed-loop stage benchmark: its arithmetic, and one short run against a real worker and the yardstick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.latency_stages import STAGES, main, stages
from redis_infer_protocol.codec import Timing


def test_stages_split_the_round_trip_at_each_mark_of_the_trace() -> None:
    ms = 1_000_000
    timing = Timing(enqueued_ns=0, read_ns=2 * ms, batched_ns=3 * ms, compute_start_ns=5 * ms,
                    compute_end_ns=8 * ms, published_ns=12 * ms)  # fmt: skip
    got = stages(1 * ms, timing, 17 * ms)
    assert got == {"send_to_read": 1.0, "read_to_batched": 1.0, "batched_to_compute": 2.0, "compute": 3.0,
                   "compute_to_published": 4.0, "published_to_received": 5.0, "total": 16.0}  # fmt: skip
    assert sum(got[s] for s in STAGES[:-1]) == pytest.approx(got["total"])
    assert stages(1 * ms, Timing(), 3 * ms) == {"total": 2.0}  # no trace (the featureless worker): total only


def test_one_short_round_measures_every_stage_of_the_worker_and_the_yardstick(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    assert main(["--tree", "this=.", "--ideal", "--rounds", "1", "--seconds", "0.3", "--json", str(out)]) == 0
    medians = json.loads(out.read_text())["medians"]
    this, featureless = medians["this"], medians["featureless"]
    assert all(this[f"{s}_ms"] >= 0 for s in STAGES) and this["total_ms"] > 0
    assert this["requests"] > 0 and this["worker_cpu_us_per_request"] > 0
    assert featureless["total_ms"] > 0 and featureless["compute_ms"] is None  # no trace from the yardstick
    assert featureless["featureless_producer_p50_ms"] > 0
