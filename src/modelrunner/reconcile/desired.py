"""From a folder's load result to the desired state (pure).

A manifest that fails validation must not cost a running model: every model last applied
from a file that now has errors is *held* at its last good state, neither changed nor
retired, until the file is fixed. A model whose file is gone is retired.

A manifest whose ``placement`` does not select this host is *elsewhere*: not desired here
(a running instance of it is retired), but listed, so any host shows the fleet's intent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelrunner.manifest.load import LoadResult
from modelrunner.manifest.lock import Lock
from modelrunner.manifest.problems import Problem
from modelrunner.manifest.spec import ModelManifest
from modelrunner.placement import Host, describe, selects
from modelrunner.reconcile.changes import Keys, keys
from modelrunner.status import ModelStatus


@dataclass(frozen=True, slots=True)
class Desired:
    spec: ModelManifest
    file: str
    content_hash: str
    keys: Keys
    # The reference to pull when the lock file pins ``spec.model``: ``name:tag@digest``.
    locked: str | None = None


@dataclass(frozen=True, slots=True)
class DesiredState:
    models: Mapping[str, Desired]
    held: frozenset[str]  # running models whose manifest file has errors now
    problems: tuple[Problem, ...]
    elsewhere: Mapping[str, Desired] = field(default_factory=dict)  # placed on other hosts


def desired_state(
    result: LoadResult,
    applied_files: Mapping[str, str],
    host: Host | None = None,
    lock: Lock | None = None,
) -> DesiredState:
    """``applied_files``: running model name -> the file it was last applied from;
    ``host``: this host, whose placement decides (None: every manifest is for it);
    ``lock``: the folder's lock file, whose digests are served instead of the tags."""
    failed = result.failed_files
    everything = {}
    for loaded in result.manifests:
        pinned = lock.pinned(loaded.spec.model) if lock is not None else None
        everything[loaded.spec.name] = Desired(
            loaded.spec, loaded.file, loaded.content_hash, keys(loaded.spec, pinned), pinned
        )
    here = {n: d for n, d in everything.items() if host is None or selects(d.spec.placement, host)}
    held = frozenset(
        name for name, file in applied_files.items() if file in failed and name not in everything
    )
    return DesiredState(
        models=here,
        held=held,
        problems=tuple(result.problems),
        elsewhere={n: d for n, d in everything.items() if n not in here},
    )


def elsewhere_status(desired: Desired) -> ModelStatus:
    """How /status lists a model placed on other hosts: its intent, nothing running."""
    spec = desired.spec
    return ModelStatus(
        name=spec.name,
        aliases=spec.aliases,
        engine=spec.declared_engine,
        phase="elsewhere",
        file=desired.file,
        content_hash=desired.content_hash,
        reference=spec.model,
        placement=describe(spec.placement),
    )
