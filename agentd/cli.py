"""The ``agentd`` command: ``agentd serve`` serves a langgraph.json on the embedded backend."""

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
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.command == "serve":
        sys.exit(_serve(args))


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Imported here so that `agentd --help` stays fast.
    import uvicorn

    from agentd.api.app import create_app
    from agentd.api.connection import AbortableHttpToolsProtocol
    from agentd.config import ConfigError, load_settings
    from agentd.embeddings import index_config
    from agentd.graphs import GraphRegistry
    from agentd.storage.sqlite import StorageLocked, StorageTooNew

    try:
        settings = load_settings(
            args.config, host=args.host, port=args.port, data_dir=args.data_dir, jobs=args.jobs
        )
        graphs = GraphRegistry(settings.graphs, settings.base_dir, settings.dependencies)
        graphs.load()
        index_config(settings.store_index, settings.base_dir)  # a bad embed fails here, in one line
    except ConfigError as exc:
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
    except (StorageLocked, StorageTooNew) as exc:
        print(f"agentd: {exc}", file=sys.stderr)
        return 2
    return 0 if server.started else 1


if __name__ == "__main__":
    main()
