"""Defects of the batch path found in review: two hostile-but-legal bodies the cached decoder once answered
differently from the full decoder (it must give, for every entry, what the per-request decoder gives), and
the raw command path on redis-py < 5.3."""

from __future__ import annotations

import msgpack
import pytest

from redis_infer_protocol.codec import Status, decode_request
from worker.engines.base import ModelInfo, TensorSpec
from worker.intake import Intake, Rejection, WorkItem

INFO = ModelInfo("m", (TensorSpec("x", "UINT8", (-1, -1)),), (TensorSpec("y", "UINT8", (-1, -1)),), max_batch_size=8)


def _entry(i: int, body: dict[str, object]) -> dict[bytes, bytes]:
    return {b"v": b"1", b"id": b"r%d" % i, b"reply_to": b"infer:reply:a", b"body": msgpack.packb(body)}


def test_a_string_that_looks_like_the_tensor_data_does_not_make_a_valid_request_malformed() -> None:
    """The template builder looks for a tensor's framed data in the body; an earlier string with the same
    bytes (here a model_version placed before the inputs) must not turn valid requests into MALFORMED."""
    intake = Intake(INFO, reply_prefix="infer:reply:")  # no version configured: any model_version is served
    data = b"A" * 128  # packed: c4 80 then 128 'A'
    version = "\u0100" + "A" * 128  # UTF-8: c4 80 then 128 'A', the same bytes
    body = {"model": "m", "model_version": version,
            "inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 128], "data": data}]}  # fmt: skip
    for i in range(6):
        fields = _entry(i, body)
        decode_request(fields)  # the full decoder accepts it
        result = intake.admit(f"1-{i}", fields)
        assert isinstance(result, WorkItem), result
        assert result.request.inputs["x"].tobytes() == data


@pytest.mark.parametrize(
    "tensor_or_outputs",
    [{"outputs": [["y"]]}, {"name": [1]}, {"datatype": {}}],
    ids=["output-list", "name-list", "datatype-map"],
)
def test_a_list_or_map_where_a_name_belongs_is_malformed_not_an_internal_error(
    tensor_or_outputs: dict[str, object],
) -> None:
    tensor: dict[str, object] = {"name": "x", "datatype": "UINT8", "shape": [1, 2], "data": b"ab"}
    body: dict[str, object] = {"model": "m", "inputs": [tensor]}
    for key, value in tensor_or_outputs.items():
        (body if key == "outputs" else tensor)[key] = value
    result = Intake(INFO, reply_prefix="infer:reply:").admit("1-0", _entry(0, body))
    assert isinstance(result, Rejection)
    assert result.status in (Status.MALFORMED, Status.INVALID_ARGUMENT), result
    assert not result.dead_letter


def test_the_raw_command_path_works_with_a_pool_that_wants_a_command_name() -> None:
    """redis-py < 5.3 (which pyproject allows) asks ``get_connection`` for a command name."""
    import asyncio
    from types import SimpleNamespace

    from worker.transport import Transport

    class Conn:
        async def send_packed_command(self, packed: bytes) -> None:
            self.sent = packed

        async def read_response(self) -> bytes:
            return b"PONG"

    class OldPool:
        def __init__(self) -> None:
            self.released: list[Conn] = []

        async def get_connection(self, command_name: str, *keys: object) -> Conn:
            return Conn()

        async def release(self, conn: Conn) -> None:
            self.released.append(conn)

    pool = OldPool()
    transport = Transport(SimpleNamespace(connection_pool=pool), stream="s", group="g", consumer="c",  # type: ignore[arg-type]
                          dead_letter_stream="s:dead", reply_maxlen=10, reply_ttl_s=10)  # fmt: skip
    assert asyncio.run(transport._call(b"*1\r\n$4\r\nPING\r\n")) == b"PONG"
    assert len(pool.released) == 1
