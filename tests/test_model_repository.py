"""The per-model key rule and the model repository's validation (issue 13): no Redis needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.crc import key_slot

from redis_infer_protocol import keys
from tests.fleet_helpers import write_model
from worker.config import load_settings
from worker.errors import ConfigError
from worker.repository import load_repository, model_settings


def test_model_stream_rule() -> None:
    assert keys.model_stream("resnet50") == "infer:requests:{resnet50}"
    assert keys.model_stream("resnet50", "2") == "infer:requests:{resnet50}:2"
    assert keys.model_stream("m", prefix="t1:") == "t1:{m}"


@pytest.mark.parametrize("name", ["", "a{b", "a}b", "a:b", "a b", "-a", "é", "x" * 129])
def test_model_stream_refuses_names_that_break_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        keys.model_stream(name)


@pytest.mark.parametrize("version", ["", "1:2", "{1}", "x" * 65, "dead", "limits", "worker"])
def test_model_stream_refuses_bad_versions(version: str) -> None:
    with pytest.raises(ValueError, match="model version"):
        keys.model_stream("m", version)


def test_every_key_of_a_model_shares_one_cluster_hash_slot() -> None:
    stream = keys.model_stream("resnet50")
    versioned = keys.model_stream("resnet50", "7")
    model_keys = [*keys.stream_keys(stream), *keys.stream_keys(versioned)]
    model_keys += [keys.health_key(stream, "host-1"), keys.health_key(versioned, "host-2")]
    assert {key_slot(k.encode()) for k in model_keys} == {key_slot(b"resnet50")}
    assert key_slot(keys.model_stream("other").encode()) != key_slot(b"resnet50")


GOOD = 'file = "m.onnx"\n'


def _repo(tmp_path: Path, **configs: str) -> Path:
    root = tmp_path / "repo"
    for folder, config in configs.items():
        write_model(root, folder, config)
        (root / folder / "m.onnx").write_bytes(b"not read at validation")
    return root


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (GOOD + "instances = 0\n", r"model 'bad' \(.*config.toml\): instances: Input should be greater than"),
        (GOOD + "[batching]\nmax_size = 4\npreferred_sizes = [8]\n", r"model 'bad' .*batching: .*must not exceed"),
        (GOOD + "[batching]\nmax_delay_ms = -1\n", r"model 'bad' .*batching.max_delay_ms: "),
        (GOOD + "bogus = 1\n", r"model 'bad' .*bogus: Extra inputs are not permitted"),
        (GOOD + "[hook]\noptions = {}\n", r"model 'bad' .*hook.class: Field required"),
        (GOOD + 'version = "1:2"\n', r"model 'bad' .*version: model version '1:2'"),
        (GOOD + 'name = "a{b}"\n', r"model 'a\{b\}' .*name: model name 'a\{b\}'"),
        ('file = "missing.onnx"\n', r"model 'bad' .*file: .*missing.onnx does not exist"),
        ("file = [\n", r"model 'bad' .*cannot read"),
    ],
)
def test_validation_errors_name_the_model_and_the_field(tmp_path: Path, config: str, message: str) -> None:
    root = _repo(tmp_path, good=GOOD, bad=config)
    with pytest.raises(ConfigError, match=message):
        load_repository(root)


def test_selection_duplicates_and_empty_repositories(tmp_path: Path) -> None:
    root = _repo(tmp_path, a=GOOD, b=GOOD + 'version = "2"\n', c=GOOD)
    entries = load_repository(root)
    assert [(e.name, e.stream) for e in entries] == [
        ("a", "infer:requests:{a}"), ("b", "infer:requests:{b}:2"), ("c", "infer:requests:{c}"),
    ]  # fmt: skip
    assert [e.name for e in load_repository(root, ["c", "a"])] == ["a", "c"]
    with pytest.raises(ConfigError, match=r"has no model \['zz'\]"):
        load_repository(root, ["a", "zz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no model"):
        load_repository(tmp_path / "empty")
    twin = _repo(tmp_path / "twin", a=GOOD, b=GOOD + 'name = "a"\n')
    with pytest.raises(ConfigError, match=r"would share the stream 'infer:requests:\{a\}'"):
        load_repository(twin)


def test_model_settings_give_each_model_its_own_stream_batching_and_slots(tmp_path: Path) -> None:
    config = GOOD + 'version = "3"\ninstances = 3\n[batching]\nmax_size = 4\nmax_delay_ms = 5\n'
    (entry,) = load_repository(_repo(tmp_path, m=config))
    base = load_settings(check_env=False, http={"port": 9100}, streams={"dead_letter_stream": "shared:dead"})
    first = model_settings(base, entry, first=True)
    assert (first.stream, first.dead_letter_stream) == ("infer:requests:{m}:3", "infer:requests:{m}:3:dead")
    assert (first.model.name, first.model.version, first.model.path) == ("m", "3", entry.path)
    assert (first.batch.max_size, first.batch.max_delay_ms, first.onnx.sessions) == (4, 5.0, 3)
    assert first.http.port == 9100 and model_settings(base, entry, first=False).http.port is None
    slow = load_repository(_repo(tmp_path / "s", m=GOOD + "[batching]\nmax_delay_ms = 5000\n"))[0]
    with pytest.raises(ConfigError, match=r"model 'm': batching.max_delay_ms \(5000.0\)"):
        model_settings(base, slow, first=True)


def test_warmup_runs_fixed_shapes_and_names_the_model_and_field_otherwise(tmp_path: Path, real_model: Path) -> None:
    from tests.helpers import make_affine_model
    from worker.repository import load_model

    root = tmp_path / "repo"
    write_model(root, "real", f'file = "{real_model}"\n[warmup]\nbatch_sizes = [1, 2]\n')
    write_model(root, "affine", 'file = "a.onnx"\n[warmup]\nbatch_sizes = [1]\n')
    make_affine_model(root / "affine" / "a.onnx")
    base = load_settings(check_env=False)
    affine, real = load_repository(root)
    engine = load_model(real, model_settings(base, real, first=True))
    engine.close()
    with pytest.raises(ConfigError, match=r"model 'affine': warmup.batch_sizes: input 'x' has shape \[-1, -1\]"):
        load_model(affine, model_settings(base, affine, first=True))


def test_run_refuses_models_without_a_repository_and_a_missing_repository(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.__main__ import main

    assert main(["run", "--models", "a", "--redis-url", "redis://127.0.0.1:1"]) == 2
    assert "--models selects models of a repository" in caplog.text
    missing = tmp_path / "nope"
    assert main(["run", "--model-repository", str(missing), "--redis-url", "redis://127.0.0.1:1"]) == 2
    assert f"model repository {missing} is not a folder" in caplog.text


def test_hooks_load_from_a_module_a_file_or_the_folders_hook_py(tmp_path: Path) -> None:
    from worker.hooks import load_hook

    (tmp_path / "hook.py").write_text("class Mine:\n    pass\n", encoding="utf-8")
    assert type(load_hook("Mine", tmp_path)).__name__ == "Mine"
    assert type(load_hook("hook.py:Mine", tmp_path)).__name__ == "Mine"
    assert type(load_hook("demo.hook:UInt8Pixels")).__name__ == "UInt8Pixels"
    for ref, message in [
        ("Mine", "must be 'module:Class'"),  # no folder: no hook.py to look in
        ("hook.py:Nope", "has no class 'Nope'"),
        ("no_such_module_xyz:Hook", "cannot import no_such_module_xyz: ModuleNotFoundError"),
        ("other.py:Hook", "other.py does not exist"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_hook(ref, None if ref == "Mine" else tmp_path)
