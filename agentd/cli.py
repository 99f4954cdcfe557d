"""The ``agentd`` command: ``agentd serve`` serves a langgraph.json; ``agentd migrate`` brings its
database to this version's schema; ``agentd copy`` moves a SQLite deployment to PostgreSQL."""

from __future__ import annotations

import argparse
import logging
import sys

from agentd import __version__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentd", description="Serve LangGraph agents.")
    parser.add_argument("--version", action="version", version=f"agentd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the graphs of a langgraph.json")
    serve.add_argument("--config", default="langgraph.json", help="path to langgraph.json")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8123)
    serve.add_argument(
        "--data-dir", default=None, help="where the SQLite file lives (default: .agentd/ beside "
        "the langgraph.json)",
    )  # fmt: skip
    serve.add_argument(
        "--jobs", type=int, default=None, help="runs executed at once (default 100, or "
        "N_JOBS_PER_WORKER)",
    )  # fmt: skip
    serve.add_argument(
        "--database-url", default=None, help="where the data lives instead of --data-dir "
        "(also DATABASE_URI): postgresql://..., or a SQLite file or sqlite:///path",
    )  # fmt: skip
    serve.add_argument(
        "--redis-url", default=None, help="redis://... (also REDIS_URI): many API servers and "
        "workers share the PostgreSQL database and this Redis; with it, --jobs 0 serves the "
        "API only",
    )  # fmt: skip
    serve.add_argument("--log-level", default="info")
    worker = sub.add_parser(
        "worker", help="execute runs only (no API), beside API servers sharing the same "
        "PostgreSQL database and Redis",
    )  # fmt: skip
    worker.add_argument("--config", default="langgraph.json", help="path to langgraph.json")
    worker.add_argument("--jobs", type=int, default=None, help="runs executed at once "
                        "(default 100, or N_JOBS_PER_WORKER)")  # fmt: skip
    worker.add_argument("--database-url", default=None, help="postgresql://... (DATABASE_URI)")
    worker.add_argument("--redis-url", default=None, help="redis://... (REDIS_URI)")
    worker.add_argument("--log-level", default="info")
    migrate = sub.add_parser(
        "migrate", help="bring the database up to this version's schema, then exit (serve "
        "does it too at start-up)",
    )  # fmt: skip
    migrate.add_argument("--config", default="langgraph.json", help="its .agentd/ is the data dir")
    migrate.add_argument("--data-dir", default=None)
    migrate.add_argument("--database-url", default=None)
    copy = sub.add_parser(
        "copy", help="copy a SQLite deployment into a PostgreSQL database (no server "
        "running on either); safe to re-run",
    )  # fmt: skip
    copy.add_argument("--from", dest="source", required=True,
                      help="the data dir, or its agentd.sqlite")  # fmt: skip
    copy.add_argument("--to", dest="target", required=True, help="postgresql://...")
    args = parser.parse_args(argv)
    if args.command == "copy":
        from agentd.storage.copy import main as copy_main

        sys.exit(copy_main(args.source, args.target))
    if args.command == "serve":
        sys.exit(_serve(args))
    if args.command == "worker":
        sys.exit(_worker(args))
    if args.command == "migrate":
        sys.exit(_migrate(args))


def _migrate(args: argparse.Namespace) -> int:
    """Open the storage (which applies its pending migrations) and close it."""
    import asyncio
    from pathlib import Path

    from agentd.config import env_database_url
    from agentd.storage import open_storage
    from agentd.storage.base import StorageStartupError

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    where = args.database_url or env_database_url()
    if where is None:
        data_dir = Path(args.data_dir) if args.data_dir else Path(args.config).parent / ".agentd"
        where = data_dir.resolve() / "agentd.sqlite"

    async def run() -> None:
        storage = open_storage(where)
        await storage.open()
        await storage.close()

    try:
        asyncio.run(run())
    except StorageStartupError as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    print(f"agentd: {where} is at this version's schema")
    return 0


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Imported here so that `agentd --help` stays fast.
    import uvicorn

    from agentd.api.app import create_app
    from agentd.api.connection import AbortableHttpToolsProtocol
    from agentd.broker.base import BrokerStartupError
    from agentd.config import ConfigError, load_settings
    from agentd.embeddings import index_config
    from agentd.graphs import GraphRegistry
    from agentd.storage import check_location
    from agentd.storage.base import StorageStartupError

    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            jobs=args.jobs,
            database_url=args.database_url,
            redis_url=args.redis_url,
        )
        # A database it cannot serve stops here.
        check_location(settings.storage_location, shared=settings.redis_url is not None)
        graphs = GraphRegistry(settings.graphs, settings.base_dir, settings.dependencies)
        graphs.load()
        index_config(settings.store_index, settings.base_dir)  # a bad embed fails here, in one line
    except (ConfigError, StorageStartupError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, graphs)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=False,
        loop="uvloop",
        http=AbortableHttpToolsProtocol,  # httptools, with a way to abort a connection
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except (StorageStartupError, BrokerStartupError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    return 0 if server.started else 1


def _worker(args: argparse.Namespace) -> int:
    """Execute runs (and crons, sweeps, webhooks) until SIGTERM or SIGINT, then drain."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import asyncio
    import signal

    import uvloop

    from agentd.broker.base import BrokerStartupError
    from agentd.config import ConfigError, load_settings
    from agentd.embeddings import index_config
    from agentd.graphs import GraphRegistry
    from agentd.services import open_services
    from agentd.storage import check_location
    from agentd.storage.base import StorageStartupError

    try:
        settings = load_settings(
            args.config, jobs=args.jobs, database_url=args.database_url, redis_url=args.redis_url
        )
        if settings.redis_url is None:
            raise ConfigError(
                "agentd worker needs --redis-url (REDIS_URI) and a PostgreSQL --database-url, "
                "shared with the API servers; alone, agentd serve executes runs itself"
            )
        if settings.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1 for a worker, got {settings.jobs}")
        check_location(settings.storage_location, shared=True)
        graphs = GraphRegistry(settings.graphs, settings.base_dir, settings.dependencies)
        graphs.load()
        index_config(settings.store_index, settings.base_dir)
    except (ConfigError, StorageStartupError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_services(settings, graphs):
            await stop.wait()
            logging.getLogger("agentd.worker").info("stopping: draining the runs under way")

    try:
        uvloop.run(work())
    except (StorageStartupError, BrokerStartupError) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    main()
