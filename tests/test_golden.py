"""Golden vectors (docs/golden/): the checked-in bytes decode to the JSON meaning, and the codec re-encodes
the meaning to exactly those bytes, so a change of the encoder's output is caught here before it ships.

This file reads the JSON on its own (it does not reuse scripts/make_golden.py's conversions), as a port to
another language would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from redis_infer_protocol.codec import (
    BYTES,
    DATATYPES,
    TIMING_FIELDS,
    Status,
    Timing,
    datatype_of,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "docs" / "golden"
CASES = sorted(p.name.removesuffix(".json") for p in GOLDEN.glob("*.json"))


def load(name: str) -> tuple[dict[str, Any], bytes]:
    meaning = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return meaning, (GOLDEN / meaning["body_file"]).read_bytes()


def entry_fields(meaning: dict[str, Any], body: bytes) -> dict[bytes, bytes]:
    """The stream entry as redis-py would return it: bytes keys and values, ``body`` last."""
    fields = {k.encode(): v.encode() for k, v in meaning["fields"].items()}
    fields[b"body"] = body
    return fields


def array_of(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    shape = tuple(tensor["shape"])
    if tensor["datatype"] == BYTES:
        flat = [bytes.fromhex(h) for h in np.array(tensor["values"], dtype=object).reshape(-1)]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    return np.array(tensor["values"], dtype=DATATYPES[tensor["datatype"]]).reshape(shape)


def assert_tensors(decoded: dict[str, np.ndarray[Any, Any]], expected: list[dict[str, Any]]) -> None:
    assert list(decoded) == [t["name"] for t in expected]
    for tensor in expected:
        array = decoded[tensor["name"]]
        assert datatype_of(array.dtype) == tensor["datatype"]
        assert list(array.shape) == tensor["shape"]
        if tensor["datatype"] == BYTES:
            assert np.vectorize(bytes.hex, otypes=[object])(array).tolist() == tensor["values"]
        else:
            assert array.dtype == DATATYPES[tensor["datatype"]]
            assert array.tolist() == tensor["values"]
            assert array.tobytes().hex() == tensor["data_hex"]


def test_there_are_enough_cases() -> None:
    kinds = [json.loads((GOLDEN / f"{c}.json").read_text())["kind"] for c in CASES]
    assert len(CASES) >= 5
    assert {"request", "reply"} == set(kinds)


@pytest.mark.parametrize("name", CASES)
def test_files_agree(name: str) -> None:
    meaning, body = load(name)
    assert meaning["name"] == name
    assert meaning["body_file"] == f"{name}.body.msgpack"
    assert len(body) == meaning["body_size"]
    assert hashlib.sha256(body).hexdigest() == meaning["body_sha256"]


@pytest.mark.parametrize("name", CASES)
def test_wire_structure_is_the_json_body(name: str) -> None:
    """The msgpack map holds exactly the JSON body's keys, in order; a tensor's `data` is its `data_hex`."""
    meaning, body = load(name)
    wire = msgpack.unpackb(body, raw=False)
    expected = json.loads(json.dumps(meaning["body"]))
    for key in ("inputs", "outputs"):
        if key in expected and (key == "inputs" or meaning["kind"] == "reply"):
            expected[key] = [
                {
                    "name": t["name"],
                    "datatype": t["datatype"],
                    "shape": t["shape"],
                    "data": bytes.fromhex(t["data_hex"]),
                }
                for t in expected[key]
            ]
    assert wire == expected
    assert list(wire) == list(expected)
    for tensor in wire.get("inputs", []) + (wire.get("outputs", []) if meaning["kind"] == "reply" else []):
        assert list(tensor) == ["name", "datatype", "shape", "data"]


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("request")])
def test_request_decodes_to_meaning(name: str) -> None:
    meaning, body = load(name)
    expected = meaning["body"]
    request = decode_request(entry_fields(meaning, body))
    assert request.id == meaning["fields"]["id"]
    assert request.reply_to == meaning["fields"]["reply_to"]
    assert request.model == expected["model"]
    assert request.model_version == expected.get("model_version")
    assert request.timeout_ms == expected.get("timeout_ms")
    assert request.priority == expected.get("priority", 0)
    assert request.outputs == (tuple(expected["outputs"]) if "outputs" in expected else None)
    assert request.parameters == expected.get("parameters", {})
    assert [type(v) for v in request.parameters.values()] == [type(v) for v in expected.get("parameters", {}).values()]
    assert_tensors(request.inputs, expected["inputs"])


@pytest.mark.parametrize("name", [c for c in CASES if c.startswith("reply")])
def test_reply_decodes_to_meaning(name: str) -> None:
    meaning, body = load(name)
    expected = meaning["body"]
    reply = decode_reply(entry_fields(meaning, body))
    assert reply.id == meaning["fields"]["id"]
    assert reply.status is Status(expected["status"])
    assert reply.error == expected.get("error")
    assert reply.model == expected.get("model")
    assert reply.worker == expected.get("worker")
    assert reply.batch_size == expected.get("batch_size", 0)
    assert reply.timing.as_dict() == expected.get("timing", dict.fromkeys(TIMING_FIELDS, 0))
    assert_tensors(reply.outputs, expected.get("outputs", []))


@pytest.mark.parametrize("name", CASES)
def test_encoding_the_meaning_reproduces_the_bytes(name: str) -> None:
    meaning, body = load(name)
    fields, expected = meaning["fields"], meaning["body"]
    if meaning["kind"] == "request":
        encoded = encode_request(
            fields["id"],
            fields["reply_to"],
            expected["model"],
            {t["name"]: array_of(t) for t in expected["inputs"]},
            model_version=expected.get("model_version"),
            timeout_ms=expected.get("timeout_ms"),
            priority=expected.get("priority", 0),
            outputs=expected.get("outputs"),
            parameters=expected.get("parameters"),
        )
    else:
        timing = expected.get("timing")
        encoded = encode_reply(
            fields["id"],
            Status(expected["status"]),
            outputs={t["name"]: array_of(t) for t in expected.get("outputs", [])},
            error=expected.get("error"),
            model=expected.get("model"),
            timing=None if timing is None else Timing(**timing),
            worker=expected.get("worker"),
            batch_size=expected.get("batch_size", 0),
        )
    assert {k: v.decode() for k, v in encoded.items() if k != "body"} == fields
    assert list(encoded) == [*fields, "body"]
    assert encoded["body"] == body, f"the encoder's output changed for {name}: wire format drift"


def test_generator_is_in_sync(tmp_path: Path) -> None:
    """scripts/make_golden.py writes exactly the checked-in files (and nothing else)."""
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "scripts" / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    checked_in = sorted(p.name for p in GOLDEN.iterdir() if p.name != "README.md")
    assert written == checked_in
    for name in written:
        assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes(), name
