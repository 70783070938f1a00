"""The local OCI model store (see store.py for the layout on disk).

Importing this package is cheap: oras, requests, gguf and rich are imported by the
operations that need them.
"""

from __future__ import annotations

from modelrunner.store.progress import CountingProgress, LineProgress, NullProgress, Progress
from modelrunner.store.store import DiskUsage, GcReport, ModelInfo, Store

__all__ = [
    "CountingProgress",
    "DiskUsage",
    "GcReport",
    "LineProgress",
    "ModelInfo",
    "NullProgress",
    "Progress",
    "Store",
]
