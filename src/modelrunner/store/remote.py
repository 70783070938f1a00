"""Talking to one repository of an OCI registry, through oras-py.

oras's ``Registry`` provides the HTTP session and the blob upload protocol (POST, chunked
PATCH, PUT). We replace its ``do_request`` because the stock one retries every failure
five times with sleeps of up to 83 s (a registry that is down would hang a pull for two
minutes), keeps one bearer token for every scope (a push after a pull is refused), and
cannot answer a Basic challenge. Blob downloads are ours too: oras writes straight to the
final path, checks no digest and never resumes, so we stream into a ``BlobWriter`` and
resume with ``Range`` after a cut.

Every third-party failure becomes a ``RegistryError`` naming the registry and what failed.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import oras.container
import oras.provider
import requests
import urllib3

from modelrunner.errors import (
    DigestMismatch,
    ModelNotFound,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnavailable,
)
from modelrunner.store import mediatypes as mt
from modelrunner.store.artifact import Descriptor
from modelrunner.store.blobs import CHUNK, BlobWriter
from modelrunner.store.credentials import Credentials

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
MAX_MANIFEST = 4 << 20
UPLOAD_CHUNK = 16 << 20
# Waits between attempts of a blob download that broke off (reset once bytes flow again).
BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)
_TRANSIENT = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def api_host(registry: str) -> str:
    """Docker Hub's API lives on another host than its name."""
    return "registry-1.docker.io" if registry == "docker.io" else registry


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in _CHALLENGE.findall(rest)}


