"""pytest plugin: run existing integration tests against redis-server under the shipped ACL file.

Loaded by ``tests/test_acl_suite.py`` (``pytest -p tests.acl_plugin``). The session's redis-server
starts with ``--aclfile`` (deploy/acl/users.acl plus an ``admin`` user for the tests' own set-up and
checks); every worker the tests start connects as the shipped ``worker`` user.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import tests.helpers as helpers
from redis_infer_protocol.acl import PASSWORD_PLACEHOLDER
from worker.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin:admin-test-only"
WORKER = f"worker:{PASSWORD_PLACEHOLDER.format(name='worker')}"

_dir = Path(tempfile.mkdtemp(prefix="redis-infer-acl-"))
atexit.register(shutil.rmtree, _dir, True)
_aclfile = _dir / "users.acl"
_shipped = (ROOT / "deploy" / "acl" / "users.acl").read_text()
_aclfile.write_text(_shipped + "user admin on >admin-test-only ~* &* +@all\n")

_embedded_init = EmbeddedRedis.__init__
_worker_init = helpers.WorkerThread.__init__


def _init_with_acl(self: EmbeddedRedis, *args: Any, **kwargs: Any) -> None:
    _embedded_init(self, *args, **kwargs)
    self.extra_args += ["--aclfile", str(_aclfile)]


def _init_as_worker(self: helpers.WorkerThread, url: str, *args: Any, **kwargs: Any) -> None:
    _worker_init(self, url.replace(f"{ADMIN}@", f"{WORKER}@"), *args, **kwargs)


EmbeddedRedis.__init__ = _init_with_acl  # type: ignore[method-assign]
EmbeddedRedis.url = property(lambda self: f"redis://{ADMIN}@127.0.0.1:{self.port}/0")  # type: ignore[method-assign,assignment]
helpers.WorkerThread.__init__ = _init_as_worker  # type: ignore[method-assign]
