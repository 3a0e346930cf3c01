"""``python -m producer status`` and ``dlq`` against a real redis-server prepared into a known state."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from producer.__main__ import main
from producer.monitor import StreamStatus, format_status, group_lag, rates
from redis_infer_protocol import keys
from tests.helpers import WorkerThread, collect, send

STREAM = "ops:requests"
GROUP = "workers"
DEAD = keys.dead_letter_stream(STREAM)


def _major(client: redis.Redis) -> int:
    return int(str(client.info("server")["redis_version"]).split(".")[0])


def _prepare(client: redis.Redis) -> list[bytes]:
    """5 requests; 'alive' (heartbeat) holds 2 pending, 'ghost' (no heartbeat) 1; 2 never delivered."""
    ids = [client.xadd(STREAM, {"v": "1", "id": f"r{i}", "reply_to": "infer:reply:x", "body": b"?"}) for i in range(5)]
    client.xgroup_create(STREAM, GROUP, id="0")
    client.xreadgroup(GROUP, "alive", {STREAM: ">"}, count=2)
    client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)
    client.hset(keys.health_key(STREAM, "alive"), mapping={"status": "ready", "ok": "7", "errors": "1", "batches": "3"})
    client.expire(keys.health_key(STREAM, "alive"), 60)
    client.hset(keys.limits_key(STREAM), "max_backlog", "100")
    client.xadd(DEAD, {"original_id": "1-1", "reason": "first", "worker": "alive", "stream": STREAM})
    client.xadd(
        DEAD, {"original_id": "1-2", "reason": "second", "worker": "alive", "stream": STREAM, "truncated": "body=9"}
    )
    return ids  # type: ignore[return-value]


def _status(url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main(["status", "--url", url, "--stream", STREAM, "--json", "--interval", "0", *extra]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_status_json_numbers(redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _prepare(redis_client)
    data = _status(redis_url, capsys, "--stale-ms", "0")
    assert data["exists"] is True
    assert data["length"] == 5
    assert data["max_backlog"] == 100
    (group,) = data["groups"]  # type: ignore[misc]
    assert group["pending"] == 3
    assert group["oldest_pending_id"] == ids[0].decode()
    assert group["oldest_pending_age_ms"] >= 0
    if _major(redis_client) >= 7:
        assert group["lag"] == 2
        assert group["lag_note"] == ""
    else:
        assert group["lag"] is None
        assert "needs >= 7" in group["lag_note"]
    consumers = {c["name"]: c for c in group["consumers"]}
    assert (consumers["alive"]["pending"], consumers["alive"]["alive"], consumers["alive"]["stale"]) == (2, True, False)
    assert (consumers["ghost"]["pending"], consumers["ghost"]["alive"], consumers["ghost"]["stale"]) == (1, False, True)
    (worker,) = data["workers"]  # type: ignore[misc]
    assert worker["consumer"] == "alive"
    assert worker["fields"]["ok"] == "7"
    assert 0 < worker["ttl_s"] <= 60
    assert data["dead_letters"] == 2
    assert [d["reason"] for d in data["latest_dead_letters"]] == ["second", "first"]  # type: ignore[attr-defined]
    assert [d["truncated"] for d in data["latest_dead_letters"]] == [True, False]  # type: ignore[attr-defined]
    assert data["rates"] is None


def test_unknown_lag_is_said_never_zero(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _prepare(redis_client)
    if _major(redis_client) >= 7:
        redis_client.xdel(STREAM, ids[4])  # an undelivered entry deleted: Redis >= 7 cannot count the lag
        group = _status(redis_url, capsys)["groups"][0]  # type: ignore[index]
        assert group["lag"] is None
        assert "cannot tell" in group["lag_note"]
    assert group_lag({"lag": None}, 6) == (None, "unknown: Redis 6 does not report lag (needs >= 7)")
    assert group_lag({}, 6)[0] is None
    assert group_lag({"lag": 0}, 7) == (0, "")


# A read-only user as narrow as a production monitor may be: no INFO, TIME, TTL, XREVRANGE, nor the limits key.
NARROW_MONITOR = (
    "on >pw resetkeys -@all +hello +auth +ping +client|setname +xinfo|groups +xinfo|stream +xinfo|consumers +xlen "
    f"+xpending +exists +hget +hgetall +scan %R~{STREAM} %R~{DEAD} %R~{STREAM}:worker:*"
)


def test_status_degrades_for_a_narrow_read_only_user(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    _prepare(redis_client)
    redis_client.execute_command("ACL", "SETUSER", "narrow", *NARROW_MONITOR.split())
    try:
        narrow = redis_url.replace("redis://", "redis://narrow:pw@", 1)
        data = _status(narrow, capsys)
        assert data["length"] == 5 and data["dead_letters"] == 2 and data["max_backlog"] is None
        group = data["groups"][0]  # type: ignore[index]
        assert group["pending"] == 3
        if _major(redis_client) >= 7:
            assert group["lag"] == 2  # XINFO GROUPS still says it
        assert data["latest_dead_letters"] == []
        assert data["workers"][0]["ttl_s"] is None  # type: ignore[index]
        notes = " ".join(data["notes"])  # type: ignore[arg-type]
        for what in ("INFO server", "TIME", "HGET", "XREVRANGE", "TTL"):
            assert what in notes
        assert main(["status", "--url", narrow, "--stream", STREAM, "--interval", "0"]) == 0
        assert "note: INFO server: not permitted" in capsys.readouterr().out
    finally:
        redis_client.execute_command("ACL", "DELUSER", "narrow")


def test_ghost_is_not_stale_before_the_threshold(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    _prepare(redis_client)
    data = _status(redis_url, capsys, "--stale-ms", "3600000")
    consumers = {c["name"]: c for c in data["groups"][0]["consumers"]}  # type: ignore[index]
    assert consumers["ghost"]["stale"] is False


def test_missing_stream_is_said_plainly(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", redis_url, "--stream", "nothing", "--interval", "0"]) == 0
    assert "does not exist" in capsys.readouterr().out


def _snap(time_ms: int, added: int | None, ok: int, dead: int) -> StreamStatus:
    from producer.monitor import WorkerHealth

    status = StreamStatus(STREAM, True, "7.2.0", time_ms, 0, added, None)
    status.workers = [WorkerHealth("w", 10, {"ok": str(ok), "errors": "0", "expired": "0", "dead_lettered": str(dead)})]
    return status


def test_rates_from_two_samples() -> None:
    r = rates(_snap(10_000, 100, 50, 1), _snap(12_000, 300, 250, 5))
    assert r is not None
    assert (r.interval_s, r.added_per_s, r.served_per_s, r.dead_lettered_per_s) == (2.0, 100.0, 100.0, 2.0)
    restarted = rates(_snap(10_000, None, 500, 0), _snap(11_000, None, 20, 0))  # counters reset: no negative rate
    assert restarted is not None and restarted.served_per_s == 0 and restarted.added_per_s is None
    assert "unknown (Redis < 7)" in format_status(_with_rates(restarted))


def _with_rates(r: object) -> StreamStatus:
    status = _snap(0, None, 0, 0)
    status.rates = r  # type: ignore[assignment]
    return status


def test_watch_renders_frames(redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    _prepare(redis_client)
    args = ["status", "--url", redis_url, "--stream", STREAM, "--watch", "--count", "2", "--interval", "0.05"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count(f"stream {STREAM} (Redis") == 2
    assert "group workers: lag" in out
    assert "ghost" in out and "alive" in out
    assert "rates over" in out
    assert "dead letters (ops:requests:dead): 2" in out


def test_dlq_list_show_and_refusals(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    _prepare(redis_client)
    base = ["--url", redis_url, "--stream", STREAM]
    assert main(["dlq", "list", *base, "--json"]) == 0
    letters = json.loads(capsys.readouterr().out)
    assert [d["reason"] for d in letters] == ["second", "first"]
    truncated, empty = letters[0]["id"], letters[1]["id"]
    assert main(["dlq", "show", truncated, *base]) == 0
    assert "truncated fields (body=9)" in capsys.readouterr().out
    assert main(["dlq", "requeue", truncated, empty, *base, "--yes"]) == 2
    err = capsys.readouterr().err
    assert f"not requeued {truncated}: truncated" in err
    assert f"not requeued {empty}: the record kept none" in err
    assert redis_client.xlen(DEAD) == 2 and redis_client.xlen(STREAM) == 5  # nothing moved
    assert main(["dlq", "purge", "--all", *base]) == 2  # no --yes, stdin not a terminal
    assert redis_client.xlen(DEAD) == 2
    assert main(["dlq", "purge", "--all", *base, "--yes"]) == 0
    assert redis_client.xlen(DEAD) == 0


def test_dlq_requeue_is_served_by_a_real_worker(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.helpers import make_affine_model

    model = make_affine_model(tmp_path / "affine.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    # a worker whose reply prefix refuses the client's reply stream dead-letters the request
    with WorkerThread(redis_url, model, stream=STREAM, streams={"block_ms": 100, "reply_prefix": "elsewhere:"}):
        send(redis_client, "affine", {"x": x}, request_id="again", stream=STREAM)
        while redis_client.xlen(DEAD) == 0:
            redis_client.xread({DEAD: "0"}, block=100)
    (dead_id,) = [entry_id.decode() for entry_id, _ in redis_client.xrange(DEAD)]  # type: ignore[union-attr]
    assert main(["dlq", "requeue", dead_id, "--url", redis_url, "--stream", STREAM, "--yes"]) == 0
    assert f"requeued {dead_id}" in capsys.readouterr().out
    assert redis_client.xlen(DEAD) == 0
    with WorkerThread(redis_url, model, stream=STREAM):
        replies = collect(redis_client, 1)
    assert replies["again"].status == "OK"
    np.testing.assert_allclose(replies["again"].outputs["y"], 2 * x + 1)


def _cells(text: str, first: str) -> list[str]:
    """The cells of the table row of ``text`` whose first cell is ``first`` (box characters dropped)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def test_live_view_renders_the_known_state(redis_url: str, redis_client: redis.Redis) -> None:
    from rich.console import Console

    from producer.live import render
    from producer.monitor import snapshot

    _prepare(redis_client)
    redis_client.hset(keys.health_key(STREAM, "[x]"), mapping={"status": "alive", "ok": "[alive]"})
    console = Console(record=True, width=200, force_terminal=True, file=io.StringIO())
    console.print(render(snapshot(redis_client, STREAM, stale_ms=0)))
    text = console.export_text()
    assert f"stream {STREAM} (Redis" in text and "length 5  backpressure limit 100" in text
    lag = "2" if _major(redis_client) >= 7 else "unknown: Redis 6 does not report lag (needs >= 7)"
    assert _cells(text, "workers")[1:] == [lag, "3", _cells(text, "workers")[3], "2", "1"]  # lag, pending, age, 2, 1
    assert _cells(text, "workers / alive")[1:] == ["2", _cells(text, "workers / alive")[2], "alive"]
    assert _cells(text, "workers / ghost")[3] == "STALE (no heartbeat)"
    assert _cells(text, "alive")[1:5] == ["ready", "7", "1", "-"]  # status, ok, errors, expired
    assert "dead letters (ops:requests:dead): 2" in text
    assert _cells(text, "[x]")[1:3] == ["alive", "[alive]"]  # a consumer name with brackets, not read as markup
    assert "second (truncated)" in text and "first" in text


