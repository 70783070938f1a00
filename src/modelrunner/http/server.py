"""Running the app: uvicorn on the configured address, with graceful shutdown (lifespans
left in reverse, streams finished or cancelled)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelrunner.errors import UsageError
from modelrunner.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar


def uvicorn_server(app: Litestar, settings: Settings, **options: Any) -> uvicorn.Server:
    """A configured (not yet started) uvicorn server; ``options`` go to ``uvicorn.Config``."""
    try:
        import uvicorn
    except ImportError:
        raise UsageError("serving needs uvicorn: pip install 'uvicorn[standard]'") from None
    options.setdefault("log_level", "info")
    options.setdefault("access_log", False)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.drain_timeout),
        **options,
    )
    return uvicorn.Server(config)


def serve(app: Litestar, settings: Settings, **options: Any) -> None:
    """Serve until SIGINT/SIGTERM (blocking). For an asyncio caller:
    ``await uvicorn_server(app, settings).serve()``."""
    server = uvicorn_server(app, settings, **options)
    server.run()
    if not server.started:
        raise UsageError(f"could not serve on {settings.host}:{settings.port}; see the log above")
