"""Command line: ``python -m worker run --model PATH`` and friends."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from worker.errors import WorkerError

log = logging.getLogger("worker")


def _run(args: argparse.Namespace) -> int:
    from worker.config import load_settings
    from worker.runner import redis_url, serve

    overrides: dict[str, Any] = {}
    for key, section, field in (
        ("model", "model", "path"),
        ("model_name", "model", "name"),
        ("max_batch_size", "batch", "max_size"),
        ("max_delay_ms", "batch", "max_delay_ms"),
        ("redis_url", "redis", "url"),
    ):
        value = getattr(args, key)
        if value is not None:
            overrides.setdefault(section, {})[field] = value
    for key in ("backend", "stream", "group", "consumer"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    settings = load_settings(**overrides)
    logging.getLogger().setLevel(settings.log_level)
    with redis_url(settings) as url:
        asyncio.run(serve(settings, url))
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        from worker.configdoc import markdown_table, update_readme

        if args.update:
            print(f"{args.update}: {'updated' if update_readme(args.update) else 'already current'}")
        else:
            print(markdown_table())
        return 0
    from worker.config import load_settings

    print(json.dumps(load_settings().model_dump(mode="json"), indent=2))
    return 0


def _info(args: argparse.Namespace) -> int:
    from worker.config import load_settings
    from worker.engines.factory import load_engine

    settings = load_settings(model={"path": args.model}, backend=args.backend or "onnxruntime")
    engine = load_engine(settings)
    try:
        info = engine.info
        print(f"model {info.name!r}: max batch {info.max_batch_size}, {len(engine.slots)} execution slots")
        for kind, specs in (("input", info.inputs), ("output", info.outputs)):
            for spec in specs:
                print(f"  {kind:6} {spec.name}: {spec.datatype} {list(spec.shape)}")
        for key, value in info.metadata.items():
            print(f"  metadata {key} = {value!r}")
    finally:
        engine.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a model from the request stream (settings from WORKER_* env)")
    run.add_argument("--model", type=Path, help="model file (WORKER_MODEL__PATH)")
    run.add_argument("--model-name", help="model name requests must carry (WORKER_MODEL__NAME)")
    run.add_argument("--backend", choices=["onnxruntime", "tensorrt"], help="WORKER_BACKEND")
    run.add_argument("--redis-url", help="WORKER_REDIS__URL; unset: a private redis-server")
    run.add_argument("--stream", help="WORKER_STREAM")
    run.add_argument("--group", help="WORKER_GROUP")
    run.add_argument("--consumer", help="WORKER_CONSUMER")
    run.add_argument("--max-batch-size", type=int, help="WORKER_BATCH__MAX_SIZE")
    run.add_argument("--max-delay-ms", type=float, help="WORKER_BATCH__MAX_DELAY_MS")
    run.set_defaults(func=_run)

    config = sub.add_parser("config", help="print the effective configuration as JSON (validates it)")
    config.add_argument("--markdown", action="store_true", help="print the table of every setting instead")
    config.add_argument("--update", metavar="README", help="with --markdown: rewrite the table in this file")
    config.set_defaults(func=_config)

    info = sub.add_parser("info", help="print a model's inputs, outputs and metadata")
    info.add_argument("model", type=Path)
    info.add_argument("--backend", choices=["onnxruntime", "tensorrt"])
    info.set_defaults(func=_info)

    from worker.precision.cli import add_precision_parsers

    add_precision_parsers(sub)
    try:
        from worker.engines.trt_build import add_build_parser
    except ImportError:
        pass
    else:
        add_build_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except WorkerError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
