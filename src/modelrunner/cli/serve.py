"""``mr serve``: the Litestar app, the watcher and the reconciler, together."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelrunner.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the models of a folder, following its changes",
        description="Serve the models that the manifests in --models-dir describe, over "
        "OpenAI-compatible routes; apply every change of the folder without dropping "
        "requests. SIGHUP forces a pass (and retries failed models); SIGTERM drains and "
        "stops every engine, then exits. Each option can also be set as MR_<OPTION>.",
    )
    parser.add_argument("--models-dir", type=Path, help="manifest folder (default models.d)")
    parser.add_argument("--store", type=Path, dest="store_dir", help="model store folder")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 12434)")
    parser.add_argument(
        "--poll",
        action="store_true",
        default=None,
        help="poll the folder instead of using file events (bind mounts, network shares)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from modelrunner import settings as settings_module
    from modelrunner.http.app import create_app
    from modelrunner.http.server import serve
    from modelrunner.metrics import Metrics
    from modelrunner.reconcile.lifespan import reconcile_lifespan
    from modelrunner.registry import Registry
    from modelrunner.status import StoreAwareStatus
    from modelrunner.store.store import Store

    settings = settings_module.from_env(
        models_dir=args.models_dir,
        store_dir=args.store_dir,
        host=args.host,
        port=args.port,
        poll=args.poll,
    )
    if not settings.models_dir.is_dir():
        raise UsageError(
            f"mr serve: models folder {settings.models_dir} does not exist "
            "(create it, or point --models-dir / MR_MODELS_DIR at one)"
        )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    registry = Registry()
    metrics = Metrics()
    store = Store(settings.store_dir, settings.insecure_registries)
    lifespan, reconciler = reconcile_lifespan(settings, registry, store, metrics)
    status = StoreAwareStatus(reconciler, store)
    app = create_app(
        settings,
        registry,
        status,
        metrics,
        lifespan=[lifespan],
        store=store,
        control=reconciler,
    )
    serve(app, settings, log_level=args.log_level)
    return 0
