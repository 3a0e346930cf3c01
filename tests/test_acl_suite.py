"""The worker's integration suite, run with its workers connected as the shipped ``worker`` ACL user."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SUITE = [
    "tests/test_worker_integration.py",
    "tests/test_recovery.py",
    "tests/test_reliability_delivery.py",
    "tests/test_worker_faults.py",
]


def test_integration_suite_passes_under_the_worker_role() -> None:
    """Any command or key the worker uses that the ``worker`` role lacks fails one of these (NOPERM)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.acl_plugin", "-p", "no:cacheprovider", *SUITE]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
