"""One round trip per batch: the server-side script that writes replies and dead letters, then acks.

Pure (no I/O): the Lua script, the RESP bytes of one ``EVALSHA`` call packed by hand (redis-py packs
each argument in Python, which cost ~15% of the worker under load), and the reading of its answer.
``worker/transport.py`` sends them.

The script keeps write-then-ack inside Redis: it ``XADD``s every record with ``pcall``, refreshes the
TTL of each reply stream written, and ``XACK``s only the entries all of whose records were written. It
returns the failed writes (index and error), so that the transport applies the same refusal rules as
for any write: a passing refusal (OOM, READONLY...) is retried later, a permanent one dead-lettered.

Redis Cluster (not supported yet): every key a script touches must be declared and hash to one slot,
so the request stream, its dead-letter stream and the reply streams would need one hash tag, and the
reply streams would be declared keys (docs/reliability.md, "Redis Cluster").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

SCRIPT = b"""
local stream, dead, group = KEYS[1], KEYS[2], ARGV[1]
local rmax, ttl, dmax = ARGV[2], ARGV[3], ARGV[4]
local n, nw = tonumber(ARGV[5]), tonumber(ARGV[6])
local p = 7 + n
local failed, errors, expired = {}, {}, {}
for w = 1, nw do
  local entry, kind, key, nf = tonumber(ARGV[p]), ARGV[p + 1], ARGV[p + 2], tonumber(ARGV[p + 3])
  local first, last = p + 4, p + 3 + nf
  p = last + 1
  local r
  if kind == 'r' then
    r = redis.pcall('XADD', key, 'MAXLEN', '~', rmax, '*', unpack(ARGV, first, last))
  elseif dmax ~= '0' then
    r = redis.pcall('XADD', dead, 'MAXLEN', dmax, '*', unpack(ARGV, first, last))
  else
    r = redis.pcall('XADD', dead, '*', unpack(ARGV, first, last))
  end
  if type(r) == 'table' and r.err then
    failed[entry] = true
    errors[#errors + 1] = w
    errors[#errors + 1] = r.err
  elseif kind == 'r' and not expired[key] then
    expired[key] = true
    redis.pcall('EXPIRE', key, ttl)
  end
end
local acks = {}
for i = 1, n do
  if not failed[i] then acks[#acks + 1] = ARGV[6 + i] end
end
local ackerr = ''
for i = 1, #acks, 4000 do
  local r = redis.pcall('XACK', stream, group, unpack(acks, i, math.min(i + 3999, #acks)))
  if type(r) == 'table' and r.err then ackerr = r.err end
end
errors[#errors + 1] = ackerr
return errors
"""
SHA = hashlib.sha1(SCRIPT).hexdigest().encode()


@dataclass(slots=True)
class Write:
    """One record to write: ``entry`` is the 1-based index of the entry it belongs to."""

    entry: int
    key: str
    dead: bool
    fields: Sequence[bytes]  # name, value, name, value...


def pack(
    entry_ids: Sequence[str],
    writes: Sequence[Write],
    *,
    stream: str,
    dead_stream: str,
    group: str,
    reply_maxlen: int,
    reply_ttl_s: int,
    dead_maxlen: int,
    load: bool = False,
) -> bytes:
    """The RESP bytes of one ``EVALSHA`` (``EVAL`` with the script's text when ``load``) of the script.

    Only the request and dead-letter streams are declared keys: a declared key needs read access under
    an ACL, and the worker's user may only write reply streams (``redis_infer_protocol/acl.py``).
    """
    values = [b"EVAL" if load else b"EVALSHA", SCRIPT if load else SHA, b"2", stream.encode(), dead_stream.encode(),
              group.encode(), b"%d" % reply_maxlen, b"%d" % reply_ttl_s, b"%d" % dead_maxlen, b"%d" % len(entry_ids),
              b"%d" % len(writes)]  # fmt: skip
    values += [entry_id.encode() for entry_id in entry_ids]
    for w in writes:
        values += (b"%d" % w.entry, b"d" if w.dead else b"r", w.key.encode(), b"%d" % len(w.fields))
        values += w.fields
    return b"".join([b"*%d\r\n" % len(values), *[b"$%d\r\n%b\r\n" % (len(v), v) for v in values]])


def command(args: Sequence[bytes]) -> bytes:
    """The RESP bytes of any command."""
    return b"".join([b"*%d\r\n" % len(args), *[b"$%d\r\n%b\r\n" % (len(v), v) for v in args]])


def failures(answer: object) -> tuple[dict[int, str], str | None]:
    """The script's answer read: {0-based write index: error message}, and the XACK error if any."""
    if not isinstance(answer, list) or not answer:
        raise ValueError(f"unexpected answer from the settle script: {answer!r}"[:200])
    *pairs, ack_error = answer
    failed = {int(pairs[i]) - 1: _text(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    ack = _text(ack_error)
    return failed, ack or None


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
