"""Result fetched later by request id (issue 13, item 5): another connection reads it until the TTL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from producer.results import fetch_result, submit_detached
from redis_infer_protocol import Status, keys
from tests.helpers import WorkerThread, make_affine_model

pytestmark = pytest.mark.integration


def test_a_result_is_fetched_later_by_id_from_another_connection(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    model = make_affine_model(tmp_path / "affine.onnx")
    with WorkerThread(redis_url, model, streams={"block_ms": 100, "reply_ttl_s": 120}):
        request_id = submit_detached(redis_client, "affine", {"x": np.ones((1, 3), np.float32)},
                                     stream=keys.DEFAULT_STREAM, timeout_s=30)  # fmt: skip
        other = redis.Redis.from_url(redis_url)
        try:
            reply = fetch_result(other, request_id, wait_s=30)
            assert reply is not None and reply.status == Status.OK and reply.id == request_id
            np.testing.assert_allclose(reply.outputs["s"], [3.0])
            key = keys.result_stream(request_id)
            assert 0 < other.ttl(key) <= 120  # kept for the worker's reply TTL, then gone
            again = fetch_result(other, request_id, delete=True)  # read as often as wanted
            assert again is not None and again.id == request_id
            assert not other.exists(key)
            assert fetch_result(other, request_id) is None  # deleted (or expired): None
        finally:
            other.close()
    with pytest.raises(ValueError, match="to name a result stream"):
        keys.result_stream("a b")
