"""Change classes: what an edit of each manifest field costs.

    in-place   applied to the running instance's routing: aliases, description, limits,
               keep_alive, preload, pull_policy, rollout (it shapes the next restart)
    restart    a new instance with the new settings replaces the old one
    re-pull    the artifact may differ: pull (as the pull policy says), then restart; a new
               digest for the reference in the lock file (models.lock) is one too
    placement  which hosts serve the model: no key of its own. On each host it decides
               whether the model is desired there at all (reconcile/desired.py), so an
               edit starts the model where it is newly placed and retires it, drained,
               where it no longer is; a host that keeps the model does nothing

Only the fields of a class go into its key (kopf's "essence"), so an alias edit leaves the
restart key alone and never restarts a model.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import msgspec

from modelrunner.manifest.spec import ModelManifest

ChangeClass = Literal["identity", "in-place", "restart", "re-pull", "placement"]

FIELD_CLASS: Final[dict[str, ChangeClass]] = {
    "api_version": "in-place",
    "name": "identity",
    "aliases": "in-place",
    "description": "in-place",
    "limits": "in-place",
    "keep_alive": "in-place",
    "preload": "in-place",
    "pull_policy": "in-place",
    "rollout": "in-place",
    "placement": "placement",
    "model": "re-pull",
    "engine": "restart",
    "context_size": "restart",
    "runtime_flags": "restart",
    "env": "restart",
    "llama_cpp": "restart",
    "vllm": "restart",
    "diffusers": "restart",
}


class Keys(msgspec.Struct, frozen=True):
    """Hashes of one manifest, one per change class; equal keys mean nothing to do."""

    in_place: str
    restart: str
    pull: str


def _hash(spec: ModelManifest, change: ChangeClass) -> str:
    fields = {f: getattr(spec, f) for f, c in FIELD_CLASS.items() if c == change}
    return hashlib.sha256(msgspec.json.encode(fields, order="sorted")).hexdigest()[:16]


def keys(spec: ModelManifest, locked: str | None = None) -> Keys:
    """``locked``: the digest the lock file pins the reference to; a new one is a re-pull."""
    pull = _hash(spec, "re-pull")
    if locked is not None:
        pull = hashlib.sha256(f"{pull}@{locked}".encode()).hexdigest()[:16]
    return Keys(in_place=_hash(spec, "in-place"), restart=_hash(spec, "restart"), pull=pull)
