"""Who may send a request at all: the ``Host`` allow-list, the ``Origin`` rule and JSON-only
bodies. One app-wide middleware applies them to every route (present and future), with a
short explicit list of exempt routes, so a new route is protected without opting in.

Why: a server on loopback without keys is reachable by any web page the user opens. DNS
rebinding makes a hostile name resolve to 127.0.0.1, and the browser then treats the
server as that page's own origin; only the ``Host`` header tells the two apart. A
cross-site form POST (``text/plain``, form-encoded, multipart) needs no CORS preflight;
requiring ``application/json`` and refusing foreign ``Origin`` headers stops it.

The deciding (``refusal``) is pure; ``RequestPolicyMiddleware`` only reads the headers and
sends the refusal.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from litestar.enums import ScopeType

from modelrunner.http.errors import ErrorAnswer, problem, send_problem

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

# (method, path) pairs any caller may use from anywhere: liveness and readiness probes,
# which Kubernetes and load balancers send with whatever Host they know the pod by.
EXEMPT: Final = frozenset(
    (method, path) for method in ("GET", "HEAD") for path in ("/healthz", "/readyz")
)
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
ANY_HOST: Final = "*"


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """``allowed_hosts``: names beside the default ones (exact, ``.suffix`` for a domain
    and its subdomains, ``*`` for any); ``cors_origins``: origins allowed to call;
    ``keys_enabled``: with API keys a foreign page cannot authenticate, so Origin is free."""

    allowed_hosts: frozenset[str] = frozenset()
    cors_origins: frozenset[str] = frozenset()
    keys_enabled: bool = False

    @classmethod
    def of(
        cls, allowed_hosts: Iterable[str], cors_origins: Iterable[str], keys_enabled: bool
    ) -> RequestPolicy:
        return cls(
            frozenset(_host_name(h) for h in allowed_hosts if h.strip()),
            frozenset(o.strip().rstrip("/").lower() for o in cors_origins if o.strip()),
            keys_enabled,
        )


def _host_name(host: str) -> str:
    """``Example.org:8080`` -> ``example.org``; ``[::1]:80`` -> ``::1``; trailing dot dropped."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


@functools.lru_cache(maxsize=256)  # the same few Host values arrive over and over
def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Literal IP addresses and loopback names always; other names only when listed."""
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    if ANY_HOST in allowed or name in allowed:
        return True
    return any(entry.startswith(".") and (name.endswith(entry) or name == entry[1:])
               for entry in allowed)  # fmt: skip


def origin_allowed(origin: str, host: str | None, policy: RequestPolicy) -> bool:
    """An allowed origin: listed in ``cors_origins``, or the server itself (same origin)."""
    normal = origin.strip().rstrip("/").lower()
    if ANY_HOST in policy.cors_origins or normal in policy.cors_origins:
        return True
    _scheme, sep, netloc = normal.partition("://")
    return bool(sep) and host is not None and netloc == host.strip().lower()


def is_json(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, with any parameters (charset)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def refusal(
    method: str,
    path: str,
    host: str | None,
    origin: str | None,
    content_type: str | None,
    has_body: bool,
    policy: RequestPolicy,
) -> ErrorAnswer | None:
    """Why a request must not be served (a 403 or 415 answer), or None."""
    if (method, path) in EXEMPT:
        return None
    if host is not None and not host_allowed(host, policy.allowed_hosts):
        return problem(
            403,
            f"Host {host!r} is not allowed: only loopback names, IP addresses and the "
            "names in MR_ALLOWED_HOSTS are served (this refuses DNS rebinding)",
            code="host_not_allowed",
        )
    if origin is not None and not policy.keys_enabled and not origin_allowed(origin, host, policy):
        return problem(
            403,
            f"Origin {origin!r} is not allowed: add it to MR_CORS_ORIGINS to let that site "
            "call this server",
            code="origin_not_allowed",
        )
    if method in _BODY_METHODS and has_body and not is_json(content_type or ""):
        given = repr(content_type) if content_type else "none"
        return problem(
            415,
            f"{method} {path} takes a JSON body: send 'Content-Type: application/json' "
            f"(got {given})",
            param="content-type",
            code="unsupported_media_type",
        )
    return None


class RequestPolicyMiddleware:
    """ASGI middleware applying ``refusal`` before anything else reads the request."""

    __slots__ = ("_app", "_policy")

    def __init__(self, app: ASGIApp, policy: RequestPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        host = origin = content_type = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                has_body = has_body or value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        found = refusal(
            scope["method"],
            scope["path"],
            host,
            origin,
            content_type,
            has_body,
            self._policy,
        )
        if found is None:
            await self._app(scope, receive, send)
            return
        await send_problem(send, found)
