"""Redis ACL roles of the protocol, generated from the key names in :mod:`redis_infer_protocol.keys`.

``deploy/acl/users.acl`` (an ``aclfile``) and ``deploy/acl/setuser.redis`` (the same users as
``ACL SETUSER`` lines) are written by this module, so the roles cannot drift from the key names::

    python -m redis_infer_protocol.acl --out deploy/acl --tenant alpha --tenant beta [--model resnet:2 ...]

Roles (see docs/operations.md, "Access control"):

- ``worker``: exactly the commands a worker sends, on its request stream, dead letters, limits key,
  health keys, every model's stream family (``infer:requests:{*}``, ``infer:requests:{*}:*``), the
  discovery hash (``HSET`` only) and (write only) the reply streams.
- ``producer``: enqueue on the request stream and on every model's unversioned stream (``XADD`` or the
  backlog script), read their limits keys and the discovery hash, read and delete reply streams under the
  shared prefix (result-by-id streams included). ``producer-<tenant>``: the same, but only the reply
  streams under ``infer:reply:<tenant>:``.
- ``monitor``: read-only queries of the status CLI, discovery and KEDA's ``redis-streams`` scaler.
- ``operator``: requeue dead letters onto the request stream and purge the dead-letter stream.
- ``--model NAME[:VERSION]``: ``worker.NAME`` and ``producer.NAME``, restricted to that model's keys; a
  named version's stream is also granted to the shared producers and the operator.

Redis 7 selectors bind commands to keys: a producer may ``XADD`` to the request stream but not read its
entries, and may ``XDEL`` its reply streams but not the request stream. Redis globs treat ``{`` and ``}``
as plain characters, so ``infer:requests:{*}`` matches every model's unversioned stream and none of its
derived keys (they do not end with ``}``). A versioned stream ``infer:requests:{m}:v`` cannot be told
from ``infer:requests:{m}:dead`` by a glob: versions are granted by name (``--model m:v``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from redis_infer_protocol import keys

__all__ = [
    "MODEL_STREAMS",
    "PASSWORD_PLACEHOLDER",
    "ModelGrant",
    "Role",
    "parse_models",
    "render_aclfile",
    "render_setuser",
    "roles",
    "tenant_reply_prefix",
    "write_files",
]

PASSWORD_PLACEHOLDER: Final = "CHANGE-ME-{name}"
"""Shipped passwords are placeholders: replace each ``>CHANGE-ME-<user>`` before loading the file."""

TENANT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

MODEL_STREAMS: Final = f"{keys.MODEL_STREAM_PREFIX}{{*}}"
"""Every model's unversioned request stream, ``infer:requests:{*}``: in a Redis glob the braces are plain
characters, so a derived key (``...}:dead``, ``...}:2``) does not match."""

# Every connection: the handshake redis-py sends (HELLO/AUTH, CLIENT SETNAME/SETINFO) and PING.
_CONNECTION: Final = ("+hello", "+auth", "+ping", "+client|setname", "+client|getname")
# CLIENT SETINFO (Redis >= 7.2) is left out: Redis 7.0 rejects the rule, and redis-py tolerates its refusal.

WORKER_COMMANDS: Final = (
    *_CONNECTION,
    "+info", "+time",
    "+xgroup|create", "+xreadgroup", "+xack", "+xclaim", "+xpending", "+xinfo|groups", "+xtrim", "+xadd",
    "+hset", "+hget", "+expire", "+del", "+exists",
    # The consumer clean-up script (EVAL) runs under this user's ACL: EXISTS, XINFO CONSUMERS, XGROUP DELCONSUMER;
    # the settle script (EVALSHA, EVAL after NOSCRIPT): XADD, EXPIRE, XACK.
    "+eval", "+evalsha", "+xinfo|consumers", "+xgroup|delconsumer",
)  # fmt: skip
"""What worker/transport.py sends (docs/operations.md lists why)."""

MONITOR_COMMANDS: Final = (
    *_CONNECTION,
    "+xinfo|groups", "+xinfo|stream", "+xinfo|consumers", "+xlen", "+xpending", "+exists", "+type",
    "+hget", "+hgetall", "+ttl", "+scan", "+info", "+time",
)  # fmt: skip
"""The status CLI (``redis-infer status``: health keys found by SCAN, which lists key names only; the server
clock and version), discovery (``redis-infer models``) and KEDA's redis-streams scaler (lag, pending). The
latest dead letters (XREVRANGE) are read through a selector bound to the dead-letter streams."""

OPERATOR_COMMANDS: Final = (
    *_CONNECTION,
    "+xrange", "+xrevrange", "+xlen", "+xinfo|stream", "+xdel", "+xtrim", "+del", "+multi", "+exec",
)  # fmt: skip
"""Dead-letter requeue (XRANGE the dead letters, XADD to the request stream, XDEL) and purge (XTRIM/DEL)."""


@dataclass(slots=True)
class Role:
    """One ACL user: root permissions (commands and keys) and Redis 7 selectors (command and key bound)."""

    name: str
    root: list[str]
    selectors: list[list[str]] = field(default_factory=list)

    def rules(self, password: str | None = None) -> list[str]:
        """The ACL rules of this user, with ``password`` (default: the placeholder)."""
        secret = password if password is not None else PASSWORD_PLACEHOLDER.format(name=self.name)
        head = ["on", "resetpass", f">{secret}", "resetkeys", "resetchannels", "-@all"]
        return head + self.root + [f"({' '.join(s)})" for s in self.selectors]


@dataclass(frozen=True, slots=True)
class ModelGrant:
    """A model named with ``--model``: the streams granted (``None``: the unversioned one) and its own users."""

    name: str
    versions: tuple[str | None, ...] = (None,)

    @property
    def streams(self) -> list[str]:
        """The request streams granted, checked by :func:`keys.model_stream` (which refuses glob characters)."""
        return [keys.model_stream(self.name, version) for version in self.versions]

    @property
    def family(self) -> list[str]:
        """Every key of the model: its streams (all versions) and their dead letters, limits and health keys."""
        tagged = keys.model_stream(self.name)
        return [tagged, f"{tagged}:*"]


def parse_models(specs: Sequence[str]) -> list[ModelGrant]:
    """``NAME`` or ``NAME:VERSION`` (repeatable) as grants, merged by name in first-seen order.

    Raises:
        ValueError: a name or version that :func:`keys.model_stream` refuses (glob characters among them).
    """
    versions: dict[str, list[str | None]] = {}
    for spec in specs:
        name, _, version = spec.partition(":")
        keys.model_stream(name, version or None)  # validates both
        found = versions.setdefault(name, [])
        if (version or None) not in found:
            found.append(version or None)
    return [ModelGrant(name, tuple(found)) for name, found in versions.items()]


def tenant_reply_prefix(tenant: str, base: str = keys.DEFAULT_REPLY_PREFIX) -> str:
    """Reply-stream prefix of one tenant: ``infer:reply:<tenant>:``.

    Raises:
        ValueError: If the tenant name is empty or has characters other than letters, digits, ``_``, ``-``
            (a glob character would widen the tenant's ACL pattern; a colon would nest tenants).
    """
    if not TENANT_RE.match(tenant):
        raise ValueError(f"tenant must be 1-64 letters, digits, '_' or '-', got {tenant!r}")
    return f"{base}{tenant}:"


def _producer(name: str, streams: Sequence[str], reply_pattern: str) -> Role:
    return Role(
        name,
        # SCAN (key names only) finds the health keys of the served models for client.models().
        root=[*_CONNECTION, "+scan", f"~{reply_pattern}", "+xread", "+xrange", "+xdel", "+xadd", "+del"],
        selectors=[
            # Enqueue: XADD (no backlog limit) or the backlog script; XLEN only as the script needs it. No
            # XRANGE/XREAD: a producer cannot read other producers' requests.
            [*(f"~{s}" for s in streams), "+xadd", "+xlen", "+evalsha", "+eval", "+script|load"],
            [*(f"%R~{keys.limits_key(s)}" for s in streams), "+hget"],
            [f"%R~{keys.MODELS_KEY}", "+hgetall", "+hget"],  # discovery: read, never write
        ],
    )


def _worker(name: str, own_keys: Sequence[str]) -> Role:
    replies = f"{keys.DEFAULT_REPLY_PREFIX}*"
    return Role(
        name,
        root=[*WORKER_COMMANDS, *(f"~{k}" for k in own_keys), f"%W~{replies}"],
        selectors=[
            [f"%W~{keys.MODELS_KEY}", "+hset"],  # discovery: publish its models' metadata, nothing else
            # A script's declared keys need read and write access (EVAL's key spec is RW): the settle script
            # names the reply stream. The commands inside are checked one by one against the rules above,
            # so a script cannot read a reply stream either.
            [*(f"~{k}" for k in own_keys), f"~{replies}", "+evalsha", "+eval"],
        ],
    )


def _dead_letters(stream: str) -> list[str]:
    """The dead-letter streams: the request stream's and every model stream's (versions included)."""
    return [keys.dead_letter_stream(stream), f"{MODEL_STREAMS}*{keys.DEAD_LETTER_SUFFIX}"]


def roles(
    stream: str = keys.DEFAULT_STREAM, tenants: Sequence[str] = (), models: Sequence[ModelGrant] = ()
) -> list[Role]:
    """Every role for one request stream and the model streams: worker, producer (shared prefix), one producer
    per tenant, monitor, operator, then ``worker.<model>`` and ``producer.<model>`` per model grant."""
    reply_all = f"{keys.DEFAULT_REPLY_PREFIX}*"
    versioned = [s for grant in models for s in grant.streams if not s.endswith("}")]
    request_streams = [stream, MODEL_STREAMS, *versioned]
    family = [*keys.stream_keys(stream), keys.health_pattern(stream), MODEL_STREAMS, f"{MODEL_STREAMS}:*"]
    worker = _worker("worker", family)
    monitor = Role(
        "monitor",
        root=[*MONITOR_COMMANDS, *(f"%R~{k}" for k in [*family, keys.MODELS_KEY])],
        selectors=[[*(f"%R~{k}" for k in _dead_letters(stream)), "+xrevrange"]],
    )
    operator = Role(
        "operator",
        root=[*OPERATOR_COMMANDS, *(f"~{k}" for k in _dead_letters(stream))],
        selectors=[[*(f"%W~{s}" for s in request_streams), "+xadd"]],
    )
    producers = [_producer("producer", request_streams, reply_all)]
    producers += [_producer(f"producer-{t}", request_streams, f"{tenant_reply_prefix(t)}*") for t in tenants]
    per_model: list[Role] = []
    for grant in models:
        per_model += [
            _worker(f"worker.{grant.name}", grant.family),
            _producer(f"producer.{grant.name}", grant.streams, reply_all),
        ]
    return [worker, *producers, monitor, operator, *per_model]


def render_aclfile(all_roles: Sequence[Role]) -> str:
    """An ``aclfile``: the default user off, then one ``user`` line per role."""
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    lines += [f"user {r.name} {' '.join(r.rules())}" for r in all_roles]
    return "\n".join(lines) + "\n"  # an aclfile has no comments: the README in deploy/acl says where it comes from


def render_setuser(all_roles: Sequence[Role]) -> str:
    """The same users as ``ACL SETUSER`` commands (for ``redis-cli``), without touching ``default``."""
    return "\n".join(f"ACL SETUSER {r.name} {' '.join(_quoted(r.rules()))}" for r in all_roles) + "\n"


def _quoted(rules: list[str]) -> list[str]:
    """redis-cli splits on spaces: a selector ``(...)`` is one argument, so it goes in double quotes."""
    return [f'"{rule}"' if " " in rule else rule for rule in rules]


def write_files(
    out: Path, stream: str = keys.DEFAULT_STREAM, tenants: Sequence[str] = (), models: Sequence[ModelGrant] = ()
) -> list[Path]:
    """Write ``users.acl`` and ``setuser.redis`` into ``out``; return their paths."""
    all_roles = roles(stream, tenants, models)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "users.acl", out / "setuser.redis"]
    written[0].write_text(render_aclfile(all_roles))
    written[1].write_text(render_setuser(all_roles))
    return written


SHIPPED_TENANTS: Final = ("alpha", "beta")
"""Example tenants of the shipped files (regenerate with your own ``--tenant`` list)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redis_infer_protocol.acl --out DIR [--stream S] [--tenant T ...] [--model NAME[:VERSION] ...]``."""
    parser = argparse.ArgumentParser(prog="python -m redis_infer_protocol.acl", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for users.acl and setuser.redis")
    parser.add_argument("--stream", default=keys.DEFAULT_STREAM, help="request stream")
    parser.add_argument("--tenant", action="append", help="a tenant with its own producer user (repeatable)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME[:VERSION]",
                        help="users worker.NAME and producer.NAME for one model's keys; a VERSION's stream is also "
                             "granted to the shared producers and the operator (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        tenants = SHIPPED_TENANTS if args.tenant is None else tuple(args.tenant)
        for path in write_files(args.out, args.stream, tenants, parse_models(args.model)):
            print(path)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
