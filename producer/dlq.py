"""``redis-infer dlq``: list, show, requeue and purge dead letters.

A dead-letter record (written by ``worker/transport.py``) holds ``original_id``, ``reason``, ``worker``,
``stream``, ``dead_lettered_ms`` and the request entry's protocol fields prefixed ``f:``; a field longer
than the worker's ``dead_letter_max_field_bytes`` was cut and is named in ``truncated``. ``requeue``
re-adds the ``f:`` fields as a new request entry and deletes the record, in one transaction; it refuses a
truncated record (the request can no longer be rebuilt) and one without fields. ``list`` and ``show`` only
read; ``requeue`` and ``purge`` write and ask for confirmation (``--yes`` skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis

from redis_infer_protocol import keys

FIELD_PREFIX = b"f:"
EXIT_OK, EXIT_REFUSED = 0, 2


@dataclass(slots=True)
class DeadLetter:
    id: str
    original_id: str
    reason: str
    worker: str
    stream: str
    dead_lettered_ms: int | None
    truncated: str  # "name=original_size,..." or ""
    request_fields: dict[str, int]  # protocol field -> bytes kept

    @property
    def requeue_refusal(self) -> str | None:
        """Why this record cannot be requeued, or None."""
        if self.truncated:
            return f"truncated fields ({self.truncated}): the original request cannot be rebuilt"
        if not self.request_fields:
            return "the record kept none of the request's fields"
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def parse(entry_id: Any, raw: dict[Any, Any]) -> DeadLetter:
    """A dead-letter record as read with XRANGE (bytes keys and values)."""
    f = {(k if isinstance(k, bytes) else str(k).encode()): v for k, v in raw.items()}
    at = f.get(b"dead_lettered_ms")
    return DeadLetter(
        id=_text(entry_id),
        original_id=_text(f.get(b"original_id", b"")),
        reason=_text(f.get(b"reason", b"")),
        worker=_text(f.get(b"worker", b"")),
        stream=_text(f.get(b"stream", b"")),
        dead_lettered_ms=None if at is None else int(at),
        truncated=_text(f.get(b"truncated", b"")),
        request_fields={k[len(FIELD_PREFIX) :].decode(): len(v) for k, v in f.items() if k.startswith(FIELD_PREFIX)},
    )


def _dead_stream(args: argparse.Namespace) -> str:
    return str(args.dead_letter_stream or keys.dead_letter_stream(args.stream))


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question}: refused without --yes (stdin is not a terminal)", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def run_list(redis: Redis, args: argparse.Namespace) -> int:
    entries: Any = redis.xrevrange(_dead_stream(args), count=args.count)
    letters = [parse(i, raw) for i, raw in entries]
    if args.json:
        print(json.dumps([asdict(d) for d in letters], indent=2))
        return EXIT_OK
    print(f"{_dead_stream(args)}: {redis.xlen(_dead_stream(args))} dead letters; newest first")
    for d in letters:
        mark = " [truncated: not requeueable]" if d.truncated else ""
        print(f"{d.id}  original {d.original_id}  by {d.worker}: {d.reason}{mark}")
    return EXIT_OK


def run_show(redis: Redis, args: argparse.Namespace) -> int:
    entries: Any = redis.xrange(_dead_stream(args), min=args.id, max=args.id)
    if not entries:
        print(f"no dead letter {args.id} in {_dead_stream(args)}", file=sys.stderr)
        return EXIT_REFUSED
    letter = parse(*entries[0])
    if args.json:
        print(json.dumps({**asdict(letter), "requeue_refusal": letter.requeue_refusal}, indent=2))
        return EXIT_OK
    for name, value in asdict(letter).items():
        print(f"{name:17} {value}")
    print(f"{'requeueable':17} {letter.requeue_refusal or 'yes'}")
    return EXIT_OK


def _selected(redis: Redis, dead: str, ids: list[str], take_all: bool) -> list[tuple[Any, dict[Any, Any]]]:
    if take_all:
        everything: Any = redis.xrange(dead)
        return list(everything)
    found = []
    for entry_id in ids:
        got: Any = redis.xrange(dead, min=entry_id, max=entry_id)
        if not got:
            raise LookupError(f"no dead letter {entry_id} in {dead}")
        found.append(got[0])
    return found


def run_requeue(redis: Redis, args: argparse.Namespace) -> int:
    dead = _dead_stream(args)
    if bool(args.ids) == bool(args.all):
        print("requeue: give dead-letter IDS or --all (not both)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        entries = _selected(redis, dead, args.ids, args.all)
    except LookupError as exc:
        print(f"requeue: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    letters = [(parse(i, raw), raw) for i, raw in entries]
    refused = [(d, d.requeue_refusal) for d, _ in letters if d.requeue_refusal]
    for d, why in refused:
        print(f"not requeued {d.id}: {why}", file=sys.stderr)
    todo = [(d, raw) for d, raw in letters if not d.requeue_refusal]
    if todo and _confirm(f"requeue {len(todo)} dead letter(s) onto {args.stream}", args.yes):
        for d, raw in todo:
            fields = {k[len(FIELD_PREFIX) :]: v for k, v in raw.items() if bytes(k).startswith(FIELD_PREFIX)}
            pipe = redis.pipeline(transaction=True)
            pipe.xadd(args.stream, fields)  # type: ignore[arg-type]
            pipe.xdel(dead, d.id)
            new_id, _ = pipe.execute()
            print(f"requeued {d.id} (original {d.original_id}) as {_text(new_id)}")
    elif todo:
        return EXIT_REFUSED
    return EXIT_REFUSED if refused else EXIT_OK


def run_purge(redis: Redis, args: argparse.Namespace) -> int:
    dead = _dead_stream(args)
    if bool(args.ids) == bool(args.all):
        print("purge: give dead-letter IDS or --all (not both)", file=sys.stderr)
        return EXIT_REFUSED
    what = f"all {redis.xlen(dead)} dead letters of {dead}" if args.all else f"{len(args.ids)} dead letter(s)"
    if not _confirm(f"delete {what}", args.yes):
        return EXIT_REFUSED
    deleted = int(redis.xtrim(dead, maxlen=0, approximate=False) if args.all else redis.xdel(dead, *args.ids))  # type: ignore[arg-type]
    print(f"deleted {deleted} dead letter(s) from {dead}")
    return EXIT_OK


def run_dlq(args: argparse.Namespace) -> int:
    redis = Redis.from_url(args.url)
    try:
        return int(args.dlq_func(redis, args))
    finally:
        redis.close()


def add_parser(commands: Any, add_connection_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``dlq list|show|requeue|purge`` on the producer CLI."""
    dlq = commands.add_parser("dlq", help="dead letters: list, show, requeue, purge")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    specs: list[tuple[str, str, Callable[[Redis, argparse.Namespace], int]]] = [
        ("list", "newest dead letters (read-only)", run_list),
        ("show", "one dead letter's record (read-only)", run_show),
        ("requeue", "re-add dead letters' requests to the stream and delete their records", run_requeue),
        ("purge", "delete dead letters", run_purge),
    ]
    for name, help_text, func in specs:
        cmd = sub.add_parser(name, help=help_text)
        add_connection_args(cmd)
        cmd.add_argument("--dead-letter-stream", help="default: <stream>:dead")
        cmd.set_defaults(func=run_dlq, dlq_func=func)
        if name == "list":
            cmd.add_argument("--count", type=int, default=20, help="how many (default 20)")
        if name in ("list", "show"):
            cmd.add_argument("--json", action="store_true", help="print JSON")
        if name == "show":
            cmd.add_argument("id", help="the dead letter's entry id")
        if name in ("requeue", "purge"):
            cmd.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids")
            cmd.add_argument("--all", action="store_true", help="every dead letter")
            cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
