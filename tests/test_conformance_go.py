"""Live conformance of the Go client (clients/go): the driver clients/go/cmd/conformance, built here into a
temporary directory, runs every scenario of tests/conformance_live.py against a real worker and
redis-server: the checklist every client passes (the same as the Node.js client's), then the spec rules of
SPEC_SCENARIOS.

Skipped only when ``go`` is not installed (``.ci/run`` installs it, so CI never skips). The module has no
dependencies, so the build needs no network: GOPROXY=off makes sure of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance_live import (
    ACL_SCENARIOS,
    BUSY_TAIL,
    SCENARIOS,
    SPEC_SCENARIOS,
    Results,
    check_scenario,
    run_driver,
    run_under_the_producer_acl,
)
from tests.helpers import ROOT
from worker.embedded import EmbeddedRedis

MODULE = ROOT / "clients" / "go"
GO = shutil.which("go")
STREAM = "conformance-go:requests"

pytestmark = pytest.mark.skipif(GO is None, reason="go is not installed: the Go client cannot be built")


def go_env(scratch: Path) -> dict[str, str]:
    """The environment for ``go build``: offline, this toolchain, caches somewhere writable."""
    env = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "", "CGO_ENABLED": "0"}
    home = Path(env.get("HOME", "/nonexistent"))
    if not os.access(home, os.W_OK):
        env.setdefault("GOCACHE", str(scratch / "gocache"))
        env.setdefault("GOPATH", str(scratch / "gopath"))
    return env


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("go-build")
    binary = scratch / "conformance"
    proc = subprocess.run(
        [str(GO), "build", "-o", str(binary), "./cmd/conformance"],
        cwd=MODULE, env=go_env(scratch), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"go build failed:\n{proc.stderr[-4000:]}"
    return binary


@pytest.fixture(scope="module")
def results(driver: Path, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """Runs every scenario once against one worker; maps scenario name to its result line."""
    yield run_driver([str(driver)], redis_server, tmp_path_factory.mktemp("conformance-go"), stream=STREAM)


def test_every_scenario_ran(results: Results) -> None:
    assert sorted(results) == sorted(SCENARIOS + SPEC_SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS + SPEC_SCENARIOS)
def test_scenario(results: Results, scenario: str) -> None:
    check_scenario(results, scenario)


@pytest.fixture(scope="module")
def acl_results(driver: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """The Go client as the shipped ``producer`` user, the worker as ``worker``, on redis-server with the
    shipped users.acl, under a published max_backlog (so through the backlog script): served, then BUSY."""
    workdir = tmp_path_factory.mktemp("conformance-go-acl")
    yield run_under_the_producer_acl([str(driver)], workdir, go_env(workdir))


@pytest.mark.parametrize("scenario", [*ACL_SCENARIOS, BUSY_TAIL])
def test_scenario_under_the_producer_acl(acl_results: Results, scenario: str) -> None:
    check_scenario(acl_results, scenario)


def test_module_has_no_dependencies() -> None:
    # CI builds with no module proxy: a require line would break the build there.
    go_mod = (MODULE / "go.mod").read_text()
    assert "require" not in go_mod and not (MODULE / "go.sum").exists()
