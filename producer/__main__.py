"""Command line: send one request (``infer``), look at a request stream (``stats``), or load it (``bench``).

Examples::

    python -m producer infer --model resnet50 --input x=image.npy --output-dir out/
    python -m producer stats --stream infer:requests
    python -m producer bench --model resnet50 --shape 1,3,224,224 --concurrency 16 --count 5000

Exit codes: 0 ok, 1 Redis failure (unreachable...), 2 usage or invalid input, 3 the worker answered
with an error (its status and message are printed), 4 no reply in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from redis import Redis
from redis.exceptions import RedisError

from producer.bench_cli import add_parser as add_bench_parser
from producer.client import Client
from producer.core import DEFAULT_STREAM, DEFAULT_URL
from producer.discovery import add_parser as add_models_parser
from producer.dlq import add_parser as add_dlq_parser
from producer.errors import InferTimeout, InvalidInput, ServerError
from producer.exporter import add_parser as add_exporter_parser
from producer.monitor import add_parser as add_status_parser
from redis_infer_protocol.codec import OPTIONAL_TIMING_FIELDS, TIMING_FIELDS, Reply, Timing

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_SERVER_ERROR: Final = 3
EXIT_TIMEOUT: Final = 4

ENV_URL: Final = "REDIS_INFER_URL"
ENV_STREAM: Final = "REDIS_INFER_STREAM"
ENV_MODEL: Final = "REDIS_INFER_MODEL"

PRINT_THRESHOLD: Final = 200  # arrays with more elements are summarized when printed
RESULT_GRACE_S: Final = 5.0


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


# ------------------------------------------------------------------------------------------- parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("redis-infer")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m producer`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m producer", description="Client for the redis-infer worker.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    infer = commands.add_parser("infer", help="send one request and print the reply")
    _add_connection_args(infer)
    model = os.environ.get(ENV_MODEL)
    infer.add_argument("--model", default=model, required=model is None, help=f"model name (env {ENV_MODEL})")
    infer.add_argument("--model-version", help="model version (default: the worker's choice)")
    infer.add_argument(
        "--input", dest="inputs", action="append", required=True, type=_input_arg, metavar="NAME=FILE.npy",
        help="an input tensor from a .npy file; repeat for several inputs",
    )  # fmt: skip
    infer.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds to wait (default 10)")
    infer.add_argument("--priority", type=int, default=0, help="request priority (default 0)")
    infer.add_argument("--output-dir", type=Path, help="also save each output as NAME.npy in this directory")
    infer.add_argument("--json", action="store_true", help="print the reply as JSON")
    infer.set_defaults(func=run_infer)

    stats = commands.add_parser("stats", help="print a request stream's length and consumer groups")
    _add_connection_args(stats)
    stats.add_argument("--json", action="store_true", help="print as JSON")
    stats.set_defaults(func=run_stats)

    add_bench_parser(commands, _add_connection_args)
    add_status_parser(commands, _add_connection_args)
    add_dlq_parser(commands, _add_connection_args)
    add_models_parser(commands, _add_connection_args)  # issue 13: discovery
    # operations: the group-level Prometheus exporter (producer/exporter.py)
    add_exporter_parser(commands, _add_connection_args)
    return parser


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    url = os.environ.get(ENV_URL, DEFAULT_URL)
    stream = os.environ.get(ENV_STREAM, DEFAULT_STREAM)
    # The help names the env variable, never its value: a URL may carry a password.
    parser.add_argument("--url", default=url, help=f"Redis URL (env {ENV_URL}, default {DEFAULT_URL})")
    parser.add_argument("--stream", default=stream, help=f"request stream (env {ENV_STREAM}, default {stream})")


def _input_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, Path(path)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


# -------------------------------------------------------------------------------------------- infer


def run_infer(args: argparse.Namespace) -> int:
    """The ``infer`` command."""
    inputs = load_inputs(args.inputs)
    with Client(
        args.url, model=args.model, stream=args.stream, model_version=args.model_version, default_timeout_s=args.timeout
    ) as client:
        started_ns = time.time_ns()
        try:
            reply = client.submit(inputs, priority=args.priority).result(args.timeout + RESULT_GRACE_S)
        except ServerError as exc:
            return _report_failure(args, exc.request_id, exc.status.value, str(exc), EXIT_SERVER_ERROR)
        except TimeoutError as exc:  # InferTimeout, or the listener never answered
            request_id = exc.request_id if isinstance(exc, InferTimeout) else None
            return _report_failure(args, request_id, "TIMEOUT", f"no reply within {args.timeout:g} s", EXIT_TIMEOUT)
        round_trip_ms = (time.time_ns() - started_ns) / 1e6
    saved = save_outputs(reply, args.output_dir) if args.output_dir is not None else []
    if args.json:
        print(json.dumps(reply_as_json(reply, round_trip_ms, saved)))  # one line: outputs may be large
    else:
        print(format_reply(reply, round_trip_ms, saved))
    return EXIT_OK


def _report_failure(args: argparse.Namespace, request_id: str | None, status: str, message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"id": request_id, "status": status, "error": message}))
    return code


def load_inputs(specs: Sequence[tuple[str, Path]]) -> dict[str, np.ndarray[Any, Any]]:
    """Load ``NAME=FILE.npy`` inputs. Raises UsageError for a duplicate name or an unreadable file."""
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for name, path in specs:
        if name in inputs:
            raise UsageError(f"input {name!r} is given twice")
        try:
            inputs[name] = np.load(path, allow_pickle=False)  # never unpickle: a .npy may come from anywhere
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load input {name!r} from {path}: {exc}") from exc
    return inputs


def save_outputs(reply: Reply, directory: Path) -> list[Path]:
    """Save each output as ``NAME.npy``; names are made safe as file names first."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in reply.outputs.items():
        path = directory / f"{_safe_file_name(name)}.npy"
        np.save(path, array.astype(np.bytes_) if array.dtype == object else array, allow_pickle=False)
        paths.append(path)
    return paths


