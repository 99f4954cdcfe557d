"""A broken langgraph.json stops start-up with one clear line naming the problem."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.config import DEFAULT_JOBS, DEFAULT_MAX_BODY_BYTES, ConfigError, load_settings


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentd.cli", "serve", "--config", str(config), "--port", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _write(tmp_path: Path, graphs: object, **extra: object) -> Path:
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps({"graphs": graphs, **extra}))
    return path


@pytest.mark.parametrize(
    ("graphs", "extra", "expected"),
    [
        ({"g": "./missing.py:graph"}, {}, "file not found"),
        ({"g": "no_such_module_xyz:graph"}, {}, "module not found: no_such_module_xyz"),
        ({"g": "./ok.py:nope"}, {}, "has no attribute 'nope'"),
        ({"g": "./ok.py:NUMBER"}, {}, "not a graph or a graph factory"),
        ({"g": "./broken.py:graph"}, {}, "importing"),
        ({"g": "no-colon"}, {}, "graph 'g' must be"),
        ({}, {}, "'graphs' must be a non-empty object"),
        ({"g": "./ok.py:graph"}, {"env": "./missing.env"}, "env file not found"),
        ({"g": "./ok.py:graph"}, {"dependencies": "."}, "'dependencies' must be a list"),
        # Configured but not served: the handlers would protect nothing.
        (
            {"g": "./ok.py:graph"},
            {"auth": {"path": "./auth.py:auth"}},
            "'auth': custom authentication is not supported yet",
        ),
    ],
)
def test_bad_config_is_one_clear_line(
    tmp_path: Path, graphs: object, extra: dict[str, object], expected: str
) -> None:
    (tmp_path / "ok.py").write_text("NUMBER = 3\ngraph = None\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    result = _serve(_write(tmp_path, graphs, **extra))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agentd: ") and expected in lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    result = _serve(tmp_path / "nope.json")
    assert result.returncode == 2
    assert result.stderr.strip() == f"agentd: config file not found: {tmp_path / 'nope.json'}"


def test_invalid_json_config(tmp_path: Path) -> None:
    path = tmp_path / "langgraph.json"
    path.write_text("{nope")
    result = _serve(path)
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_bad_environment_number(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("graph = None\n")
    config = _write(tmp_path, {"g": "./ok.py:graph"})
    result = subprocess.run(
        [sys.executable, "-m", "agentd.cli", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "BG_JOB_MAX_RETRIES": "many"},
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "agentd: BG_JOB_MAX_RETRIES must be a positive integer, got 'many'"
    )


def _config(tmp_path: Path, **extra: object) -> Path:
    (tmp_path / "ok.py").write_text("graph = None\n")
    return _write(tmp_path, {"g": "./ok.py:graph"}, **extra)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"auth": {"path": "./auth.py:auth"}}, "'auth': custom authentication is not supported"),
        ({"auth": {"disable_studio_auth": True}}, "'auth': custom authentication"),
        ({"encryption": {"path": "./enc.py:encryption"}}, "'encryption': custom encryption"),
        ({"ui": {"agent": "./ui.tsx"}}, "'ui': generative UI"),
        ({"ui_config": {"shared": ["react"]}}, "'ui_config': generative UI"),
        ({"disable_persistence": True}, "'disable_persistence': agentd always keeps its data"),
        ({"http": {"app": "./app.py:app"}}, "'http.app': custom routes"),
        ({"http": {"cors": {"allow_origins": ["*"]}}}, "'http.cors': CORS rules"),
        (
            {"http": {"configurable_headers": {"includes": ["x-user"]}}},
            "'http.configurable_headers'",
        ),
        ({"http": {"mount_prefix": "/api"}}, "'http.mount_prefix'"),
        ({"http": {"disable_store": True}}, "'http.disable_store': removing the /store routes"),
        ({"http": {"disable_assistants": True}}, "'http.disable_assistants'"),
        ({"http": {"disable_threads": True}}, "'http.disable_threads'"),
        ({"http": {"disable_runs": True}}, "'http.disable_runs'"),
        ({"http": {"disable_meta": True}}, "'http.disable_meta'"),
        ({"http": {"disable_webhook": True}}, "unknown key 'http.disable_webhook'"),
        ({"checkpointer": {"backend": "mongo"}}, "'checkpointer.backend' 'mongo' is not supported"),
        ({"checkpointer": {"path": "./saver.py:saver"}}, "'checkpointer.path': a custom"),
        ({"checkpointer": {"serde": {"pickle_fallback": True}}}, "'checkpointer.serde'"),
        ({"checkpointer": {"tll": {"default_ttl": 5}}}, "unknown key 'checkpointer.tll'"),
        ({"store": {"indx": {"dims": 3}}}, "unknown key 'store.indx'"),
    ],
)
def test_configured_but_not_served_stops_start_up(
    tmp_path: Path, extra: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_config(tmp_path, **extra))
    message = str(info.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(
    "extra",
    [
        {"auth": None},
        {"auth": {}},
        {"auth": {"path": None, "disable_studio_auth": False}},
        {"encryption": None, "ui": {}, "ui_config": None, "disable_persistence": False},
        {"http": {"disable_mcp": False, "disable_a2a": True, "disable_ui": True,
                  "disable_event_streaming": False, "disable_store": False, "cors": None,
                  "app": "", "configurable_headers": {"includes": []}, "mount_prefix": None}},
        # Agentd logs no request header, and has no custom middleware or routes to order.
        {"http": {"logging_headers": {"excludes": ["authorization"]},
                  "middleware_order": "auth_first", "enable_custom_route_auth": False}},
        {"checkpointer": {"backend": "default", "path": None, "serde": {}}},
        {"store": {"path": None}},
        {"$schema": "https://langgra.ph/schema.json"},
    ],
)  # fmt: skip
def test_settings_that_ask_for_nothing_are_accepted_quietly(
    tmp_path: Path, extra: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentd.config"):
        load_settings(_config(tmp_path, **extra))
    assert caplog.records == []


@pytest.mark.parametrize(
    "key",
    ["python_version", "node_version", "api_version", "base_image", "image_distro",
     "dockerfile_lines", "pip_config_file", "pip_installer", "keep_pkg_tools"],
)  # fmt: skip
def test_image_build_keys_are_warned_about(
    tmp_path: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentd.config"):
        load_settings(_config(tmp_path, **{key: "3.12"}))
    [record] = caplog.records
    message = record.getMessage()
    assert f"'{key}' only matters to an image build" in message and "\n" not in message


def test_unknown_top_level_key_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agentd.config"):
        load_settings(_config(tmp_path, chekpointer={"ttl": {"default_ttl": 5}}))
    [record] = caplog.records
    assert "unknown key 'chekpointer' is ignored" in record.getMessage()


def test_request_body_limit_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    monkeypatch.delenv("HTTP_MAX_REQUEST_BODY_BYTES", raising=False)
    assert load_settings(config).max_body_bytes == DEFAULT_MAX_BODY_BYTES == 8 * 1024 * 1024
    monkeypatch.setenv("HTTP_MAX_REQUEST_BODY_BYTES", "1048576")
    assert load_settings(config).max_body_bytes == 1048576
    for bad in ["0", "-5", "1.5", "8MB", "nan"]:
        monkeypatch.setenv("HTTP_MAX_REQUEST_BODY_BYTES", bad)
        with pytest.raises(ConfigError) as info:
            load_settings(config)
        assert str(info.value) == (
            f"HTTP_MAX_REQUEST_BODY_BYTES must be a positive integer, got {bad!r}"
        )


def test_env_file_is_loaded_without_overriding_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("AGENTD_T_A=from-file\nAGENTD_T_B=from-file\n")
    config = _write(tmp_path, {"g": "./ok.py:graph"}, env=".env")
    monkeypatch.setenv("AGENTD_T_B", "from-process")
    monkeypatch.delenv("AGENTD_T_A", raising=False)
    settings = load_settings(config)
    assert os.environ["AGENTD_T_A"] == "from-file"
    assert os.environ["AGENTD_T_B"] == "from-process"
    assert settings.data_dir == tmp_path / ".agentd"
    assert settings.jobs == DEFAULT_JOBS and settings.max_attempts == 3
    assert settings.run_timeout is None
    assert [g.graph_id for g in settings.graphs] == ["g"]
