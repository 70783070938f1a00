"""Drift: where the host or the registry no longer matches what the repository says (pure).

``mr plan`` shows each drift and exits 2, like a pending change:

moved      a locked tag whose registry digest is not the locked one any more
served     a model serving a digest other than the one its reference is locked to
failing    a manifest applied on disk whose model fails on the host
corrupted  a stored blob of a served or locked model no longer matches its digest

The caller gathers the facts (registry answers, the server's status, store checks); this
module only compares them, so it is table-tested.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from modelrunner.manifest.lock import Lock, moved_message, short

DriftKind = Literal["moved", "served", "failing", "corrupted"]


@dataclass(frozen=True, slots=True)
class Served:
    """One model as the server's status reports it."""

    name: str
    reference: str | None
    digest: str | None
    file: str | None
    phase: str
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Drift:
    kind: DriftKind
    subject: str  # the reference (moved) or the model name
    message: str
    locked: str | None = None
    now: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "locked": self.locked,
            "now": self.now,
        }


def drift(
    lock: Lock | None,
    remote: Mapping[str, str],
    served: Sequence[Served],
    desired_files: Mapping[str, str],
    corrupted: Mapping[str, str],
) -> list[Drift]:
    """``remote``: lock key -> the digest its registry has now (keys it could not ask are
    left out); ``desired_files``: model -> the manifest file that wants it on this host;
    ``corrupted``: model -> what the store check found."""
    found: list[Drift] = []
    entries = lock.entries if lock is not None else {}
    for key, locked in sorted(entries.items()):
        now = remote.get(key)
        if now is not None and now != locked.digest:
            message = moved_message(key, locked.digest, now)
            found.append(Drift("moved", key, message, locked.digest, now))
    for model in sorted(served, key=lambda m: m.name):
        entry = lock.entry(model.reference) if lock and model.reference else None
        if entry is not None and model.digest is not None and model.digest != entry.digest:
            found.append(
                Drift(
                    "served",
                    model.name,
                    f"{model.name} serves {short(model.digest)} but {entry.reference} is "
                    f"locked to {short(entry.digest)}",
                    entry.digest,
                    model.digest,
                )
            )
        wanted = desired_files.get(model.name)
        if wanted is not None and _failing(model):
            why = f": {model.last_error}" if model.last_error else ""
            found.append(
                Drift(
                    "failing", model.name, f"{model.name} from {wanted} is failing on the host{why}"
                )
            )
    for name, problem in sorted(corrupted.items()):
        found.append(Drift("corrupted", name, f"{name}: {problem}"))
    return found


def _failing(model: Served) -> bool:
    """Failed, or serving the previous version because the applied change failed; a held
    manifest (invalid file) is a lint problem, not drift."""
    if model.phase == "failed":
        return True
    error = model.last_error or ""
    return error.startswith("change from ")