def _safe_file_name(name: str) -> str:
    # Output names come from the worker: never let one climb out of the output directory.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return f"_{safe}" if not safe or safe.startswith(".") else safe


def timing_ms(timing: Timing) -> dict[str, float]:
    """Each recorded step in ms after the request was enqueued (Redis clock, ms resolution)."""
    base = timing.enqueued_ns
    if not base:
        return {}
    return {
        name.removesuffix("_ns"): (getattr(timing, name) - base) / 1e6
        for name in TIMING_FIELDS[1:] + OPTIONAL_TIMING_FIELDS  # the optional ones: a model's hook stages
        if getattr(timing, name)
    }


def format_reply(reply: Reply, round_trip_ms: float, saved: Sequence[Path]) -> str:
    """The reply as human-readable text."""
    lines = [f"request {reply.id}: {reply.status.value}  model={reply.model} worker={reply.worker} "
             f"batch_size={reply.batch_size}"]  # fmt: skip
    for name, array in reply.outputs.items():
        lines.append(f"output {name}: dtype={array.dtype} shape={tuple(array.shape)}")
        values = np.array2string(array, threshold=PRINT_THRESHOLD, edgeitems=3, max_line_width=120)
        lines.extend(f"  {line}" for line in values.splitlines())
    steps = "  ".join(f"{name}={ms:.3f}" for name, ms in timing_ms(reply.timing).items())
    lines.append(f"timing (ms after enqueue): {steps or 'not reported'}")
    lines.append(f"round trip: {round_trip_ms:.3f} ms")
    lines.extend(f"saved {path}" for path in saved)
    return "\n".join(lines)


def reply_as_json(reply: Reply, round_trip_ms: float, saved: Sequence[Path]) -> dict[str, Any]:
    """The reply as a JSON-ready dict (BYTES elements as UTF-8 text, undecodable bytes escaped)."""
    outputs = {
        name: {"dtype": str(array.dtype), "shape": list(array.shape), "data": _json_data(array)}
        for name, array in reply.outputs.items()
    }
    return {
        "id": reply.id,
        "status": reply.status.value,
        "model": reply.model,
        "worker": reply.worker,
        "batch_size": reply.batch_size,
        "outputs": outputs,
        "timing_ms": timing_ms(reply.timing),
        "round_trip_ms": round_trip_ms,
        "saved": [str(path) for path in saved],
    }


def _json_data(array: np.ndarray[Any, Any]) -> Any:
    if array.dtype != object:
        return array.tolist()
    text = [bytes(item).decode("utf-8", "backslashreplace") for item in array.reshape(-1)]
    return np.array(text, dtype=object).reshape(array.shape).tolist()


# -------------------------------------------------------------------------------------------- stats


def run_stats(args: argparse.Namespace) -> int:
    """The ``stats`` command."""
    redis = Redis.from_url(args.url)
    try:
        info = stream_stats(redis, args.stream)
    finally:
        redis.close()
    print(json.dumps(info, indent=2) if args.json else format_stats(info))
    return EXIT_OK


def stream_stats(redis: Redis, stream: str) -> dict[str, Any]:
    """Length and consumer groups of a stream (``exists`` false if there is no such key)."""
    if not redis.exists(stream):
        return {"stream": stream, "exists": False, "length": 0, "groups": []}
    groups = []
    for group in redis.xinfo_groups(stream):
        name = _text(group["name"])
        consumers = [
            {"name": _text(c["name"]), "pending": c["pending"], "idle_ms": c["idle"], "inactive_ms": c.get("inactive")}
            for c in redis.xinfo_consumers(stream, name)
        ]
        groups.append(
            {
                "name": name,
                "consumers": consumers,
                "pending": group["pending"],
                "lag": group.get("lag"),  # None: Redis < 7, or it cannot tell (entries were deleted)
                "last_delivered_id": _text(group["last-delivered-id"]),
            }
        )
    return {"stream": stream, "exists": True, "length": redis.xlen(stream), "groups": groups}


def format_stats(info: dict[str, Any]) -> str:
    """Stream stats as human-readable text."""
    if not info["exists"]:
        return f"stream {info['stream']!r} does not exist (no request was ever sent, or it was deleted)"
    lines = [f"stream {info['stream']!r}: length {info['length']}, {len(info['groups'])} consumer group(s)"]
    for group in info["groups"]:
        lag = "unknown" if group["lag"] is None else group["lag"]
        lines.append(
            f"group {group['name']!r}: consumers {len(group['consumers'])}, pending {group['pending']}, "
            f"lag {lag}, last-delivered-id {group['last_delivered_id']}"
        )
        for consumer in group["consumers"]:
            lines.append(
                f"  consumer {consumer['name']!r}: pending {consumer['pending']}, idle {consumer['idle_ms']} ms"
            )
    return "\n".join(lines)


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except (UsageError, InvalidInput, ValueError) as exc:  # ValueError: a malformed --url, say
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RedisError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
