"""Settings: the command line, the environment and ``langgraph.json``, validated once at
start-up into one typed object. A problem here stops start-up with one clear line."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from agentd.storage import postgres_url
from agentd.storage.base import LEASE_SECONDS

T = TypeVar("T")
log = logging.getLogger("agentd.config")


# Runs executed at once by one process. A run is an asyncio task that mostly waits on model and
# tool I/O, so a slot costs memory, not a thread: the default is sized for I/O-bound agents.
DEFAULT_JOBS = 100
# A worker renews the leases of the runs it holds every HEARTBEAT_SECONDS; a run not renewed
# for LEASE_SECONDS (its worker died, stalled or lost the database) is taken back and resumed
# from its last checkpoint by another attempt. Longer leases survive longer stalls; shorter
# ones resume a dead worker's runs sooner.
HEARTBEAT_SECONDS = 5.0
# At SIGTERM a worker stops claiming and gives the runs under way this long to finish; the rest
# are handed back (uncounted, their leases released) for another process or the next start.
DRAIN_SECONDS = 10.0
# The largest request body accepted (HTTP_MAX_REQUEST_BODY_BYTES). The official server allows
# 300 MiB; a body is parsed and validated in memory, so agentd keeps the default to what a run
# input, a state update or a store item plausibly needs.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class ConfigError(Exception):
    """A configuration problem that must stop start-up; its message is the one line shown."""


@dataclass(frozen=True)
class GraphSpec:
    graph_id: str
    target: str  # "./file.py:attr" or "package.module:attr"
    description: str | None = None


@dataclass(frozen=True)
class WebhookUrlPolicy:
    """``webhooks.url``: which webhook URLs runs may name (checked at creation and at send)."""

    require_https: bool = False
    disable_loopback: bool = True  # 127/8, ::1, localhost, 0.0.0.0
    disable_private_ips: bool = True  # 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, link-local
    allowed_domains: tuple[str, ...] = ()  # "hooks.x.com" or "*.x.com" (subdomains only)
    allowed_ports: tuple[int, ...] = ()
    max_url_length: int = 4096


@dataclass(frozen=True)
class WebhookSettings:
    """The ``webhooks`` section of langgraph.json and ``http.disable_webhooks``."""

    enabled: bool = True
    url: WebhookUrlPolicy = field(default_factory=WebhookUrlPolicy)
    headers: tuple[tuple[str, str], ...] = ()  # env templates already resolved
    allowed_fields: tuple[str, ...] | None = None  # payload keys to keep; None keeps all
    timeout: float = 30.0  # seconds one delivery attempt may take in all (connect to last byte)


@dataclass(frozen=True)
class ThreadTTLConfig:
    """``checkpointer.ttl``: threads expire ``default_ttl`` minutes after their last write."""

    strategy: str = "delete"  # or "keep_latest"
    default_ttl: float | None = None
    sweep_interval_minutes: float = 5
    sweep_limit: int = 1000


@dataclass(frozen=True)
class StoreIndexConfig:
    """``store.index``: semantic search over store items."""

    dims: int
    embed: str  # "./file.py:attr", "module:attr" or "provider:model"
    fields: tuple[str, ...] = ("$",)
    distance_type: str | None = None


@dataclass(frozen=True)
class StoreTTLConfig:
    """``store.ttl``: LangGraph's own ``TTLConfig``."""

    refresh_on_read: bool = True
    default_ttl: float | None = None
    sweep_interval_minutes: float | None = None


