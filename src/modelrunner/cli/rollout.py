"""``mr rollout promote|abort NAME``: end a model's canary rollout by hand, on the running
server (MR_HOST, MR_PORT, MR_API_KEY)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="promote or abort a model's canary rollout",
        description="End a canary rollout by hand: `promote` gives the new revision every "
        "request and drains the old one; `abort` rolls the new revision back. Exit 1 when "
        "the model has no canary in progress.",
    )
    parser.add_argument("action", choices=("promote", "abort"))
    parser.add_argument("model", metavar="NAME", help="a served model (name or alias)")
    parser.add_argument("--url", help="server URL (default http://$MR_HOST:$MR_PORT)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    import httpx

    from modelrunner.cli.run import api_key, server_url

    base = args.url or server_url(os.environ)
    key = api_key(os.environ)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(f"{base}/rollout/{args.action}/{args.model}", headers=headers)
    except httpx.HTTPError as exc:
        print(f"mr rollout: no server at {base}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        print(f"mr rollout: {message}", file=sys.stderr)
        return 1
    print(f"{response.json()['model']}: {response.json()['rollout']}")
    return 0
