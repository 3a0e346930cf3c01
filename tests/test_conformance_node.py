"""Live conformance of the Node.js client (clients/node): a real redis-server, a real worker serving the
affine model, and clients/node/conformance/run.js driving ``InferClient`` through every scenario (OK,
batching, each error status the worker sends, deadlines, busy, hostile inputs, reply stream cleanup); then, as
the shipped ``producer`` ACL user under a published max_backlog, the scenarios that role allows and a send round
whose tail the backlog script refuses (BUSY).

Skipped only when ``node`` is not installed (``.ci/run`` installs it, so CI never skips).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conformance_live import (
    ACL_SCENARIOS,
    BUSY_TAIL,
    SCENARIOS,
    Results,
    check_scenario,
    run_driver,
    run_under_the_producer_acl,
)
from tests.helpers import ROOT
from worker.embedded import EmbeddedRedis

SCRIPT = ROOT / "clients" / "node" / "conformance" / "run.js"
NODE = shutil.which("node")
STREAM = "conformance:requests"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the Node.js client cannot be run")


@pytest.fixture(scope="module")
def results(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """Runs every scenario once against one worker; maps scenario name to its result line."""
    yield run_driver([str(NODE), str(SCRIPT)], redis_server, tmp_path_factory.mktemp("conformance"), stream=STREAM)


def test_every_scenario_ran(results: Results) -> None:
    assert sorted(results) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(results: Results, scenario: str) -> None:
    check_scenario(results, scenario)


@pytest.fixture(scope="module")
def acl_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """The Node.js client as the shipped ``producer`` user, the worker as ``worker`` (shipped users.acl), under a
    published max_backlog: every request goes through the backlog script, which the role must allow."""
    workdir = tmp_path_factory.mktemp("conformance-node-acl")
    yield run_under_the_producer_acl([str(NODE), str(SCRIPT)], workdir, dict(os.environ))


@pytest.mark.parametrize("scenario", [*ACL_SCENARIOS, BUSY_TAIL])
def test_scenario_under_the_producer_acl(acl_results: Results, scenario: str) -> None:
    check_scenario(acl_results, scenario)
