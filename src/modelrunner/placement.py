"""Which hosts serve a model: a manifest's ``placement`` against a host's name and labels.

    placement: {hosts: [gpu-1, gpu-2]}              this host's name is one of these
    placement: {match_labels: {gpu: h100, zone: a}} this host has every one of these labels
    both                                            both hold
    no placement                                    every host serves the model

A host knows its name from ``MR_HOST_NAME`` (default: the machine's hostname) and its labels
from ``MR_HOST_LABELS`` (``gpu=h100,zone=a``) and/or ``MR_HOST_LABELS_FILE``: ``key=value``
lines, which is also the format of a Kubernetes downward API ``metadata.labels`` file
(``key="value"``). The variable wins over the file for a key both name.

Deciding is pure (:func:`selects`, the parsers); :func:`host_from_env` reads the file and
the hostname.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from modelrunner.manifest.spec import LABEL_KEY, LABEL_VALUE, Placement

_LABEL_KEY: Final = re.compile(LABEL_KEY)
_LABEL_VALUE: Final = re.compile(LABEL_VALUE)


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def selects(placement: Placement | None, host: Host) -> bool:
    """True when a model with ``placement`` is to be served on ``host``."""
    if placement is None:
        return True
    if placement.hosts is not None and host.name not in placement.hosts:
        return False
    if placement.match_labels is not None:
        return all(host.labels.get(k) == v for k, v in placement.match_labels.items())
    return True


def selected_hosts(placement: Placement | None, hosts: Iterable[Host]) -> tuple[str, ...]:
    return tuple(h.name for h in hosts if selects(placement, h))


def describe(placement: Placement | None) -> str:
    """'hosts gpu-1, gpu-2 and labels gpu=h100' for messages and `mr plan`."""
    if placement is None:
        return "every host"
    parts = []
    if placement.hosts is not None:
        parts.append("hosts " + ", ".join(placement.hosts))
    if placement.match_labels is not None:
        parts.append("labels " + ",".join(f"{k}={v}" for k, v in placement.match_labels.items()))
    return " and ".join(parts)


def _label(key: str, value: str, where: str) -> tuple[str, str]:
    if not _LABEL_KEY.match(key) or len(key) > 317:
        raise ValueError(f"{where}: {key!r} is not a label key (like gpu or example.com/zone)")
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise ValueError(
            f"{where}: label {key}={value!r}: a value is at most 63 letters, digits, - _ ., "
            "starting and ending with a letter or digit"
        )
    return key, value


def parse_labels(text: str, where: str = "MR_HOST_LABELS") -> dict[str, str]:
    """``gpu=h100,zone=a`` -> {'gpu': 'h100', 'zone': 'a'}; raises ValueError with ``where``."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{where}: {item!r} is not key=value")
        k, v = _label(key.strip(), value.strip(), where)
        labels[k] = v
    return labels


def parse_labels_file(text: str, where: str) -> dict[str, str]:
    """``key=value`` or ``key="value"`` lines (the downward API's format); # comments."""
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{where}:{number}: {line!r} is not key=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"{where}:{number}: {value} is not a quoted string") from None
        k, v = _label(key.strip(), value, f"{where}:{number}")
        labels[k] = v
    return labels


def host_from(environ: Mapping[str, str], hostname: str, read: Callable[[Path], str]) -> Host:
    """The host identity from MR_HOST_NAME / MR_HOST_LABELS / MR_HOST_LABELS_FILE."""
    name = environ.get("MR_HOST_NAME", "").strip() or hostname
    labels: dict[str, str] = {}
    file = environ.get("MR_HOST_LABELS_FILE", "").strip()
    if file:
        try:
            text = read(Path(file))
        except OSError as exc:
            raise ValueError(f"MR_HOST_LABELS_FILE={file}: cannot read: {exc.strerror}") from None
        labels.update(parse_labels_file(text, file))
    labels.update(parse_labels(environ.get("MR_HOST_LABELS", "")))
    return Host(name, labels)


def host_from_env(environ: Mapping[str, str] | None = None) -> Host:
    """This host, read from the environment (I/O: the labels file and the hostname)."""
    import os

    from modelrunner.errors import UsageError

    try:
        return host_from(
            os.environ if environ is None else environ,
            socket.gethostname(),
            lambda p: p.read_text(encoding="utf-8"),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