def test_top_redraws_with_rates_and_falls_back_to_plain_text(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from producer import live
    from producer.monitor import snapshot

    _prepare(redis_client)
    console = Console(record=True, width=200, force_terminal=True, file=io.StringIO())
    assert live.run_live(lambda: snapshot(redis_client, STREAM), interval_s=0.05, count=2, console=console) == 0
    frames = console.export_text()
    assert "rates over" in frames and "served 0.0/s" in frames
    # not a terminal (capsys): plain frames, as many as asked
    assert main(["top", "--url", redis_url, "--stream", STREAM, "--count", "2", "--interval", "0.05"]) == 0
    assert capsys.readouterr().out.count(f"stream {STREAM} (Redis") == 2
    # a terminal without rich: plain frames too
    monkeypatch.setattr(live, "available", lambda: False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    watch = ["status", "--watch", "--url", redis_url, "--stream", STREAM, "--count", "1", "--interval", "0.05"]
    assert main(watch) == 0
    assert "group workers: lag" in capsys.readouterr().out
    # a terminal with rich: the live view
    calls: list[float] = []
    monkeypatch.setattr(live, "available", lambda: True)
    monkeypatch.setattr(live, "run_live", lambda take, interval_s, count: calls.append(interval_s) or 0)
    assert main(watch) == 0 and calls == [0.05]
    assert main([*watch, "--plain"]) == 0 and calls == [0.05]  # --plain keeps plain text
