"""Redis ACL roles of the protocol, generated from the key names in :mod:`redis_infer_protocol.keys`.

``deploy/acl/users.acl`` (an ``aclfile``) and ``deploy/acl/setuser.redis`` (the same users as
``ACL SETUSER`` lines) are written by this module, so the roles cannot drift from the key names::

    python -m redis_infer_protocol.acl --out deploy/acl --tenant alpha --tenant beta

Roles (see docs/operations.md, "Access control"):

- ``worker``: exactly the commands a worker sends, on its request stream, dead letters, limits key,
  health keys and (write only) the reply streams.
- ``producer``: enqueue on the request stream (``XADD`` or the backlog script), read the limits key, read
  and delete reply streams under the shared prefix. ``producer-<tenant>``: the same, but only the
  reply streams under ``infer:reply:<tenant>:``.
- ``monitor``: read-only queries of the status CLI and KEDA's ``redis-streams`` scaler.
- ``operator``: requeue dead letters onto the request stream and purge the dead-letter stream.

Redis 7 selectors bind commands to keys: a producer may ``XADD`` to the request stream but not read its
entries, and may ``XDEL`` its reply streams but not the request stream.
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
    "PASSWORD_PLACEHOLDER",
    "Role",
    "render_aclfile",
    "render_setuser",
    "roles",
    "tenant_reply_prefix",
    "write_files",
]

PASSWORD_PLACEHOLDER: Final = "CHANGE-ME-{name}"
"""Shipped passwords are placeholders: replace each ``>CHANGE-ME-<user>`` before loading the file."""

TENANT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

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
    "+hget", "+hgetall", "+xrevrange", "+ttl", "+scan", "+info", "+time",
)  # fmt: skip
"""The status CLI (``redis-infer status``: health keys found by SCAN, which lists key names only; latest dead
letters by XREVRANGE; the server clock and version) and KEDA's redis-streams scaler (lag, pending)."""

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


def tenant_reply_prefix(tenant: str, base: str = keys.DEFAULT_REPLY_PREFIX) -> str:
    """Reply-stream prefix of one tenant: ``infer:reply:<tenant>:``.

    Raises:
        ValueError: If the tenant name is empty or has characters other than letters, digits, ``_``, ``-``
            (a glob character would widen the tenant's ACL pattern; a colon would nest tenants).
    """
    if not TENANT_RE.match(tenant):
        raise ValueError(f"tenant must be 1-64 letters, digits, '_' or '-', got {tenant!r}")
    return f"{base}{tenant}:"


def _producer(name: str, stream: str, reply_pattern: str) -> Role:
    return Role(
        name,
        root=[*_CONNECTION, f"~{reply_pattern}", "+xread", "+xdel", "+xadd", "+del"],
        selectors=[
            # Enqueue: XADD (no backlog limit) or the backlog script; XLEN only as the script needs it. No
            # XRANGE/XREAD: a producer cannot read other producers' requests.
            [f"~{stream}", "+xadd", "+xlen", "+evalsha", "+eval", "+script|load"],
            [f"%R~{keys.limits_key(stream)}", "+hget"],
        ],
    )


def roles(stream: str = keys.DEFAULT_STREAM, tenants: Sequence[str] = ()) -> list[Role]:
    """Every role for one request stream: worker, producer (shared prefix), one producer per tenant,
    monitor and operator."""
    reply_all = f"{keys.DEFAULT_REPLY_PREFIX}*"
    dead = keys.dead_letter_stream(stream)
    worker = Role(
        "worker",
        root=[
            *WORKER_COMMANDS,
            f"~{stream}", f"~{dead}", f"~{keys.limits_key(stream)}", f"~{keys.health_pattern(stream)}",
            f"%W~{reply_all}",
        ],
    )  # fmt: skip
    monitor = Role(
        "monitor",
        root=[
            *MONITOR_COMMANDS,
            f"%R~{stream}",
            f"%R~{dead}",
            f"%R~{keys.limits_key(stream)}",
            f"%R~{keys.health_pattern(stream)}",
        ],
    )
    operator = Role(
        "operator",
        root=[*OPERATOR_COMMANDS, f"~{dead}"],
        selectors=[[f"%W~{stream}", "+xadd"]],
    )
    producers = [_producer("producer", stream, reply_all)]
    producers += [_producer(f"producer-{t}", stream, f"{tenant_reply_prefix(t)}*") for t in tenants]
    return [worker, *producers, monitor, operator]


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


def write_files(out: Path, stream: str = keys.DEFAULT_STREAM, tenants: Sequence[str] = ()) -> list[Path]:
    """Write ``users.acl`` and ``setuser.redis`` into ``out``; return their paths."""
    all_roles = roles(stream, tenants)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "users.acl", out / "setuser.redis"]
    written[0].write_text(render_aclfile(all_roles))
    written[1].write_text(render_setuser(all_roles))
    return written


SHIPPED_TENANTS: Final = ("alpha", "beta")
"""Example tenants of the shipped files (regenerate with your own ``--tenant`` list)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redis_infer_protocol.acl --out DIR [--stream S] [--tenant T ...]``."""
    parser = argparse.ArgumentParser(prog="python -m redis_infer_protocol.acl", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for users.acl and setuser.redis")
    parser.add_argument("--stream", default=keys.DEFAULT_STREAM, help="request stream")
    parser.add_argument("--tenant", action="append", help="a tenant with its own producer user (repeatable)")
    args = parser.parse_args(argv)
    try:
        tenants = SHIPPED_TENANTS if args.tenant is None else tuple(args.tenant)
        for path in write_files(args.out, args.stream, tenants):
            print(path)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
