"""``mr requests [MODEL] [-f] [--json]``: the request inspector of the running server
(``GET /engines/requests``): the last request/answer pairs per model, or new ones as they
complete."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

_PREVIEW = 300  # characters of a body shown per line in the plain output


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "requests",
        help="recent requests and answers per model (the request inspector)",
        description="Show the last request/answer pairs the running server (MR_HOST, MR_PORT, "
        "MR_API_KEY) recorded, per model: method, path, status, time taken, input tokens, "
        "user agent, request and answer (streams reassembled). MR_RECORD_REQUESTS on the "
        "server sets how many are kept per model (0: none).",
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", help="only this model's requests")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new pairs as they complete"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one line a pair with -f)")
    parser.add_argument("--url", help="server URL (default http://$MR_HOST:$MR_PORT)")
    parser.set_defaults(run=run)


def _shorten(text: str | None) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= _PREVIEW else flat[:_PREVIEW] + "..."


def format_record(model: str, record: dict[str, Any]) -> list[str]:
    """A pair as three lines: what happened, the request, the answer (or error)."""
    when = datetime.fromtimestamp(record.get("timestamp") or 0).strftime("%Y-%m-%d %H:%M:%S")
    status = record.get("status_code")
    took = record.get("duration_ms")
    tokens = record.get("input_tokens")
    head = (
        f"{when}  {model}  {record.get('method')} {record.get('url')}  "
        f"{status if status is not None else '...'}  "
        f"{f'{took:.0f} ms' if took is not None else 'running'}"
        f"{f'  {tokens} tokens in' if tokens is not None else ''}"
        f"{'  stream' if record.get('stream') else ''}"
        f"{schema_summary(record.get('response'))}"
        f"{'' if record.get('complete', True) else '  (cut short)'}"
        f"  {record.get('user_agent') or '-'}"
    )
    answer = record.get("error") if record.get("error") is not None else record.get("response")
    return [head, f"  > {_shorten(record.get('request'))}", f"  < {_shorten(answer)}"]


def schema_summary(answer: Any) -> str:
    """What the llama.cpp engine says of a structured answer's schema: the keywords only
    checked after generation (the rest the grammar enforced), and whether it passed."""
    try:
        body = json.loads(answer) if isinstance(answer, str) else None
    except ValueError:
        return ""
    choices = body.get("choices") if isinstance(body, dict) else None
    checks = [
        c["schema_check"]
        for c in choices or ()
        if isinstance(c, dict) and isinstance(c.get("schema_check"), dict)
    ]
    if not checks:
        return ""
    only = sorted({k for check in checks for k in check.get("checked_only") or ()})
    valid = all(check.get("valid") for check in checks)
    enforced = "schema enforced by the grammar" + (
        f", {', '.join(only)} checked after" if only else ""
    )
    return f"  ({enforced}: {'valid' if valid else 'INVALID'})"


def pairs(groups: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for group in groups:
        for record in group.get("records") or ():
            yield group.get("model", "?"), record


def run(args: argparse.Namespace) -> int:
    import os

    import httpx

    from modelrunner.cli.run import api_key, server_url

    base = args.url or server_url(os.environ)
    key = api_key(os.environ)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    params = {"model": args.model} if args.model else {}
    try:
        if args.follow:
            return _follow(base, headers, params, args.json)
        response = httpx.get(f"{base}/engines/requests", params=params, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"mr requests: no server at {base}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"mr requests: {response.status_code}: {response.text[:300]}", file=sys.stderr)
        return 1
    groups = response.json()
    if args.json:
        print(json.dumps(groups, indent=2))
        return 0
    found = list(pairs(groups))
    if not found:
        print(f"no recorded requests{f' for {args.model}' if args.model else ''}")
    for model, record in sorted(found, key=lambda p: p[1].get("timestamp") or 0):
        print("\n".join(format_record(model, record)))
    return 0


def _follow(base: str, headers: dict[str, str], params: dict[str, str], as_json: bool) -> int:
    import httpx

    url = f"{base}/engines/requests"
    with httpx.stream(
        "GET", url, params={**params, "stream": "true"}, headers=headers, timeout=None
    ) as response:
        if response.status_code != 200:
            print(
                f"mr requests: {response.status_code}: {response.read()[:300]!r}", file=sys.stderr
            )
            return 1
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "new_request":
                for model, record in pairs(json.loads(line[5:])):
                    if as_json:
                        print(json.dumps({"model": model, **record}), flush=True)
                    else:
                        print("\n".join(format_record(model, record)), flush=True)
    return 0
