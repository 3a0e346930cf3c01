"""Command line: ``python -m worker run --model PATH`` and friends."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal

from worker.errors import WorkerError

log = logging.getLogger("worker")


# Short spellings kept from earlier releases; each maps onto a generated flag.
_ALIASES: dict[str, str] = {
    "--model-path": "--model",
    "--batch-max-size": "--max-batch-size",
    "--batch-max-delay-ms": "--max-delay-ms",
}


def _dest(path: tuple[str, ...]) -> str:
    return "setting__" + "__".join(path)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, as nested dicts for ``load_settings`` (flags win over the environment)."""
    from worker.config import setting_fields

    overrides: dict[str, Any] = {}
    for field in setting_fields():
        value = getattr(args, _dest(field.path), None)
        if value is None:
            continue
        target = overrides
        for part in field.path[:-1]:
            target = target.setdefault(part, {})
        target[field.path[-1]] = value
    return overrides


def _run(args: argparse.Namespace) -> int:
    from worker.config import load_settings, redact_url
    from worker.errors import ConfigError
    from worker.runner import redis_url

    settings = load_settings(**_overrides(args))
    logging.getLogger().setLevel(settings.log_level)
    entries = None
    if settings.model_repository is not None:  # issue 13: several models (worker/repository.py, worker/fleet.py)
        from worker.repository import load_repository

        entries = load_repository(settings.model_repository, [m for m in (args.models or "").split(",") if m])
    elif args.models:
        raise ConfigError("--models selects models of a repository: pass --model-repository too")
    elif settings.model.path is None:
        raise ConfigError("no model: set WORKER_MODEL__PATH or pass --model (or --model-repository)")
    if not settings.redis.url and not args.embedded_redis:
        raise ConfigError(
            "no Redis: set WORKER_REDIS__URL or pass --redis-url (or --embedded-redis for a private redis-server, "
            "for trying things out only)"
        )
    with redis_url(settings) as url:
        if not settings.redis.url:
            print(f"embedded redis-server: clients use REDIS_INFER_URL={url}", file=sys.stderr, flush=True)
        else:
            log.info("redis: %s", redact_url(url))
        asyncio.run(_serve_checked(settings, url, entries))
    return 0


REDIS_CHECK_TIMEOUT_S = 5.0


async def redis_major_version(settings: Any, url: str) -> int | None:
    """The server's major version (INFO server), or None when it cannot be asked now (an outage: the worker's
    own retries handle that)."""
    from worker.transport import connect

    client = connect(settings.redis, block_ms=settings.streams.block_ms, url=url)
    try:
        info = await asyncio.wait_for(client.info("server"), REDIS_CHECK_TIMEOUT_S)
        return int(str(info["redis_version"]).split(".", 1)[0])
    except Exception as exc:
        log.debug("could not read the Redis version: %s", exc)
        return None
    finally:
        await client.aclose()


async def _serve_checked(settings: Any, url: str, entries: Any = None) -> None:
    from worker.fleet import serve_repository
    from worker.runner import serve

    major = await redis_major_version(settings, url)
    if major is not None and major < 7:
        log.warning(
            "Redis %d is older than 7: consumer-group lag is unknown (status says so, the metric is absent) and "
            "KEDA's lagCount cannot scale this group; use Redis >= 7 in production",
            major,
        )
    await (serve(settings, url) if entries is None else serve_repository(settings, url, entries))


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        from worker.configdoc import markdown_table, update_readme

        if args.update:
            print(f"{args.update}: {'updated' if update_readme(args.update) else 'already current'}")
        else:
            print(markdown_table())
        return 0
    from worker.config import load_settings, redacted

    print(json.dumps(redacted(load_settings()), indent=2))
    return 0


def _add_setting_flags(run: argparse.ArgumentParser) -> None:
    """One flag per setting (``--batch-max-size`` for ``WORKER_BATCH__MAX_SIZE``), with its default in the help."""
    from typing import get_args, get_origin

    from worker.config import setting_fields
    from worker.configdoc import default_text

    group = run.add_argument_group("settings (each also an environment variable; flags win)")
    for field in setting_fields():
        names = [field.flag]
        if field.flag in _ALIASES:
            names.insert(0, _ALIASES[field.flag])
        choices = list(get_args(field.info.annotation)) if get_origin(field.info.annotation) is Literal else None
        help_text = f"{field.info.description or ''} [{field.env}; default: {default_text(field.info) or 'unset'}]"
        group.add_argument(*names, dest=_dest(field.path), choices=choices, metavar=None if choices else "VALUE",
                           help=help_text.replace("%", "%%"))  # fmt: skip


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("redis-infer")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a model from the request stream (settings from WORKER_* env or flags)")
    run.add_argument(
        "--embedded-redis",
        action="store_true",
        help="with no Redis URL: start a private redis-server and print the URL clients should use (trials only)",
    )
    run.add_argument("--models", metavar="A,B", help="with --model-repository: serve only these models")
    _add_setting_flags(run)
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