def _registry_message(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        text = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return text or (resp.reason or "")


class _Oras(oras.provider.Registry):  # type: ignore[misc]
    """oras's registry client with our request policy (see the module docstring)."""

    def __init__(
        self,
        registry: str,
        insecure: bool,
        credentials: Credentials | None,
        timeout: tuple[float, float],
        bearer_token: str | None = None,
    ) -> None:
        super().__init__(hostname=api_host(registry), insecure=insecure)
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        # A caller's registry token (DMR's bearer-token) is sent as is, before any challenge.
        self.authorization: str | None = f"Bearer {bearer_token}" if bearer_token else None
        self._tokens: dict[str, str] = {}
        self.on_sent: Callable[[int], None] | None = None

    def _send(
        self, method: str, url: str, headers: dict[str, str], data: Any, json: Any, stream: bool
    ) -> requests.Response:
        try:
            resp: requests.Response = self.session.request(
                method,
                url,
                data=data,
                json=json,
                headers=headers,
                stream=stream,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise RegistryUnavailable(f"registry {self.registry}: cannot connect ({exc})") from None
        return resp

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = dict(headers or {})
        if self.authorization:
            headers.setdefault("Authorization", self.authorization)
        resp = self._send(method, url, headers, data, json, stream)
        if resp.status_code == 401:
            sent = headers.get("Authorization")
            answer = self._answer(resp.headers.get("WWW-Authenticate", ""))
            if answer and answer != sent:
                resp.close()
                self.authorization = headers["Authorization"] = answer
                resp = self._send(method, url, headers, data, json, stream)
        if method == "PATCH" and self.on_sent and isinstance(data, bytes | bytearray):
            self.on_sent(len(data))
        return resp

    def _answer(self, challenge: str) -> str | None:
        scheme, params = parse_challenge(challenge)
        basic = None
        if self.credentials:
            user, password = self.credentials
            basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if scheme == "basic":
            return basic
        if scheme != "bearer" or "realm" not in params:
            return None
        scope = params.get("scope", "")
        if scope in self._tokens:
            return self._tokens[scope]
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        try:
            resp = self.session.get(
                params["realm"],
                params=query,
                timeout=self.timeout,
                headers={"Authorization": basic} if basic else {},
            )
        except requests.RequestException as exc:
            raise RegistryUnavailable(
                f"registry {self.registry}: token service {params['realm']} unreachable ({exc})"
            ) from None
        if resp.status_code in (401, 403):
            raise RegistryUnauthorized(
                f"registry {self.registry}: token service {params['realm']} refused "
                f"{'the credentials' if basic else 'anonymous access'} for {scope or 'access'}"
            )
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if resp.status_code != 200 or not token:
            raise RegistryError(
                f"registry {self.registry}: token service {params['realm']} answered "
                f"HTTP {resp.status_code} without a token"
            )
        self._tokens[scope] = f"Bearer {token}"
        return self._tokens[scope]


class RegistryClient:
    """One repository of one registry."""

    def __init__(
        self,
        registry: str,
        repository: str,
        *,
        insecure: bool,
        credentials: Credentials | None,
        timeout: tuple[float, float] = (10.0, 60.0),
        backoff: Sequence[float] = BACKOFF,
        bearer_token: str | None = None,
    ) -> None:
        self.registry, self.repository = registry, repository
        self.backoff = tuple(backoff)
        self._oras = _Oras(registry, insecure, credentials, timeout, bearer_token)
        scheme = "http" if insecure else "https"
        self.base = f"{scheme}://{api_host(registry)}/v2/{repository}"
        container = oras.container.Container(f"{api_host(registry)}/x")
        container.registry, container.namespace = api_host(registry), None
        container.repository = repository
        self._container = container

    def _fail(self, resp: requests.Response, what: str, where: str) -> RegistryError:
        code = resp.status_code
        detail = _registry_message(resp)
        if code in (401, 403):
            return RegistryUnauthorized(
                f"{where}: registry {self.registry} refused access to {self.repository} "
                f"(HTTP {code}: {detail}); check the credentials in the Docker config "
                "(docker login) or MR_REGISTRY_USER/MR_REGISTRY_PASSWORD"
            )
        if code >= 500:
            return RegistryUnavailable(
                f"{where}: registry {self.registry} failed on {what} (HTTP {code}: {detail})"
            )
        return RegistryError(
            f"{where}: registry {self.registry} refused {what} (HTTP {code}: {detail})"
        )

    def get_manifest(self, reference: str, where: str) -> tuple[bytes, str]:
        """The manifest's exact bytes and their digest (checked against what was asked)."""
        accept = ", ".join(mt.MANIFEST_TYPES + mt.INDEX_TYPES)
        resp = self._oras.do_request(
            f"{self.base}/manifests/{reference}", "GET", headers={"Accept": accept}
        )
        with resp:
            if resp.status_code == 404:
                raise ModelNotFound(f"{where}: not found in registry {self.registry}")
            if resp.status_code != 200:
                raise self._fail(resp, "the manifest", where)
            try:
                raw = resp.content
            except requests.RequestException as exc:
                raise RegistryUnavailable(f"{where}: manifest download broke off ({exc})") from None
        if len(raw) > MAX_MANIFEST:
            raise RegistryError(f"{where}: manifest larger than {MAX_MANIFEST} bytes")
        digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
        claimed = resp.headers.get("Docker-Content-Digest")
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(
                f"{where}: registry {self.registry} sent a manifest hashing "
                f"to {digest}, not the requested {reference}"
            )
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise DigestMismatch(
                f"{where}: manifest hashes to {digest} but registry {self.registry} says {claimed}"
            )
        return raw, digest

    def fetch_blob(
        self, blob: Descriptor, writer: BlobWriter, where: str, on_bytes: Callable[[int], None]
    ) -> None:
        """Fill ``writer`` with the blob, resuming with Range after a broken connection."""
        url = f"{self.base}/blobs/{blob.digest}"
        failures = 0
        while writer.offset < blob.size:
            start = writer.offset
            headers = {"Accept-Encoding": "identity"}
            if start:
                headers["Range"] = f"bytes={start}-"
            try:
                self._stream(url, headers, blob, writer, where, on_bytes)
                if writer.offset < blob.size:
                    raise RegistryUnavailable("connection closed before the end of the blob")
            except (RegistryUnavailable, *_TRANSIENT) as exc:
                failures = 1 if writer.offset > start else failures + 1
                if failures > len(self.backoff):
                    writer.close()
                    raise RegistryUnavailable(
                        f"{where}: download of blob {blob.digest} from {self.registry} broke off "
                        f"at {writer.offset} of {blob.size} bytes ({exc}); the partial download "
                        "is kept: pull again to resume"
                    ) from None
                time.sleep(self.backoff[failures - 1])

    def _stream(
        self,
        url: str,
        headers: dict[str, str],
        blob: Descriptor,
        writer: BlobWriter,
        where: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        resp = self._oras.do_request(url, "GET", headers=headers, stream=True)
        with resp:
            code = resp.status_code
            if code == 404:
                raise ModelNotFound(
                    f"{where}: blob {blob.digest} not found in registry {self.registry}"
                )
            if code == 416:
                writer.restart()  # our partial does not fit the blob: start again
                return
            if code == 206:
                start = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                if start != str(writer.offset):
                    writer.restart()
                    return
            elif code == 200:
                if writer.offset:
                    writer.restart()  # the server ignored our Range and sends it all
            elif code >= 500:
                raise RegistryUnavailable(f"HTTP {code} {_registry_message(resp)}")
            else:
                writer.discard()
                raise self._fail(resp, f"blob {blob.digest}", where)
            for chunk in resp.raw.stream(CHUNK, decode_content=False):
                writer.write(chunk)
                on_bytes(len(chunk))

    def has_blob(self, digest: str) -> bool:
        resp = self._oras.do_request(f"{self.base}/blobs/{digest}", "HEAD")
        with resp:
            if resp.status_code in (401, 403):
                raise self._fail(resp, f"blob {digest}", f"{self.registry}/{self.repository}")
            return resp.status_code == 200

    def push_blob(
        self, path: Path, blob: Descriptor, where: str, on_bytes: Callable[[int], None]
    ) -> bool:
        """Upload a blob unless the registry has it; True when bytes were sent."""
        if self.has_blob(blob.digest):
            return False
        self._oras.on_sent = on_bytes
        layer: Mapping[str, Any] = {
            "mediaType": blob.media_type,
            "digest": blob.digest,
            "size": blob.size,
        }
        try:
            resp = self._oras.upload_blob(
                str(path), self._container, dict(layer), do_chunked=True, chunk_size=UPLOAD_CHUNK
            )
        except ValueError as exc:  # oras reports a refused chunk this way
            raise RegistryError(
                f"{where}: registry {self.registry} refused blob {blob.digest}: {exc}"
            ) from None
        finally:
            self._oras.on_sent = None
        if resp.status_code not in (200, 201, 202):
            raise self._fail(resp, f"blob {blob.digest}", where)
        return True

    def put_manifest(self, tag: str, raw: bytes, where: str) -> None:
        resp = self._oras.do_request(
            f"{self.base}/manifests/{tag}",
            "PUT",
            data=raw,
            headers={"Content-Type": mt.OCI_MANIFEST},
        )
        with resp:
            if resp.status_code not in (200, 201, 202):
                raise self._fail(resp, "the manifest", where)
