"""The Diffusers engine process: ``python -m modelrunner.engines.diffusers.main``.

Loads a DDUF artifact and answers OpenAI's ``POST /v1/images/generations`` (``prompt``,
``size`` as ``WIDTHxHEIGHT``, ``n``, ``response_format: b64_json``; ``steps``, ``seed`` and
``negative_prompt`` as extensions). diffusers 0.41+ no longer opens ``.dduf`` files itself,
so the archive is read with ``huggingface_hub.read_dduf_file``, unpacked to a temporary
folder, loaded, and the folder removed. CUDA when present, else the CPU. One image request
at a time: a pipeline is not safe to call from two threads. A request whose client has
left (cut by its timeout) stops at its next step.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import io
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from modelrunner.engines.serving import (
    ClientGone,
    RequestError,
    Route,
    client_gone,
    model_list,
    serve,
)

MAX_SIDE: Final = 4096
MAX_IMAGES: Final = 10
_SIZE: Final = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
_COPY_CHUNK: Final = 16 * 1024 * 1024


def parse_size(value: object, multiple: int) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` -> (width, height), both multiples of the VAE's scale factor."""
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise RequestError(400, f"size must look like 512x512, got {value!r}", "size")
    width, height = int(match[1]), int(match[2])
    if width > MAX_SIDE or height > MAX_SIDE:
        raise RequestError(400, f"size {value} is over {MAX_SIDE} pixels a side", "size")
    if width % multiple or height % multiple:
        raise RequestError(400, f"size {value}: both sides must be multiples of {multiple}", "size")
    return width, height


def parse_count(value: object) -> int:
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_IMAGES:
        raise RequestError(400, f"n must be an integer from 1 to {MAX_IMAGES}, got {value!r}", "n")
    return value


def unpack_dduf(dduf: Path, into: Path) -> None:
    """Write every file of the DDUF archive under ``into`` (streamed, not read whole)."""
    from huggingface_hub import read_dduf_file

    for name, entry in read_dduf_file(dduf).items():
        target = into / name
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with dduf.open("rb") as src, target.open("wb") as dst:
            src.seek(entry.offset)
            left = entry.length
            while left > 0:
                chunk = src.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise OSError(f"{dduf}: {name} ends early (truncated archive?)")
                dst.write(chunk)
                left -= len(chunk)


def load_pipeline(args: argparse.Namespace) -> tuple[Any, str]:
    import torch
    from diffusers import DiffusionPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype_name = (
        args.dtype if args.dtype != "auto" else "float16" if device == "cuda" else "float32"
    )
    folder = Path(tempfile.mkdtemp(prefix="mr-dduf-"))
    try:
        unpack_dduf(Path(args.model), folder)
        load: Any = DiffusionPipeline.from_pretrained  # untyped in diffusers
        pipeline = load(str(folder), torch_dtype=getattr(torch, dtype_name), local_files_only=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the weights are in memory now
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    if args.attention_slicing:
        pipeline.enable_attention_slicing()
    return pipeline, device


def build_routes(
    name: str, pipeline: Any, device: str, args: argparse.Namespace
) -> dict[tuple[str, str], Route]:
    import torch

    lock = threading.Lock()
    # Stable Diffusion pipelines want multiples of 8 whatever their VAE's own factor is.
    multiple = max(8, int(getattr(pipeline, "vae_scale_factor", 8)))
    unet = getattr(pipeline, "unet", None)
    sample = getattr(getattr(unet, "config", None), "sample_size", 64)
    default_size = args.size or f"{sample * multiple}x{sample * multiple}"
    # A request cut by its timeout (or a client that left) must not hold the pipeline for
    # the rest of its steps: most pipelines call back after each step.
    takes_step_callback = "callback_on_step_end" in inspect.signature(pipeline.__call__).parameters

    def generate(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise RequestError(400, "prompt must be a non-empty string", "prompt")
        fmt = body.get("response_format") or "b64_json"
        if fmt != "b64_json":
            raise RequestError(
                400, f"response_format {fmt!r}: only b64_json is served", "response_format"
            )
        width, height = parse_size(body.get("size") or default_size, multiple)
        count = parse_count(body.get("n"))
        steps = body.get("steps", args.steps)
        if steps is not None and (not isinstance(steps, int) or not 1 <= steps <= 1000):
            raise RequestError(
                400, f"steps must be an integer from 1 to 1000, got {steps!r}", "steps"
            )
        seed = body.get("seed", args.seed)
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "width": width,
            "height": height,
            "num_images_per_prompt": count,
        }
        if steps is not None:
            kwargs["num_inference_steps"] = steps
        if args.guidance_scale is not None:
            kwargs["guidance_scale"] = args.guidance_scale
        if isinstance(body.get("negative_prompt"), str):
            kwargs["negative_prompt"] = body["negative_prompt"]
        if takes_step_callback:
            kwargs["callback_on_step_end"] = stop_if_client_gone
        with lock, torch.inference_mode():
            if isinstance(seed, int):
                kwargs["generator"] = torch.Generator(device).manual_seed(seed)
            try:
                images = pipeline(**kwargs).images
            except ValueError as exc:  # diffusers' check_inputs: a request it cannot take
                raise RequestError(400, str(exc)) from None
            except IndexError as exc:
                # Some schedulers index past their table at the top of the range (DDIM with
                # "leading" spacing at 1000 steps): a step count this model cannot take.
                if steps is None:
                    raise
                raise RequestError(
                    400, f"steps {steps} is more than this model's scheduler takes ({exc})", "steps"
                ) from None
        return {"created": int(time.time()), "data": [{"b64_json": _png(i)} for i in images]}

    return {
        ("GET", "/health"): lambda body: {"status": "ok", "device": device},
        ("GET", "/v1/models"): lambda body: model_list([name], "diffusers"),
        ("POST", "/v1/images/generations"): generate,
    }


def stop_if_client_gone(
    pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]
) -> dict[str, Any]:
    if client_gone():
        raise ClientGone
    return tensors


def _png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffusers_server", description=__doc__)
    p.add_argument("--model", required=True, help="the .dduf file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-name", default=None)
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    p.add_argument("--size", default=None, help="default WIDTHxHEIGHT")
    p.add_argument("--steps", type=int, default=None, help="default inference steps")
    # The allow-listed runtime_flags (engines/flags.py).
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--attention-slicing", action="store_true")
    p.add_argument("--guidance-scale", type=float, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.size is not None:
        parse_size(args.size, 1)
    try:
        pipeline, device = load_pipeline(args)
    except (OSError, ValueError) as exc:
        print(f"cannot load {args.model}: {exc}", file=sys.stderr)
        return 1
    name = args.served_name or Path(args.model).stem
    serve(args.host, args.port, build_routes(name, pipeline, device, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
