"""A scaled-down ``make chaos``: the same scenario code, a few hundred requests, real processes.

The full run (10k requests per scenario, every fault) is ``python -m benchmarks.chaos``; see
docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import chaos
from benchmarks import chaos_hostile as hostile
from benchmarks.chaos_harness import DEAD, STREAM

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def small(tmp_path: Path, **kw: Any) -> chaos.Options:
    """Options for a quick run: few requests, aimed faults that need only a handful of entries in flight."""
    opts = chaos.Options(requests=500, hostile=300, rate_per_s=1000, request_timeout_s=20, aim_pending=5, work=tmp_path)
    return dataclasses.replace(opts, **kw)


def logs_on_failure(row: dict[str, Any], tmp_path: Path) -> str:
    tails = [f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*/*.log"))]
    return f"{ {k: v for k, v in row.items() if k != 'hostile_by_kind'} }\n" + "\n".join(tails)


def test_kill9_of_one_of_two_workers_loses_nothing(tmp_path: Path) -> None:
    # The harness aims the kill at a moment the victim holds unacknowledged entries; on a busy 2-core
    # machine the aim can miss with so small a load, so a run that orphaned nothing is run again.
    for attempt in range(3):
        row = chaos.SCENARIOS["kill9_one_of_two"](small(tmp_path / str(attempt)))
        assert row["passed"], logs_on_failure(row, tmp_path)
        if row["orphaned"]:
            break
    assert row["sent"] == 500
    assert row["ok"] == 500
    assert row["lost"] == 0
    assert row["duplicates_surfaced"] == 0
    assert row["wrong_outputs"] == 0
    assert row["worker_crashes"] == 0
    assert row["workers_alive"] == 1  # the survivor, until the harness stopped it cleanly
    assert row["orphaned"] > 0  # the kill hit entries the victim held unacknowledged...
    assert row["orphans_answered_s"] is not None  # ...and every one of them was answered


@pytest.fixture(scope="module")
def hostile_row(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("hostile")
    yield chaos.SCENARIOS["hostile_entries"](small(tmp))


def test_hostile_entries_are_all_answered_or_dead_lettered(hostile_row: dict[str, Any]) -> None:
    row = hostile_row
    assert row["passed"], row
    assert row["hostile_sent"] == 300
    assert row["hostile_unaccounted"] == 0
    assert row["hostile_answered"] + row["hostile_dead_lettered"] == 300
    assert row["lost"] == 0
    assert row["ok"] == row["sent"] == 100  # the valid traffic mixed in was served normally
    assert row["duplicates_surfaced"] == 0
    assert row["worker_crashes"] == 0
    assert row["workers_alive"] == 2


def test_hostile_entries_with_a_bad_envelope_are_answered_under_the_entry_id_or_dead_lettered(
    hostile_row: dict[str, Any],
) -> None:
    # A bad id with a usable reply_to: answered under the entry id and dead-lettered; a bad reply_to: dead only.
    counts = hostile_row["hostile_by_kind"]["bad_envelope"]
    assert counts["reply"] == 0 and counts["none"] == 0, counts
    assert counts["reply+dead"] > 0 and counts["dead"] > 0, counts
    assert counts["reply+dead"] + counts["dead"] == counts["sent"], counts
    assert hostile_row["hostile_unexpected"] == 0


def test_every_hostile_kind_is_generated() -> None:
    entries = hostile.Generator(1, "infer:reply:x").make(3 * len(hostile.kinds()))
    assert {e.kind for e in entries} == set(hostile.kinds())
    assert all(e.fields for e in entries)
    assert f"{STREAM}:dead" == DEAD
