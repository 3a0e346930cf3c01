"""Hostile stream entries for the chaos run: garbage, truncated msgpack, wrong types, hostile shapes.

Each entry comes with what must become of it: a reply on its ``reply_to`` (any error status, or OK for
the few that are odd but valid), a record on the dead-letter stream (nobody can be answered), both (an
unreadable ``id``: answered under the entry id and dead-lettered, protocol §9), or either.
Nothing may be silently dropped, and no worker may die. ``send`` XADDs them and remembers the entry ids;
``account`` then reads the reply streams and the dead-letter stream and says what became of each.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import msgpack
import numpy as np
import redis

from benchmarks.chaos_harness import DEAD, MODEL, STREAM, WIDTH
from redis_infer_protocol.codec import CodecError, decode_reply

Expect = Literal["reply", "dead", "reply+dead", "either"]
REPLY_STREAMS = 16  # hostile replies are spread so no stream reaches the workers' reply MAXLEN
WRONG_TYPE_KEY = "infer:reply:chaos-not-a-stream"  # a hash: XADD of a reply to it fails with WRONGTYPE
MAX_BODY_BYTES = 256 * 1024  # the workers of the hostile scenario run with this body limit

Fields = dict[bytes, bytes]


def kinds() -> list[str]:
    """Every kind of hostile entry the generator makes."""
    return sorted(name.removeprefix("k_") for name in dir(Generator) if name.startswith("k_"))


@dataclass(slots=True)
class Hostile:
    kind: str
    fields: Fields
    request_id: str | None  # the id a reply would carry (None: no readable id)
    reply_to: str | None  # where a reply would go (None: nowhere readable)
    expect: Expect
    entry_id: str = ""

    def unreadable_id(self) -> None:
        """The id was made unreadable: a usable reply_to is answered under the entry id, and dead-lettered."""
        self.request_id = None
        self.expect = "dead" if self.reply_to is None else "reply+dead"

    def reply_id(self) -> str | None:
        """The id a reply to this entry carries (None: not answerable)."""
        if self.reply_to is None:
            return None
        return self.request_id if self.request_id is not None else self.entry_id


@dataclass(slots=True)
class HostileReport:
    sent: int = 0
    answered: int = 0
    dead_lettered: int = 0
    unaccounted: int = 0
    unexpected: int = 0  # answered where a dead letter was expected, or the other way round
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # a few unaccounted or unexpected entries


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _tensor(shape: Any, data: Any, datatype: Any = "FP32", name: Any = "x") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _x(rows: int = 1, width: int = WIDTH, fill: float = 1.0) -> bytes:
    return np.full((rows, width), fill, np.float32).tobytes()


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "inputs": [_tensor([1, WIDTH], _x())]}
    body.update(overrides)
    return body


class Generator:
    """Builds hostile entries of every kind, round-robin, deterministically from ``seed``."""

    def __init__(self, seed: int, spoof_stream: str, skip: frozenset[str] = frozenset()) -> None:
        self.rng = random.Random(seed)
        self.spoof_stream = spoof_stream
        self.n = 0
        self.kinds: list[tuple[str, Callable[[], Hostile]]] = [
            (name.removeprefix("k_"), getattr(self, name))
            for name in sorted(dir(self))
            if name.startswith("k_") and name.removeprefix("k_") not in skip
        ]

    def make(self, count: int) -> list[Hostile]:
        out = []
        for i in range(count):
            _kind, build = self.kinds[i % len(self.kinds)]
            out.append(build())
        return out

    # ------------------------------------------------------------------------------------ helpers

    def _ids(self) -> tuple[str, str]:
        self.n += 1
        return f"h{self.n:06d}", f"infer:reply:chaos-hostile-{self.n % REPLY_STREAMS}"

    def _entry(self, kind: str, body: Any, *, expect: Expect = "reply", raw: bytes | None = None) -> Hostile:
        rid, reply_to = self._ids()
        fields = {b"v": b"1", b"id": rid.encode(), b"reply_to": reply_to.encode(), b"body": raw or _pack(body)}
        return Hostile(kind, fields, rid, reply_to, expect)

    def _bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    # -------------------------------------------------------------------------------------- kinds

    def k_random_body(self) -> Hostile:
        return self._entry("random_body", None, raw=self._bytes(self.rng.randint(1, 300)))

    def k_random_fields(self) -> Hostile:
        # Printable field names, random values, none of the protocol's fields: nobody to answer.
        fields = {f"k{self.rng.randint(0, 99)}".encode(): self._bytes(self.rng.randint(0, 64)) for _ in range(3)}
        return Hostile("random_fields", fields, None, None, "dead")

    def k_binary_field_names(self) -> Hostile:
        # Field names that are not UTF-8 (Redis allows any bytes), beside a valid envelope and body or not.
        entry = self._entry("binary_field_names", self.rng.choice([_body(), None]))
        entry.fields[b"\xff" + self._bytes(self.rng.randint(0, 6))] = self._bytes(8)
        if self.rng.random() < 0.5:
            del entry.fields[b"reply_to"]
            entry.reply_to, entry.expect = None, "dead"
        return entry

    def k_truncated_msgpack(self) -> Hostile:
        raw = _pack(_body())
        return self._entry("truncated_msgpack", None, raw=raw[: self.rng.randint(1, len(raw) - 1)])

    def k_body_not_a_map(self) -> Hostile:
        return self._entry("body_not_a_map", self.rng.choice([42, "model", [1, 2, 3], None, True, 1.5, b"x"]))

    def k_wrong_types(self) -> Hostile:
        choices = [
            _body(model=123),
            _body(model=["affine"]),
            _body(inputs={"x": 1}),
            _body(inputs=[[1, 2, 3]]),
            _body(inputs=[_tensor("1,4", _x())]),
            _body(inputs=[_tensor([1, WIDTH], "not bytes")]),
            _body(inputs=[_tensor([1, WIDTH], _x(), datatype=7)]),
            _body(inputs=[_tensor([1, WIDTH], _x(), name=None)]),
            _body(inputs=[_tensor([1.0, 4.0], _x())]),
            _body(inputs=[_tensor([True, 4], _x())]),
            _body(outputs="y"),
            _body(parameters=[1, 2]),
            _body(parameters={"p": {"nested": 1}}),
            _body(model_version=3),
        ]
        return self._entry("wrong_types", self.rng.choice(choices))

    def k_huge_shape(self) -> Hostile:
        shape = self.rng.choice([[2**40, 2**40], [2**63 - 1], [2**64 - 1, 4], [1, 2**31], [0, 2**62, 2**62]])
        return self._entry("huge_shape", _body(inputs=[_tensor(shape, _x())]))

    def k_rank_too_high(self) -> Hostile:
        return self._entry("rank_too_high", _body(inputs=[_tensor([1] * self.rng.choice([9, 100, 1000]), b"")]))

    def k_negative_shape(self) -> Hostile:
        shape = self.rng.choice([[-1, WIDTH], [1, -WIDTH], [-(2**63), 1]])
        return self._entry("negative_shape", _body(inputs=[_tensor(shape, _x())]))

    def k_nan_numbers(self) -> Hostile:
        bad = self.rng.choice([math.nan, math.inf, -math.inf])
        choices = [_body(timeout_ms=bad), _body(priority=bad), _body(inputs=[_tensor([1, bad], _x())]),
                   _body(parameters={"p": bad})]  # fmt: skip
        return self._entry("nan_numbers", self.rng.choice(choices))

    def k_nan_data(self) -> Hostile:
        # Valid: NaN and inf are legal FP32 values, computed like any other (the reply is OK).
        fill = self.rng.choice([math.nan, math.inf, -math.inf])
        return self._entry("nan_data", _body(inputs=[_tensor([1, WIDTH], _x(fill=fill))]))

    def k_unknown_version(self) -> Hostile:
        entry = self._entry("unknown_version", _body())
        entry.fields[b"v"] = self.rng.choice([b"2", b"0", b"", b"1.0", b"01", b"\xff\xfe", b"99999999999999999999"])
        return entry

    def k_missing_field(self) -> Hostile:
        entry = self._entry("missing_field", _body())
        missing = self.rng.choice([b"v", b"id", b"reply_to", b"body"])
        del entry.fields[missing]
        if missing == b"id":
            entry.unreadable_id()
        elif missing == b"reply_to":
            entry.reply_to, entry.expect = None, "dead"
        return entry

    def k_reply_to_worker_stream(self) -> Hostile:
        entry = self._entry("reply_to_worker_stream", _body())
        entry.fields[b"reply_to"] = self.rng.choice([STREAM, DEAD]).encode()
        entry.reply_to, entry.expect = None, "dead"
        return entry

    def k_reply_to_foreign_key(self) -> Hostile:
        # A reply_to outside the workers' reply prefix (another application's key): never written to.
        entry = self._entry("reply_to_foreign_key", _body())
        entry.fields[b"reply_to"] = self.rng.choice([b"users:1", b"chaos:other-stream", b"infer:requests:limits"])
        entry.reply_to, entry.expect = None, "dead"
        return entry

    def k_reply_to_wrong_type(self) -> Hostile:
        entry = self._entry("reply_to_wrong_type", self.rng.choice([_body(), _body(model=1)]))
        entry.fields[b"reply_to"] = WRONG_TYPE_KEY.encode()
        entry.reply_to, entry.expect = None, "dead"
        return entry

    def k_bad_envelope(self) -> Hostile:
        # A valid body behind an id or reply_to that is not UTF-8, too long, or empty: a bad id is answered under
        # the entry id (and dead-lettered), a bad reply_to leaves nobody to answer.
        entry = self._entry("bad_envelope", _body())
        which = self.rng.choice([b"id", b"reply_to"])
        entry.fields[which] = self.rng.choice([b"\xff\xfe\xfd", b"x" * 300, b""])
        if which == b"id":
            entry.unreadable_id()
        else:
            entry.reply_to, entry.expect = None, "dead"
        return entry

    def k_oversized_body(self) -> Hostile:
        return self._entry("oversized_body", _body(inputs=[_tensor([1, 80_000], _x(width=80_000))]))

    def k_wrong_model(self) -> Hostile:
        model = self.rng.choice(["nope", "", "é" * 50])
        return self._entry("wrong_model", _body(model=model))

    def k_wrong_dtype(self) -> Hostile:
        choices = [
            _tensor([1, WIDTH], np.zeros((1, WIDTH), np.float64).tobytes(), "FP64"),
            _tensor([1, WIDTH], np.zeros((1, WIDTH), np.int32).tobytes(), "INT32"),
            _tensor([1, 1], b"\x01\x00\x00\x00a", "BYTES"),
            _tensor([1, WIDTH], _x(), "FP128"),
        ]
        return self._entry("wrong_dtype", _body(inputs=[self.rng.choice(choices)]))

    def k_wrong_shape(self) -> Hostile:
        choices = [
            _tensor([WIDTH], _x()),
            _tensor([1, 1, WIDTH], _x()),
            _tensor([1, WIDTH], _x()[:-1]),
            _tensor([0, WIDTH], b""),
            _tensor([1000, WIDTH], _x(rows=1000)),
        ]
        return self._entry("wrong_shape", _body(inputs=[self.rng.choice(choices)]))

    def k_odd_but_valid(self) -> Hostile:
        # Valid requests at the edges: zero-width rows, one-row max batch, a 1 ms deadline (EXPIRED or OK).
        choices = [
            _body(inputs=[_tensor([1, 0], b"")]),
            _body(inputs=[_tensor([32, WIDTH], _x(rows=32))]),
            _body(timeout_ms=1),
            _body(outputs=[]),
            _body(priority=2**31 - 1),
        ]
        return self._entry("odd_but_valid", self.rng.choice(choices))

    def k_bad_inputs(self) -> Hostile:
        choices = [
            _body(inputs=[]),
            _body(inputs=[_tensor([1, WIDTH], _x()), _tensor([1, WIDTH], _x())]),
            _body(inputs=[_tensor([1, WIDTH], _x(), name="y")]),
            _body(inputs=[_tensor([1, WIDTH], _x()), _tensor([1, WIDTH], _x(), name="z")]),
            _body(outputs=["nope"]),
            _body(parameters={f"p{i}": i for i in range(100)}),
            _body(priority=2**40),
            _body(timeout_ms=0),
            _body(timeout_ms=-5),
        ]
        return self._entry("bad_inputs", self.rng.choice(choices))

    def k_msgpack_tricks(self) -> Hostile:
        depth = self.rng.choice([200, 5000])
        choices = [
            b"\x81" + _pack("model") + b"\x91" * depth + b"\x01",  # {"model": [[[...1...]]]}, nested deep
            b"\xdd\xff\xff\xff\xff",  # array32 header claiming 4 billion elements
            b"\xdf\xff\xff\xff\xff",  # map32 header likewise
            b"\xc6\xff\xff\xff\xff",  # bin32 header claiming 4 GiB
            _pack({1: 2, "model": MODEL}),
            _pack(msgpack.ExtType(5, b"xyz")),
            _pack({"model": MODEL, "inputs": [_tensor([1, WIDTH], msgpack.ExtType(1, _x()))]}),
        ]
        return self._entry("msgpack_tricks", None, raw=self.rng.choice(choices))

    def k_spoof(self) -> Hostile:
        # A reply to a real client's stream for a request it never sent: the SDK must ignore it.
        entry = self._entry("spoof", self.rng.choice([None, _body()]), raw=None if self.rng.random() < 0.5 else b"\xc1")
        entry.fields[b"reply_to"] = self.spoof_stream.encode()
        entry.reply_to = self.spoof_stream
        return entry


def send(client: redis.Redis, entries: list[Hostile]) -> None:
    """XADD ``entries`` in one pipeline and remember their entry ids."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(STREAM, entry.fields)  # type: ignore[arg-type]
    for entry, entry_id in zip(entries, pipe.execute(), strict=True):
        entry.entry_id = entry_id.decode()


