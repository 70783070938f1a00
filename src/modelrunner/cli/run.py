"""``mr run MODEL [PROMPT]``: one prompt, or an interactive chat, against a running server,
streaming tokens as they arrive (like ``docker model run``).

The server is ``http://{MR_HOST or 127.0.0.1}:{MR_PORT or 12434}``; the API key, when the
server wants one, comes from ``MR_API_KEY`` (else the first of ``MR_API_KEYS``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from modelrunner.errors import ModelRunnerError

if TYPE_CHECKING:
    import httpx

EXIT_WORDS = ("/bye", "/exit", "/quit")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="chat with a served model (one prompt, or interactively)",
        description="Send PROMPT to MODEL and stream the answer; without PROMPT, read it "
        "from standard input when piped, else start an interactive chat (/bye to leave).",
    )
    parser.add_argument("model", metavar="MODEL", help="a served model name or alias")
    parser.add_argument("prompt", metavar="PROMPT", nargs="*", help="the prompt (words are joined)")
    parser.add_argument("--url", help="server URL (default http://$MR_HOST:$MR_PORT)")
    parser.set_defaults(run=run)


def server_url(environ: dict[str, str] | os._Environ[str]) -> str:
    host = environ.get("MR_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # a wildcard bind is reached on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{environ.get('MR_PORT') or 12434}"


def api_key(environ: dict[str, str] | os._Environ[str]) -> str | None:
    if key := environ.get("MR_API_KEY"):
        return key
    keys = [k.strip() for k in environ.get("MR_API_KEYS", "").split(",") if k.strip()]
    return keys[0] if keys else None


def deltas(lines: Iterable[str]) -> Iterator[str]:
    """The text pieces of an OpenAI chat stream's ``data:`` lines, until ``[DONE]``.
    An ``error`` event (a failure mid-stream) raises."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise ModelRunnerError(f"the server reported mid-stream: {_message(event)}")
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield content


def run(args: argparse.Namespace) -> int:
    import httpx

    base = (args.url or server_url(os.environ)).rstrip("/")
    headers = {}
    if key := api_key(os.environ):
        headers["authorization"] = f"Bearer {key}"
    prompt = " ".join(args.prompt)
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
    timeout = httpx.Timeout(10.0, read=600.0)
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:
        if prompt:
            chat(client, args.model, [{"role": "user", "content": prompt}], sys.stdout)
            return 0
        return interactive(client, args.model)


def interactive(client: httpx.Client, model: str) -> int:
    history: list[dict[str, str]] = []
    print(f"Chatting with {model}; /bye to leave.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in EXIT_WORDS:
            return 0
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        answer = chat(client, model, history, sys.stdout)
        history.append({"role": "assistant", "content": answer})


def chat(client: httpx.Client, model: str, messages: list[dict[str, str]], out: TextIO) -> str:
    """Stream one answer to ``out``; returns it whole."""
    import httpx

    body = {"model": model, "messages": messages, "stream": True}
    pieces: list[str] = []
    try:
        with client.stream("POST", "/engines/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise ModelRunnerError(_http_error(response, model))
            for piece in deltas(response.iter_lines()):
                out.write(piece)
                out.flush()
                pieces.append(piece)
    except httpx.ConnectError:
        raise ModelRunnerError(
            f"cannot reach the mr server at {client.base_url} (is `mr serve` running? "
            "MR_HOST and MR_PORT choose the address)"
        ) from None
    except httpx.HTTPError as exc:
        raise ModelRunnerError(f"the request to {client.base_url} failed: {exc}") from None
    out.write("\n")
    return "".join(pieces)


def _http_error(response: httpx.Response, model: str) -> str:
    try:
        message = _message(response.json())
    except ValueError:
        message = response.text.strip() or response.reason_phrase
    return f"{model}: HTTP {response.status_code}: {message}"


def _message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    return str(body)
