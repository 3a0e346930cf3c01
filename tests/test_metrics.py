"""``/metrics``: Triton's names, ``model``/``version`` labels, no ``_created``, no group gauges, NVML when present."""

from __future__ import annotations

import types
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from producer import Client
from redis_infer_protocol.codec import Status, Timing
from tests.fakes import TimesTen
from tests.fleet_helpers import FleetThread, write_model
from tests.helpers import Samples, WorkerThread, collect, make_affine_model, metric_samples, metric_value, rand, send
from worker.observability import Metrics
from worker.testing import wait_until

LABELS = {"model": "affine", "version": "3"}


def _ms(value: float) -> int:
    return int(value * 1_000_000)


def test_triton_counters_are_exposed_under_their_own_names_with_model_and_version() -> None:
    metrics = Metrics(model="affine", version="3", nvml=None)
    hooked = Timing(enqueued_ns=_ms(1), batched_ns=_ms(3), compute_start_ns=_ms(4), preprocess_end_ns=_ms(5),
                    postprocess_start_ns=_ms(7), compute_end_ns=_ms(8), published_ns=_ms(9))  # fmt: skip
    metrics.observe_replies(Status.OK, [hooked, hooked])
    metrics.observe_batch(5, hooked)
    for status in (Status.EXPIRED, Status.BUSY, Status.INTERNAL, Status.MALFORMED):
        metrics.observe_reply(status, hooked)  # failures: counted, no durations
    text = metrics.render().decode()
    for name in ("nv_inference_request_success", "nv_inference_count", "nv_inference_queue_duration_us"):
        assert f"# TYPE {name} counter\n" in text and f"\n{name}{{" in text  # Triton's name: no _total
    samples = metric_samples(text)
    assert metric_value(samples, "nv_inference_request_success_total", **LABELS) == 2
    failures = {r: metric_value(samples, "nv_inference_request_failure_total", reason=r, **LABELS) for r in
                ("REJECTED", "CANCELED", "BACKEND", "OTHER")}  # fmt: skip
    assert failures == {"REJECTED": 2, "CANCELED": 0, "BACKEND": 1, "OTHER": 1}
    assert metric_value(samples, "redis_infer_replies_total", status="EXPIRED", **LABELS) == 1
    assert metric_value(samples, "nv_inference_count_total", **LABELS) == 5
    assert metric_value(samples, "nv_inference_exec_count_total", **LABELS) == 1
    per_request_us = {"request": 8000, "queue": 2000, "compute_input": 1000, "compute_infer": 2000,
                      "compute_output": 1000}  # fmt: skip
    for stage, us in per_request_us.items():
        assert metric_value(samples, f"nv_inference_{stage}_duration_us_total", **LABELS) == 2 * us, stage
    assert metric_value(samples, "redis_infer_request_duration_seconds_count", **LABELS) == 6
    _assert_every_series_labelled(samples, LABELS)


def _assert_every_series_labelled(samples: Samples, labels: dict[str, str]) -> None:
    assert samples
    for name, lbl in samples:
        assert not name.endswith("_created"), name
        assert not name.startswith("redis_infer_group_"), name  # the exporter's, once per deployment
        if not name.startswith("nv_gpu_"):
            assert labels.items() <= dict(lbl).items(), (name, lbl)


def test_a_fleet_renders_every_model_with_one_help_and_type_per_family() -> None:
    first, second = Metrics(model="a", nvml=None), Metrics(model="b", version="2", nvml=None)
    first.serve_also([second])
    second.observe_replies(Status.OK, [Timing()])
    text = first.render().decode()
    assert text.count("# TYPE nv_inference_request_success counter\n") == 1
    samples = metric_samples(text)
    assert metric_value(samples, "nv_inference_request_success_total", model="a", version="") == 0
    assert metric_value(samples, "nv_inference_request_success_total", model="b", version="2") == 1


class _Memory(types.SimpleNamespace):
    used: int
    total: int


def _fake_nvml(fail: bool = False) -> Any:
    def uuid(handle: int) -> bytes:
        if fail and handle == 1:  # after the first GPU's series were read
            raise RuntimeError("GPU is lost")
        return f"GPU-{handle}".encode()

    return types.SimpleNamespace(
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=uuid,
        nvmlDeviceGetMemoryInfo=lambda h: _Memory(used=(h + 1) * 1000, total=8000),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=25 * (h + 1)),
    )


