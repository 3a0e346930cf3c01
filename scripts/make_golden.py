"""Regenerate the golden vectors of wire format v1 in ``docs/golden/`` (see ``docs/golden/README.md``).

Each case is written as ``NAME.json`` (the stream-entry fields and what the body means, in plain JSON) and
``NAME.body.msgpack`` (the exact bytes of the ``body`` field). Everything is produced by ``redis_infer_protocol.codec``
from the definitions below, so the output is deterministic: running this twice gives identical files.

Usage::

    python scripts/make_golden.py           # (re)write docs/golden/
    python scripts/make_golden.py --check   # exit 1 if the checked-in files differ from what the codec makes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from redis_infer_protocol.codec import BYTES, DATATYPES, Status, Timing, encode_reply, encode_request

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "docs" / "golden"
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: the entry id of every request below is 1767225600000-0

# Each case is its JSON meaning minus what is derived from the bytes (data_hex, body_size, body_sha256).
# Tensor values are nested lists (a bare number for a 0-d tensor); BYTES elements are hex strings.
CASES: list[dict[str, Any]] = [
    {
        "name": "request_fp32_image",
        "description": "An image-like FP32 request [1, 3, 4, 4] with model_version, timeout_ms, priority, "
        "a list of wanted outputs and parameters of every kind (float, int, bool, string).",
        "kind": "request",
        "fields": {"v": "1", "id": "req-0001", "reply_to": "infer:reply:7f3a9c2e"},
        "body": {
            "model": "resnet50",
            "inputs": [
                {
                    "name": "pixel_values",
                    "datatype": "FP32",
                    "shape": [1, 3, 4, 4],
                    "values": (np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4) / 8 - 3).tolist(),
                }
            ],
            "model_version": "3",
            "timeout_ms": 5000,
            "priority": 5,
            "outputs": ["probabilities"],
            "parameters": {"threshold": 0.25, "top_k": 3, "normalize": True, "label": "cat"},
        },
    },
    {
        "name": "request_int64_bool",
        "description": "Two inputs of a text model: INT64 token ids (with the INT64 extremes and 2**53 + 1, "
        "which a float64 cannot hold) and a BOOL attention mask.",
        "kind": "request",
        "fields": {"v": "1", "id": "req-0002", "reply_to": "infer:reply:7f3a9c2e"},
        "body": {
            "model": "bert-tiny",
            "inputs": [
                {
                    "name": "input_ids",
                    "datatype": "INT64",
                    "shape": [2, 4],
                    "values": [[101, 7592, -1, 0], [-(2**63), 2**63 - 1, 2**53 + 1, 102]],
                },
                {
                    "name": "attention_mask",
                    "datatype": "BOOL",
                    "shape": [2, 4],
                    "values": [[True, True, True, False], [True, True, False, False]],
                },
            ],
        },
    },
    {
        "name": "request_bytes",
        "description": "A BYTES [2, 2] input: ASCII, an empty element, UTF-8 text with a two-byte character, "
        "and bytes that are not UTF-8. Each element is framed by a 4-byte little-endian length.",
        "kind": "request",
        "fields": {"v": "1", "id": "req-0003", "reply_to": "infer:reply:7f3a9c2e"},
        "body": {
            "model": "tokenizer",
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2, 2],
                    "values": [[b"hello".hex(), ""], ["héllo".encode().hex(), "00fffe"]],
                }
            ],
            "outputs": ["token_ids"],
        },
    },
    {
        "name": "request_fp64_scalar_and_empty",
        "description": "A 0-d FP64 tensor (shape [], one element) next to an empty UINT16 tensor (shape [0, 3], "
        "no data bytes).",
        "kind": "request",
        "fields": {"v": "1", "id": "req-0004", "reply_to": "infer:reply:7f3a9c2e"},
        "body": {
            "model": "sampler",
            "inputs": [
                {"name": "temperature", "datatype": "FP64", "shape": [], "values": 0.7},
                {"name": "history", "datatype": "UINT16", "shape": [0, 3], "values": []},
            ],
            "timeout_ms": 250,
        },
    },
    {
        "name": "reply_ok",
        "description": "An OK reply with two outputs (FP32 [1, 4], UINT32 [1, 2]), the model, the full timing "
        "trace, the worker and the size of the batch the request ran in.",
        "kind": "reply",
        "fields": {"v": "1", "id": "req-0001"},
        "body": {
            "status": "OK",
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "values": [[0.0625, 0.125, 0.3125, 0.5]],
                },
                {"name": "top_k", "datatype": "UINT32", "shape": [1, 2], "values": [[3, 2]]},
            ],
            "model": "resnet50",
            "timing": {
                "enqueued_ns": T0_NS,
                "read_ns": T0_NS + 1_250_000,
                "batched_ns": T0_NS + 3_400_000,
                "compute_start_ns": T0_NS + 3_500_000,
                "compute_end_ns": T0_NS + 11_800_000,
                "published_ns": T0_NS + 12_300_000,
            },
            "worker": "gpu-node-1-4711",
            "batch_size": 8,
        },
    },
    {
        "name": "reply_expired",
        "description": "An EXPIRED error reply: the deadline passed before compute started, so the compute "
        "timestamps are 0.",
        "kind": "reply",
        "fields": {"v": "1", "id": "req-0004"},
        "body": {
            "status": "EXPIRED",
            "error": "deadline passed before compute started (timeout_ms 250, waited 262 ms)",
            "model": "sampler",
            "timing": {
                "enqueued_ns": T0_NS,
                "read_ns": T0_NS + 240_000_000,
                "batched_ns": T0_NS + 241_000_000,
                "compute_start_ns": 0,
                "compute_end_ns": 0,
                "published_ns": T0_NS + 262_000_000,
            },
            "worker": "gpu-node-1-4711",
        },
    },
    {
        "name": "reply_invalid_argument",
        "description": "An INVALID_ARGUMENT error reply with no timing (a decoder reads every timestamp as 0).",
        "kind": "reply",
        "fields": {"v": "1", "id": "req-0005"},
        "body": {
            "status": "INVALID_ARGUMENT",
            "error": "input 'pixel_values' must be FP32, got FP64",
            "model": "resnet50",
            "worker": "cpu-node-2-815",
        },
    },
]


def array_of(tensor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """The numpy array a JSON tensor means."""
    shape = tuple(tensor["shape"])
    if tensor["datatype"] == BYTES:
        hexes = np.array(tensor["values"], dtype=object).reshape(-1)
        flat = np.empty(len(hexes), dtype=object)
        flat[:] = [bytes.fromhex(h) for h in hexes]
        return flat.reshape(shape)
    return np.array(tensor["values"], dtype=DATATYPES[tensor["datatype"]]).reshape(shape)


def encode_case(case: dict[str, Any]) -> dict[str, bytes]:
    """Encode a case's meaning with the codec: the stream-entry fields, ``body`` included."""
    fields, body = case["fields"], case["body"]
    if case["kind"] == "request":
        return encode_request(
            fields["id"],
            fields["reply_to"],
            body["model"],
            {t["name"]: array_of(t) for t in body["inputs"]},
            model_version=body.get("model_version"),
            timeout_ms=body.get("timeout_ms"),
            priority=body.get("priority", 0),
            outputs=body.get("outputs"),
            parameters=body.get("parameters"),
        )
    timing = body.get("timing")
    return encode_reply(
        fields["id"],
        Status(body["status"]),
        outputs={t["name"]: array_of(t) for t in body.get("outputs", [])},
        error=body.get("error"),
        model=body.get("model"),
        timing=None if timing is None else Timing(**timing),
        worker=body.get("worker"),
        batch_size=body.get("batch_size", 0),
    )