@dataclass(frozen=True)
class Settings:
    config_path: Path
    host: str = "127.0.0.1"
    port: int = 8123
    data_dir: Path = Path(".agentd")
    database_url: str | None = None  # --database-url / DATABASE_URI; None: the SQLite file
    redis_url: str | None = None  # --redis-url / REDIS_URI: many processes share the database
    redis_prefix: str = "agentd:"  # AGENTD_REDIS_PREFIX: deployments sharing one Redis differ
    jobs: int = DEFAULT_JOBS  # 0: this process serves the API only (with Redis)
    run_timeout: float | None = None  # seconds per attempt (BG_JOB_TIMEOUT_SECS)
    max_attempts: int = 3  # attempts before a run whose process keeps dying fails
    lease_seconds: float = LEASE_SECONDS  # a claimed run is taken back if not renewed in time
    heartbeat_seconds: float = HEARTBEAT_SECONDS  # how often a worker renews its leases
    drain_seconds: float = DRAIN_SECONDS  # runs finish for this long at shutdown, then go back
    resumable_ttl: float = 600.0  # seconds a resumable run's events are kept after its end
    resumable_max_events: int = 100_000  # a resumable run keeps its newest events up to these
    resumable_max_bytes: int = 64 * 1024 * 1024
    stream_subscriber_max_bytes: int = 4 * 1024 * 1024  # queued for one stream, else dropped
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger request bodies get 413
    history_max_bytes: int = 10 * 1024 * 1024  # one thread-history response, at most
    graphs: tuple[GraphSpec, ...] = ()
    dependencies: tuple[Path, ...] = ()
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    thread_ttl: ThreadTTLConfig | None = None  # checkpointer.ttl
    store_index: StoreIndexConfig | None = None  # store.index
    store_ttl: StoreTTLConfig | None = None  # store.ttl
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "agentd.sqlite"

    @property
    def storage_location(self) -> str | Path:
        """Where the data lives: ``--database-url`` if given, else the SQLite file."""
        return self.database_url or self.sqlite_path


def env_redis_url() -> str | None:
    """``REDIS_URI``, the official server's name."""
    return os.environ.get("REDIS_URI") or None


def env_database_url() -> str | None:
    """``DATABASE_URI`` (the official server's name; ``POSTGRES_URI`` is its alias)."""
    return os.environ.get("DATABASE_URI") or os.environ.get("POSTGRES_URI") or None


