"""OCI references, parsed and normalised the way Docker Model Runner does.

    smollm2                         -> docker.io/ai/smollm2:latest
    ai/smollm2:360M-Q4_K_M          -> docker.io/ai/smollm2:360M-Q4_K_M
    registry.example:5000/team/m@sha256:<hex>

No registry means Docker Hub, no namespace means ``ai/``, no tag (and no digest) means
``latest``. Repository names are lowercased; tags keep their case.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from modelrunner.errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
DEFAULT_NAMESPACE = "ai"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\]"
)
_MAX_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The short form users type: the registry is left out when it is Docker Hub."""
        full = str(self)
        prefix = f"{DEFAULT_REGISTRY}/"
        return full[len(prefix) :] if full.startswith(prefix) else full

    @property
    def is_floating(self) -> bool:
        """True when the reference names a moving tag (``latest``) and pins no digest."""
        return self.digest is None and self.tag in (None, DEFAULT_TAG)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.registry)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)


def is_loopback_host(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    host = host.strip("[]").split("]")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(registry: str) -> tuple[str, str | None]:
    """``host:port`` -> (host, port); IPv6 hosts come in brackets: ``[::1]:5000``."""
    if registry.startswith("[") and "]" in registry:
        end = registry.index("]") + 1
        rest = registry[end:]
        return registry[:end], rest[1:] if rest.startswith(":") else (rest or None)
    host, sep, port = registry.rpartition(":")
    return (host, port) if sep else (registry, None)


def _looks_like_registry(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.startswith("[")
    )


def parse(text: str) -> Reference:
    """Parse and normalise an OCI reference; raise InvalidReference saying what is wrong."""
    original = text
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference {original!r}: empty or surrounded by spaces")
    if len(text) > _MAX_LENGTH:
        raise InvalidReference(f"invalid reference: longer than {_MAX_LENGTH} characters")
    if "://" in text:
        raise InvalidReference(
            f"invalid reference {original!r}: leave out the scheme (write registry/name:tag)"
        )

    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(
                f"invalid reference {original!r}: "
                "digest must be sha256: and 64 lowercase hex digits"
            )

    registry = DEFAULT_REGISTRY
    first, sep, rest = text.partition("/")
    if sep and _looks_like_registry(first):
        registry, text = first, rest
        host, port = _split_host(registry)
        if not _HOST.fullmatch(host) or (port is not None and not port.isdigit()):
            raise InvalidReference(f"invalid reference {original!r}: bad registry {registry!r}")
        registry = registry.lower()
        if registry == "index.docker.io":
            registry = DEFAULT_REGISTRY

    tag: str | None = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f"invalid reference {original!r}: bad tag {tag!r} "
                "(letters, digits, _ . -; at most 128; not starting with . or -)"
            )

    repository = text.lower()
    if not repository:
        raise InvalidReference(f"invalid reference {original!r}: no repository name")
    components = repository.split("/")
    for component in components:
        if not _COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"invalid reference {original!r}: bad name component {component!r} "
                "(lowercase letters and digits, separated by . _ __ or -)"
            )
    if len(components) == 1 and registry == DEFAULT_REGISTRY:
        repository = f"{DEFAULT_NAMESPACE}/{repository}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)


def is_local_path(model: str) -> bool:
    """A manifest's ``model`` names a local file or folder when it is written as a path."""
    return model.startswith(("/", "./", "../", "~/")) or model in (".", "..")
