"""From a folder's load result to the desired state (pure).

A manifest that fails validation must not cost a running model: every model last applied
from a file that now has errors is *held* at its last good state, neither changed nor
retired, until the file is fixed. A model whose file is gone is retired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelrunner.manifest.load import LoadResult
from modelrunner.manifest.problems import Problem
from modelrunner.manifest.spec import ModelManifest
from modelrunner.reconcile.changes import Keys, keys


@dataclass(frozen=True, slots=True)
class Desired:
    spec: ModelManifest
    file: str
    content_hash: str
    keys: Keys


@dataclass(frozen=True, slots=True)
class DesiredState:
    models: Mapping[str, Desired]
    held: frozenset[str]  # running models whose manifest file has errors now
    problems: tuple[Problem, ...]


def desired_state(result: LoadResult, applied_files: Mapping[str, str]) -> DesiredState:
    """``applied_files``: running model name -> the file it was last applied from."""
    failed = result.failed_files
    models = {
        loaded.spec.name: Desired(loaded.spec, loaded.file, loaded.content_hash, keys(loaded.spec))
        for loaded in result.manifests
    }
    held = frozenset(
        name for name, file in applied_files.items() if file in failed and name not in models
    )
    return DesiredState(models=models, held=held, problems=tuple(result.problems))