def render(case: dict[str, Any]) -> tuple[str, bytes]:
    """The JSON text and the body bytes of one case."""
    fields = encode_case(case)
    if {k: v.decode() for k, v in fields.items() if k != "body"} != case["fields"]:
        raise ValueError(f"{case['name']}: the fields do not match what the codec writes")
    body_bytes = fields["body"]
    wire = msgpack.unpackb(body_bytes)
    if list(wire) != list(case["body"]):
        raise ValueError(f"{case['name']}: list the body keys in wire order: {list(wire)}")
    body = dict(case["body"])
    for key in ("inputs", "outputs"):
        if key in body and (key == "inputs" or case["kind"] == "reply"):
            body[key] = [
                {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"], "data_hex": w["data"].hex(), **t}
                for t, w in zip(body[key], wire[key], strict=True)
            ]
    meaning = {
        "name": case["name"],
        "description": case["description"],
        "kind": case["kind"],
        "fields": case["fields"],
        "body_file": f"{case['name']}.body.msgpack",
        "body_size": len(body_bytes),
        "body_sha256": hashlib.sha256(body_bytes).hexdigest(),
        "body": body,
    }
    return to_json(meaning) + "\n", body_bytes


def to_json(obj: Any, indent: str = "") -> str:
    """JSON with two-space indents, but a list of scalars (a tensor row, a shape) on one line."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {to_json(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        return "[\n" + ",\n".join(inner + to_json(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the checked-in files, write nothing")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR, help="output folder (default: docs/golden)")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for case in CASES:
        text, body = render(case)
        for path, content in (
            (args.dir / f"{case['name']}.json", text.encode()),
            (args.dir / f"{case['name']}.body.msgpack", body),
        ):
            if path.exists() and path.read_bytes() == content:
                continue
            stale.append(path.name)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    if args.check and stale:
        sys.stderr.write(f"golden vectors out of date: {', '.join(stale)} (run scripts/make_golden.py)\n")
        return 1
    sys.stdout.write(f"{len(CASES)} cases, {len(stale)} files {'differ' if args.check else 'written'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