def load_settings(
    config: str | os.PathLike[str] = "langgraph.json",
    *,
    host: str = "127.0.0.1",
    port: int = 8123,
    data_dir: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
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
    _check_keys(raw, path)
    base = path.parent
    _apply_env(raw.get("env"), base)
    if jobs is None:
        jobs = _env_number("N_JOBS_PER_WORKER", int, DEFAULT_JOBS)
    database_url = database_url or env_database_url()
    redis_url = redis_url or env_redis_url()
    if redis_url is not None:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            # Not echoed: a URL may carry a password.
            raise ConfigError(
                "--redis-url (REDIS_URI) must start with redis://, rediss:// or unix://"
            )
        if database_url is None or postgres_url(database_url) is None:
            raise ConfigError(
                "--redis-url needs a PostgreSQL --database-url: processes that share Redis "
                "must share the database (a SQLite file is one process's)"
            )
    if jobs < 0 or (jobs == 0 and redis_url is None):
        raise ConfigError(
            f"--jobs must be at least 1, got {jobs} (0, an API-only server, needs --redis-url "
            "and workers that share it)"
        )
    lease = _env_number("AGENTD_LEASE_SECONDS", float, LEASE_SECONDS)
    heartbeat = _env_number("AGENTD_HEARTBEAT_SECONDS", float, min(HEARTBEAT_SECONDS, lease / 4))
    if not 0 < heartbeat < lease:
        raise ConfigError(
            f"AGENTD_HEARTBEAT_SECONDS ({heartbeat:g}) must be above 0 and below "
            f"AGENTD_LEASE_SECONDS ({lease:g}): a lease must be renewed before it runs out"
        )
    return Settings(
        config_path=path,
        host=host,
        port=port,
        data_dir=Path(data_dir).resolve() if data_dir else base / ".agentd",
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=os.environ.get("AGENTD_REDIS_PREFIX") or "agentd:",
        jobs=jobs,
        run_timeout=_env_number("BG_JOB_TIMEOUT_SECS", float, None),
        max_attempts=_env_number("BG_JOB_MAX_RETRIES", int, 3),
        lease_seconds=lease,
        heartbeat_seconds=heartbeat,
        drain_seconds=_env_seconds("AGENTD_DRAIN_SECONDS", DRAIN_SECONDS),
        resumable_ttl=_env_number("RESUMABLE_STREAM_TTL_SECONDS", float, 600.0),
        resumable_max_events=_env_number("RESUMABLE_STREAM_MAX_EVENTS", int, 100_000),
        resumable_max_bytes=_env_number("RESUMABLE_STREAM_MAX_BYTES", int, 64 * 1024 * 1024),
        stream_subscriber_max_bytes=_env_number(
            "STREAM_SUBSCRIBER_MAX_BYTES", int, 4 * 1024 * 1024
        ),
        max_body_bytes=_env_number("HTTP_MAX_REQUEST_BODY_BYTES", int, DEFAULT_MAX_BODY_BYTES),
        history_max_bytes=_env_number("AGENTD_HISTORY_MAX_BYTES", int, 10 * 1024 * 1024),
        graphs=_parse_graphs(raw.get("graphs"), path),
        dependencies=_parse_dependencies(raw.get("dependencies", []), base, path),
        webhooks=_parse_webhooks(raw.get("webhooks"), raw.get("http"), path),
        thread_ttl=_parse_thread_ttl(_section(raw, "checkpointer").get("ttl")),
        store_index=_parse_store_index(_section(raw, "store").get("index")),
        store_ttl=_parse_store_ttl(_section(raw, "store").get("ttl")),
        raw=raw,
    )


def _env_seconds(name: str, default: float) -> float:
    """A duration that may be 0 (none)."""
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{name} must be a number of seconds (0 or more), got {value!r}")
    return seconds


def _env_number(name: str, kind: type[T], default: T) -> T:
    value = os.environ.get(name)
    if not value:
        return default
    expected = "a positive integer" if kind is int else "a positive number"
    try:
        number = kind(value)  # type: ignore[call-arg]
    except ValueError:
        raise ConfigError(f"{name} must be {expected}, got {value!r}") from None
    if not number > 0:  # type: ignore[operator]  # (also refuses NaN)
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
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


# ---------------------------------------------------------------- keys agentd does not serve

# A key agentd does not implement must not be ignored while its author relies on it (an `auth`
# section that protects nothing): configured, it stops start-up. Set to null, false or empty
# (what asks for nothing) it is fine. Keys read only to build the platform's image are warned
# about, unknown top-level keys too (a typo must not pass unseen).
_TOP_LEVEL_SERVED = {"$schema", "graphs", "dependencies", "env", "store", "checkpointer",
                     "http", "webhooks"}  # fmt: skip
_TOP_LEVEL_REFUSED = {
    "auth": "custom authentication is not supported yet: agentd would serve every request to "
    "anyone, without running your handlers",
    "encryption": "custom encryption is not supported yet: agentd would store your data in "
    "the clear",
    "ui": "generative UI components are not served by agentd",
    "ui_config": "generative UI components are not served by agentd",
    "disable_persistence": "agentd always keeps its data in --data-dir (point it at a "
    "temporary directory instead)",
}
_IMAGE_BUILD = {"python_version", "node_version", "api_version", "base_image", "image_distro",
                "dockerfile_lines", "pip_config_file", "pip_installer", "keep_pkg_tools",
                "source", "priority", "_INTERNAL_docker_tag"}  # fmt: skip
_HTTP_SERVED = {"disable_webhooks"}
# Nothing to do: routes agentd does not have (removing them, or keeping them, changes
# nothing); request headers agentd never logs; orderings and flags of custom routes,
# middleware and auth, which are refused themselves.
_HTTP_NOTHING_TO_DO = {
    "disable_mcp", "disable_a2a", "disable_ui", "disable_event_streaming", "logging_headers",
    "middleware_order", "enable_custom_route_auth",
}  # fmt: skip
_HTTP_REFUSED = {
    "app": "custom routes are not supported yet",
    "cors": "CORS rules are not supported yet",
    "configurable_headers": "copying request headers into a run's config is not supported yet",
    "mount_prefix": "serving under a path prefix is not supported yet",
    "disable_assistants": "removing the /assistants routes is not supported yet",
    "disable_threads": "removing the /threads routes is not supported yet",
    "disable_runs": "removing the /runs routes is not supported yet",
    "disable_store": "removing the /store routes is not supported yet",
    "disable_meta": "removing /info, /docs and /openapi.json is not supported yet",
}
_CHECKPOINTER_REFUSED = {
    "path": "a custom checkpointer is not supported: agentd keeps checkpoints in its SQLite file",
    "serde": "serializer settings are not supported yet: LangGraph's defaults apply",
}


def _check_keys(raw: dict[str, Any], path: Path) -> None:
    for key, value in raw.items():
        if key in _TOP_LEVEL_REFUSED and _is_set(value):
            raise ConfigError(f"{path}: '{key}': {_TOP_LEVEL_REFUSED[key]}; remove it")
        if key in _IMAGE_BUILD:
            log.warning("%s: '%s' only matters to an image build for the LangGraph platform; "
                        "agentd ignores it", path, key)  # fmt: skip
        elif key not in _TOP_LEVEL_SERVED and key not in _TOP_LEVEL_REFUSED:
            log.warning("%s: unknown key '%s' is ignored (a typo?)", path, key)
    http = raw.get("http")
    if isinstance(http, dict):  # a wrong type is the section parser's error
        for key, value in http.items():
            if key in _HTTP_REFUSED:
                if _is_set(value):
                    raise ConfigError(f"{path}: 'http.{key}': {_HTTP_REFUSED[key]}; remove it")
            elif key not in _HTTP_SERVED and key not in _HTTP_NOTHING_TO_DO:
                raise ConfigError(f"{path}: unknown key 'http.{key}'")
    checkpointer = raw.get("checkpointer")
    if isinstance(checkpointer, dict):
        for key, value in checkpointer.items():
            if key == "backend":
                if value not in (None, "default"):
                    raise ConfigError(f"{path}: 'checkpointer.backend' {value!r} is not "
                                      "supported: agentd keeps checkpoints in its SQLite file "
                                      "(use \"default\" or leave it out)")  # fmt: skip
            elif key in _CHECKPOINTER_REFUSED:
                if _is_set(value):
                    raise ConfigError(
                        f"{path}: 'checkpointer.{key}': {_CHECKPOINTER_REFUSED[key]}; remove it"
                    )
            elif key != "ttl":
                raise ConfigError(f"{path}: unknown key 'checkpointer.{key}'")
    store = raw.get("store")
    if isinstance(store, dict):
        unknown = sorted(set(store) - {"index", "ttl", "path"})
        if unknown:
            raise ConfigError(f"{path}: unknown key 'store.{unknown[0]}'")


def _is_set(value: Any) -> bool:
    """Whether a setting asks for something: null, false and empty values do not."""
    if isinstance(value, dict):
        return any(_is_set(v) for v in value.values())
    if isinstance(value, (list, str)):
        return bool(value)
    return value is not None and value is not False


# ---------------------------------------------------------------- webhooks

_URL_POLICY_KEYS = {"require_https", "disable_loopback", "disable_private_ips",
                    "allowed_domains", "allowed_ports", "max_url_length"}  # fmt: skip
_ENV_TEMPLATE = re.compile(r"\$\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Set by the sender itself: a configured value would break the request or the address pinning.
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


def _parse_webhooks(webhooks: Any, http: Any, path: Path) -> WebhookSettings:
    """Typed webhook settings. Unknown keys are refused: a misspelt security setting must
    not silently fall back to its default."""
    if http is not None and not isinstance(http, dict):
        raise ConfigError(f"{path}: 'http' must be an object")
    disabled = (http or {}).get("disable_webhooks", False)
    if not isinstance(disabled, bool):
        raise ConfigError(f"{path}: 'http.disable_webhooks' must be true or false")
    webhooks = {} if webhooks is None else webhooks
    if not isinstance(webhooks, dict):
        raise ConfigError(f"{path}: 'webhooks' must be an object")
    _no_unknown_keys(webhooks, {"env_prefix", "url", "headers", "allowed_fields"}, "webhooks", path)
    prefix = webhooks.get("env_prefix", "LG_WEBHOOK_")
    if not isinstance(prefix, str):
        raise ConfigError(f"{path}: 'webhooks.env_prefix' must be a string")
    fields = webhooks.get("allowed_fields")
    if fields is not None and not _str_list(fields):
        raise ConfigError(f"{path}: 'webhooks.allowed_fields' must be a list of strings")
    return WebhookSettings(
        enabled=not disabled,
        url=_parse_url_policy(webhooks.get("url"), path),
        headers=_parse_webhook_headers(webhooks.get("headers"), prefix, path),
        allowed_fields=tuple(fields) if fields is not None else None,
        timeout=_env_number("AGENTD_WEBHOOK_TIMEOUT_SECS", float, WebhookSettings.timeout),
    )


def _parse_url_policy(url: Any, path: Path) -> WebhookUrlPolicy:
    url = {} if url is None else url
    if not isinstance(url, dict):
        raise ConfigError(f"{path}: 'webhooks.url' must be an object")
    _no_unknown_keys(url, _URL_POLICY_KEYS, "webhooks.url", path)
    flags: dict[str, bool] = {}
    for key in ("require_https", "disable_loopback", "disable_private_ips"):
        if key in url:
            if not isinstance(url[key], bool):
                raise ConfigError(f"{path}: 'webhooks.url.{key}' must be true or false")
            flags[key] = url[key]
    domains = url.get("allowed_domains", [])  # a wrong type is an error, not "any domain"
    if not _str_list(domains) or not all(_domain_pattern(d) for d in domains):
        raise ConfigError(f"{path}: 'webhooks.url.allowed_domains' must be a list of host names "
                          "like 'hooks.example.com' or '*.example.com'")  # fmt: skip
    ports = url.get("allowed_ports", [])
    if not isinstance(ports, list) or not all(_is_int(p) and 0 < p < 65536 for p in ports):
        raise ConfigError(f"{path}: 'webhooks.url.allowed_ports' must be a list of port numbers")
    length = url.get("max_url_length", WebhookUrlPolicy.max_url_length)
    if not _is_int(length) or length < 1:
        raise ConfigError(f"{path}: 'webhooks.url.max_url_length' must be a positive integer")
    return WebhookUrlPolicy(
        **flags,
        allowed_domains=tuple(d.lower().rstrip(".") for d in domains),
        allowed_ports=tuple(ports),
        max_url_length=length,
    )


def _parse_webhook_headers(headers: Any, prefix: str, path: Path) -> tuple[tuple[str, str], ...]:
    """Static headers; ``${{ env.VAR }}`` is replaced at start-up, and only variables named
    with ``env_prefix`` may be read, so a config cannot leak arbitrary secrets."""
    headers = {} if headers is None else headers
    if not isinstance(headers, dict):
        raise ConfigError(f"{path}: 'webhooks.headers' must be an object of name -> value")
    resolved = []
    for name, value in headers.items():
        where = f"'webhooks.headers.{name}'"
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"{path}: {where} is not a header a webhook may set")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {where} must be a string")

        def substitute(match: re.Match[str], where: str = where) -> str:
            var = match.group(1)
            if not var.startswith(prefix):
                raise ConfigError(f"{path}: {where} reads ${{{{ env.{var} }}}}, but only "
                                  f"variables starting with {prefix!r} (webhooks.env_prefix) "
                                  "may be used")  # fmt: skip
            if var not in os.environ:
                raise ConfigError(f"{path}: {where} reads {var}, which is not set")
            return os.environ[var]

        value = _ENV_TEMPLATE.sub(substitute, value)
        if any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{path}: {where} must not contain line breaks")
        resolved.append((name, value))
    return tuple(resolved)


def _no_unknown_keys(section: dict[str, Any], known: set[str], name: str, path: Path) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in '{name}': {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")  # fmt: skip


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _domain_pattern(value: str) -> bool:
    host = value[2:] if value.startswith("*.") else value
    return bool(host) and "*" not in host and "/" not in host and ":" not in host


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{name}' must be an object")
    if name == "store" and value.get("path"):
        raise ConfigError("'store.path' (a custom store) is not supported; remove it")
    return value


def _object(value: Any, where: str, keys: set[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"'{where}' must be an object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ConfigError(
            f"'{where}' has unknown key(s) {unknown}; expected some of {sorted(keys)}"
        )
    return value


def _minutes(value: Any, where: str, default: float | None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"'{where}' must be a positive number of minutes, got {value!r}")
    return float(value)


def _parse_thread_ttl(value: Any) -> ThreadTTLConfig | None:
    where = "checkpointer.ttl"
    ttl = _object(value, where, {"strategy", "default_ttl", "sweep_interval_minutes",
                                 "sweep_limit"})  # fmt: skip
    if ttl is None:
        return None
    strategy = ttl.get("strategy", "delete")
    if strategy not in ("delete", "keep_latest"):
        raise ConfigError(f"'{where}.strategy' must be 'delete' or 'keep_latest', got {strategy!r}")
    limit = ttl.get("sweep_limit", 1000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"'{where}.sweep_limit' must be a positive integer, got {limit!r}")
    return ThreadTTLConfig(
        strategy=strategy,
        default_ttl=_minutes(ttl.get("default_ttl"), f"{where}.default_ttl", None),
        sweep_interval_minutes=_minutes(
            ttl.get("sweep_interval_minutes"), f"{where}.sweep_interval_minutes", 5
        ),  # type: ignore[arg-type]
        sweep_limit=limit,
    )


def _parse_store_index(value: Any) -> StoreIndexConfig | None:
    where = "store.index"
    index = _object(value, where, {"dims", "embed", "fields", "distance_type"})
    if index is None:
        return None
    dims = index.get("dims")
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ConfigError(f"'{where}.dims' must be a positive integer, got {dims!r}")
    embed = index.get("embed")
    if not isinstance(embed, str) or ":" not in embed:
        raise ConfigError(
            f"'{where}.embed' must be './file.py:function', 'module:function' or "
            f"'provider:model', got {embed!r}"
        )
    fields = index.get("fields", ["$"])
    if (
        not isinstance(fields, list)
        or not fields
        or not all(isinstance(f, str) and f for f in fields)
    ):
        raise ConfigError(f"'{where}.fields' must be a non-empty list of field paths")
    distance = index.get("distance_type")
    if distance not in (None, "cosine", "l2", "inner_product"):
        raise ConfigError(
            f"'{where}.distance_type' must be 'cosine', 'l2' or 'inner_product', got {distance!r}"
        )
    return StoreIndexConfig(dims=dims, embed=embed, fields=tuple(fields), distance_type=distance)


def _parse_store_ttl(value: Any) -> StoreTTLConfig | None:
    where = "store.ttl"
    ttl = _object(value, where, {"refresh_on_read", "default_ttl", "sweep_interval_minutes"})
    if ttl is None:
        return None
    refresh = ttl.get("refresh_on_read", True)
    if not isinstance(refresh, bool):
        raise ConfigError(f"'{where}.refresh_on_read' must be true or false, got {refresh!r}")
    return StoreTTLConfig(
        refresh_on_read=refresh,
        default_ttl=_minutes(ttl.get("default_ttl"), f"{where}.default_ttl", None),
        sweep_interval_minutes=_minutes(
            ttl.get("sweep_interval_minutes"), f"{where}.sweep_interval_minutes", None
        ),
    )
