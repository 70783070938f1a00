"""Running the app: uvicorn on the configured address, with graceful shutdown (lifespans
left in reverse, streams finished or cancelled)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelrunner.errors import UsageError
from modelrunner.http.connection_guard import ConnectionLimits, HeaderCountLimit, guarded_protocol
from modelrunner.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from litestar import Litestar


def uvicorn_server(
    app: Litestar, settings: Settings, *, parser: str = "auto", **options: Any
) -> uvicorn.Server:
    """A configured (not yet started) uvicorn server; ``parser`` picks uvicorn's HTTP
    parser (auto: httptools when installed, else h11), guarded by ``connection_guard``'s
    limits; ``options`` go to ``uvicorn.Config``."""
    try:
        import uvicorn

        from modelrunner.http.quiet_server import QuietServer
    except ImportError:
        raise UsageError("serving needs uvicorn: pip install 'uvicorn[standard]'") from None
    limits = ConnectionLimits(max_connections=settings.max_connections)
    options.setdefault("log_level", "info")
    options.setdefault("access_log", False)
    config = uvicorn.Config(
        HeaderCountLimit(app, limits.max_headers),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.drain_timeout),
        http=guarded_protocol(parser, limits),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **options,
    )
    return QuietServer(config)


def serve(app: Litestar, settings: Settings, **options: Any) -> None:
    """Serve until SIGINT/SIGTERM (blocking). For an asyncio caller:
    ``await uvicorn_server(app, settings).serve()``."""
    server = uvicorn_server(app, settings, **options)
    server.run()
    if not server.started:
        raise UsageError(f"could not serve on {settings.host}:{settings.port}; see the log above")