def test_gpu_memory_and_utilization_come_from_nvml_when_present() -> None:
    samples = metric_samples(Metrics(model="affine", nvml=_fake_nvml()).render().decode())
    assert metric_value(samples, "nv_gpu_memory_used_bytes", gpu_uuid="GPU-1") == 2000
    assert metric_value(samples, "nv_gpu_memory_total_bytes", gpu_uuid="GPU-0") == 8000
    assert metric_value(samples, "nv_gpu_utilization", gpu_uuid="GPU-1") == 0.5
    for nvml in (None, _fake_nvml(fail=True)):  # absent, or failing at scrape time: no GPU series, a scrape
        samples = metric_samples(Metrics(model="affine", nvml=nvml).render().decode())
        assert not [name for name, _ in samples if name.startswith("nv_gpu_")]
        assert metric_value(samples, "nv_inference_count_total", model="affine") == 0


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def affine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_affine_model(tmp_path_factory.mktemp("models") / "affine.onnx")


@pytest.mark.integration
def test_scrape_of_a_running_worker_after_known_traffic(
    redis_url: str, redis_client: redis.Redis, affine: Path
) -> None:
    http = {"host": "127.0.0.1", "port": 0}
    with WorkerThread(redis_url, model={"path": affine, "version": "3"}, http=http) as wt:
        worker = wt.worker
        assert worker is not None
        wait_until(lambda: worker.http_port is not None, what="http port")
        for i in range(6):
            send(redis_client, "affine", {"x": rand(2, 3)}, request_id=f"m{i}")
        send(redis_client, "affine", {"x": rand(2, 3).astype(np.float64)}, request_id="bad")
        assert sorted(r.status for r in collect(redis_client, 7).values()).count(Status.OK) == 6
        text = _scrape(worker.http_port or 0)
        batches = worker.stats.batches
    samples = metric_samples(text)
    assert metric_value(samples, "nv_inference_request_success_total", **LABELS) == 6
    assert (
        metric_value(samples, "nv_inference_request_failure_total", reason="OTHER", **LABELS) == 1
    )  # INVALID_ARGUMENT
    assert metric_value(samples, "nv_inference_count_total", **LABELS) == 12  # rows
    assert 1 <= metric_value(samples, "nv_inference_exec_count_total", **LABELS) == batches <= 6
    assert metric_value(samples, "nv_inference_request_duration_us_total", **LABELS) > 0
    assert metric_value(samples, "nv_inference_compute_infer_duration_us_total", **LABELS) > 0
    assert metric_value(samples, "nv_inference_compute_input_duration_us_total", **LABELS) == 0  # no hook
    assert metric_value(samples, "redis_infer_redis_up", **LABELS) == 1
    _assert_every_series_labelled(samples, LABELS)


@pytest.mark.integration
def test_the_fleet_serves_every_models_series_on_its_one_port(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "repo"
    for name in ("one", "two"):
        make_affine_model(write_model(root, name, 'file = "m.onnx"\n') / "m.onnx")
    x = np.ones((1, 3), np.float32)
    with FleetThread(redis_url, root, http={"host": "127.0.0.1", "port": 0}) as fleet:
        assert fleet.fleet is not None
        served = fleet.fleet.members[0].worker
        wait_until(lambda: served.http_port is not None, what="http port")
        for name, count in (("one", 1), ("two", 2)):
            with Client(redis_url, model=name, stream=None) as client:
                for _ in range(count):
                    client.infer({"x": x}, timeout=30)  # raises unless OK
        samples = metric_samples(_scrape(served.http_port or 0))
    assert metric_value(samples, "nv_inference_request_success_total", model="one", version="") == 1
    assert metric_value(samples, "nv_inference_request_success_total", model="two", version="") == 2


@pytest.mark.integration
def test_the_queue_gauges_are_read_at_each_scrape(redis_url: str, redis_client: redis.Redis) -> None:
    engine = TimesTen(name="slow", max_batch=2, delay_s=3.0)
    http = {"host": "127.0.0.1", "port": 0}
    # A heartbeat every 20 s: the gauges cannot be the ones the heartbeat's health check last saw.
    with WorkerThread(redis_url, engine=engine, model={"name": "slow"}, batch={"max_size": 2}, http=http,
                      health_ttl_s=60) as wt:  # fmt: skip
        worker = wt.worker
        assert worker is not None
        wait_until(lambda: worker.http_port is not None, what="http port")
        for i in range(2):
            send(redis_client, "slow", {"x": np.ones((1, 2), np.float32)}, request_id=f"busy{i}")
        wait_until(lambda: engine.runs, what="the only slot busy for 3 s")
        for i in range(2):  # max_queued (2 x 2 rows x 1 slot) counts the busy slot's 2: 2 more are read
            send(redis_client, "slow", {"x": np.ones((1, 2), np.float32)}, request_id=f"waits{i}")

        def queue() -> tuple[float, float]:
            samples = metric_samples(_scrape(worker.http_port or 0))
            return (metric_value(samples, "nv_inference_pending_request_count", model="slow"),
                    metric_value(samples, "redis_infer_inflight_batches", model="slow"))  # fmt: skip

        wait_until(lambda: queue() == (2, 1), what="2 requests waiting behind the busy slot", timeout_s=2.5)
        collect(redis_client, 4)
