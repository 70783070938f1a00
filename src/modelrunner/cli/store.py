"""``mr pull | push | package | ls | rm | verify | inspect | tag | df``: the local model store.

Only argparse is imported here; the store (and oras, gguf, rich behind it) is imported
when one of these commands runs, so ``mr lint`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelrunner.store import Progress, Store


def register(subparsers: Any) -> None:
    def add(name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help_text, description=help_text
        )
        parser.add_argument(
            "--store",
            metavar="DIR",
            type=Path,
            default=None,
            help="store folder (default: $MR_STORE_DIR or the per-user data folder)",
        )
        parser.set_defaults(run=run)
        return parser

    p = add("pull", "download a model from an OCI registry into the store", _pull)
    p.add_argument(
        "ref", metavar="REF", help="reference, e.g. ai/smollm2 or registry:5000/team/m:tag"
    )
    p = add("push", "upload a stored model to the registry its reference names", _push)
    p.add_argument("ref", metavar="REF")
    p = add("package", "build a model artifact from local files and tag it REF", _package)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--gguf", type=Path, metavar="FILE", help="a GGUF file (the first shard of a split model)"
    )
    source.add_argument(
        "--safetensors-dir",
        type=Path,
        metavar="DIR",
        help="a folder with config.json, tokenizer files and *.safetensors",
    )
    source.add_argument("--dduf", type=Path, metavar="FILE", help="a Diffusers DDUF file")
    p.add_argument(
        "--license",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a license file to include (repeatable)",
    )
    p.add_argument("--chat-template", type=Path, metavar="FILE", help="a Jinja chat template")
    p.add_argument("--mmproj", type=Path, metavar="FILE", help="a multimodal projector (GGUF)")
    p.add_argument("--context-size", type=int, metavar="N", help="default context size")
    p.add_argument("--push", action="store_true", help="push it to its registry afterwards")
    p.add_argument("ref", metavar="REF")
    p = add("ls", "list stored models", _ls)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add(
        "verify",
        "re-hash the blobs of every stored model (or of REF) and report any that no longer "
        "match their digest; exit 1 if one does",
        _verify,
    )
    p.add_argument("ref", metavar="REF", nargs="?", help="one model (default: all of them)")
    p = add("rm", "remove a tag; the model goes with its last tag", _rm)
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("--force", action="store_true", help="remove even when a server uses it")
    p = add("inspect", "show a stored model's manifest and config", _inspect)
    p.add_argument("ref", metavar="REF")
    p.add_argument("--json", action="store_true", help="print the full JSON")
    p = add("tag", "give a stored model another reference", _tag)
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")
    p = add("df", "show the store's disk usage (--gc to reclaim unreferenced space)", _df)
    p.add_argument(
        "--gc", action="store_true", help="delete unreferenced blobs and partial downloads"
    )


def _store(args: argparse.Namespace) -> Store:
    from modelrunner.settings import from_env
    from modelrunner.store import Store

    settings = from_env(store_dir=args.store)
    return Store(settings.store_dir, settings.insecure_registries)


@contextlib.contextmanager
def _progress() -> Iterator[Progress]:
    """A bar on a terminal, plain lines in logs and pipes."""
    if sys.stderr.isatty():
        from modelrunner.store.rich_progress import RichProgress

        with RichProgress() as bar:
            yield bar
    else:
        from modelrunner.store import LineProgress

        yield LineProgress()


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _pull(args: argparse.Namespace) -> int:
    store = _store(args)
    with _progress() as progress:
        files = store.pull(args.ref, progress)
    print(f"{args.ref}: {files.digest}\n  {files.format}: {files.path}")
    return 0


def _push(args: argparse.Namespace) -> int:
    store = _store(args)
    with _progress() as progress:
        digest = store.push(args.ref, progress)
    print(f"{args.ref}: pushed {digest}")
    return 0


def _package(args: argparse.Namespace) -> int:
    store = _store(args)
    with _progress() as progress:
        files = store.package(
            args.ref,
            gguf=args.gguf,
            safetensors_dir=args.safetensors_dir,
            dduf=args.dduf,
            licenses=args.license,
            chat_template=args.chat_template,
            mmproj=args.mmproj,
            context_size=args.context_size,
            progress=progress,
        )
        print(f"{args.ref}: packaged {files.digest}")
        if args.push:
            store.push(args.ref, progress)
            print(f"{args.ref}: pushed {files.digest}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    models = _store(args).list()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "tags": list(m.tags),
                        "digest": m.digest,
                        "format": m.format,
                        "size": m.size,
                        "created": m.created,
                        "architecture": m.architecture,
                        "parameters": m.parameters,
                        "quantization": m.quantization,
                    }
                    for m in models
                ],
                indent=2,
            )
        )
        return 0
    rows = [("MODEL", "DIGEST", "FORMAT", "PARAMETERS", "QUANT", "SIZE")]
    for m in models:
        for tag in m.tags:
            rows.append(
                (
                    tag,
                    m.digest[7:19],
                    m.format,
                    m.parameters or "-",
                    m.quantization or "-",
                    _size(m.size),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _rm(args: argparse.Namespace) -> int:
    store = _store(args)
    for ref in args.refs:
        digest = store.remove(ref, force=args.force)
        if store.removed_while_served(digest) and digest in store.in_use():
            print(
                f"{ref}: removed ({digest[:19]}); a running server still serves it, so its "
                "files are kept until that instance stops (mr status shows it)"
            )
        else:
            print(f"{ref}: removed ({digest[:19]})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    store = _store(args)
    results = store.verify(args.ref)
    if not results:
        print(f"{store.root}: no models")
    for ref, problem in results:
        print(f"{ref}: ok" if problem is None else problem)
    bad = sum(problem is not None for _, problem in results)
    if bad:
        print(f"{bad} of {len(results)} model(s) corrupted: mr pull REF fetches them again",
              file=sys.stderr)  # fmt: skip
    return 1 if bad else 0


def _inspect(args: argparse.Namespace) -> int:
    info = _store(args).inspect(args.ref)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    config = info["config"].get("config", {})
    fields: list[tuple[str, object]] = [
        ("reference", info["reference"]),
        ("digest", info["digest"]),
        ("tags", ", ".join(info["tags"])),
        ("format", info["format"]),
        ("size", _size(info["size"])),
    ]
    for key in ("architecture", "parameters", "quantization", "context_size"):
        if config.get(key) is not None:
            fields.append((key, config[key]))
    fields.append(("in use", "yes" if info["in_use"] else "no"))
    width = max(len(key) for key, _ in fields) + 2
    for key, value in fields:
        print(f"{key + ':':<{width}}{value}")
    print("layers:")
    for layer in info["manifest"]["layers"]:
        path = (layer.get("annotations") or {}).get("org.cncf.model.filepath", "")
        print(f"  {layer['digest'][7:19]}  {_size(layer['size']):>9}  {layer['mediaType']}  {path}")
    return 0


def _tag(args: argparse.Namespace) -> int:
    digest = _store(args).tag(args.source, args.target)
    print(f"{args.target}: tagged {digest[:19]}")
    return 0


def _df(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.gc:
        report = store.gc()
        print(
            f"removed {report.blobs_removed} blobs, {report.bundles_removed} bundles and "
            f"{report.partials_removed} partial downloads: {_size(report.bytes_freed)} freed"
        )
    usage = store.disk_usage()
    print(f"store:        {store.root}")
    print(f"models:       {usage.models}")
    print(f"blobs:        {usage.blobs} ({_size(usage.blob_bytes)})")
    print(f"reclaimable:  {_size(usage.reclaimable_bytes)} (mr df --gc)")
    print(f"partial:      {_size(usage.partial_bytes)}")
    print(f"disk free:    {_size(usage.free_bytes)}")
    return 0
