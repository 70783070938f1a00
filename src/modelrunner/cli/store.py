"""Placeholder until the store commands land (pull, push, package, ls, rm, inspect, tag, df)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    return None
