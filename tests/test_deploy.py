"""The deploy files, checked offline: every YAML parses, the Kubernetes objects reference only what is
shipped (Secrets, keys, PVC, ports, Deployments), each worker Deployment has probes, a ScaledObject with lag
and pending triggers and a PodDisruptionBudget, every ``WORKER_*`` variable is a real setting, and the
alerts and dashboard use only metric names the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from producer.exporter import GroupCollector
from tests.helpers import ROOT
from worker.config import unknown_variables
from worker.nvml import gpu_families
from worker.observability import Metrics

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _objects() -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.glob("*.yaml")) for d in _docs(path)]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _objects() if o["kind"] == kind}


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path: Path) -> None:
    assert _docs(path), f"{path} is empty"


def test_k8s_objects_have_required_fields() -> None:
    objects = _objects()
    assert {o["kind"] for o in objects} >= {
        "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Secret", "PersistentVolumeClaim",
        "ScaledObject", "TriggerAuthentication",
    }  # fmt: skip
    for o in objects:
        assert o.get("apiVersion") and o.get("kind") and o["metadata"].get("name"), o


def _component(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"))


def _workers() -> dict[str, dict[str, Any]]:
    return {name: d for name, d in _by_kind("Deployment").items() if _component(d) == "worker"}


def _containers(
    deployments: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The containers of the worker Deployments (or of ``deployments``)."""
    chosen = _workers() if deployments is None else deployments
    return [(name, d, c) for name, d in chosen.items() for c in d["spec"]["template"]["spec"]["containers"]]


def test_deployments_reference_only_shipped_objects() -> None:
    secrets = {name: set(s["stringData"]) for name, s in _by_kind("Secret").items()}
    configmaps = _by_kind("ConfigMap")
    claims = _by_kind("PersistentVolumeClaim")
    assert len(_containers()) == 2
    assert {_component(d) for d in _by_kind("Deployment").values()} == {"worker", "exporter"}
    for name, deployment, container in _containers(_by_kind("Deployment")):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], (name, ref)
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_deployments_have_probes_metrics_port_and_cpu_request() -> None:
    for name, _deployment, container in _containers():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            env.update(_by_kind("ConfigMap")[source["configMapRef"]["name"]]["data"])
        assert int(env["WORKER_HTTP__PORT"]) == ports["metrics"], name
        for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, (name, probe)
        assert container["resources"]["requests"]["cpu"], name
        assert (
            float(env["WORKER_SHUTDOWN_GRACE_S"])
            < _deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        )


def test_every_worker_variable_is_a_setting() -> None:
    names: dict[str, str] = {}
    for _name, _deployment, container in _containers():
        names.update({e["name"]: "" for e in container.get("env", [])})
    for cm in _by_kind("ConfigMap").values():
        names.update(cm["data"])
    for compose_file in ("compose.yaml", "compose.tls.yaml"):
        names.update(_docs(DEPLOY / compose_file)[0]["services"]["worker"]["environment"])
    assert any(n.startswith("WORKER_") for n in names)
    assert unknown_variables(names) == []


def test_each_deployment_has_a_scaled_object_and_a_pdb() -> None:
    auths = _by_kind("TriggerAuthentication")
    secrets = {name: set(s["stringData"]) for name, s in _by_kind("Secret").items()}
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in _by_kind("ScaledObject").values()}
    pdbs = [p["spec"]["selector"]["matchLabels"] for p in _by_kind("PodDisruptionBudget").values()]
    for name, deployment in _workers().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdbs), f"{name}: no PDB"
        spec = scaled[name]["spec"]
        assert spec["pollingInterval"] > 0 and spec["minReplicaCount"] == 0
        kinds = set()
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis-streams"
            meta = trigger["metadata"]
            assert meta["stream"] == "infer:requests" and meta["consumerGroup"] == "workers"
            assert not any(k.endswith("FromEnv") for k in meta), "credentials belong in the TriggerAuthentication"
            kinds |= {k for k in ("lagCount", "pendingEntriesCount") if k in meta}
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]], ref
            assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} >= {"address", "username", "password"}
        assert kinds == {"lagCount", "pendingEntriesCount"}, name
    assert set(scaled) == set(_workers())


