"""Which files in a folder are manifests.

Only ``*.yaml`` and ``*.yml`` directly in the folder; hidden names are skipped, which
also skips a Kubernetes ConfigMap's ``..data`` and ``..2026_...`` folders (their files are
reached through the top-level symlinks), and editor leftovers never match the suffixes.
"""

from __future__ import annotations

from pathlib import Path

SUFFIXES = (".yaml", ".yml")


def is_manifest_name(name: str) -> bool:
    return not name.startswith(".") and name.endswith(SUFFIXES)


def list_manifests(folder: Path) -> list[Path]:
    """Manifest files of ``folder``, sorted by name. Raises OSError if it cannot be read."""
    return sorted(
        entry for entry in folder.iterdir() if is_manifest_name(entry.name) and entry.is_file()
    )
