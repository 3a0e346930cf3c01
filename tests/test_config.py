from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import load_settings
from worker.errors import ConfigError


def test_env_prefix_and_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_STREAM", "jobs")
    monkeypatch.setenv("WORKER_BATCH__MAX_SIZE", "32")
    monkeypatch.setenv("WORKER_BATCH__PREFERRED_SIZES", "[16, 8]")
    monkeypatch.setenv("WORKER_MODEL__NAME", "clf")
    settings = load_settings(model={"path": Path("m.onnx")})  # CLI override merges with env
    assert settings.stream == "jobs"
    assert settings.batch.max_size == 32
    assert settings.batch.preferred_sizes == [8, 16]
    assert settings.model.path == Path("m.onnx")
    assert settings.model_name == "clf"
    assert settings.dead_letter_stream == "jobs:dead"


def test_model_name_defaults_to_file_stem() -> None:
    assert load_settings(model={"path": Path("/x/resnet50.onnx")}).model_name == "resnet50"


def test_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("WORKER_GROUP=from-dotenv\n")
    assert load_settings().group == "from-dotenv"


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("WORKER_BATCH__MAX_SIZE", "zero", "WORKER_BATCH__MAX_SIZE"),
        ("WORKER_BATCH__MAX_SIZE", "0", "WORKER_BATCH__MAX_SIZE"),
        ("WORKER_BACKEND", "tpu", "WORKER_BACKEND"),
        ("WORKER_BATCH__MAX_DELAY_MS", "-1", "WORKER_BATCH__MAX_DELAY_MS"),
        ("WORKER_TENSORRT__CONTEXTS", "0", "WORKER_TENSORRT__CONTEXTS"),
    ],
)
def test_invalid_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_preferred_sizes_above_max_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_BATCH__MAX_SIZE", "4")
    monkeypatch.setenv("WORKER_BATCH__PREFERRED_SIZES", "[8]")
    with pytest.raises(ConfigError, match="WORKER_BATCH"):
        load_settings()


def test_missing_model_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="WORKER_MODEL__PATH"):
        _ = load_settings().model_name


def test_list_settings_given_as_flag_text_are_json() -> None:
    """A flag hands its value over as text: a list setting takes it as JSON, as the environment would."""
    settings = load_settings(check_env=False, streams={"reply_prefixes": '["infer:reply:a:", "infer:reply:b:"]'})
    assert settings.streams.allowed_reply_prefixes == ("infer:reply:a:", "infer:reply:b:")
    with pytest.raises(ConfigError, match="not JSON"):
        load_settings(check_env=False, streams={"reply_prefixes": "infer:reply:a:"})
