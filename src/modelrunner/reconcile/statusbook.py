"""Per-model status as operators see it (``mr status``, ``GET /status``); every phase
change is mirrored into the instance-state metric."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from modelrunner.engines.vllm import cluster_address
from modelrunner.placement import describe
from modelrunner.status import ModelStatus, Phase

if TYPE_CHECKING:
    from modelrunner.engines.process import EngineProcess
    from modelrunner.metrics import Metrics
    from modelrunner.reconcile.desired import Desired


class Keep:
    """Leave a status field as it is."""


KEEP: Final = Keep()


class StatusBook:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._models: dict[str, ModelStatus] = {}
        self._metrics = metrics

    def get(self, name: str) -> ModelStatus | None:
        return self._models.get(name)

    def snapshot(self) -> list[ModelStatus]:
        return [self._models[name] for name in sorted(self._models)]

    def remove(self, name: str) -> None:
        self._models.pop(name, None)
        if self._metrics is not None:
            self._metrics.forget_model(name)

    def update(
        self,
        name: str,
        *,
        phase: Phase | None = None,
        desired: Desired | None = None,
        last_error: str | Keep | None = KEEP,
        instance: EngineProcess | Keep | None = KEEP,
        digest: str | Keep | None = KEEP,
        ready: bool = False,
        while_serving: bool = False,
    ) -> None:
        """Change what is given. ``while_serving``: a new version is being prepared while the
        old one still serves, so the phase stays ``ready`` and the applied manifest's fields
        (file, hash, keys) stay those of the version that serves."""
        now = time.time()
        current = self._models.get(name) or ModelStatus(name=name, updated_at=now)
        serving = while_serving and current.phase == "ready"
        changes: dict[str, Any] = {}
        if phase is not None and not serving:
            changes.update(phase=phase, updated_at=now)
        if desired is not None and not serving:
            spec = desired.spec
            changes.update(
                aliases=spec.aliases,
                engine=spec.declared_engine,
                file=desired.file,
                content_hash=desired.content_hash,
                reference=spec.model,
                keep_alive=spec.keep_alive,
                in_place_key=desired.keys.in_place,
                restart_key=desired.keys.restart,
                pull_key=desired.keys.pull,
                placement=describe(spec.placement) if spec.placement else None,
                cluster=cluster_address(spec),
            )
        if not isinstance(last_error, Keep):
            changes["last_error"] = last_error
        if not isinstance(instance, Keep):
            changes["instance"] = instance.instance_id if instance is not None else None
            if instance is not None:
                changes["engine"] = instance.engine
        if not isinstance(digest, Keep):
            changes["digest"] = digest
        if ready:
            changes["ready_at"] = now
        updated = msgspec.structs.replace(current, **changes)
        self._models[name] = updated
        if self._metrics is not None:
            self._metrics.instance_state(name, updated.phase)
