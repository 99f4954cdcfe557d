"""A broken langgraph.json stops start-up with one clear line naming the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.config import DEFAULT_JOBS, load_settings


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
    assert result.stderr.strip() == "agentd: BG_JOB_MAX_RETRIES must be a positive integer, got 'many'"


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
