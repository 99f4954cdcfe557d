"""Settings: the command line, the environment and ``langgraph.json``, validated once at
start-up into one typed object. A problem here stops start-up with one clear line."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

T = TypeVar("T")


# Runs executed at once by one process. A run is an asyncio task that mostly waits on model and
# tool I/O, so a slot costs memory, not a thread: the default is sized for I/O-bound agents.
DEFAULT_JOBS = 100


class ConfigError(Exception):
    """A configuration problem that must stop start-up; its message is the one line shown."""


@dataclass(frozen=True)
class GraphSpec:
    graph_id: str
    target: str  # "./file.py:attr" or "package.module:attr"
    description: str | None = None


@dataclass(frozen=True)
class Settings:
    config_path: Path
    host: str = "127.0.0.1"
    port: int = 8123
    data_dir: Path = Path(".agentd")
    jobs: int = DEFAULT_JOBS
    run_timeout: float | None = None  # seconds per attempt (BG_JOB_TIMEOUT_SECS)
    max_attempts: int = 3  # attempts before a run whose process keeps dying fails
    resumable_ttl: float = 600.0  # seconds a resumable run's events are kept after its end
    graphs: tuple[GraphSpec, ...] = ()
    dependencies: tuple[Path, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "agentd.sqlite"


def load_settings(
    config: str | os.PathLike[str] = "langgraph.json",
    *,
    host: str = "127.0.0.1",
    port: int = 8123,
    data_dir: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
) -> Settings:
    path = Path(config).resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    base = path.parent
    _apply_env(raw.get("env"), base)
    if jobs is None:
        jobs = _env_number("N_JOBS_PER_WORKER", int, DEFAULT_JOBS)
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    return Settings(
        config_path=path,
        host=host,
        port=port,
        data_dir=Path(data_dir).resolve() if data_dir else base / ".agentd",
        jobs=jobs,
        run_timeout=_env_number("BG_JOB_TIMEOUT_SECS", float, None),
        max_attempts=_env_number("BG_JOB_MAX_RETRIES", int, 3),
        resumable_ttl=_env_number("RESUMABLE_STREAM_TTL_SECONDS", float, 600.0),
        graphs=_parse_graphs(raw.get("graphs"), path),
        dependencies=_parse_dependencies(raw.get("dependencies", []), base, path),
        raw=raw,
    )


def _env_number(name: str, kind: type[T], default: T) -> T:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = kind(value)  # type: ignore[call-arg]
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if number <= 0:  # type: ignore[operator]
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return number


def _parse_graphs(graphs: Any, path: Path) -> tuple[GraphSpec, ...]:
    if not isinstance(graphs, dict) or not graphs:
        raise ConfigError(f"{path}: 'graphs' must be a non-empty object of name -> 'file.py:attr'")
    specs = []
    for graph_id, entry in graphs.items():
        description = None
        if isinstance(entry, dict):
            description = entry.get("description")
            entry = entry.get("path")
        if not isinstance(entry, str) or ":" not in entry:
            raise ConfigError(
                f"{path}: graph '{graph_id}' must be 'path/to/file.py:attr' or 'module:attr'"
            )
        specs.append(GraphSpec(graph_id, entry, description))
    return tuple(specs)


def _parse_dependencies(deps: Any, base: Path, path: Path) -> tuple[Path, ...]:
    if not isinstance(deps, list):
        raise ConfigError(f"{path}: 'dependencies' must be a list")
    # Local paths go on sys.path; package names are expected to be installed already.
    local = []
    for dep in deps:
        if isinstance(dep, str) and (dep.startswith(".") or dep.startswith("/")):
            local.append((base / dep).resolve())
    return tuple(local)


def _apply_env(env: Any, base: Path) -> None:
    """Export ``env`` (a dict or a .env path); variables already set in the process win."""
    if env is None:
        return
    if isinstance(env, str):
        env_path = (base / env).resolve()
        if not env_path.is_file():
            raise ConfigError(f"env file not found: {env_path}")
        values = {k: v for k, v in dotenv_values(env_path).items() if v is not None}
    elif isinstance(env, dict):
        values = {str(k): str(v) for k, v in env.items()}
    else:
        raise ConfigError("'env' must be an object or the path of a .env file")
    for key, value in values.items():
        os.environ.setdefault(key, value)
