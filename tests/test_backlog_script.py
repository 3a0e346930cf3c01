"""The protocol's backlog script (docs/protocol.md §2.1): one text for every client.

The fenced ``lua`` block of docs/protocol.md is the canonical text; the Python SDK's ``ADD_SCRIPT``, the Go
client's ``SubmitScript`` and the Node client's ``BACKLOG_SCRIPT`` are compared with it byte for byte (the
Go and Node ones by their own unit tests), so that every client shares one entry of Redis's script cache.
The block is also run here against a real redis-server, to hold the spec's argument layout, return value and
BUSY rule to what the text does.
"""

from __future__ import annotations

import hashlib
import re

import pytest
import redis

from producer import backpressure
from tests.helpers import ROOT

PROTOCOL = ROOT / "docs" / "protocol.md"
FENCE = "```lua\n"
STREAM = "infer:requests"


def docs_script() -> str:
    """The text between the only ```lua fence of docs/protocol.md and the fence that closes it."""
    text = PROTOCOL.read_text(encoding="utf-8")
    assert text.count(FENCE) == 1, "docs/protocol.md must hold exactly one lua block: the backlog script"
    start = text.index(FENCE) + len(FENCE)
    return text[start : text.index("```", start)]


def entry(request_id: str) -> list[str]:
    fields = ["v", "1", "id", request_id, "reply_to", "infer:reply:c", "body", f"body-{request_id}"]
    return [str(len(fields)), *fields]


def run(client: redis.Redis, max_backlog: int, ids: list[str]) -> tuple[int, list[bytes]]:
    """EVAL the docs block as §2.1 lays it out: the stream, the limit, n, then k and k arguments per entry."""
    args = [arg for request_id in ids for arg in entry(request_id)]
    reply = client.eval(docs_script(), 1, STREAM, max_backlog, len(ids), *args)
    assert isinstance(reply, list) and len(reply) == 2
    length, added = reply
    return int(length), list(added)


def test_the_docs_block_is_the_python_sdks_script() -> None:
    # Passes once the SDK's batched backlog script (branch sdk) is merged: until then ADD_SCRIPT is the older,
    # one-entry script and this test fails on purpose, since the two would not share a script-cache entry.
    assert docs_script() == backpressure.ADD_SCRIPT


def test_the_docs_name_the_scripts_sha1() -> None:
    script = docs_script()
    assert script.startswith("\nlocal max") and script.endswith("return {len, ids}\n")
    sha1 = hashlib.sha1(script.encode()).hexdigest()
    assert f"`{sha1}`" in PROTOCOL.read_text(encoding="utf-8")


@pytest.mark.integration
def test_adds_every_entry_in_order_without_a_limit(redis_client: redis.Redis) -> None:
    length, ids = run(redis_client, 0, ["a", "b", "c"])
    assert length == 3 and isinstance(ids, list) and len(ids) == 3
    stored = redis_client.xrange(STREAM)
    assert [entry_id for entry_id, _ in stored] == ids
    assert [fields[b"id"] for _, fields in stored] == [b"a", b"b", b"c"]
    assert stored[1][1] == {b"v": b"1", b"id": b"b", b"reply_to": b"infer:reply:c", b"body": b"body-b"}


@pytest.mark.integration
def test_adds_while_under_the_limit_and_refuses_the_tail(redis_client: redis.Redis) -> None:
    redis_client.xadd(STREAM, {"filler": "1"})
    length, ids = run(redis_client, 3, ["a", "b", "c", "d"])
    assert length == 3 and len(ids) == 2  # a and b added; c and d refused: BUSY
    assert [fields.get(b"id") for _, fields in redis_client.xrange(STREAM)] == [None, b"a", b"b"]
    length, ids = run(redis_client, 3, ["e"])
    assert (length, ids) == (3, [])
    assert redis_client.xlen(STREAM) == 3


@pytest.mark.integration
def test_touches_no_key_but_the_stream(redis_client: redis.Redis) -> None:
    redis_client.hset(f"{STREAM}:limits", "max_backlog", 1)  # the script must not read it: ARGV[1] rules
    run(redis_client, 0, ["a", "b"])
    assert redis_client.xlen(STREAM) == 2
    assert sorted(redis_client.keys("*")) == [STREAM.encode(), f"{STREAM}:limits".encode()]
    assert re.search(r"redis\.call\('(?!XLEN|XADD)", docs_script()) is None
