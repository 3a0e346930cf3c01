"""The soak benchmark's arithmetic: RSS read from /proc, growth measured between the right windows."""

from __future__ import annotations

import os

import pytest

from benchmarks.soak import growth, rss_bytes


def samples(values: list[float], every_s: float = 10.0) -> list[dict[str, float]]:
    return [{"t_s": i * every_s, "rss": v, "redis_used": 0.0, "stream_len": 0.0} for i, v in enumerate(values)]


def test_rss_of_this_process_is_read_and_a_gone_process_gives_none() -> None:
    rss = rss_bytes(os.getpid())
    assert rss is not None and rss > 1 << 20
    assert rss_bytes(2**22 + 12345) is None


def test_growth_compares_the_first_window_after_settling_with_the_last() -> None:
    # settling (t < 30 s) is ignored; the first minute after it is 100, the last minute 110
    values = [500.0, 400.0, 300.0] + [100.0] * 6 + [105.0] * 6 + [110.0] * 6
    result = growth(samples(values), settle_s=30.0)
    assert result["first_mib"] * 2**20 == pytest.approx(100.0)
    assert result["last_mib"] * 2**20 == pytest.approx(110.0)
    assert result["growth_pct"] == pytest.approx(10.0)


def test_flat_memory_is_zero_growth_and_no_samples_is_unknown() -> None:
    assert growth(samples([200.0] * 30), settle_s=0.0)["growth_pct"] == pytest.approx(0.0)
    assert growth([], settle_s=0.0)["growth_pct"] is None
