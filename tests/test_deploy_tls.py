"""The compose TLS overlay as shipped: its certificates script, redis-server's own arguments from the overlay
and the worker's TLS settings from it, with the shipped ACL users, against a real redis-server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml

from redis_infer_protocol.codec import Status
from tests.helpers import ROOT, WorkerThread, collect, rand, send
from worker.embedded import find_redis_server, free_port
from worker.testing import wait_until

pytestmark = pytest.mark.integration
DEPLOY = ROOT / "deploy"
OVERLAY: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.tls.yaml").read_text())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(DEPLOY / "tls" / "make-certs.sh"), str(out), "127.0.0.1"], check=True,
                   capture_output=True)  # fmt: skip
    return out


def _local(value: str, certs: Path, port: int) -> str:
    """A container path or address of the overlay, as it is on this machine."""
    return (
        value.replace("/tls/", f"{certs}/")
        .replace("/etc/redis/users.acl", str(DEPLOY / "acl" / "users.acl"))
        .replace("redis:6379", f"127.0.0.1:{port}")
    )


@pytest.fixture(scope="module")
def tls_redis(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    args = [_local(a, certs, port) for a in OVERLAY["services"]["redis"]["command"][1:]]
    args[args.index("--tls-port") + 1] = str(port)
    data = tmp_path_factory.mktemp("redis-data")
    proc = subprocess.Popen([find_redis_server(), *args, "--dir", str(data), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: _client(certs, port, "monitor").ping(), what="TLS redis-server answers", timeout_s=20)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _client(certs: Path, port: int, user: str, *, cert: bool = True) -> redis.Redis:
    files = {"ssl_certfile": str(certs / f"{user}.pem"), "ssl_keyfile": str(certs / f"{user}.key")} if cert else {}
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs / "ca.pem"), username=user,
                       password=f"CHANGE-ME-{user}", socket_timeout=5, **files)  # fmt: skip


def test_only_mutual_tls_is_served(certs: Path, tls_redis: int) -> None:
    with pytest.raises(redis.ConnectionError):  # a client without a certificate is refused
        _client(certs, tls_redis, "producer", cert=False).ping()
    with pytest.raises(redis.ConnectionError):  # plain TCP is not served at all
        redis.Redis(host="127.0.0.1", port=tls_redis, socket_timeout=2).ping()


def test_worker_serves_with_the_overlays_settings(certs: Path, tls_redis: int, tmp_path: Path) -> None:
    from worker.testing import make_affine_model

    env = {k: _local(v, certs, tls_redis) for k, v in OVERLAY["services"]["worker"]["environment"].items()}
    overrides = {
        "url": env["WORKER_REDIS__URL"],
        "password": "CHANGE-ME-worker",
        "tls_ca_file": env["WORKER_REDIS__TLS_CA_FILE"],
        "tls_cert_file": env["WORKER_REDIS__TLS_CERT_FILE"],
        "tls_key_file": env["WORKER_REDIS__TLS_KEY_FILE"],
    }
    model = make_affine_model(tmp_path / "affine.onnx")
    producer = _client(certs, tls_redis, "producer")
    x = rand(2, 3)
    with WorkerThread(overrides["url"], model, redis=overrides):
        send(producer, "affine", {"x": x}, request_id="mtls")
        reply = collect(producer, 1)["mtls"]
    assert reply.status is Status.OK
    np.testing.assert_allclose(reply.outputs["y"], 2 * x + 1, rtol=1e-6)


def test_exporter_reads_with_the_overlays_settings(
    certs: Path, tls_redis: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from prometheus_client import generate_latest

    from producer.exporter import _client as exporter_client
    from producer.exporter import registry_for

    env = {k: _local(v, certs, tls_redis) for k, v in OVERLAY["services"]["exporter"]["environment"].items()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_INFER_PASSWORD", "CHANGE-ME-monitor")  # compose takes it from the environment
    client = exporter_client(argparse.Namespace(url=env["REDIS_INFER_URL"], redis_timeout_s=5.0))
    try:
        text = generate_latest(registry_for(client, ["infer:requests"])).decode()
    finally:
        client.close()
    assert "redis_infer_exporter_redis_up 1.0" in text
    assert 'redis_infer_stream_length{model="",stream="infer:requests"}' in text  # read as the monitor user