def _read_all(client: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of a stream, in pages."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    start = "-"
    while True:
        rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", client.xrange(key, min=start, max="+", count=2000))
        if start != "-":
            rows = rows[1:]
        if not rows:
            return out
        out.extend(rows)
        start = rows[-1][0].decode()


def _status(fields: dict[bytes, bytes]) -> str:
    try:
        return decode_reply(fields).status.value
    except CodecError as exc:
        return f"undecodable reply: {exc}"


def _replies(client: redis.Redis) -> dict[tuple[str, str], str]:
    """(reply stream, request id) -> status of every reply on the hostile reply streams."""
    keys = [f"infer:reply:chaos-hostile-{n}" for n in range(REPLY_STREAMS)]
    if client.type("") == b"stream":  # replies to an empty reply_to land in the key "" (if a worker accepts it)
        keys.append("")
    return {
        (key, fields.get(b"id", b"").decode(errors="replace")): _status(fields)
        for key in keys
        for _eid, fields in _read_all(client, key)
    }


def account(client: redis.Redis, entries: list[Hostile], spoof_replies: int) -> HostileReport:
    """What became of each hostile entry: a reply where it asked, a dead letter, or nothing.

    Args:
        client: a client of the scenario's Redis.
        entries: the entries sent (with their entry ids).
        spoof_replies: replies the victim client dropped as unknown (its ``stats.unknown_replies``): the
            answers to ``spoof`` entries, which it consumed.
    """
    replied = _replies(client)
    dead = {f.get(b"original_id", b"").decode() for _eid, f in _read_all(client, DEAD)}
    report = HostileReport(sent=len(entries))
    spoofs_left = spoof_replies
    for entry in entries:
        reply_id = entry.reply_id()
        status = None if reply_id is None else replied.get((entry.reply_to or "", reply_id))
        if entry.kind == "spoof" and spoofs_left > 0:
            spoofs_left -= 1
            outcome = "reply"
        elif status is not None:
            # Answered and dead-lettered is checked only where both are due (a reply under the entry id).
            outcome = "reply+dead" if entry.expect == "reply+dead" and entry.entry_id in dead else "reply"
        else:
            outcome = "dead" if entry.entry_id in dead else "none"
        _count(report, entry, outcome, status)
    return report


def _count(report: HostileReport, entry: Hostile, outcome: str, status: str | None) -> None:
    counts = report.by_kind.setdefault(entry.kind, {"sent": 0, "reply": 0, "dead": 0, "reply+dead": 0, "none": 0})
    counts["sent"] += 1
    counts[outcome] += 1
    if status is not None:
        counts[status] = counts.get(status, 0) + 1
    report.answered += outcome in ("reply", "reply+dead")
    report.dead_lettered += outcome == "dead"
    report.unaccounted += outcome == "none"
    unexpected = outcome != "none" and entry.expect != "either" and outcome != entry.expect
    report.unexpected += unexpected
    if (outcome == "none" or unexpected) and len(report.examples) < 10:
        fields = {k[:16]: v[:48] for k, v in entry.fields.items()}
        report.examples.append(f"{entry.kind} {entry.entry_id}: expected {entry.expect}, got {outcome}: {fields}")
