"""The protocol package: one home for key names and limits, and the deprecated ``producer`` re-exports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import redis_infer_protocol
from redis_infer_protocol import codec, keys, limits
from worker.engines.trt_layout import NUMPY_TYPES, WIRE_TYPES


@pytest.mark.parametrize("name", ["codec", "keys"])
def test_producer_reexports_are_deprecated_but_work(name: str) -> None:
    sys.modules.pop(f"producer.{name}", None)
    with pytest.warns(DeprecationWarning, match=f"redis_infer_protocol.{name}"):
        old = importlib.import_module(f"producer.{name}")
    new = importlib.import_module(f"redis_infer_protocol.{name}")
    assert old.__all__ == new.__all__
    for public in new.__all__:
        assert getattr(old, public) is getattr(new, public)


def test_the_protocol_package_imports_neither_redis_nor_the_sdk_nor_the_worker() -> None:
    code = (
        "import sys, redis_infer_protocol, redis_infer_protocol.validation;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'producer', 'worker')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_key_derives_from_the_stream() -> None:
    stream = "app:requests"
    assert keys.stream_keys(stream) == [stream, keys.dead_letter_stream(stream), keys.limits_key(stream)]
    assert keys.limits_key(stream) == "app:requests:limits"
    assert keys.dead_letter_stream(stream) == "app:requests:dead"
    assert keys.health_key(stream, "w1") == "app:requests:worker:w1"
    assert keys.health_pattern(stream) == "app:requests:worker:*"


def test_worker_settings_default_to_the_protocol_keys() -> None:
    from worker.config import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.stream, settings.group) == (keys.DEFAULT_STREAM, keys.DEFAULT_GROUP)
    assert settings.streams.reply_prefix == keys.DEFAULT_REPLY_PREFIX
    assert settings.dead_letter_stream == keys.dead_letter_stream(keys.DEFAULT_STREAM)


def test_the_decoder_enforces_the_published_id_and_reply_to_limits() -> None:
    import numpy as np

    def entry(request_id: str, reply_to: str) -> dict[str, bytes]:
        return codec.encode_request(request_id, reply_to, "m", {"x": np.ones(1)})

    codec.decode_request(entry("i" * limits.MAX_REQUEST_ID_BYTES, "r" * limits.MAX_REPLY_TO_BYTES))
    with pytest.raises(codec.CodecError, match="id"):
        codec.decode_request(entry("i" * (limits.MAX_REQUEST_ID_BYTES + 1), "r"))
    with pytest.raises(codec.CodecError, match="reply_to"):
        codec.decode_request(entry("i", "r" * (limits.MAX_REPLY_TO_BYTES + 1)))


def test_tensorrt_dtypes_come_from_the_wire_mapping() -> None:
    assert set(NUMPY_TYPES) == set(WIRE_TYPES.values())
    for wire, dtype in NUMPY_TYPES.items():
        assert dtype is redis_infer_protocol.DATATYPES[wire]