def _selects(service: dict[str, Any], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def test_metrics_services_select_workers_and_the_one_exporter() -> None:
    services = _by_kind("Service")
    workers, exporter = services["redis-infer-worker-metrics"], services["redis-infer-exporter"]
    for deployment in _by_kind("Deployment").values():
        assert _selects(workers, deployment) == (_component(deployment) == "worker")
        assert _selects(exporter, deployment) == (_component(deployment) == "exporter")
    (deployment,) = [d for d in _by_kind("Deployment").values() if _component(d) == "exporter"]
    assert deployment["spec"]["replicas"] == 1  # two would export every group series twice
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "exporter" and container["command"] == ["redis-infer"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert container["args"][container["args"].index("--port") + 1] == str(port)
    monitor = _docs(K8S / "secret.example.yaml")[1]["stringData"]
    assert monitor["username"] == "monitor"  # the read-only ACL user, as for KEDA
    # the ServiceMonitor scrapes every Service of the project through its port named "metrics"
    (monitor_obj,) = _docs(DEPLOY / "prometheus" / "servicemonitor.yaml")
    selector = monitor_obj["spec"]["selector"]["matchLabels"]
    for service in services.values():
        assert all(service["metadata"]["labels"].get(k) == v for k, v in selector.items())
        assert service["spec"]["ports"][0]["name"] == "metrics" == monitor_obj["spec"]["endpoints"][0]["port"]
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_compose_runs_as_shipped() -> None:
    compose = _docs(DEPLOY / "compose.yaml")[0]
    redis, worker = compose["services"]["redis"], compose["services"]["worker"]
    assert "ports" not in redis, "Redis must not be published by default"
    assert int(redis["image"].split(":")[1].split(".")[0]) >= 7
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    acl_mount = next(v for v in redis["volumes"] if v.endswith(":/etc/redis/users.acl:ro"))
    assert command[command.index("--aclfile") + 1] == "/etc/redis/users.acl"
    assert acl_mount.split(":")[0] == "./acl/users.acl"  # shipped by the ACL work in deploy/acl/
    assert worker["environment"]["WORKER_HTTP__PORT"] == "9100"
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    build = worker["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    exporter = compose["services"]["exporter"]
    assert exporter["build"] == build and exporter["entrypoint"] == ["redis-infer"]
    assert exporter["command"][0] == "exporter" and exporter["environment"]["REDIS_INFER_URL"].startswith(
        "redis://monitor@redis:6379"
    )
    assert exporter["command"][exporter["command"].index("--port") + 1] in exporter["expose"]
    scrape = _docs(DEPLOY / "prometheus" / "prometheus.yml")[0]["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    assert jobs["redis-infer-worker"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": 9100}
    assert jobs["redis-infer-exporter"]["static_configs"][0]["targets"] == [f"exporter:{exporter['expose'][0]}"]
    for service in ("prometheus", "grafana"):
        for volume in compose["services"][service]["volumes"]:
            assert (DEPLOY / volume.split(":")[0]).is_file(), volume


def test_images_ship_every_package_and_the_licence() -> None:
    include = re.search(
        r"\[tool\.setuptools\.packages\.find\]\ninclude = \[(.*)\]", (ROOT / "pyproject.toml").read_text()
    )
    assert include is not None
    packages = {p.strip(' "*') for p in include.group(1).split(",")}
    stages = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")[1:]
    assert len(stages) == 2 and "redis_infer_protocol" in packages
    for stage in stages:
        copied = {line.split()[1] for line in stage.splitlines() if line.startswith("COPY ")}
        assert packages <= copied, packages - copied
        assert "LICENSE" in stage.split("COPY pyproject.toml", 1)[1].splitlines()[0]


def _exported() -> set[str]:
    """Every series name a worker or the group exporter exports."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for metric in Metrics(nvml=None).families():  # names from the samples where any (Triton's have no _total)
        names.update([s.name for s in metric.samples] or [metric.name + suffix for suffix in suffixes[metric.type]])
    from tests.test_metrics import _fake_nvml

    for metric in gpu_families(_fake_nvml()):  # the GPU series, exported where NVML sees a GPU
        names.update(s.name for s in metric.samples)
    for metric in GroupCollector(None, []).describe():  # type: ignore[arg-type]
        names.update(metric.name + suffix for suffix in suffixes[metric.type])
    return names


def _used(text: str) -> set[str]:
    return set(re.findall(r"\b(?:redis_infer|nv)_[a-z_]+", text))


def test_alerts_use_exported_metrics() -> None:
    (rule,) = _docs(DEPLOY / "prometheus" / "rules.yaml")
    assert rule["kind"] == "PrometheusRule"
    rules = rule["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"RedisInferLagGrowing", "RedisInferDeadLetters", "RedisInferNoConsumers",
                                           "RedisInferOldestPendingTooOld"}  # fmt: skip
    oldest = next(r for r in rules if r["alert"] == "RedisInferOldestPendingTooOld")
    assert "redis_infer_group_oldest_pending_age_seconds" in oldest["expr"]
    used = _used(json.dumps(rules))
    assert used and used <= _exported(), used - _exported()


def test_dashboard_loads_and_uses_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "redis-infer.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = _used(" ".join(exprs))
    assert {"redis_infer_group_lag", "redis_infer_dead_lettered_total", "redis_infer_group_oldest_pending_age_seconds",
            "redis_infer_workers"} <= used  # fmt: skip
    assert used <= _exported(), used - _exported()


def test_procfile_workers_share_one_redis_and_serve(redis_url: str, redis_client: Any, real_model: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    from redis_infer_protocol import keys
    from tests.helpers import collect, send, stop_process

    honcho = Path(sys.executable).with_name("honcho")
    if not honcho.exists():
        pytest.skip("honcho is not installed (pip install -e '.[dev]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", WORKER_REDIS__URL=redis_url,
               WORKER_MODEL__PATH=str(real_model), WORKER_STREAMS__BLOCK_MS="200")  # fmt: skip
    proc = subprocess.Popen(
        [str(honcho), "-f", str(ROOT / "Procfile"), "start", "-c", "worker=2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        ready: list[str] = []
        deadline = time.monotonic() + 60
        while len(ready) < 2:  # both processes join the group on the one Redis
            assert proc.poll() is None, "honcho exited"
            assert time.monotonic() < deadline, "the Procfile's two workers did not both become ready"
            ready = [
                k.decode() for k in redis_client.scan_iter(match=keys.health_pattern(keys.DEFAULT_STREAM))
                if redis_client.hget(k, "status") == b"ready"
            ]  # fmt: skip
            time.sleep(0.05)
        image = np.zeros((1, 3, 224, 224), dtype=np.float32)
        send(redis_client, real_model.stem, {"x": image}, request_id="procfile")
        assert collect(redis_client, 1)["procfile"].status == "OK"
        stop_process(proc, signal.SIGTERM)  # honcho passes SIGTERM on and exits 143
        # each worker drained and cleared its heartbeat: a clean stop, not a kill
        assert list(redis_client.scan_iter(match=keys.health_pattern(keys.DEFAULT_STREAM))) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
