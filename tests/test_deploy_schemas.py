"""The deploy files against their schemas, offline: Kubernetes objects with kubernetes-validate's bundled
schemas (strict: an unknown field fails), compose files against the Compose Specification's JSON schema
(vendored in tests/schemas/), the KEDA and prometheus-operator objects field by field (their CRDs have no
bundled schema), and the Grafana dashboard against what Grafana needs to load and draw it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helpers import ROOT
from tests.test_deploy import _exported

DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSIONS = ("1.25.0", "1.37.0")  # the oldest the manifests state, and the newest bundled
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    paths = [*sorted((DEPLOY / "k8s").glob("*.yaml")), *sorted((DEPLOY / "prometheus").glob("*.yaml"))]
    return [(f"{p.relative_to(DEPLOY)}:{d['kind']}/{d['metadata']['name']}", d) for p in paths for d in _docs(p)]


BUILTIN = [(name, o) for name, o in _k8s_objects() if not o["apiVersion"].startswith(CRD_GROUPS)]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "obj"), BUILTIN, ids=[name for name, _ in BUILTIN])
def test_kubernetes_objects_validate_strictly(name: str, obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_catches_a_misspelled_field() -> None:
    (_, deployment) = next((n, o) for n, o in BUILTIN if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


# ---------------------------------------------------------------------------------------------- compose


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_files_follow_the_compose_spec(name: str) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in _compose_validator().iter_errors(_docs(DEPLOY / name)[0])
    ]
    assert errors == []


def test_compose_schema_catches_a_misspelled_field() -> None:
    compose = _docs(DEPLOY / "compose.yaml")[0]
    compose["services"]["worker"]["healthchek"] = compose["services"]["worker"].pop("healthcheck")
    assert not _compose_validator().is_valid(compose)


# ------------------------------------------------------------------------------------------------- KEDA

# KEDA >= 2.11 (keda.sh/docs/2.11/concepts/scaling-deployments, .../scalers/redis-streams): the fields read.
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
                      "triggers"}  # fmt: skip
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REDIS_STREAMS_METADATA = {"address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv",
                          "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount", "streamLength",
                          "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex"}  # fmt: skip
REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key"}


def _keda(kind: str) -> list[dict[str, Any]]:
    return [o for _, o in _k8s_objects() if o["kind"] == kind and o["apiVersion"] == "keda.sh/v1alpha1"]


def test_keda_objects_use_only_known_fields() -> None:
    deployments = {o["metadata"]["name"] for _, o in BUILTIN if o["kind"] == "Deployment"}
    auths = {o["metadata"]["name"] for o in _keda("TriggerAuthentication")}
    for scaled in _keda("ScaledObject"):
        spec = scaled["spec"]
        assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
        assert spec["scaleTargetRef"]["name"] in deployments
        for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            assert isinstance(spec[key], int) and spec[key] >= 0, key
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert set(trigger) <= TRIGGER and trigger["type"] == "redis-streams"
            meta = trigger["metadata"]
            assert set(meta) <= REDIS_STREAMS_METADATA, set(meta) - REDIS_STREAMS_METADATA
            assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
            assert "lagCount" not in meta or "activationLagCount" in meta  # required with lagCount in 2.11
            assert meta["enableTLS"] in ("true", "false")
            assert trigger["authenticationRef"]["name"] in auths
    for auth in _keda("TriggerAuthentication"):
        assert set(auth["spec"]) == {"secretTargetRef"}
        for ref in auth["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] in REDIS_AUTH_PARAMETERS


def test_prometheus_operator_objects() -> None:
    (rule,) = [o for _, o in _k8s_objects() if o["kind"] == "PrometheusRule"]
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
            assert re.fullmatch(r"\d+[smh]", r.get("for", "1m")), r["alert"]
            assert r["annotations"]["runbook"].startswith("docs/operations.md#runbook-")
            anchor = r["annotations"]["runbook"].split("#")[1]
            assert f"### {anchor.removeprefix('runbook-').replace('-', ' ')}" in _runbook_headings(), anchor
    (monitor,) = [o for _, o in _k8s_objects() if o["kind"] == "ServiceMonitor"]
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    assert all(set(e) <= {"port", "path", "interval", "scrapeTimeout"} for e in monitor["spec"]["endpoints"])


def _runbook_headings() -> str:
    text = (ROOT / "docs" / "operations.md").read_text()
    return "\n".join(f"### {h.lower()}" for h in re.findall(r"^### Runbook: (.+)$", text, flags=re.M))


# ---------------------------------------------------------------------------------------------- Grafana

PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text", "row"}


def test_grafana_dashboard_loads_and_draws() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "redis-infer.json").read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES and panel["title"], panel.get("id")
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs) and all(
            t["expr"].count("(") == t["expr"].count(")") for t in panel["targets"]
        )
    used = set(re.findall(r"\bredis_infer_[a-z_]+", json.dumps(dashboard["panels"])))
    assert used <= _exported(), used - _exported()
    provisioned = _docs(DEPLOY / "grafana" / "datasource.yaml")[0]["datasources"]
    assert [d["type"] for d in provisioned] == ["prometheus"]  # what the $datasource variable offers
